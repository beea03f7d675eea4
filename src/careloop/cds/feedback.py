"""CDS Hooks 2.0 feedback: what the clinician did with a card, tied to the card and its model.

The override is data: it is what tells the AI team a model or a playbook is wrong for a ward. So
feedback is checked against the card it names (the card exists, was issued by this service to
this EHR, the suggestions accepted are on it, the override reason is one it offered, the time is
after the card was issued and not in the future) and a submission is all-or-nothing: one bad
item refuses the whole request and nothing is stored.

Status codes of `FeedbackError`:
- 400: the body is not a feedback request (not JSON, a wrong type, a missing field);
- 404: a card that careloop did not issue to this EHR (a card issued to another EHR is reported
  the same way, so one EHR cannot learn of another's cards);
- 409: a different feedback is already recorded for the same card and outcomeTimestamp (or the
  request itself says two different things about them);
- 422: feedback that contradicts its card: another service's card, a suggestion not on the
  card, accepted with an override reason, overridden with accepted suggestions, a reason code
  the card did not offer, a time in the future or before the card was issued.

Sending the same item again is safe: it is counted as repeated and not stored twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal
from careloop.access.roles import Permission
from careloop.audit.events import AuditAction, fhir_instant
from careloop.cds.ledger import require_patient_write
from careloop.store.crypto import Sealer
from careloop.store.repository import ResourceStore
from careloop.store.schema import cds_cards, cds_feedback, cds_hook_calls

MAX_ITEMS = 100
MAX_COMMENT = 2000
# Clocks of the EHR and careloop differ a little; a time this close to "now" or to the card's
# issue is taken as written rather than refused.
CLOCK_SKEW = timedelta(seconds=60)
_INSTANT = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


class FeedbackError(Exception):
    """A refused feedback request: an HTTP status and a message safe to return (no PHI)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _fhir_instant(value: object) -> datetime:
    """A FHIR instant: full date and time to the second, with a zone; returned in UTC.

    Stricter than pydantic's datetime, which would also take a number or a zone-less time.
    """
    if not isinstance(value, str):
        raise ValueError("must be a FHIR instant string")
    match = _INSTANT.match(value)
    if match is None:
        raise ValueError("must be a FHIR instant, e.g. 2026-01-01T10:00:00Z")
    base, fraction, zone = match.groups()
    fraction = (fraction or "")[:7]  # datetime keeps microseconds
    try:
        moment = datetime.fromisoformat(f"{base}{fraction}{zone.replace('Z', '+00:00')}")
    except ValueError:
        raise ValueError("is not a valid date and time") from None
    return moment.astimezone(UTC)


FhirInstant = Annotated[datetime, BeforeValidator(_fhir_instant)]


class _Model(BaseModel):
    # The spec lets clients add extensions, so unknown fields are ignored; known ones are typed.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class ReasonCoding(_Model):
    code: str = Field(min_length=1, max_length=64)
    system: str | None = Field(default=None, max_length=255)
    display: str | None = Field(default=None, max_length=255)


class OverrideReason(_Model):
    reason: ReasonCoding | None = None
    user_comment: str | None = Field(default=None, alias="userComment", max_length=MAX_COMMENT)


class AcceptedSuggestion(_Model):
    id: str = Field(min_length=1, max_length=64)


class FeedbackItem(_Model):
    card: str = Field(min_length=1, max_length=64)
    outcome: Literal["accepted", "overridden"]
    accepted_suggestions: list[AcceptedSuggestion] = Field(
        default_factory=list, alias="acceptedSuggestions", max_length=100
    )
    override_reason: OverrideReason | None = Field(default=None, alias="overrideReason")
    outcome_timestamp: FhirInstant = Field(alias="outcomeTimestamp")


class FeedbackRequest(_Model):
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=MAX_ITEMS)


@dataclass(frozen=True)
class FeedbackResult:
    recorded: int  # items stored by this request
    repeated: int  # items already stored, identical, so not stored again


def parse_feedback(body: bytes | str | dict) -> FeedbackRequest:
    """A feedback request from a body; FeedbackError(400) naming the field that is wrong."""
    try:
        if isinstance(body, dict):
            return FeedbackRequest.model_validate(body)
        return FeedbackRequest.model_validate_json(body)
    except ValidationError as exc:
        raise FeedbackError(400, _describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """The first problem as `feedback[0].outcome: message`, without the value sent."""
    error = exc.errors(include_url=False, include_input=False)[0]
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    message = error["msg"].removeprefix("Value error, ")
    return f"{path}: {message}" if path else message


@dataclass(frozen=True)
class _IssuedCard:
    """What feedback is checked against: a card as the ledger recorded it, with its EHR."""

    card_uuid: str
    service_id: str
    issuer: str
    suggestion_ids: frozenset[str]
    override_reasons: frozenset[str]
    record_ref: str | None
    created_at: datetime


@dataclass(frozen=True)
class _Entry:
    """One feedback item in the form it is stored and compared in."""

    card_uuid: str
    outcome_timestamp: datetime
    outcome: str
    accepted: tuple[str, ...]
    reason: str | None
    comment: str | None

    @property
    def key(self) -> tuple[str, datetime]:
        return (self.card_uuid, self.outcome_timestamp)


class _Raced(Exception):
    """Another request stored the same (card, time) between our check and our insert."""


class FeedbackBook:
    def __init__(self, store: ResourceStore, access: AccessLayer) -> None:
        self.store = store
        self.access = access
        self._sealer = Sealer(store.service_key("cdsfeedback"))

    def submit(
        self,
        service_id: str,
        issuer: str,
        request: FeedbackRequest,
        principal: Principal,
        ctx: AccessContext,
    ) -> FeedbackResult:
        """Check every item against its card, store the new ones in one transaction, audit."""
        require_patient_write(self.access, principal, ctx, AuditAction.FEEDBACK)
        entries = [_entry(item) for item in request.feedback]
        try:
            result, refs = self._submit_once(service_id, issuer, entries)
        except _Raced:
            # The concurrent request committed: checked again, our items are now repeats or
            # conflicts, and the answer is the same as if the requests had come one by one.
            result, refs = self._submit_once(service_id, issuer, entries)
        self.access.record(
            principal,
            ctx,
            AuditAction.FEEDBACK,
            entities=refs,
            detail=(
                f"CDS feedback for service {service_id}: "
                f"{result.recorded} recorded, {result.repeated} repeated"
            ),
        )
        return result

    def comment(
        self,
        card_uuid: str,
        outcome_timestamp: datetime,
        principal: Principal,
        ctx: AccessContext,
    ) -> str | None:
        """The clinician's comment on an override, unsealed. Free text may name the patient, so
        the reader needs the patient-read right, and the read is audited (without the text)."""
        self.access.authorize(principal, ctx, Permission.PATIENT_READ, action=AuditAction.READ)
        self.access.record(
            principal,
            ctx,
            AuditAction.READ,
            detail=f"override comment of CDS card {card_uuid.lower()[:36]}",
        )
        with self.store.engine.connect() as connection:
            sealed = connection.execute(
                select(cds_feedback.c.override_comment).where(
                    cds_feedback.c.card_uuid == card_uuid.lower(),
                    cds_feedback.c.outcome_timestamp == outcome_timestamp,
                )
            ).scalar_one_or_none()
        return None if sealed is None else self._open(card_uuid.lower(), outcome_timestamp, sealed)

    def _submit_once(
        self, service_id: str, issuer: str, entries: list[_Entry]
    ) -> tuple[FeedbackResult, tuple[str, ...]]:
        now = self.access.clock()
        wanted = sorted({entry.card_uuid for entry in entries})
        try:
            with self.store.engine.begin() as connection:
                cards = _issued_cards(connection, wanted)
                for index, entry in enumerate(entries):
                    _check(entry, cards.get(entry.card_uuid), service_id, issuer, now, index)
                stored = self._stored_entries(connection, wanted)
                new, repeated = _new_entries(entries, stored)
                if new:
                    connection.execute(
                        insert(cds_feedback), [self._row(e, issuer, now) for e in new]
                    )
        except IntegrityError:
            raise _Raced() from None
        refs = tuple(dict.fromkeys(r for c in wanted if (r := cards[c].record_ref) is not None))
        return FeedbackResult(recorded=len(new), repeated=repeated), refs

    def _stored_entries(self, connection: Connection, card_uuids: Sequence[str]) -> list[_Entry]:
        rows = connection.execute(
            select(cds_feedback).where(cds_feedback.c.card_uuid.in_(list(card_uuids)))
        )
        return [
            _Entry(
                card_uuid=row.card_uuid,
                outcome_timestamp=row.outcome_timestamp,
                outcome=row.outcome,
                accepted=tuple(orjson.loads(row.accepted_suggestions)),
                reason=row.override_reason,
                comment=(
                    None
                    if row.override_comment is None
                    else self._open(row.card_uuid, row.outcome_timestamp, row.override_comment)
                ),
            )
            for row in rows
        ]

    def _row(self, entry: _Entry, issuer: str, now: datetime) -> dict:
        sealed = None
        if entry.comment is not None:
            binding = _binding(entry.card_uuid, entry.outcome_timestamp)
            sealed = self._sealer.seal(entry.comment.encode(), binding)
        return {
            "card_uuid": entry.card_uuid,
            "outcome_timestamp": entry.outcome_timestamp,
            "outcome": entry.outcome,
            "accepted_suggestions": orjson.dumps(list(entry.accepted)).decode(),
            "override_reason": entry.reason,
            "override_comment": sealed,
            "issuer": issuer,
            "received_at": now,
        }

    def _open(self, card_uuid: str, outcome_timestamp: datetime, sealed: bytes) -> str:
        return self._sealer.open(sealed, _binding(card_uuid, outcome_timestamp)).decode()


def _binding(card_uuid: str, outcome_timestamp: datetime) -> bytes:
    """Associated data: a sealed comment copied onto another feedback row fails to open."""
    return f"{card_uuid}|{fhir_instant(outcome_timestamp)}".encode()


def _entry(item: FeedbackItem) -> _Entry:
    reason = item.override_reason
    comment = reason.user_comment.strip() if reason and reason.user_comment else None
    return _Entry(
        card_uuid=item.card.lower(),
        outcome_timestamp=item.outcome_timestamp,
        outcome=item.outcome,
        accepted=tuple(sorted({s.id.lower() for s in item.accepted_suggestions})),
        reason=reason.reason.code if reason and reason.reason else None,
        comment=comment or None,
    )


def _issued_cards(connection: Connection, card_uuids: Sequence[str]) -> dict[str, _IssuedCard]:
    rows = connection.execute(
        select(
            cds_cards.c.card_uuid,
            cds_cards.c.service_id,
            cds_hook_calls.c.issuer,
            cds_cards.c.suggestion_ids,
            cds_cards.c.override_reasons,
            cds_cards.c.record_ref,
            cds_cards.c.created_at,
        )
        .join(cds_hook_calls, cds_hook_calls.c.hook_instance == cds_cards.c.hook_instance)
        .where(cds_cards.c.card_uuid.in_(list(card_uuids)))
    )
    return {
        row.card_uuid: _IssuedCard(
            card_uuid=row.card_uuid,
            service_id=row.service_id,
            issuer=row.issuer,
            suggestion_ids=frozenset(orjson.loads(row.suggestion_ids)),
            override_reasons=frozenset(orjson.loads(row.override_reasons)),
            record_ref=row.record_ref,
            created_at=row.created_at,
        )
        for row in rows
    }


def _check(
    entry: _Entry,
    card: _IssuedCard | None,
    service_id: str,
    issuer: str,
    now: datetime,
    index: int,
) -> None:
    """Refuse an item that contradicts its card (see the module docstring for the statuses)."""
    where = f"feedback[{index}]"
    if card is None or card.issuer != issuer:
        raise FeedbackError(404, f"{where}: no card {entry.card_uuid} was issued to this client")
    problem = _contradiction(entry, card, service_id, now)
    if problem is not None:
        raise FeedbackError(422, f"{where}: {problem}")


def _contradiction(entry: _Entry, card: _IssuedCard, service_id: str, now: datetime) -> str | None:
    if card.service_id != service_id:
        return "the card was issued by another service"
    if entry.outcome == "accepted" and (entry.reason is not None or entry.comment is not None):
        return "an accepted card carries no overrideReason"
    if entry.outcome == "overridden" and entry.accepted:
        return "an overridden card has no accepted suggestions"
    unknown = [s for s in entry.accepted if s not in card.suggestion_ids]
    if unknown:
        return f"acceptedSuggestions {', '.join(unknown)} are not suggestions of the card"
    if entry.reason is not None and entry.reason not in card.override_reasons:
        return f"override reason {entry.reason!r} was not offered by the card"
    if entry.outcome_timestamp > now + CLOCK_SKEW:
        return "outcomeTimestamp is in the future"
    if entry.outcome_timestamp < card.created_at - CLOCK_SKEW:
        return "outcomeTimestamp is before the card was issued"
    return None


def _new_entries(entries: Iterable[_Entry], stored: Iterable[_Entry]) -> tuple[list[_Entry], int]:
    """The entries to store, and how many were repeats of stored (or earlier) identical ones;
    FeedbackError(409) when one says something different about the same card and time."""
    known = {entry.key: entry for entry in stored}
    new: list[_Entry] = []
    repeated = 0
    for index, entry in enumerate(entries):
        earlier = known.get(entry.key)
        if earlier is None:
            known[entry.key] = entry
            new.append(entry)
        elif earlier == entry:
            repeated += 1
        else:
            raise FeedbackError(
                409,
                f"feedback[{index}]: a different feedback is already recorded for card "
                f"{entry.card_uuid} at {fhir_instant(entry.outcome_timestamp)}",
            )
    return new, repeated
