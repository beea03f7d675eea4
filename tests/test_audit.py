"""The audit log on both backends: BALP AuditEvents, sealing, the hash chain, and tampering.

Tampering is done the way a DBA would: drop the append-only triggers with raw SQL, then UPDATE,
DELETE and INSERT rows directly, without the audit key. Every case in `TAMPER_CASES` asserts the
exact set of (kind, seq) findings `verify` reports, so a spurious finding fails too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fhir.resources.R4B.auditevent import AuditEvent
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from careloop.audit.events import (
    DCM,
    OBJECT_ROLE,
    AuditAction,
    AuditOutcome,
    AuditRecord,
    audit_event_resource,
    patient_of,
)
from careloop.audit.log import (
    GENESIS,
    LISTED_PER_KIND,
    AuditIntegrityError,
    AuditLog,
    AuditLogError,
)
from careloop.fhir.structure import conforms
from careloop.store.crypto import MasterKey, Sealer
from careloop.store.repository import ResourceStore
from careloop.store.schema import audit_events, audit_head

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
EVENTS_IN_LOG = 6


def record(
    i: int = 0,
    *,
    action: AuditAction = AuditAction.READ,
    agent: str = "dr.grey",
    patient: str | None = None,
    flags: frozenset[str] = frozenset(),
    **changes: object,
) -> AuditRecord:
    values: dict = {
        "action": action,
        "outcome": AuditOutcome.SUCCESS,
        "agent": agent,
        "role": "clinician",
        "agent_kind": "user",
        "fhir_user": "Practitioner/grey",
        "purpose": "TREAT",
        "patient_id": patient or f"pat-{i:04d}",
        "entities": (f"Observation/obs-{i}",),
        "source_address": "10.1.2.3",
        "flags": flags,
        "recorded": T0 + timedelta(minutes=i),
    }
    values.update(changes)
    return AuditRecord(**values)


def filled_log(store: ResourceStore, n: int = EVENTS_IN_LOG) -> AuditLog:
    log = AuditLog(store)
    for i in range(n):
        flags = frozenset({"no-care-relationship"}) if i % 2 else frozenset()
        log.append(record(i, flags=flags))
    return log


# -- raw database access, as an attacker with DBA rights has it --------------------------------


def execute(store: ResourceStore, statement: str, **params: object) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.text(statement), params)


def drop_append_only_triggers(store: ResourceStore) -> None:
    if store.is_sqlite:
        execute(store, "DROP TRIGGER audit_events_no_update")
        execute(store, "DROP TRIGGER audit_events_no_delete")
    else:
        execute(store, "DROP TRIGGER audit_events_append_only ON audit_events")


def stored_row(store: ResourceStore, seq: int) -> dict:
    with store.engine.connect() as connection:
        row = connection.execute(sa.select(audit_events).where(audit_events.c.seq == seq)).one()
    return dict(row._mapping)


def rewrite(store: ResourceStore, seq: int, /, **values: object) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(audit_events).where(audit_events.c.seq == seq).values(**values)
        )


def insert_rows(store: ResourceStore, *rows: dict) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.insert(audit_events), list(rows))


def forged(row: dict, **changes: object) -> dict:
    """A row changed by someone without the key: the best they can do is a keyless hash."""
    new = {**row, **changes}
    material = repr(sorted((k, str(v)) for k, v in new.items() if k != "entry_hash"))
    new["entry_hash"] = hashlib.sha256(material.encode()).hexdigest()
    return new


def flip_body_byte(store: ResourceStore, seq: int) -> None:
    body = bytearray(stored_row(store, seq)["body"])
    body[len(body) // 2] ^= 0x01
    rewrite(store, seq, body=bytes(body))


def swap_rows(store: ResourceStore, a: int, b: int) -> None:
    """Exchange everything but seq between two rows: the events change places."""
    first, second = stored_row(store, a), stored_row(store, b)
    rewrite(store, a, **{k: v for k, v in second.items() if k != "seq"})
    rewrite(store, b, **{k: v for k, v in first.items() if k != "seq"})


def replace_with_forgery(store: ResourceStore, seq: int) -> None:
    original = stored_row(store, seq)
    execute(store, "DELETE FROM audit_events WHERE seq = :seq", seq=seq)
    insert_rows(store, forged(original, agent="someone.else"))


def append_forgery(store: ResourceStore) -> None:
    last = stored_row(store, EVENTS_IN_LOG)
    insert_rows(
        store,
        forged(
            last,
            seq=EVENTS_IN_LOG + 1,
            prev_hash=last["entry_hash"],
            body=os.urandom(len(last["body"])),
        ),
    )


def roll_back_head_after_truncation(store: ResourceStore) -> None:
    execute(store, "DELETE FROM audit_events WHERE seq >= 5")
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(audit_head).values(last_seq=4, last_hash=stored_row(store, 4)["entry_hash"])
        )


def drop_primary_key(store: ResourceStore) -> None:
    if store.is_sqlite:  # SQLite cannot drop a constraint: rebuild the table without it
        execute(store, "CREATE TABLE audit_loose AS SELECT * FROM audit_events")
        execute(store, "DROP TABLE audit_events")
        execute(store, "ALTER TABLE audit_loose RENAME TO audit_events")
    else:
        execute(store, "ALTER TABLE audit_events DROP CONSTRAINT audit_events_pkey")


def duplicate_position(store: ResourceStore) -> None:
    original = stored_row(store, 3)
    drop_primary_key(store)
    insert_rows(store, forged(original, action="delete"))


@dataclass(frozen=True)
class TamperCase:
    name: str
    tamper: Callable[[ResourceStore], None]
    expected: frozenset[tuple[str, int | None]]  # exactly the (kind, seq) findings


def case(name: str, tamper: Callable[[ResourceStore], None], *found: tuple) -> TamperCase:
    return TamperCase(name, tamper, frozenset(found))


# The catalogue quoted in the docs: each tampering an attacker with DBA rights can do.
TAMPER_CASES: list[TamperCase] = [
    case("action changed", lambda s: rewrite(s, 3, action="delete"), ("modified", 3)),
    case("agent changed", lambda s: rewrite(s, 2, agent="someone.else"), ("modified", 2)),
    case(
        "outcome of the last event changed", lambda s: rewrite(s, 6, outcome="8"), ("modified", 6)
    ),
    case(
        "patient hash of the first event changed",
        lambda s: rewrite(s, 1, patient_hash="0" * 32),
        ("modified", 1),
    ),
    case("flags cleared", lambda s: rewrite(s, 4, flags=""), ("modified", 4)),
    case("purpose changed", lambda s: rewrite(s, 5, purpose="HRESCH"), ("modified", 5)),
    case(
        "recorded time moved",
        lambda s: rewrite(s, 3, recorded=T0 - timedelta(days=3)),
        ("modified", 3),
    ),
    case("one body byte flipped", lambda s: flip_body_byte(s, 4), ("modified", 4)),
    case(
        "body copied from another event",
        lambda s: rewrite(s, 3, body=stored_row(s, 2)["body"]),
        ("modified", 3),
    ),
    case(
        "stored entry hash replaced", lambda s: rewrite(s, 3, entry_hash="f" * 64), ("modified", 3)
    ),
    case("stored prev hash replaced", lambda s: rewrite(s, 2, prev_hash=GENESIS), ("modified", 2)),
    case(
        "middle event deleted",
        lambda s: execute(s, "DELETE FROM audit_events WHERE seq = 3"),
        ("deleted", 3),
    ),
    case(
        "first event deleted",
        lambda s: execute(s, "DELETE FROM audit_events WHERE seq = 1"),
        ("deleted", 1),
    ),
    case(
        "tail deleted",
        lambda s: execute(s, "DELETE FROM audit_events WHERE seq >= 5"),
        ("truncated", 5),
    ),
    case("every event deleted", lambda s: execute(s, "DELETE FROM audit_events"), ("truncated", 1)),
    case("forged event appended", append_forgery, ("inserted", 7)),
    case("event replaced by a forgery", lambda s: replace_with_forgery(s, 3), ("inserted", 3)),
    case("second row forced into a seq", duplicate_position, ("inserted", 3)),
    case("two events swapped", lambda s: swap_rows(s, 2, 5), ("reordered", 2), ("reordered", 5)),
    case("neighbours swapped", lambda s: swap_rows(s, 3, 4), ("reordered", 3), ("reordered", 4)),
    case(
        "event moved to a new seq", lambda s: rewrite(s, 3, seq=9), ("deleted", 3), ("reordered", 9)
    ),
    case(
        "head MAC corrupted",
        lambda s: execute(s, "UPDATE audit_head SET mac = :m", m="0" * 64),
        ("truncated", None),
    ),
    case("head deleted", lambda s: execute(s, "DELETE FROM audit_head"), ("truncated", None)),
    case(
        "tail deleted and head edited to match",
        roll_back_head_after_truncation,
        ("truncated", None),
    ),
]


# -- the AuditEvent ------------------------------------------------------------------------------


def assert_valid_r4(resource: dict) -> None:
    AuditEvent.model_validate(resource)  # raises on anything R4 (R4B AuditEvent = R4) refuses
    assert conforms(resource), "the fast structure check disagrees with fhir.resources"


@pytest.mark.parametrize("action", list(AuditAction))
def test_every_action_makes_a_valid_r4_audit_event(action: AuditAction) -> None:
    query = "code=http://loinc.org|4548-4" if action is AuditAction.SEARCH else None
    resource = audit_event_resource(record(1, action=action, query=query), "ev-1", T0)

    assert_valid_r4(resource)
    assert resource["action"] in {"C", "R", "U", "D", "E"}
    assert resource["recorded"] == "2025-03-03T09:00:00.000000Z"


def test_balp_elements_are_present() -> None:
    rec = record(
        7,
        action=AuditAction.SEARCH,
        patient="pat-42",
        query="patient=pat-42&code=4548-4",
        flags=frozenset({"break-glass"}),
        detail="under break-glass grant 1234",
        source_address="192.0.2.7",
    )
    event = audit_event_resource(rec, "ev-7", T0)

    assert event["type"]["code"] == "rest" and event["subtype"][0]["code"] == "search-type"
    patient_entities = [e for e in event["entity"] if e["role"]["code"] == "1"]
    assert patient_entities == [
        {
            "what": {"reference": "Patient/pat-42"},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "1",
                "display": "Person",
            },
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        }
    ]
    query = next(e for e in event["entity"] if e["role"]["code"] == "24")
    assert base64.b64decode(query["query"]).decode() == "patient=pat-42&code=4548-4"
    data = [e["what"]["reference"] for e in event["entity"] if e["role"]["code"] == "4"]
    assert data == ["Observation/obs-7"]
    requestor, server = event["agent"]
    assert requestor["requestor"] is True and server["requestor"] is False
    assert requestor["who"]["identifier"]["value"] == "dr.grey"
    assert requestor["role"][0]["coding"][0]["code"] == "clinician"
    assert requestor["network"] == {"address": "192.0.2.7", "type": "2"}
    purposes = [p["coding"][0]["code"] for p in event["purposeOfEvent"]]
    assert purposes == ["TREAT", "BTG"]
    assert {"system": "https://careloop.dev/fhir/CodeSystem/audit-flag", "code": "break-glass"} in (
        event["meta"]["tag"]
    )
    assert event["outcomeDesc"] == "under break-glass grant 1234"
    assert event["source"]["observer"]["display"] == "careloop"
    assert patient_of(event) == "pat-42"


def test_authentication_events_use_dicom_codes() -> None:
    sign_in = record(action=AuditAction.LOGIN, patient_id=None, entities=())
    login = audit_event_resource(sign_in, "e", T0)
    failed = record(action=AuditAction.LOGIN, outcome=AuditOutcome.MINOR_FAILURE, patient_id=None)

    assert (login["type"]["system"], login["type"]["code"]) == (DCM, "110114")
    assert login["subtype"][0]["code"] == "110122"
    assert "entity" not in login  # no patient, no data
    assert audit_event_resource(failed, "f", T0)["outcome"] == "4"


_FHIR_ID = st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)
_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=80).filter(
    lambda value: value.strip() != ""
)


@settings(max_examples=150, deadline=None)
@given(
    action=st.sampled_from(list(AuditAction)),
    outcome=st.sampled_from(list(AuditOutcome)),
    agent=_TEXT,
    patient=st.none() | _FHIR_ID,
    entities=st.lists(_FHIR_ID.map(lambda i: f"Observation/{i}"), max_size=4),
    query=st.none() | st.text(max_size=200),
    detail=st.none() | _TEXT,
    flags=st.frozensets(st.sampled_from(["break-glass", "bulk", "consent-denied"])),
    purpose=st.none() | st.sampled_from(["TREAT", "ETREAT", "HRESCH", "MODELTRAIN", "XYZ"]),
    address=st.none() | st.ip_addresses().map(str) | st.just("cli"),
)
def test_generated_records_always_make_valid_r4(
    action, outcome, agent, patient, entities, query, detail, flags, purpose, address
) -> None:
    rec = AuditRecord(
        action=action,
        outcome=outcome,
        agent=agent,
        role="nurse",
        agent_kind="user",
        fhir_user=None,
        purpose=purpose,
        patient_id=patient,
        entities=tuple(entities),
        query=query or None,
        source_address=address,
        flags=flags,
        detail=detail,
    )
    resource = audit_event_resource(rec, "generated", T0)

    AuditEvent.model_validate(resource)
    assert patient_of(resource) == patient


# -- append and read -------------------------------------------------------------------------


def test_append_and_read_back(store: ResourceStore) -> None:
    log = AuditLog(store)
    first = log.append(record(1, flags=frozenset({"no-care-relationship", "bulk"})))
    more = log.append_many([record(2), record(3, action=AuditAction.SEARCH, query="code=x")])

    assert [first, *more] == [1, 2, 3]
    events = list(log.events())
    assert [e.seq for e in events] == [1, 2, 3]
    one = events[0]
    assert (one.action, one.outcome, one.agent, one.role, one.purpose) == (
        "read",
        "0",
        "dr.grey",
        "clinician",
        "TREAT",
    )
    assert one.recorded == T0 + timedelta(minutes=1)
    assert one.flags == frozenset({"no-care-relationship", "bulk"})
    assert one.patient_hash == store.patient_hash("pat-0001")
    assert one.readable and one.resource["resourceType"] == "AuditEvent"
    assert patient_of(one.resource) == "pat-0001"
    assert_valid_r4(events[2].resource)
    assert log.verify().ok


def test_events_filter_by_time_patient_agent_and_limit(store: ResourceStore) -> None:
    log = AuditLog(store)
    log.append_many([record(i, agent="a" if i % 2 else "b", patient=f"p{i % 3}") for i in range(9)])

    window = [
        e.seq for e in log.events(since=T0 + timedelta(minutes=2), until=T0 + timedelta(days=1))
    ]
    assert window == [3, 4, 5, 6, 7, 8, 9]
    assert [e.seq for e in log.events(until=T0 + timedelta(minutes=2))] == [1, 2]
    assert [e.seq for e in log.events(patient_id="p1")] == [2, 5, 8]
    assert [e.seq for e in log.events(agent="a")] == [2, 4, 6, 8]
    assert [e.seq for e in log.events(agent="b", limit=2)] == [1, 3]


def test_events_read_in_batches_in_order(store: ResourceStore, monkeypatch) -> None:
    monkeypatch.setattr("careloop.audit.log.BATCH", 4)
    log = AuditLog(store)
    log.append_many([record(i) for i in range(11)])

    assert [e.seq for e in log.events()] == list(range(1, 12))
    assert [e.seq for e in log.events(limit=6)] == list(range(1, 7))
    assert log.verify().events_checked == 11 and log.verify().ok


def test_bad_records_are_refused_without_echoing_values(store: ResourceStore) -> None:
    log = AuditLog(store)
    secret_agent = "x" * 129
    with pytest.raises(AuditLogError, match="agent") as too_long:
        log.append(record(agent=secret_agent))
    assert secret_agent not in str(too_long.value)
    with pytest.raises(AuditLogError, match="flags"):
        log.append(record(flags=frozenset({"Has Spaces"})))
    with pytest.raises(AuditLogError, match="time-zone"):
        log.append(record(recorded=datetime(2025, 1, 1)))
    assert list(log.events()) == []


def test_sealed_body_and_columns_hold_no_patient_data(store: ResourceStore, tmp_path) -> None:
    secrets = ["pat-SECRET-4711", "obs-SECRET-0815", "4548-4-SECRET"]
    log = AuditLog(store)
    log.append(
        record(
            action=AuditAction.SEARCH,
            patient="pat-SECRET-4711",
            entities=("Observation/obs-SECRET-0815",),
            query="code=4548-4-SECRET",
        )
    )

    with store.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM audit_events")).all()
    raw = b"".join(
        value if isinstance(value, bytes) else str(value).encode() for row in rows for value in row
    )
    for secret in secrets:
        assert secret.encode() not in raw
    if store.is_sqlite:
        database = Path(store.engine.url.database)
        files = [database, *database.parent.glob(database.name + "-*")]
        on_disk = b"".join(path.read_bytes() for path in files if path.exists())
        for secret in secrets:
            assert secret.encode() not in on_disk
    assert patient_of(next(log.events()).resource) == "pat-SECRET-4711"


def test_concurrent_appenders_build_one_gap_free_valid_chain(store: ResourceStore) -> None:
    log = AuditLog(store)
    threads, per_thread = 6, 20
    seqs: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        try:
            for i in range(per_thread):
                if i % 4 == 0:
                    got = log.append_many([record(i, agent=f"w{worker}")] * 2)
                else:
                    got = [log.append(record(i, agent=f"w{worker}"))]
                with lock:
                    seqs.extend(got)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()

    assert errors == []
    total = threads * (per_thread + per_thread // 4)
    assert sorted(seqs) == list(range(1, total + 1))
    report = log.verify()
    assert report.ok, report.render()
    assert report.events_checked == total and report.head_seq == total


def test_two_logs_on_one_store_share_the_chain(store: ResourceStore, master_key) -> None:
    first = AuditLog(store)
    first.append(record(1))
    other_store = ResourceStore.open(str(store.engine.url.render_as_string(False)), master_key)
    try:
        second = AuditLog(other_store)
        second.append(record(2))
        first.append(record(3))
        assert second.verify().ok and [e.seq for e in second.events()] == [1, 2, 3]
    finally:
        other_store.close()


def test_triggers_refuse_update_and_delete(store: ResourceStore) -> None:
    filled_log(store, 2)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        execute(store, "UPDATE audit_events SET agent = 'x' WHERE seq = 1")
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        execute(store, "DELETE FROM audit_events WHERE seq = 2")
    assert AuditLog(store).verify().ok


# -- verification ----------------------------------------------------------------------------


def test_empty_log_verifies(store: ResourceStore) -> None:
    report = AuditLog(store).verify()

    assert report.ok and report.events_checked == 0 and report.findings == []
    assert "INTACT" in report.render()


def test_clean_log_verifies(store: ResourceStore) -> None:
    log = filled_log(store)
    report = log.verify()

    assert report.ok and report.events_checked == EVENTS_IN_LOG and report.findings == []
    assert report.head_seq == EVENTS_IN_LOG
    assert report.head_hash == stored_row(store, EVENTS_IN_LOG)["entry_hash"]


@pytest.mark.parametrize("tamper", TAMPER_CASES, ids=lambda c: c.name)
def test_verify_names_each_tampering(store: ResourceStore, tamper: TamperCase) -> None:
    log = filled_log(store)
    drop_append_only_triggers(store)

    tamper.tamper(store)
    report = log.verify()

    found = {(f.kind, f.seq) for f in report.findings}
    assert found == tamper.expected, report.render()
    assert not report.ok
    rendered = report.render()
    assert "TAMPERED" in rendered
    for kind, seq in tamper.expected:
        assert kind in rendered and (seq is None or f"seq {seq}" in rendered)


def test_appends_refuse_a_tampered_head(store: ResourceStore) -> None:
    """Fail closed: re-sealing an edited head would hide the truncation it covers."""
    log = filled_log(store)
    drop_append_only_triggers(store)
    roll_back_head_after_truncation(store)

    with pytest.raises(AuditIntegrityError, match="head"):
        log.append(record(9))
    execute(store, "DELETE FROM audit_head")
    with pytest.raises(AuditIntegrityError, match="missing"):
        log.append(record(9))
    assert log.verify().events_checked == 4


def test_appends_after_a_deleted_tail_keep_the_gap_visible(store: ResourceStore) -> None:
    log = filled_log(store)
    drop_append_only_triggers(store)
    execute(store, "DELETE FROM audit_events WHERE seq >= 5")

    assert log.append(record(9)) == EVENTS_IN_LOG + 1
    report = log.verify()
    assert {(f.kind, f.seq) for f in report.findings} == {("deleted", 5)}


def test_a_wrecked_log_gives_a_short_report(store: ResourceStore) -> None:
    log = filled_log(store, 30)
    drop_append_only_triggers(store)
    execute(store, "UPDATE audit_events SET action = 'delete'")

    report = log.verify()

    assert report.counts == {"modified": 30}
    assert len(report.findings) == LISTED_PER_KIND
    assert "and 25 more modified findings not listed" in report.render()


def test_rows_swapped_far_apart_across_batches(store: ResourceStore, monkeypatch) -> None:
    monkeypatch.setattr("careloop.audit.log.BATCH", 7)
    log = filled_log(store, 40)
    drop_append_only_triggers(store)
    swap_rows(store, 3, 37)
    execute(store, "DELETE FROM audit_events WHERE seq = 20")

    report = log.verify()

    found = {(f.kind, f.seq) for f in report.findings}
    assert found == {("reordered", 3), ("reordered", 37), ("deleted", 20)}


# A property over generated tampering: any single edit of any column of any row is reported as
# exactly one `modified` finding at that row. SQLite only: each example copies a prepared file.
_COLUMNS = {
    "action": st.sampled_from(["read", "delete", "erasure", "x"]),
    "outcome": st.sampled_from(["0", "4", "8", "12"]),
    "agent": st.text(min_size=1, max_size=20),
    "role": st.sampled_from(["clinician", "auditor", "admin", ""]),
    "purpose": st.none() | st.sampled_from(["TREAT", "HRESCH", "BTG"]),
    "patient_hash": st.none() | st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    "flags": st.sampled_from(["", "no-care-relationship", "break-glass", "bulk"]),
    "recorded": st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    "prev_hash": st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    "entry_hash": st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    "body": st.binary(min_size=1, max_size=64),
}


@pytest.fixture(scope="module")
def prepared_sqlite_log(tmp_path_factory) -> tuple[Path, MasterKey]:
    folder = tmp_path_factory.mktemp("audit-property")
    key = MasterKey.from_bytes(os.urandom(32))
    store = ResourceStore.open(f"sqlite:///{folder / 'base.db'}", key)
    filled_log(store, 8)
    drop_append_only_triggers(store)
    store.close()  # checkpoints the WAL into the file
    return folder / "base.db", key


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seq=st.integers(1, 8), column=st.sampled_from(sorted(_COLUMNS)), data=st.data())
def test_any_single_column_edit_is_found_at_its_row(
    prepared_sqlite_log, tmp_path, seq, column, data
) -> None:
    base, key = prepared_sqlite_log
    copy = tmp_path / f"copy-{os.urandom(4).hex()}.db"
    shutil.copyfile(base, copy)
    store = ResourceStore.open(f"sqlite:///{copy}", key)
    try:
        value = data.draw(_COLUMNS[column])
        assume(value != stored_row(store, seq)[column])
        rewrite(store, seq, **{column: value})

        report = AuditLog(store).verify()

        assert {(f.kind, f.seq) for f in report.findings} == {("modified", seq)}
    finally:
        store.close()
        copy.unlink()


def test_a_body_the_audit_key_cannot_open_is_unreadable(store: ResourceStore) -> None:
    """Hashes intact but the sealing key is not the one the bodies were sealed with (a seal key
    lost or swapped): every event is reported unreadable, and reading yields no content."""
    filled_log(store, 3)
    log = AuditLog(store)
    log._sealer = Sealer(os.urandom(32))  # the chain key stays right; only sealing differs

    report = log.verify()

    assert {(f.kind, f.seq) for f in report.findings} == {("unreadable", s) for s in (1, 2, 3)}
    assert [(e.readable, e.resource) for e in log.events()] == [(False, {})] * 3
