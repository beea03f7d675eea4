"""Patient rights at the store level, on both backends: export, amendment, erasure, retention."""

from __future__ import annotations

import contextlib
import random
import stat
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.task import Task
from hypothesis import given
from hypothesis import strategies as st

from careloop.fhir.indexing import index_terms, patient_id_of
from careloop.fhir.structure import conforms
from careloop.ingest import IngestOptions, Ingestor
from careloop.ingest.errors import IngestProblem
from careloop.rights import (
    AmendmentError,
    ErasureError,
    ExportError,
    RecordNotFound,
    RetentionError,
    RetentionPolicy,
    amendment_request,
    erase_candidates,
    erase_patient,
    export_facts,
    find_expired,
    patient_record_bundle,
    respond_to_amendment,
    run_retention,
    target_in_compartment,
    write_bundle,
)
from careloop.rights.export import PATIENT_ACCESS_TAG
from careloop.rights.retention import last_activity_if_due
from careloop.store.crypto import Sealer, unwrap_key
from careloop.store.repository import ResourceStore, StoreError, _row_binding
from careloop.store.schema import data_keys, metadata, resources
from careloop.synth import write_population
from samples import (
    PATIENT_BIRTH_DATE,
    PATIENT_GIVEN,
    PATIENT_ID,
    PATIENT_MRN,
    PATIENT_NAME,
    PATIENT_SSN,
    heart_rate,
    patient,
    transaction_bundle,
)

IDENTIFYING = [
    PATIENT_NAME,
    PATIENT_GIVEN,
    PATIENT_BIRTH_DATE,
    PATIENT_MRN,
    PATIENT_SSN,
    PATIENT_ID,
]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


# -- data ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic patients with their care site (practitioners, organizations)."""
    directory = tmp_path_factory.mktemp("population")
    write_population(directory, patients=2, seed=11)
    return directory


def ingestor(store: ResourceStore) -> Ingestor:
    return Ingestor(store, IngestOptions(workers=0))


def ingest_sample(store: ResourceStore) -> None:
    """The hand-written patient (known name, MRN, SSN), an encounter and three heart rates."""
    ingestor(store).ingest_document(orjson.dumps(transaction_bundle(3)), "sample.json")


def ingest_population(store: ResourceStore, directory: Path) -> list[str]:
    report = ingestor(store).ingest_paths([directory])
    assert report.ok, report.as_dict()
    lines = (directory / "Patient.ndjson").read_bytes().splitlines()
    return [orjson.loads(line)["id"] for line in lines]


def ingest_collection(store: ResourceStore, items: list[dict]) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection"}
    bundle["entry"] = [{"resource": item} for item in items]
    ingestor(store).ingest_document(orjson.dumps(bundle), "collection.json")


def person(patient_id: str, *observed: str) -> list[dict]:
    """A patient and one heart rate at each given time."""
    subject = f"Patient/{patient_id}"
    vitals = [heart_rate(i, 70 + i, when, subject) for i, when in enumerate(observed)]
    for vital in vitals:
        vital["id"] = f"{patient_id}-{vital['id']}"
    return [patient(patient_id), *vitals]


def compartment(store: ResourceStore, patient_id: str) -> dict[tuple[str, str], dict]:
    return {(r["resourceType"], r["id"]): r for r in store.patient_resources(patient_id)}


def table_contents(store: ResourceStore) -> dict[str, list[tuple]]:
    """Every row of every careloop table, for before/after comparisons."""
    with store.engine.connect() as connection:
        return {
            table.name: sorted(
                (tuple(row) for row in connection.execute(sa.select(table))), key=repr
            )
            for table in metadata.sorted_tables
        }


def stored_bytes(store: ResourceStore, database_url: str) -> list[bytes]:
    """Every value of every table as bytes; for SQLite also the raw database files."""
    blobs = [
        bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
        for rows in table_contents(store).values()
        for row in rows
        for value in row
        if value is not None
    ]
    if database_url.startswith("sqlite"):
        database = Path(database_url.removeprefix("sqlite:///"))
        files = sorted(database.parent.glob(database.name + "*"))
        # with connections open (the WAL as a running service has it), then after closing them
        blobs.extend(p.read_bytes() for p in files)
        store.engine.dispose()
        blobs.extend(p.read_bytes() for p in files if p.exists())
    return blobs


def readable(blob: bytes) -> list[bytes]:
    texts = [blob]
    with contextlib.suppress(zlib.error):
        texts.append(zlib.decompress(blob))
    return texts


# -- export ----------------------------------------------------------------------------------------


def test_export_holds_exactly_the_patients_compartment(store, population):
    ingest_sample(store)
    synthetic = ingest_population(store, population)
    for patient_id in [PATIENT_ID, synthetic[0]]:
        bundle = patient_record_bundle(store, patient_id, now=NOW)
        Bundle.model_validate(bundle)
        assert bundle["type"] == "collection"
        assert bundle["timestamp"] == "2026-06-01T12:00:00Z"
        assert bundle["meta"]["tag"] == [PATIENT_ACCESS_TAG]
        entries = bundle["entry"]
        keys = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in entries]
        assert sorted(keys) == sorted(compartment(store, patient_id))
        assert all(patient_id_of(e["resource"]) == patient_id for e in entries)
        assert all(
            e["fullUrl"].endswith(f"/{t}/{i}") for e, (t, i) in zip(entries, keys, strict=True)
        )
        assert keys[0] == ("Patient", patient_id)
        assert {"Practitioner", "Organization"}.isdisjoint(t for t, _ in keys)
        assert export_facts(bundle)["entries"] == len(entries)
        again = patient_record_bundle(store, patient_id, now=NOW)
        assert [e["fullUrl"] for e in again["entry"]] == [e["fullUrl"] for e in entries]
    others = set(compartment(store, synthetic[1]))
    mine = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert others and not others & mine


def test_export_order_is_stable_whatever_the_input_order(store):
    ingest_sample(store)
    stored = list(store.patient_resources(PATIENT_ID))
    first = patient_record_bundle(store, PATIENT_ID, resources=stored, now=NOW)
    order = [e["fullUrl"] for e in first["entry"]]
    types = [e["resource"]["resourceType"] for e in first["entry"]]
    assert types == ["Patient", "Encounter", "Observation", "Observation", "Observation"]
    times = [e["resource"]["effectiveDateTime"] for e in first["entry"][2:]]
    assert times == sorted(times)
    for seed in range(5):
        shuffled = random.Random(seed).sample(stored, len(stored))
        bundle = patient_record_bundle(store, PATIENT_ID, resources=shuffled, now=NOW)
        assert [e["fullUrl"] for e in bundle["entry"]] == order


def test_an_exported_record_reingests_unchanged(store):
    """The export carries the stored content itself: loading it back changes nothing."""
    ingest_sample(store)
    bundle = patient_record_bundle(store, PATIENT_ID)
    written = ingestor(store).ingest_document(orjson.dumps(bundle), "export.json")
    assert len(written) == len(bundle["entry"])
    assert {result.outcome.value for _, result in written} == {"unchanged"}


def test_export_refuses_resources_of_another_patient(store, population):
    ingest_sample(store)
    synthetic = ingest_population(store, population)
    foreign = next(iter(store.patient_resources(synthetic[0], ["Observation"])))
    mixed = [*store.patient_resources(PATIENT_ID), foreign]
    with pytest.raises(ExportError, match="outside the patient's compartment") as raised:
        patient_record_bundle(store, PATIENT_ID, resources=mixed)
    assert synthetic[0] not in str(raised.value) and foreign["id"] not in str(raised.value)
    twice = [*store.patient_resources(PATIENT_ID), patient()]
    with pytest.raises(ExportError, match="appears twice"):
        patient_record_bundle(store, PATIENT_ID, resources=twice)


def test_export_of_an_unknown_patient_or_a_fully_filtered_record(store):
    ingest_sample(store)
    with pytest.raises(RecordNotFound):
        patient_record_bundle(store, "nobody-here")
    empty = patient_record_bundle(store, PATIENT_ID, resources=[])
    Bundle.model_validate(empty)
    assert "entry" not in empty and export_facts(empty)["entries"] == 0


def test_write_bundle_is_atomic_and_private(store, tmp_path):
    ingest_sample(store)
    bundle = patient_record_bundle(store, PATIENT_ID)
    exports = tmp_path / "exports"
    exports.mkdir()
    target = exports / "record.json"
    size = write_bundle(bundle, target)
    assert size == target.stat().st_size
    assert orjson.loads(target.read_bytes()) == bundle
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    broken = {**bundle, "entry": [*bundle["entry"], {"resource": {"not": {"json"}}}]}
    with pytest.raises(TypeError):
        write_bundle(broken, target)
    assert orjson.loads(target.read_bytes()) == bundle  # the earlier file is intact
    assert [p.name for p in exports.iterdir()] == ["record.json"]  # no temp file left


# -- amendment -------------------------------------------------------------------------------------


def test_amendment_request_validates_and_lands_in_the_patients_compartment(store, population):
    ingest_sample(store)
    synthetic = ingest_population(store, population)
    responder = f"Practitioner/{_a_practitioner_id(population)}"  # ingest checks references
    assert target_in_compartment(store, PATIENT_ID, "Observation/hr-0")
    foreign = next(iter(store.patient_resources(synthetic[0], ["Observation"])))
    assert not target_in_compartment(store, PATIENT_ID, f"Observation/{foreign['id']}")
    assert not target_in_compartment(store, PATIENT_ID, "Observation/not-there")

    change = "My heart rate on 1 March was taken after climbing stairs, please annotate."
    task = amendment_request(
        PATIENT_ID, "Observation/hr-0", change, f"Patient/{PATIENT_ID}", now=NOW
    )
    Task.model_validate(task)
    assert conforms(task)
    assert (task["status"], task["intent"], task["authoredOn"]) == (
        "requested",
        "proposal",
        "2026-06-01T12:00:00Z",
    )
    assert {"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "change"}.items() <= (
        task["code"]["coding"][0].items()
    )
    assert task["input"][0]["valueString"] == change
    assert index_terms(task).patient_id == PATIENT_ID

    ingestor(store).ingest_document(orjson.dumps(task), "amendment.json")
    assert ("Task", task["id"]) in compartment(store, PATIENT_ID)
    assert ("Task", task["id"]) not in compartment(store, synthetic[0])

    answer = respond_to_amendment(
        task, "rejected", "The reading is correct as recorded.", responder, now=NOW
    )
    Task.model_validate(answer)
    assert conforms(answer)
    assert answer["status"] == "rejected" and task["status"] == "requested"
    assert answer["output"][0]["valueCode"] == "rejected"
    ingestor(store).ingest_document(orjson.dumps(answer), "answer.json")
    assert store.read("Task", task["id"]).version == 2
    with pytest.raises(AmendmentError, match="already been answered"):
        respond_to_amendment(answer, "accepted", "changed my mind", responder)
    accepted = respond_to_amendment(task, "accepted", "Annotated.", responder)
    assert accepted["status"] == "completed" and Task.model_validate(accepted)


def test_amendment_requests_refuse_malformed_references_and_decisions():
    good = ("p-1", "Observation/o-1", "please fix", "Patient/p-1")
    for position, bad in [(0, "has space"), (1, "Observation"), (1, "Nonsense/x"), (3, "Group/g")]:
        arguments = list(good)
        arguments[position] = bad
        with pytest.raises(AmendmentError):
            amendment_request(*arguments)
    task = amendment_request(*good)
    with pytest.raises(AmendmentError, match="accepted' or 'rejected"):
        respond_to_amendment(task, "maybe", "why", "Practitioner/x")  # type: ignore[arg-type]
    with pytest.raises(AmendmentError, match="not a careloop amendment request"):
        respond_to_amendment({"resourceType": "Task"}, "accepted", "ok", "Practitioner/x")


@given(text=st.text(max_size=300))
def test_amendment_text_is_kept_verbatim_or_refused_without_being_echoed(text):
    try:
        task = amendment_request("p-1", "Condition/c-1", text, "Patient/p-1", now=NOW)
    except AmendmentError as refused:
        assert len(text.strip()) < 8 or text not in str(refused)
        return
    Task.model_validate(task)
    assert task["input"][0]["valueString"] == text


@given(reference=st.text(max_size=80))
def test_hostile_references_are_refused_without_being_echoed(reference):
    try:
        task = amendment_request("p-1", reference, "fix it", "Patient/p-1", now=NOW)
    except AmendmentError as refused:
        assert len(reference) < 8 or reference not in str(refused)
        return
    Task.model_validate(task)
    assert task["focus"]["reference"] == reference


# -- erasure ---------------------------------------------------------------------------------------


def test_erasure_shreds_one_patient_and_leaves_everyone_else(
    store, database_url, master_key, population
):
    ingest_sample(store)
    synthetic = ingest_population(store, population)
    changed = next(iter(store.patient_resources(PATIENT_ID, ["Observation"])))
    changed["valueQuantity"]["value"] = 99  # a second version, sealed with the same key
    ingest_collection(store, [changed])
    others_before = {pid: compartment(store, pid) for pid in synthetic}
    shared_before = store.read("Practitioner", _a_practitioner_id(population))
    target_hash = store.patient_hash(PATIENT_ID)
    with store.engine.connect() as connection:
        key_id, wrapped = connection.execute(
            sa.select(data_keys.c.key_id, data_keys.c.wrapped_key).where(
                data_keys.c.owner_hash == target_hash
            )
        ).one()
        row_keys = connection.execute(
            sa.select(resources.c.data_key_id, resources.c.is_current).where(
                resources.c.patient_hash == target_hash
            )
        ).all()
    assert {row.data_key_id for row in row_keys} == {key_id}  # every version, one key
    current = sum(row.is_current for row in row_keys)
    assert (current, len(row_keys)) == (len(compartment(store, PATIENT_ID)), current + 1)

    result = erase_patient(store, PATIENT_ID, erased_by="dpo@hospital.example", now=NOW)

    assert (result.patient_hash, result.already_erased) == (target_hash, False)
    assert (result.resources_shredded, result.versions_shredded) == (current, current + 1)
    assert result.scrubbed
    assert store.read("Patient", PATIENT_ID) is None
    assert list(store.patient_resources(PATIENT_ID)) == []
    assert store.history("Observation", changed["id"]) == []
    assert store.search("Observation", patient_id=PATIENT_ID).total == 0
    assert {pid: compartment(store, pid) for pid in synthetic} == others_before
    assert store.read("Practitioner", shared_before.body["id"]) == shared_before
    assert store.is_erased(PATIENT_ID) and not store.is_erased(synthetic[0])
    with store.engine.connect() as connection:
        key_row = connection.execute(sa.select(data_keys).where(data_keys.c.key_id == key_id)).one()
    assert key_row.wrapped_key is None and key_row.destroyed_at == NOW

    tombstone = store.erasure_tombstone(PATIENT_ID)
    assert tombstone == {
        "patient_hash": target_hash,
        "erased_at": NOW,
        "erased_by": "dpo@hospital.example",
        "basis": "patient-request",
        "resources": current,
    }
    assert store.erasure_tombstone(synthetic[0]) is None

    # Nothing left opens to this patient: every remaining row against every remaining key.
    _assert_nothing_decrypts_to(store, master_key, PATIENT_ID)

    # Idempotent: a second erasure reports it and changes nothing at all.
    before = table_contents(store)
    again = erase_patient(store, PATIENT_ID, erased_by="someone-else", now=NOW + timedelta(1))
    assert again.already_erased and again.resources_shredded == 0
    assert table_contents(store) == before

    # The patient cannot come back through ingest under the destroyed key.
    with pytest.raises((StoreError, IngestProblem)) as refused:
        ingest_sample(store)
    assert PATIENT_NAME not in str(refused.value) and PATIENT_ID not in str(refused.value)
    assert store.read("Patient", PATIENT_ID) is None

    blobs = stored_bytes(store, database_url)
    assert not any(wrapped in blob for blob in blobs), "the destroyed wrapped key is still stored"
    leaked = {
        n for blob in blobs for text in readable(blob) for n in IDENTIFYING if n.encode() in text
    }
    assert leaked == set()


def _a_practitioner_id(population: Path) -> str:
    first = (population / "Practitioner.ndjson").read_bytes().splitlines()[0]
    return orjson.loads(first)["id"]


def _assert_nothing_decrypts_to(store: ResourceStore, master_key, patient_id: str) -> None:
    with store.engine.connect() as connection:
        keys = connection.execute(
            sa.select(data_keys.c.key_id, data_keys.c.wrapped_key).where(
                data_keys.c.wrapped_key.is_not(None)
            )
        ).all()
        rows = connection.execute(
            sa.select(
                resources.c.resource_type,
                resources.c.id_hash,
                resources.c.version,
                resources.c.body,
            )
        ).all()
    sealers = [Sealer(unwrap_key(master_key, wrapped, key_id)) for key_id, wrapped in keys]
    opened = 0
    for row in rows:
        binding = _row_binding(row.resource_type, row.id_hash, row.version)
        for sealer in sealers:
            try:
                body = orjson.loads(zlib.decompress(sealer.open(row.body, binding)))
            except InvalidTag:
                continue
            opened += 1
            assert patient_id_of(body) != patient_id
            assert patient_id.encode() not in orjson.dumps(body)
    assert rows and opened == len(rows)  # every other row still opens, with exactly one key


def test_erasing_an_unknown_patient_is_a_clear_error(store):
    ingest_sample(store)
    before = table_contents(store)
    with pytest.raises(StoreError, match="no patient compartment") as raised:
        erase_patient(store, "never-stored-7731", erased_by="dpo")
    assert "never-stored-7731" not in str(raised.value)
    assert table_contents(store) == before and not store.is_erased("never-stored-7731")


def test_erasure_arguments_are_checked_before_anything_changes(store):
    ingest_sample(store)
    before = table_contents(store)
    with pytest.raises(ErasureError, match="basis"):
        erase_patient(store, PATIENT_ID, erased_by="dpo", basis="because")
    with pytest.raises(ErasureError, match="erased_by"):
        erase_patient(store, PATIENT_ID, erased_by="  ")
    with pytest.raises(ErasureError, match="erased_by"):
        erase_patient(store, PATIENT_ID, erased_by="x" * 129)
    with pytest.raises(ErasureError, match="time-zone aware"):
        erase_patient(store, PATIENT_ID, erased_by="dpo", now=datetime(2026, 1, 1))
    assert table_contents(store) == before


# -- retention -------------------------------------------------------------------------------------


def test_retention_finds_and_erases_only_patients_past_their_period(store):
    ingest_collection(store, person("old-1", "2005-03-01T08:00:00Z", "2014-02-01T08:00:00Z"))
    ingest_collection(store, person("recent-1", "2004-01-01T08:00:00Z", "2025-01-01T08:00:00Z"))
    ingest_collection(store, [patient("no-clinical-data")])  # loaded now: activity is load time
    policy = RetentionPolicy(years=10)
    old_hash = store.patient_hash("old-1")

    before = table_contents(store)
    dry = run_retention(store, policy, erased_by="retention-job", now=NOW)
    assert [c.patient_hash for c in dry.candidates] == [old_hash]
    assert dry.candidates[0].last_activity.date().isoformat() == "2014-02-01"
    assert dry.erased == [] and not dry.applied
    assert table_contents(store) == before

    run = run_retention(store, policy, apply=True, erased_by="retention-job", now=NOW)
    assert [r.patient_hash for r in run.erased] == [old_hash] and run.skipped == []
    assert run.erased[0].resources_shredded == 3
    assert store.erasure_tombstone("old-1")["basis"] == "retention"
    assert store.read("Patient", "old-1") is None
    assert len(compartment(store, "recent-1")) == 3
    assert store.read("Patient", "no-clinical-data") is not None
    assert run_retention(store, policy, erased_by="retention-job", now=NOW).candidates == []


def test_retention_overrides_and_open_periods_keep_patients(store):
    immunized = person("immunized-1", "2008-01-01T08:00:00Z")
    immunized.append(
        {
            "resourceType": "Immunization",
            "id": "imm-1",
            "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": {"reference": "Patient/immunized-1"},
            "occurrenceDateTime": "2001-10-01",
        }
    )
    ingest_collection(store, immunized)
    ongoing = person("ongoing-1", "2003-01-01T08:00:00Z")
    ongoing.append(
        {
            "resourceType": "Encounter",
            "id": "enc-open",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
            "subject": {"reference": "Patient/ongoing-1"},
            "period": {"start": "2003-01-01T08:00:00Z"},
        }
    )
    ingest_collection(store, ongoing)
    immunized_hash = store.patient_hash("immunized-1")

    assert [c.patient_hash for c in find_expired(store, RetentionPolicy(10), now=NOW)] == [
        immunized_hash
    ]
    long_lived = RetentionPolicy(10, overrides={"Immunization": 30})
    assert find_expired(store, long_lived, now=NOW) == []
    far_future = NOW.replace(year=2100)
    assert [c.patient_hash for c in find_expired(store, long_lived, now=far_future)] == [
        immunized_hash
    ]


def test_a_patient_active_again_since_the_listing_is_not_erased(store):
    ingest_collection(store, person("old-2", "2001-05-01T08:00:00Z"))
    policy = RetentionPolicy(years=10)
    candidates = find_expired(store, policy, now=NOW)
    assert [c.patient_hash for c in candidates] == [store.patient_hash("old-2")]
    returning = person("old-2", "2001-05-01T08:00:00Z", "2026-05-30T08:00:00Z")
    ingest_collection(store, returning)

    erased, skipped = erase_candidates(store, policy, candidates, erased_by="job", now=NOW)

    assert erased == [] and skipped == [store.patient_hash("old-2")]
    assert len(compartment(store, "old-2")) == 3 and not store.is_erased("old-2")


def test_an_undated_compartment_is_measured_by_load_time(store):
    ingest_collection(store, [patient("demographics-only")])
    policy = RetentionPolicy(years=10)
    loaded_now = datetime.now(UTC)
    assert find_expired(store, policy, now=loaded_now) == []
    later = find_expired(store, policy, now=loaded_now + timedelta(days=366 * 11))
    assert [c.patient_hash for c in later] == [store.patient_hash("demographics-only")]


def test_activity_exactly_at_the_cutoff_is_inside_the_period():
    policy = RetentionPolicy(years=10, overrides={"Immunization": 20})
    cutoff = datetime(2016, 6, 1, 12, 0, tzinfo=UTC)
    loaded = NOW
    assert last_activity_if_due(policy, [("Observation", cutoff, loaded)], NOW) is None
    earlier = cutoff - timedelta(microseconds=1)
    assert last_activity_if_due(policy, [("Observation", earlier, loaded)], NOW) == earlier
    mixed = [("Observation", earlier, loaded), ("Immunization", earlier, loaded)]
    assert last_activity_if_due(policy, mixed, NOW) is None
    assert last_activity_if_due(policy, [], NOW) is None
    leap = datetime(2028, 2, 29, tzinfo=UTC)
    assert policy.cutoff("Observation", leap) == datetime(2018, 2, 28, tzinfo=UTC)


@pytest.mark.parametrize(
    "arguments",
    [{"years": 0}, {"years": True}, {"years": 10, "overrides": {"not a type": 5}}, {"years": 2.5}],
)
def test_malformed_retention_policies_are_refused(arguments):
    with pytest.raises(RetentionError):
        RetentionPolicy(**arguments)


def test_retention_refuses_a_naive_reference_time(store):
    with pytest.raises(RetentionError, match="time-zone aware"):
        find_expired(store, RetentionPolicy(), now=datetime(2026, 1, 1))
