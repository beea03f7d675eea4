"""The store on both backends: versions, search, encryption at rest, key rotation."""

from __future__ import annotations

import base64
import contextlib
import os
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from careloop.fhir.timeutil import parse_fhir_instant_range
from careloop.store.crypto import KeyMaterialError, MasterKey, Sealer, new_data_key, wrap_key
from careloop.store.repository import DateBound, ResourceStore, StoreError, metadata_tables
from samples import (
    PATIENT_BIRTH_DATE,
    PATIENT_GIVEN,
    PATIENT_ID,
    PATIENT_MRN,
    PATIENT_NAME,
    PATIENT_SSN,
    heart_rate,
    patient,
)

IDENTIFYING = [
    PATIENT_NAME,
    PATIENT_GIVEN,
    PATIENT_BIRTH_DATE,
    PATIENT_MRN,
    PATIENT_SSN,
    PATIENT_ID,
]


def load_patient_with_vitals(store: ResourceStore) -> None:
    subject = f"Patient/{PATIENT_ID}"
    times = ["2024-03-01T08:00:00Z", "2024-03-01T20:00:00Z", "2024-03-02T08:00:00Z"]
    vitals = [heart_rate(i, 70 + i, when, subject) for i, when in enumerate(times)]
    with store.transaction() as tx:
        tx.put_resources([patient(), *vitals])


def dates(*specs: str) -> list[DateBound]:
    bounds = []
    for spec in specs:
        prefix, value = (spec[:2], spec[2:]) if spec[:2].isalpha() else ("eq", spec)
        bounds.append(DateBound(prefix, *parse_fhir_instant_range(value)))
    return bounds


def test_search_by_patient_code_and_date(store):
    load_patient_with_vitals(store)

    by_code = store.search("Observation", patient_id=PATIENT_ID, codes=["http://loinc.org|8867-4"])
    assert by_code.total == 3
    assert [r.body["id"] for r in by_code.resources] == ["hr-0", "hr-1", "hr-2"]
    assert store.search("Observation", codes=["8867-4"]).total == 3
    assert store.search("Observation", codes=["http://snomed.info/sct|8867-4"]).total == 0
    assert store.search("Observation", patient_id="someone-else").total == 0
    assert store.search("Observation", dates=dates("2024-03-01")).total == 2
    assert store.search("Observation", dates=dates("ge2024-03-01T12:00:00Z")).total == 2
    assert store.search("Observation", dates=dates("lt2024-03-01T12:00:00Z")).total == 1
    assert store.search("Observation", dates=dates("ge2024-03-01", "lt2024-03-02")).total == 2
    page = store.search("Observation", count=2, offset=2)
    assert page.total == 3 and [r.body["id"] for r in page.resources] == ["hr-2"]


def test_patient_compartment_and_read(store):
    load_patient_with_vitals(store)
    compartment = list(store.patient_resources(PATIENT_ID))
    assert sorted(r["resourceType"] for r in compartment) == ["Observation"] * 3 + ["Patient"]
    stored = store.read("Patient", PATIENT_ID)
    assert stored.body["name"][0]["family"] == PATIENT_NAME
    assert stored.body["meta"]["versionId"] == "1"
    assert store.read("Patient", "not-there") is None


def test_a_failed_transaction_leaves_nothing(store):
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.put_resources([patient()])
        raise RuntimeError("power cut")
    assert store.counts_by_type() == {}
    load_patient_with_vitals(store)  # the rolled-back patient key is not reused
    assert store.read("Patient", PATIENT_ID) is not None


def _all_stored_bytes(store: ResourceStore, database_url: str) -> list[bytes]:
    """Every value in every table, as bytes; for SQLite also the raw database files."""
    blobs: list[bytes] = []
    with store.engine.connect() as connection:
        for table in metadata_tables():
            for row in connection.execute(sa.select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        blobs.append(bytes(value))
                    elif value is not None:
                        blobs.append(str(value).encode())
    if database_url.startswith("sqlite"):
        store.close()  # checkpoints the WAL into the main file
        database = Path(database_url.removeprefix("sqlite:///"))
        blobs.extend(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    return blobs


def _leaks(blobs: list[bytes], needles: list[str]) -> set[str]:
    """Needles visible in clear, directly or after undoing compression."""
    found = set()
    for blob in blobs:
        readable = [blob]
        with contextlib.suppress(zlib.error):
            readable.append(zlib.decompress(blob))
        for text in readable:
            found.update(n for n in needles if n.encode() in text)
    return found


def test_no_identifier_appears_in_clear_anywhere_in_the_database(store, database_url):
    load_patient_with_vitals(store)
    assert _leaks(_all_stored_bytes(store, database_url), IDENTIFYING) == set()


def test_the_leak_check_finds_identifiers_when_encryption_is_off(database_url):
    """Control for the test above: the same check sees the data when it is not encrypted."""
    plain = ResourceStore.open(database_url, None, encrypt=False)
    load_patient_with_vitals(plain)
    leaked = _leaks(_all_stored_bytes(plain, database_url), IDENTIFYING)
    plain.close()
    assert {PATIENT_NAME, PATIENT_MRN, PATIENT_BIRTH_DATE} <= leaked


def test_rotation_rewraps_keys_and_the_old_key_stops_working(database_url, master_key):
    store = ResourceStore.open(database_url, master_key)
    load_patient_with_vitals(store)
    with store.engine.connect() as connection:
        bodies_before = connection.execute(sa.text("SELECT body FROM resources")).scalars().all()
    new_key = MasterKey.from_bytes(os.urandom(32))

    rewrapped = store.rotate_master_key(new_key)
    store.close()

    assert rewrapped >= 2  # the index key and the patient's data key at least
    reopened = ResourceStore.open(database_url, new_key)
    assert reopened.read("Patient", PATIENT_ID).body["name"][0]["family"] == PATIENT_NAME
    assert reopened.master_key_ids() == {new_key.key_id: rewrapped}
    with reopened.engine.connect() as connection:
        bodies_after = connection.execute(sa.text("SELECT body FROM resources")).scalars().all()
    assert sorted(map(bytes, bodies_after)) == sorted(map(bytes, bodies_before))
    reopened.close()
    with pytest.raises(StoreError, match="wrapped by master key"):
        ResourceStore.open(database_url, master_key)


def test_encrypted_store_refuses_plaintext_mode_and_missing_keys(database_url, master_key):
    ResourceStore.open(database_url, master_key).close()
    with pytest.raises(StoreError, match="encryption"):
        ResourceStore.open(database_url, None, encrypt=False)
    with pytest.raises(StoreError, match="master key"):
        ResourceStore.open(database_url, None)


def test_a_ciphertext_moved_to_another_row_does_not_open(store):
    load_patient_with_vitals(store)
    with store.engine.begin() as connection:
        rows = connection.execute(sa.text("SELECT pk, body FROM resources ORDER BY pk")).all()
        connection.execute(
            sa.text("UPDATE resources SET body = :body WHERE pk = :pk"),
            {"body": rows[0].body, "pk": rows[1].pk},
        )
    with pytest.raises(StoreError, match="integrity check"):
        list(store.patient_resources(PATIENT_ID))


# -- keys -------------------------------------------------------------------------------------


def test_master_key_parsing_errors_are_clear_and_never_echo_the_key(tmp_path):
    short = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(KeyMaterialError, match="32 bytes") as excinfo:
        MasterKey.from_text(short, origin="CARELOOP_MASTER_KEY")
    assert short not in str(excinfo.value)
    with pytest.raises(KeyMaterialError, match="not valid base64"):
        MasterKey.from_text("%%% not base64 %%%", origin="test")
    with pytest.raises(KeyMaterialError, match="cannot read"):
        MasterKey.from_file(tmp_path / "missing.key")
    key = MasterKey.from_bytes(b"s" * 32)
    assert "sss" not in repr(key)


def test_wrapped_keys_only_open_with_their_master_and_id():
    master = MasterKey.from_bytes(os.urandom(32))
    data_key = new_data_key()
    wrapped = wrap_key(master, data_key, "key-1")
    from careloop.store.crypto import unwrap_key

    assert unwrap_key(master, wrapped, "key-1") == data_key
    with pytest.raises(KeyMaterialError):
        unwrap_key(master, wrapped, "key-2")
    with pytest.raises(KeyMaterialError):
        unwrap_key(MasterKey.from_bytes(os.urandom(32)), wrapped, "key-1")
    sealer = Sealer(data_key)
    sealed = sealer.seal(b"body", b"Observation|a|1")
    assert sealer.open(sealed, b"Observation|a|1") == b"body"
    assert sealed.count(b"body") == 0


def test_timestamps_round_trip_as_utc(store):
    load_patient_with_vitals(store)
    stored = store.read("Observation", "hr-0")
    assert stored.last_updated.tzinfo is not None
    assert stored.last_updated <= datetime.now(UTC)
