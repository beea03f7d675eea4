"""The card ledger on both backends: what a CDS call leaves on record, its FHIR Provenance,
and that a hookInstance is answered once, also under concurrent calls."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from careloop.access.errors import AccessDenied
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Role
from careloop.audit.log import AuditLog
from careloop.cds.ledger import (
    CardLedger,
    DuplicateHookInstance,
    HookCall,
    IssuedCard,
    LedgerError,
)
from careloop.store.repository import ResourceStore
from careloop.store.schema import cds_cards, cds_hook_calls, resources

PATIENT = "cds-ledger-patient-1"
OTHER_PATIENT = "cds-ledger-patient-2"
ISSUER = "https://ehr.example.org"
SERVICE = "careloop-patient-view"
USER = "Practitioner/dr-okafor"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
MODEL = "sepsis-2026.1"
REASONS = ("not-septic", "already-treated", "comfort-care")


# -- helpers shared with test_cds_feedback and test_cds_overrides --------------------------------


class Clock:
    """A settable clock for the access layer: card issue and feedback times under test control."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def ledger_on(store: ResourceStore, clock: Callable[[], datetime]) -> CardLedger:
    return CardLedger(store, AccessLayer(store, clock=clock))


def ehr_principal(user: str | None = USER) -> Principal:
    return Principal(subject=f"cds:{ISSUER}", kind="client", role=Role.EHR, fhir_user=user)


def treatment(hook_instance: str = "") -> AccessContext:
    return AccessContext(Purpose.TREATMENT, request_id=hook_instance, source="10.0.0.7")


def make_call(
    hook_instance: str = "hook-1",
    *,
    patient_id: str | None = PATIENT,
    service_id: str = SERVICE,
    issuer: str = ISSUER,
    unit: str | None = "ICU-3",
) -> HookCall:
    return HookCall(
        hook_instance=hook_instance,
        service_id=service_id,
        issuer=issuer,
        patient_id=patient_id,
        received_at=T0,
        unit=unit,
    )


def risk_assessment(record_id: str, patient_id: str = PATIENT) -> dict:
    return {
        "resourceType": "RiskAssessment",
        "id": record_id,
        "status": "final",
        "subject": {"reference": f"Patient/{patient_id}"},
        "occurrenceDateTime": "2026-03-01T08:00:00Z",
        "prediction": [{"outcome": {"text": "sepsis"}, "probabilityDecimal": 0.37}],
    }


def risk_card(
    *,
    key: str = "playbook:sepsis",
    model_version: str | None = MODEL,
    suggestions: int = 2,
    reasons: tuple[str, ...] = REASONS,
    patient_id: str = PATIENT,
    used: tuple[str, ...] = ("Observation/hr-1", "Observation/lactate-1"),
) -> IssuedCard:
    """A card about a risk, with its RiskAssessment and fresh uuids."""
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": "Sepsis risk 37%",
        "indicator": "warning",
        "source": {"label": "careloop"},
        "suggestions": [
            {"uuid": str(uuid.uuid4()), "label": f"action {n}"} for n in range(suggestions)
        ],
        "overrideReasons": [
            {"system": "https://careloop.dev/override", "code": c} for c in reasons
        ],
    }
    return IssuedCard(
        card=card,
        key=key,
        model_version=model_version,
        playbook="sepsis-bundle@3",
        record=risk_assessment(f"ra-{uuid.uuid4()}", patient_id),
        used=used,
    )


def notice() -> IssuedCard:
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": "careloop could not read the lactate",
        "indicator": "info",
        "source": {"label": "careloop"},
    }
    return IssuedCard(
        card=card, key="notice", model_version=None, playbook=None, record=None, used=()
    )


def count(store: ResourceStore, table) -> int:  # type: ignore[no-untyped-def]
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def audit_actions(store: ResourceStore) -> list[str]:
    return [event.action for event in AuditLog(store).events()]


# -- recording -------------------------------------------------------------------------------------


def test_a_call_its_cards_and_records_round_trip(store: ResourceStore) -> None:
    ledger = ledger_on(store, Clock())
    risk, info = risk_card(), notice()

    ledger.record(make_call(), [risk, info], ehr_principal(), treatment("hook-1"))

    assert ledger.seen("hook-1") and not ledger.seen("hook-2")
    kept = ledger.card(risk.card["uuid"])
    assert kept is not None
    assert (kept.service_id, kept.key, kept.indicator) == (SERVICE, "playbook:sepsis", "warning")
    assert (kept.model_version, kept.playbook, kept.unit) == (MODEL, "sepsis-bundle@3", "ICU-3")
    assert kept.suggestion_ids == tuple(s["uuid"] for s in risk.card["suggestions"])
    assert kept.override_reasons == REASONS and kept.created_at == T0
    plain = ledger.card(info.card["uuid"])
    assert plain is not None and plain.suggestion_ids == () and plain.model_version is None
    stored = store.read("RiskAssessment", risk.record["id"])  # type: ignore[index]
    assert stored is not None and stored.body["prediction"] == risk.record["prediction"]  # type: ignore[index]
    assert ledger.card(str(uuid.uuid4())) is None


def test_the_provenance_names_model_ehr_user_and_the_data_used(store: ResourceStore) -> None:
    ledger = ledger_on(store, Clock())
    risk = risk_card()
    ledger.record(make_call(), [risk], ehr_principal(), treatment())

    page = store.search("Provenance")
    assert page.total == 1
    provenance = page.resources[0].body
    record_ref = f"RiskAssessment/{risk.record['id']}"  # type: ignore[index]
    assert provenance["target"] == [{"reference": record_ref}]
    assert provenance["recorded"].startswith("2026-03-01T08:00:00")
    assert provenance["reason"][0]["coding"][0]["code"] == "TREAT"
    author, ehr = provenance["agent"]
    assert author["type"]["coding"][0]["code"] == "author"
    assert author["who"]["identifier"]["value"] == MODEL and MODEL in author["who"]["display"]
    assert ehr["who"]["identifier"]["value"] == ISSUER
    assert ehr["onBehalfOf"] == {"reference": USER}
    assert [e["what"]["reference"] for e in provenance["entity"]] == list(risk.used)
    assert {e["role"] for e in provenance["entity"]} == {"source"}


def test_without_a_user_or_model_the_provenance_names_careloop_and_the_ehr(
    store: ResourceStore,
) -> None:
    ledger = ledger_on(store, Clock())
    ledger.record(make_call(), [risk_card(model_version=None)], ehr_principal(None), treatment())
    author, ehr = store.search("Provenance").resources[0].body["agent"]
    assert author["who"]["identifier"]["value"] == "careloop"
    assert "onBehalfOf" not in ehr


def test_the_ledger_keeps_the_patient_only_as_a_hash(store: ResourceStore) -> None:
    ledger = ledger_on(store, Clock())
    ledger.record(make_call(), [risk_card(), notice()], ehr_principal(), treatment())
    with store.engine.connect() as connection:
        calls = connection.execute(select(cds_hook_calls)).all()
        cards = connection.execute(select(cds_cards)).all()
    expected = store.patient_hash(PATIENT)
    assert [row.patient_hash for row in calls] == [expected]
    assert {row.patient_hash for row in cards} == {expected}
    for row in [*calls, *cards]:
        assert PATIENT not in repr(tuple(row))


def test_one_audit_event_names_the_patient_and_the_records(store: ResourceStore) -> None:
    ledger = ledger_on(store, Clock())
    risk = risk_card()
    ledger.record(make_call(), [risk, notice()], ehr_principal(), treatment())
    events = list(AuditLog(store).events(patient_id=PATIENT))
    assert [e.action for e in events] == ["create"]
    entities = [e["what"]["reference"] for e in events[0].resource["entity"]]
    assert entities[0] == f"Patient/{PATIENT}"
    assert f"RiskAssessment/{risk.record['id']}" in entities  # type: ignore[index]
    assert any(ref.startswith("Provenance/") for ref in entities)


def test_recent_lists_one_patients_cards_since_a_time(store: ResourceStore) -> None:
    clock = Clock()
    ledger = ledger_on(store, clock)
    first = risk_card()
    ledger.record(make_call("hook-1"), [first], ehr_principal(), treatment())
    clock.now = T0 + timedelta(hours=3)
    second = risk_card(key="playbook:aki")
    ledger.record(make_call("hook-2"), [second], ehr_principal(), treatment())
    other = risk_card(patient_id=OTHER_PATIENT)
    ledger.record(
        make_call("hook-3", patient_id=OTHER_PATIENT), [other], ehr_principal(), treatment()
    )

    assert [c.card_uuid for c in ledger.recent(PATIENT, T0)] == [
        first.card["uuid"],
        second.card["uuid"],
    ]
    assert [c.key for c in ledger.recent(PATIENT, T0 + timedelta(hours=1))] == ["playbook:aki"]
    assert [c.card_uuid for c in ledger.recent(OTHER_PATIENT, T0)] == [other.card["uuid"]]


def test_a_call_with_no_cards_is_still_on_record(store: ResourceStore) -> None:
    ledger = ledger_on(store, Clock())
    ledger.record(make_call(), [], ehr_principal(), treatment())
    assert ledger.seen("hook-1") and count(store, cds_cards) == 0


# -- a hookInstance is answered once ---------------------------------------------------------------


def test_a_duplicate_hook_instance_writes_nothing(store: ResourceStore) -> None:
    ledger = ledger_on(store, Clock())
    ledger.record(make_call(), [risk_card()], ehr_principal(), treatment())
    before = (count(store, cds_cards), count(store, resources), len(audit_actions(store)))
    again = risk_card()

    with pytest.raises(DuplicateHookInstance):
        ledger.record(make_call(), [again, notice()], ehr_principal(), treatment())

    after = (count(store, cds_cards), count(store, resources), len(audit_actions(store)))
    assert after == before
    assert ledger.card(again.card["uuid"]) is None
    assert store.read("RiskAssessment", again.record["id"]) is None  # type: ignore[index]


def race(ledger: CardLedger, hook: str, attempts: list[list[IssuedCard]]) -> list[str]:
    """Answer one hookInstance from one thread per attempt, released together."""
    barrier = threading.Barrier(len(attempts))
    outcomes: list[str] = []

    def answer(cards: list[IssuedCard]) -> None:
        barrier.wait()
        try:
            ledger.record(make_call(hook), cards, ehr_principal(), treatment())
            outcomes.append("recorded")
        except DuplicateHookInstance:
            outcomes.append("duplicate")

    threads = [threading.Thread(target=answer, args=(cards,)) for cards in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(outcomes)


def test_concurrent_answers_to_one_hook_instance_yield_exactly_one(store: ResourceStore) -> None:
    ledger = ledger_on(store, Clock())
    for round_ in range(3):
        attempts = [[risk_card(), notice()], [risk_card(), notice()]]
        assert race(ledger, f"race-{round_}", attempts) == ["duplicate", "recorded"]
        kept = [cards for cards in attempts if ledger.card(cards[0].card["uuid"]) is not None]
        assert len(kept) == 1
        lost = next(cards for cards in attempts if cards is not kept[0])
        assert all(ledger.card(issued.card["uuid"]) is None for issued in lost)
        assert store.read("RiskAssessment", lost[0].record["id"]) is None  # type: ignore[index]
    assert count(store, cds_hook_calls) == 3 and count(store, cds_cards) == 6
    assert store.search("Provenance").total == 3


# -- bad input -------------------------------------------------------------------------------------


def _without_status(issued: IssuedCard) -> IssuedCard:
    del issued.record["status"]  # type: ignore[union-attr]
    return issued


def _other_patient(issued: IssuedCard) -> IssuedCard:
    issued.record["subject"] = {"reference": f"Patient/{OTHER_PATIENT}"}  # type: ignore[index]
    return issued


def _no_uuid(issued: IssuedCard) -> IssuedCard:
    del issued.card["uuid"]
    return issued


def _loud(issued: IssuedCard) -> IssuedCard:
    issued.card["indicator"] = "urgent"
    return issued


def _suggestion_without_uuid(issued: IssuedCard) -> IssuedCard:
    del issued.card["suggestions"][1]["uuid"]
    return issued


def _bad_reference(issued: IssuedCard) -> IssuedCard:
    issued.used = ("Observation/hr-1", "not a reference")
    return issued


@pytest.mark.parametrize(
    ("spoil", "where"),
    [
        (_without_status, "cards[1].record is not valid FHIR R4: RiskAssessment.status"),
        (_other_patient, "cards[1].record is not about the patient of this hook call"),
        (_no_uuid, "cards[1].uuid must be a UUID"),
        (_loud, "cards[1].indicator must be one of"),
        (_suggestion_without_uuid, "cards[1].suggestions[1].uuid must be a UUID"),
        (_bad_reference, "cards[1].used[1] must be a relative reference"),
    ],
)
def test_a_bad_card_is_refused_by_place_and_nothing_is_written(
    store: ResourceStore, spoil: Callable[[IssuedCard], IssuedCard], where: str
) -> None:
    ledger = ledger_on(store, Clock())
    with pytest.raises(LedgerError) as refused:
        ledger.record(make_call(), [risk_card(), spoil(risk_card())], ehr_principal(), treatment())
    assert where in str(refused.value)
    assert PATIENT not in str(refused.value)
    assert not ledger.seen("hook-1")
    assert count(store, cds_cards) == 0 and count(store, resources) == 0
    assert audit_actions(store) == []


def test_a_card_uuid_is_recorded_once(store: ResourceStore) -> None:
    ledger = ledger_on(store, Clock())
    first = risk_card()
    ledger.record(make_call("hook-1"), [first], ehr_principal(), treatment())
    reused = risk_card()
    reused.card["uuid"] = first.card["uuid"]
    with pytest.raises(LedgerError, match="already recorded"):
        ledger.record(make_call("hook-2"), [reused], ehr_principal(), treatment())
    twice = risk_card()
    with pytest.raises(LedgerError, match="repeats an earlier card"):
        ledger.record(make_call("hook-3"), [twice, twice], ehr_principal(), treatment())
    assert not ledger.seen("hook-2") and not ledger.seen("hook-3")
    assert count(store, cds_cards) == 1


def test_a_role_without_patient_write_records_nothing(store: ResourceStore) -> None:
    ledger = ledger_on(store, Clock())
    auditor = Principal("aud", "user", Role.AUDITOR)
    with pytest.raises(AccessDenied, match="patient-write"):
        ledger.record(make_call(), [risk_card()], auditor, AccessContext(Purpose.OPERATIONS))
    assert not ledger.seen("hook-1") and count(store, resources) == 0
    events = list(AuditLog(store).events())
    assert [(e.action, e.outcome) for e in events] == [("create", "4")]
