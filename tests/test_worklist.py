"""The worklist without a browser: the sepsis snapshot written from real synthetic patients with
the shipped model, the rows read back through the access layer (ranking, alert states, consent),
care relationships, and the sparkline's SVG."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from careloop.access.consent import opt_out_consent
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Role
from careloop.audit.events import AuditAction
from careloop.audit.log import AuditLog
from careloop.ingest import IngestOptions, Ingestor
from careloop.ingest.validation import structural_errors
from careloop.sepsis.grid import HOUR
from careloop.sepsis.model import SepsisModel
from careloop.sepsis.scoring import RiskScore
from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore, SearchPage, StoredResource
from careloop.synth import write_population
from careloop.worklist.demo import (
    add_deteriorating_patient,
    deteriorating_patient,
    ingest_transaction,
)
from careloop.worklist.rows import (
    AlertState,
    build_row,
    build_rows,
    load_worklist,
    rank,
    task_state,
)
from careloop.worklist.snapshot import (
    SEPSIS_REVIEW_TOKEN,
    SNAPSHOT_TOKEN,
    TREND_HOURS,
    plan_patient,
    refresh_patients,
    review_task_id,
    snapshot_id,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models" / "sepsis"
NURSE = Principal("nurse-w", "user", Role.NURSE, fhir_user="Practitioner/nurse-w")
MONITOR = Principal("local:test", "local", Role.MONITOR)
TREAT = AccessContext(Purpose.TREATMENT, source="test")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
# care relationships recorded by the tests begin well before NOW, whenever the tests run
CARING_SINCE = NOW - timedelta(days=30)


def ingest_resources(store: ResourceStore, resources: list[dict]) -> None:
    ingest_transaction(store, resources, "test")


@pytest.fixture(scope="module")
def ward(tmp_path_factory: pytest.TempPathFactory):
    """Eight synthetic patients and one deteriorating now, in a fresh SQLite store, their
    snapshot refreshed once; the nurse cares for all nine."""
    home = tmp_path_factory.mktemp("worklist")
    write_population(home / "population", patients=8, seed=11)
    store = ResourceStore.open(f"sqlite:///{home / 'store.db'}", MasterKey.from_bytes(b"k" * 32))
    report = Ingestor(store, IngestOptions(workers=1)).ingest_paths([home / "population"])
    assert report.ok, report.rejected[:3]
    septic = deteriorating_patient()
    ingest_resources(store, septic)
    septic_id = next(r["id"] for r in septic if r["resourceType"] == "Patient")
    access = AccessLayer(store, clock=lambda: NOW)
    ids = list(access.all_patient_ids())
    for patient_id in ids:
        access.relationships.assign(NURSE.fhir_user, patient_id, since=CARING_SINCE)
    model = SepsisModel.load(MODEL_DIR)
    first = refresh_patients(access, model, MONITOR, TREAT, ids, now=NOW)
    yield store, access, model, ids, septic_id, first
    store.close()


def test_refresh_writes_one_valid_snapshot_per_patient_and_one_task_per_alert(ward) -> None:
    store, access, model, ids, septic_id, first = ward
    assert first.patients == len(ids) == 9
    assert first.scored + first.no_score == 9
    snapshots = store.search("RiskAssessment", codes=[SNAPSHOT_TOKEN], count=50).resources
    assert sorted(s.body["subject"]["reference"] for s in snapshots) == sorted(
        f"Patient/{i}" for i in ids
    )
    for stored in snapshots:
        assert structural_errors(stored.body) == []
        assert stored.body["id"] == snapshot_id(stored.body["subject"]["reference"][8:])
    septic = store.read("RiskAssessment", snapshot_id(septic_id)).body
    assert model.version in septic["method"]["text"]
    assert len(septic["prediction"]) == TREND_HOURS
    hours = [p["whenPeriod"]["start"] for p in septic["prediction"]]
    assert hours == sorted(hours) and septic["occurrenceDateTime"] == hours[-1]
    assert septic["basis"] and septic["basis"][0]["display"].startswith("Factor: ")
    assert septic["prediction"][-1]["qualitativeRisk"]["text"] == "alert"
    # the deteriorating patient is in alert: exactly one review Task, focused on the snapshot
    assert first.in_alert >= 1 and first.tasks_opened == first.in_alert
    tasks = store.search("Task", patient_id=septic_id, codes=[SEPSIS_REVIEW_TOKEN]).resources
    assert len(tasks) == 1
    task = tasks[0].body
    assert structural_errors(task) == []
    assert (task["status"], task["intent"]) == ("requested", "order")
    assert task["focus"]["reference"] == f"RiskAssessment/{snapshot_id(septic_id)}"
    assert task["for"]["reference"] == f"Patient/{septic_id}"


def test_a_second_refresh_of_the_same_data_writes_nothing_new_and_no_second_task(ward) -> None:
    store, access, model, ids, septic_id, _first = ward
    again = refresh_patients(access, model, MONITOR, TREAT, ids, now=NOW + timedelta(hours=2))
    assert dict(again.written) == {"unchanged": len(ids)}
    assert again.tasks_opened == 0
    assert store.search("Task", codes=[SEPSIS_REVIEW_TOKEN]).total == again.in_alert
    assert len(store.history("RiskAssessment", snapshot_id(septic_id))) == 1


def test_refresh_is_audited_per_patient_written(ward) -> None:
    store, access, _model, ids, *_ = ward
    created = [
        event
        for event in access.audit.events(agent=MONITOR.subject)
        if event.action == AuditAction.CREATE.value
    ]
    assert {event.patient_hash for event in created} == {store.patient_hash(i) for i in ids}


def _risk(states: list[int], probabilities: list[float] | None = None) -> RiskScore:
    start = datetime(2026, 2, 1, tzinfo=UTC)
    probabilities = probabilities or [0.2 if s else 0.01 for s in states]
    return RiskScore(
        "p1",
        "sepsis-test-1",
        start,
        probabilities=probabilities,
        alert_states=states,
        notifications=[0] * len(states),
        factors=["lactate 4.1 mmol/L", "heart rate 121 /min"],
    )


def test_an_episode_opens_one_task_keeps_it_while_open_and_closes_it_when_it_ends() -> None:
    alert = _risk([0, 0, 1, 1])
    planned = plan_patient(alert, [], NOW)
    assert [r["resourceType"] for r in planned] == ["RiskAssessment", "Task"]
    task = planned[1]
    assert task["id"] == review_task_id("p1", alert.start + 2 * HOUR)
    assert structural_errors(task) == [] and structural_errors(planned[0]) == []
    # still in alert an hour later: the open Task (whatever its state) stands for the episode
    later = _risk([0, 0, 1, 1, 1])
    for status in ("requested", "accepted", "on-hold"):
        assert len(plan_patient(later, [{**task, "status": status}], NOW)) == 1
    # the episode ended: unreviewed Task cancelled, a taken-on one completed
    calm = _risk([0, 0, 1, 1, 0])
    cancelled = plan_patient(calm, [task], NOW)[1]
    assert cancelled["status"] == "cancelled" and "ended" in cancelled["statusReason"]["text"]
    accepted = {**task, "status": "accepted", "executionPeriod": {"start": "2026-11-22T11:00:00Z"}}
    completed = plan_patient(calm, [accepted], NOW)[1]
    assert completed["status"] == "completed"
    assert completed["executionPeriod"]["end"] == "2026-11-22T12:00:00Z"
    assert structural_errors(completed) == []
    # a new episode after a closed one gets its own Task
    again = _risk([0, 0, 1, 1, 0, 1])
    reopened = plan_patient(again, [cancelled], NOW)
    assert reopened[1]["id"] == review_task_id("p1", again.start + 5 * HOUR)
    assert reopened[1]["id"] != task["id"]


def test_a_patient_without_enough_data_gets_a_snapshot_saying_why() -> None:
    risk = RiskScore("p2", "sepsis-test-1", datetime.min)
    risk.insufficient = "no vital signs on record"
    (snapshot,) = plan_patient(risk, [], NOW)
    assert "prediction" not in snapshot
    assert "no vital signs on record" in snapshot["note"][0]["text"]
    assert structural_errors(snapshot) == []
    row = build_row("p2", None, snapshot, [], risk_withheld=False, now=NOW)
    assert row.risk is None and row.no_score == "no vital signs on record"


def _task(task_id: str, status: str, **extra: object) -> dict:
    return {
        "resourceType": "Task",
        "id": task_id,
        "status": status,
        "intent": "order",
        "code": {
            "coding": [
                {
                    "system": "https://careloop.dev/fhir/CodeSystem/alert-review",
                    "code": "review-sepsis-risk",
                }
            ]
        },
        "for": {"reference": "Patient/p"},
        "authoredOn": "2026-11-22T10:00:00Z",
        **extra,
    }


def test_alert_states_from_task_status_and_snooze_time() -> None:
    until = {"url": "https://careloop.dev/fhir/StructureDefinition/snoozed-until"}
    assert task_state(_task("a", "requested"), NOW) is AlertState.NEW
    assert task_state(_task("a", "accepted"), NOW) is AlertState.ACKNOWLEDGED
    snoozed = _task("a", "on-hold", extension=[{**until, "valueDateTime": "2026-11-22T13:00:00Z"}])
    assert task_state(snoozed, NOW) is AlertState.SNOOZED
    assert task_state(snoozed, NOW + timedelta(hours=2)) is AlertState.NEW  # the snooze ran out
    assert task_state(_task("a", "cancelled"), NOW) is None


def _snapshot(patient: str, risk: float) -> dict:
    return {
        "resourceType": "RiskAssessment",
        "id": snapshot_id(patient),
        "status": "final",
        "subject": {"reference": f"Patient/{patient}"},
        "occurrenceDateTime": "2026-11-22T11:00:00Z",
        "basis": [{"display": "Factor: lactate 4.1 mmol/L"}],
        "prediction": [
            {"probabilityDecimal": risk / 2, "whenPeriod": {"start": "2026-11-22T10:00:00Z"}},
            {"probabilityDecimal": risk, "whenPeriod": {"start": "2026-11-22T11:00:00Z"}},
        ],
    }


def test_rows_rank_unacknowledged_alerts_first_then_by_risk() -> None:
    def row(patient: str, risk: float | None, tasks: list[dict]):  # noqa: ANN202
        snapshot = _snapshot(patient, risk) if risk is not None else None
        name = {"resourceType": "Patient", "id": patient, "name": [{"text": patient.upper()}]}
        return build_row(patient, name, snapshot, tasks, risk_withheld=False, now=NOW)

    acked_at = "2026-11-22T11:30:00Z"
    rows = rank(
        [
            row("calm", 0.01, []),
            row("high", 0.40, []),
            row("acked", 0.30, [_task("t1", "accepted", executionPeriod={"start": acked_at})]),
            row("newlow", 0.05, [_task("t2", "requested")]),
            row("unscored", None, []),
            row("newhigh", 0.20, [_task("t3", "requested")]),
        ]
    )
    assert [r.patient_id for r in rows] == [
        "newhigh",
        "newlow",
        "high",
        "acked",
        "calm",
        "unscored",
    ]
    acked = rows[3]
    assert acked.state is AlertState.ACKNOWLEDGED
    assert acked.last_acknowledged == datetime(2026, 11, 22, 11, 30, tzinfo=UTC)
    assert acked.trend == [0.15, 0.30] and acked.top_factor == "lactate 4.1 mmol/L"
    assert rows[0].alerts[0].task_id == "t3"


def test_worklist_through_the_access_layer_puts_the_deteriorating_patient_first(ward) -> None:
    store, access, _model, ids, septic_id, _first = ward
    worklist = load_worklist(access, NURSE, TREAT, NOW)
    assert sorted(row.patient_id for row in worklist.rows) == sorted(ids)
    top = worklist.rows[0]
    assert top.patient_id == septic_id and top.state is AlertState.NEW
    assert top.risk is not None and len(top.trend) == TREND_HOURS
    assert top.name and top.name != "-"
    others = [row.risk for row in worklist.rows[1:] if row.risk is not None]
    assert others == sorted(others, reverse=True)
    # one audit event per patient for the whole page, not one per kind of resource
    reads = [
        event
        for event in access.audit.events(agent=NURSE.subject)
        if event.action == AuditAction.SEARCH.value
    ]
    assert sorted(event.patient_hash for event in reads) == sorted(
        store.patient_hash(i) for i in ids
    )


def test_a_patient_whose_consent_withholds_the_risk_shows_withheld(ward) -> None:
    store, access, *_rest = ward
    patient = next(row.patient_id for row in load_worklist(access, NURSE, TREAT, NOW).rows[1:])
    consent = {
        **opt_out_consent(patient, [Purpose.TREATMENT], consent_id="withhold-risk-test", at=NOW),
        "provision": {
            "type": "deny",
            "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "RiskAssessment"}],
        },
    }
    ingest_resources(store, [consent])
    try:
        worklist = load_worklist(access, NURSE, TREAT, NOW)
        row = next(r for r in worklist.rows if r.patient_id == patient)
        assert row.withheld and row.risk is None and row.trend == []
        assert worklist.withheld >= 1
        assert row.name not in ("-", "Name withheld by consent")  # only the risk is withheld
    finally:
        ingest_resources(store, [{**consent, "status": "inactive"}])


def test_patients_of_lists_only_active_relationships(ward) -> None:
    store, access, _model, ids, *_ = ward
    assert access.relationships.patients_of(NURSE.fhir_user, NOW) == sorted(ids)
    ended = NOW - timedelta(days=1)
    access.relationships.assign("Practitioner/other", ids[0], since=CARING_SINCE, until=ended)
    access.relationships.assign("Practitioner/other", ids[1], since=CARING_SINCE)
    assert access.relationships.patients_of("Practitioner/other", NOW) == [ids[1]]
    assert access.relationships.patients_of("Practitioner/nobody", NOW) == []
    # a patient loaded after the ids were first resolved is found too
    newcomer = add_deteriorating_patient(store, ["Practitioner/other"], seed=15, since=CARING_SINCE)
    assert access.relationships.patients_of("Practitioner/other", NOW) == sorted([ids[1], newcomer])
    assert load_worklist(access, NURSE.__class__("x", "user", Role.NURSE), TREAT, NOW).rows == []


def test_build_rows_marks_a_withheld_snapshot_only_when_one_was_read() -> None:
    patient = StoredResource(
        "Patient", 1, NOW, {"resourceType": "Patient", "id": "a", "name": [{"text": "A"}]}
    )
    rows = build_rows(["a", "b"], [patient], fetched_risk={"a"}, now=NOW)
    by_id = {row.patient_id: row for row in rows}
    assert by_id["a"].withheld and by_id["a"].no_score is None
    assert not by_id["b"].withheld and by_id["b"].no_score == "not scored yet"
    assert by_id["b"].name == "Name withheld by consent"
    # a sepsis review Task quotes the risk: its text goes with a withheld snapshot
    task = _task("t", "requested", description="Sepsis risk 9.0%, an alert since ...")
    withheld = build_row("a", None, None, [task], risk_withheld=True, now=NOW)
    shown = build_row("a", None, None, [task], risk_withheld=False, now=NOW)
    assert withheld.alerts[0].text == "" and "9.0%" in shown.alerts[0].text


def test_sparkline_is_an_escaped_named_image_that_breaks_at_gaps() -> None:
    from careloop.web.ui.svg import sparkline

    markup = sparkline([0.1, None, 0.4, 0.3], label='Risk of <script>"x"</script>')
    svg = ET.fromstring(str(markup))
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.get("role") == "img"
    title = svg.find(f"{ns}title").text
    assert '<script>"x"</script>' in title  # the text survived as text, parsed back
    assert "<script>" not in str(markup)
    assert "10.0 percent" in title and "40.0 percent" in title and "1 hour without a value" in title
    assert len(svg.findall(f"{ns}polyline")) == 1  # a lone point before the gap draws no line
    assert len(svg.findall(f"{ns}circle")) == 1
    coords = re.findall(r"-?\d+(?:\.\d+)?", svg.find(f"{ns}polyline").get("points"))
    assert all(0 <= float(c) <= 120 for c in coords)
    empty = ET.fromstring(str(sparkline([], label="Nothing")))
    assert "no values" in empty.find(f"{ns}title").text


def test_acknowledge_and_snooze_rewrite_the_task_as_the_monitoring_worker_reads_it() -> None:
    from careloop.monitoring.worker import ACKNOWLEDGING, _owner
    from careloop.web.ui.framework import UiCaller
    from careloop.web.ui.worklist_pages import acknowledged_task, snoozed_task
    from careloop.worklist.rows import acknowledged_at
    from careloop.worklist.snapshot import review_task

    risk = _risk([0, 1])
    stored = {
        **review_task(risk, risk.start + HOUR, NOW - timedelta(hours=1)),
        "meta": {"versionId": "3", "lastUpdated": "2026-11-22T11:00:00Z"},
    }
    caller = UiCaller(NURSE, TREAT, csrf="x", lang="en")
    acked = acknowledged_task(stored, caller, NOW)
    assert structural_errors(acked) == [] and "meta" not in acked
    assert acked["status"] in ACKNOWLEDGING and _owner(acked) == NURSE.subject
    assert acked["owner"]["identifier"]["value"] == NURSE.fhir_user
    assert acknowledged_at(acked) == NOW and task_state(acked, NOW) is AlertState.ACKNOWLEDGED
    assert acked["note"][-1]["authorString"] == NURSE.subject
    snoozed = snoozed_task(acked, caller, NOW, 4)
    again = snoozed_task(snoozed, caller, NOW + timedelta(hours=1), 1)
    assert structural_errors(again) == []
    assert task_state(snoozed, NOW + timedelta(hours=3)) is AlertState.SNOOZED
    assert task_state(snoozed, NOW + timedelta(hours=4)) is AlertState.NEW
    assert len(again["extension"]) == 1 and len(again["note"]) == 3  # one snooze time, kept notes


def test_refresh_command_scores_the_store_and_opens_the_alert(store, cli_env) -> None:
    from click.testing import CliRunner

    from careloop.worklist.cli import worklist_group

    ingest_resources(store, deteriorating_patient())
    result = CliRunner().invoke(
        worklist_group, ["refresh", "--model", str(MODEL_DIR)], env=cli_env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "1 patients: 1 scored" in result.output and "1 review Tasks opened" in result.output
    assert store.search("RiskAssessment", codes=[SNAPSHOT_TOKEN]).total == 1
    assert store.search("Task", codes=[SEPSIS_REVIEW_TOKEN]).total == 1


def test_a_page_of_patients_is_judged_as_each_patient_alone(ward) -> None:
    """The access layer reads the Consents and care relationships of a page of patients in a
    few queries: what it releases, withholds and audits must be what reading each patient
    alone gives, consent denials and missing care relationships included."""
    store, access, _model, ids, *_ = ward
    denied, restricted, unrelated = ids[1], ids[2], ids[3]
    consents = [
        opt_out_consent(denied, [Purpose.TREATMENT], consent_id="batch-optout", at=NOW),
        {
            **opt_out_consent(restricted, [Purpose.TREATMENT], consent_id="batch-class", at=NOW),
            "provision": {
                "type": "deny",
                "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Condition"}],
            },
        },
    ]
    ingest_resources(store, consents)
    nurse = Principal("nurse-b", "user", Role.NURSE, fhir_user="Practitioner/nurse-b")
    for patient_id in ids:
        if patient_id != unrelated:
            access.relationships.assign(nurse.fhir_user, patient_id, since=CARING_SINCE)
    types = ("Condition", "Encounter")
    try:
        started = datetime.now(UTC)
        page, withheld = access.search(
            nurse,
            TREAT,
            "Condition",
            lambda _patient: SearchPage(0, store.compartments(ids, types)),
            patient_id=None,
            query_text="batch",
        )
        batched = {(r.resource_type, r.body["id"]) for r in page.resources}
        batch_events = list(AuditLog(store).events(since=started))
        alone: set[tuple[str, str]] = set()
        alone_withheld = 0
        for patient_id in ids:
            release = access.patient_compartment(nurse, TREAT, patient_id, types)
            alone |= {(r.resource_type, r.body["id"]) for r in release.resources}
            alone_withheld += release.withheld
        assert batched == alone and withheld == alone_withheld > 0
        assert not any(r.body["subject"]["reference"].endswith(denied) for r in page.resources)
        kinds = {r.resource_type for r in page.resources if restricted in str(r.body)}
        assert kinds == {"Encounter"}
        flags = {e.patient_hash: e.flags for e in batch_events if e.patient_hash}
        assert "no-care-relationship" in flags[store.patient_hash(unrelated)]
        assert "no-care-relationship" not in flags[store.patient_hash(ids[0])]
        assert "consent-denied" in flags[store.patient_hash(denied)]
    finally:
        ingest_resources(store, [{**consent, "status": "inactive"} for consent in consents])
