"""CDS Hooks feedback on both backends: checked against its card, all-or-nothing, safe to repeat,
comments sealed, and every refusal leaves nothing stored."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import orjson
import pytest
from sqlalchemy import select

from careloop.access.errors import AccessDenied
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Role
from careloop.audit.log import AuditLog
from careloop.cds.feedback import (
    FeedbackBook,
    FeedbackError,
    FeedbackRequest,
    FeedbackResult,
    parse_feedback,
)
from careloop.cds.ledger import CardLedger, IssuedCard
from careloop.store.repository import ResourceStore
from careloop.store.schema import cds_feedback
from test_cds_ledger import (
    ISSUER,
    SERVICE,
    T0,
    Clock,
    count,
    ehr_principal,
    make_call,
    risk_card,
    treatment,
)

COMMENT = "Patient on palliative pathway, discussed with Dr. Vance"
ACTED = T0 + timedelta(minutes=5)


class Fixture:
    """A ledger with two cards issued at T0 by SERVICE to ISSUER, and a feedback book."""

    def __init__(self, store: ResourceStore) -> None:
        self.store = store
        self.clock = Clock()
        access = AccessLayer(store, clock=self.clock)
        self.ledger = CardLedger(store, access)
        self.book = FeedbackBook(store, access)
        self.first, self.second = risk_card(), risk_card(key="playbook:aki")
        self.ledger.record(make_call(), [self.first, self.second], ehr_principal(), treatment())
        self.clock.now = T0 + timedelta(minutes=10)

    def submit(self, *items: dict, service: str = SERVICE, issuer: str = ISSUER) -> FeedbackResult:
        request = parse_feedback({"feedback": list(items)})
        return self.book.submit(service, issuer, request, ehr_principal(), treatment())


@pytest.fixture
def fx(store: ResourceStore) -> Fixture:
    return Fixture(store)


def accepted(issued: IssuedCard, *, suggestion: int = 0, at: str = "2026-03-01T08:05:00Z") -> dict:
    return {
        "card": issued.card["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": issued.card["suggestions"][suggestion]["uuid"]}],
        "outcomeTimestamp": at,
    }


def overridden(issued: IssuedCard, *, code: str = "comfort-care", comment: str = COMMENT) -> dict:
    return {
        "card": issued.card["uuid"],
        "outcome": "overridden",
        "overrideReason": {
            "reason": {"code": code, "system": "https://careloop.dev/override", "display": "x"},
            "userComment": comment,
        },
        "outcomeTimestamp": "2026-03-01T08:06:30.250+01:00",  # 07:06:30 UTC is before T0
    }


def overridden_at(issued: IssuedCard, at: str = "2026-03-01T08:06:30.250Z", **kw: str) -> dict:
    return {**overridden(issued, **kw), "outcomeTimestamp": at}


def feedback_rows(store: ResourceStore) -> list:
    with store.engine.connect() as connection:
        return connection.execute(select(cds_feedback).order_by(cds_feedback.c.card_uuid)).all()


# -- accepted feedback -----------------------------------------------------------------------------


def test_accepted_and_overridden_feedback_is_stored_against_its_card(fx: Fixture) -> None:
    result = fx.submit(accepted(fx.first), overridden_at(fx.second))

    assert result == FeedbackResult(recorded=2, repeated=0)
    rows = {row.card_uuid: row for row in feedback_rows(fx.store)}
    took = rows[fx.first.card["uuid"]]
    assert took.outcome == "accepted" and took.override_reason is None
    assert orjson.loads(took.accepted_suggestions) == [fx.first.card["suggestions"][0]["uuid"]]
    assert took.outcome_timestamp == ACTED and took.issuer == ISSUER
    refused = rows[fx.second.card["uuid"]]
    assert refused.outcome == "overridden" and refused.override_reason == "comfort-care"
    assert COMMENT.encode() not in refused.override_comment  # sealed
    reader = Principal("dr-quality", "user", Role.CLINICIAN, fhir_user="Practitioner/q1")
    assert (
        fx.book.comment(fx.second.card["uuid"], refused.outcome_timestamp, reader, treatment())
        == COMMENT
    )
    auditor = Principal("auditor-1", "user", Role.AUDITOR)
    with pytest.raises(AccessDenied):
        fx.book.comment(
            fx.second.card["uuid"],
            refused.outcome_timestamp,
            auditor,
            AccessContext(Purpose.OPERATIONS),
        )


def test_each_submission_is_audited_without_the_comment(fx: Fixture) -> None:
    fx.submit(overridden_at(fx.second))
    event = [e for e in AuditLog(fx.store).events() if e.action == "feedback"]
    assert len(event) == 1 and event[0].outcome == "0"
    text = orjson.dumps(event[0].resource).decode()
    assert "Vance" not in text and "palliative" not in text
    assert f"RiskAssessment/{fx.second.record['id']}" in text  # type: ignore[index]


def test_the_same_feedback_again_is_accepted_and_stored_once(fx: Fixture) -> None:
    items = (accepted(fx.first), overridden_at(fx.second))
    fx.submit(*items)
    stored = feedback_rows(fx.store)

    again = fx.submit(*items)

    assert again == FeedbackResult(recorded=0, repeated=2)
    assert feedback_rows(fx.store) == stored
    within = fx.submit(
        accepted(fx.first, at="2026-03-01T08:07:00Z"), accepted(fx.first, at="2026-03-01T08:07:00Z")
    )
    assert within == FeedbackResult(recorded=1, repeated=1)


def test_a_later_outcome_of_the_same_card_is_a_new_record(fx: Fixture) -> None:
    fx.submit(overridden_at(fx.first))
    fx.submit(accepted(fx.first, at="2026-03-01T08:09:00Z"))
    rows = sorted(feedback_rows(fx.store), key=lambda row: row.outcome_timestamp)
    assert [row.outcome for row in rows] == ["overridden", "accepted"]


def test_concurrent_identical_submissions_store_one_row(fx: Fixture) -> None:
    barrier = threading.Barrier(2)
    results: list[FeedbackResult] = []

    def send() -> None:
        barrier.wait()
        results.append(fx.submit(overridden_at(fx.first)))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results, key=lambda r: r.recorded) == [
        FeedbackResult(recorded=0, repeated=1),
        FeedbackResult(recorded=1, repeated=0),
    ]
    assert count(fx.store, cds_feedback) == 1


# -- refusals store nothing ------------------------------------------------------------------------


def _unknown_card(fx: Fixture) -> dict:
    return {**accepted(fx.first), "card": "00000000-0000-4000-8000-000000000000"}


def _foreign_suggestion(fx: Fixture) -> dict:
    item = accepted(fx.first)
    item["acceptedSuggestions"] = [{"id": fx.second.card["suggestions"][0]["uuid"]}]
    return item


def _accepted_with_reason(fx: Fixture) -> dict:
    return {**accepted(fx.first), "overrideReason": overridden(fx.first)["overrideReason"]}


def _overridden_with_suggestions(fx: Fixture) -> dict:
    return {
        **overridden_at(fx.first),
        "acceptedSuggestions": accepted(fx.first)["acceptedSuggestions"],
    }


def _reason_not_offered(fx: Fixture) -> dict:
    return overridden_at(fx.first, code="alert-fatigue")


def _in_the_future(fx: Fixture) -> dict:
    return accepted(fx.first, at="2026-03-01T09:00:00Z")


def _before_the_card(fx: Fixture) -> dict:
    return overridden(fx.first)  # 07:06:30 UTC, the card was issued at 08:00 UTC


REFUSALS: list[tuple[Callable[[Fixture], dict], int, str]] = [
    (_unknown_card, 404, "no card 00000000-0000-4000-8000-000000000000"),
    (_foreign_suggestion, 422, "are not suggestions of the card"),
    (_accepted_with_reason, 422, "an accepted card carries no overrideReason"),
    (_overridden_with_suggestions, 422, "an overridden card has no accepted suggestions"),
    (_reason_not_offered, 422, "override reason 'alert-fatigue' was not offered"),
    (_in_the_future, 422, "outcomeTimestamp is in the future"),
    (_before_the_card, 422, "outcomeTimestamp is before the card was issued"),
]


@pytest.mark.parametrize(("bad", "status", "message"), REFUSALS)
def test_a_refused_item_refuses_the_whole_request(
    fx: Fixture, bad: Callable[[Fixture], dict], status: int, message: str
) -> None:
    with pytest.raises(FeedbackError) as refused:
        fx.submit(accepted(fx.second), bad(fx))
    assert refused.value.status == status
    assert refused.value.message.startswith("feedback[1]: ") and message in refused.value.message
    assert feedback_rows(fx.store) == []
    assert not [e for e in AuditLog(fx.store).events() if e.action == "feedback"]


def test_another_services_or_another_ehrs_card_is_refused(fx: Fixture) -> None:
    with pytest.raises(FeedbackError) as other_service:
        fx.submit(accepted(fx.first), service="careloop-order-sign")
    assert other_service.value.status == 422 and "another service" in other_service.value.message
    with pytest.raises(FeedbackError) as other_ehr:
        fx.submit(accepted(fx.first), issuer="https://other-ehr.example.org")
    assert other_ehr.value.status == 404
    assert feedback_rows(fx.store) == []


def test_a_different_outcome_for_the_same_card_and_time_is_a_conflict(fx: Fixture) -> None:
    fx.submit(accepted(fx.first, at="2026-03-01T08:06:30.250Z"))
    stored = feedback_rows(fx.store)
    with pytest.raises(FeedbackError) as conflict:
        fx.submit(accepted(fx.second), overridden_at(fx.first))
    assert conflict.value.status == 409 and conflict.value.message.startswith("feedback[1]")
    assert feedback_rows(fx.store) == stored
    with pytest.raises(FeedbackError) as within:
        fx.submit(
            accepted(fx.second, at="2026-03-01T08:08:00Z"),
            overridden_at(fx.second, at="2026-03-01T08:08:00Z"),
        )
    assert within.value.status == 409 and feedback_rows(fx.store) == stored


def test_a_role_without_patient_write_cannot_give_feedback(fx: Fixture) -> None:
    request = parse_feedback({"feedback": [accepted(fx.first)]})
    scientist = Principal("ds", "user", Role.DATA_SCIENTIST)
    with pytest.raises(AccessDenied):
        fx.book.submit(SERVICE, ISSUER, request, scientist, AccessContext(Purpose.RESEARCH))
    assert feedback_rows(fx.store) == []


# -- the request body ------------------------------------------------------------------------------

CARD = "3f2b8c1e-8d0a-4b7e-9a51-5c6d7e8f9a01"
GOOD = {"card": CARD, "outcome": "accepted", "outcomeTimestamp": "2026-03-01T08:05:00Z"}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"{not json", "Invalid JSON"),
        ({"feedback": []}, "feedback: List should have at least 1 item"),
        ({"feedback": [{**GOOD, "card": 17}]}, "feedback[0].card: Input should be a valid string"),
        ({"feedback": [{**GOOD, "outcome": "ignored"}]}, "feedback[0].outcome"),
        ({"feedback": [{**GOOD, "outcomeTimestamp": "2026-03-01T08:05:00"}]}, "FHIR instant"),
        ({"feedback": [{**GOOD, "outcomeTimestamp": 1772352300}]}, "FHIR instant"),
        ({"feedback": [{**GOOD, "acceptedSuggestions": "all"}]}, "acceptedSuggestions"),
        (
            {"feedback": [{**GOOD, "overrideReason": {"reason": {"system": "s"}}}]},
            "feedback[0].overrideReason.reason.code: Field required",
        ),
        ({"feedback": [{**GOOD, "outcomeTimestamp": "2026-02-30T08:05:00Z"}]}, "valid date"),
    ],
)
def test_a_malformed_body_is_a_400_naming_the_field(body: bytes | dict, where: str) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(FeedbackError) as refused:
        parse_feedback(raw)
    assert refused.value.status == 400 and where in refused.value.message


def test_extensions_are_ignored_and_times_read_as_utc() -> None:
    body = {
        "feedback": [
            {
                **GOOD,
                "outcomeTimestamp": "2026-03-01T09:05:00.123456789+01:00",
                "com.example.extension": {"anything": 1},
            }
        ],
        "extension": {"x": 1},
    }
    request = parse_feedback(orjson.dumps(body))
    assert isinstance(request, FeedbackRequest)
    moment = request.feedback[0].outcome_timestamp
    assert moment == T0 + timedelta(minutes=5, microseconds=123456)
    assert moment.utcoffset() == timedelta(0)
