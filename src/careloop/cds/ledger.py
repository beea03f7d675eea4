"""The card ledger: every CDS Hooks call careloop answers and every card it returns, on record.

Why keep it: a card is advice given about a patient, so what was said, by which model version and
playbook, from which data, has to be answerable later (a clinician's question, an incident review,
the override report the AI team reads). The ledger holds what de-duplication, the alert budget
and feedback need in clear (service, what the card is about, indicator, model, unit, the ids of
its suggestions and the override reasons it offered) and nothing clinical: the patient appears
only as the store's blind-index hash, and the clinical content lives in the FHIR record the card
renders (a RiskAssessment or DetectedIssue), encrypted in the patient's compartment with a
Provenance saying who made it from what.

One call is one transaction. The hook-call row goes in first: its primary key is the
hookInstance, so a second answer to the same hookInstance, even from a concurrent thread or
process, fails on that insert and the whole call rolls back with nothing written.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import Connection, exists, insert, select
from sqlalchemy.exc import IntegrityError

from careloop.access.layer import AccessLayer
from careloop.access.principal import V3_ACT_REASON, AccessContext, Principal, Purpose
from careloop.access.roles import Permission
from careloop.audit.events import CARELOOP_SOFTWARE, SERVER_NAME, AuditAction
from careloop.audit.events import fhir_instant as _fhir_instant
from careloop.fhir.indexing import patient_id_of
from careloop.ingest.validation import structural_errors
from careloop.store.repository import ResourceStore
from careloop.store.schema import cds_cards, cds_hook_calls

INDICATORS = frozenset({"info", "warning", "critical"})
RECORD_TYPES = frozenset({"RiskAssessment", "DetectedIssue"})
CARELOOP_MODEL = "https://careloop.dev/fhir/sid/model-version"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
URI_SYSTEM = "urn:ietf:rfc:3986"
# Provenance ids derive from the card uuid, so the record of one card is always the same id.
PROVENANCE_NAMESPACE = uuid.UUID("5b0d8c56-3f0e-4f7a-9d0c-2c1f6a7e9b41")

# Column widths of cds_hook_calls / cds_cards: checked up front so a too-long value is a clear
# error naming the field, never a driver error halfway through the call.
_LIMITS = {
    "hookInstance": 64,
    "service id": 64,
    "issuer": 255,
    "key": 128,
    "model_version": 64,
    "playbook": 128,
    "unit": 128,
}
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_REFERENCE = re.compile(r"^[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}$")


class DuplicateHookInstance(Exception):
    """This hookInstance was answered before; nothing of the second answer was written."""


class LedgerError(ValueError):
    """A card or record handed to the ledger is malformed; the message says which and where,
    and never quotes clinical content."""


@dataclass(frozen=True)
class HookCall:
    hook_instance: str
    service_id: str
    issuer: str
    patient_id: str | None
    received_at: datetime
    unit: str | None  # the encounter's ward/unit, when known


@dataclass
class IssuedCard:
    card: dict  # the CDS Hooks card as returned; card["uuid"] and each suggestion's "uuid" set
    key: str  # what the card is about, e.g. "sepsis-alert" or "interaction:a+b"
    model_version: str | None
    playbook: str | None  # "id@version"
    record: dict | None  # a RiskAssessment or DetectedIssue (id set) to keep; None for a notice
    used: tuple[str, ...]  # references of the data the card was made from
    # the record is already in the store (a monitoring alert's DetectedIssue, kept current by
    # the monitoring worker): the ledger points at it and adds only the Provenance, so a call
    # never rewrites it with the copy it read
    record_stored: bool = False
    demoted_from: str | None = None  # the indicator before the alert budget demoted the card


@dataclass(frozen=True)
class LedgerCard:
    card_uuid: str
    service_id: str
    key: str
    indicator: str
    model_version: str | None
    playbook: str | None
    unit: str | None
    suggestion_ids: tuple[str, ...]
    override_reasons: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class _Prepared:
    """One card checked and turned into what gets written: its row and its FHIR resources."""

    row: dict
    resources: tuple[dict, ...]


class CardLedger:
    def __init__(self, store: ResourceStore, access: AccessLayer) -> None:
        self.store = store
        self.access = access

    def seen(self, hook_instance: str) -> bool:
        """Whether this hookInstance was already answered (a retry, or a replay)."""
        with self.store.engine.connect() as connection:
            query = select(exists().where(cds_hook_calls.c.hook_instance == hook_instance))
            return bool(connection.execute(query).scalar())

    def record(
        self,
        call: HookCall,
        cards: Sequence[IssuedCard],
        principal: Principal,
        ctx: AccessContext,
    ) -> None:
        """Write the call, its cards, each card's record with its Provenance, then audit.

        Raises DuplicateHookInstance when the hookInstance was answered before, LedgerError for
        a malformed card or record, AccessDenied when the principal may not write patient data;
        in every case nothing is written.
        """
        require_patient_write(self.access, principal, ctx, AuditAction.CREATE)
        _check_call(call)
        now = self.access.clock()
        patient_hash = self.store.patient_hash(call.patient_id) if call.patient_id else None
        prepared = _prepare_all(call, cards, principal.fhir_user, now, patient_hash)
        with self.store.transaction() as tx:
            connection = tx.connection
            _insert_call(connection, call, patient_hash)
            if prepared:
                _insert_cards(connection, [item.row for item in prepared])
            resources = [resource for item in prepared for resource in item.resources]
            if resources:
                tx.put_resources(resources)
        # After the commit: an audit entry for a call that then rolled back would be false.
        entities = tuple(f"{r['resourceType']}/{r['id']}" for r in resources)
        self.access.record(
            principal,
            ctx,
            AuditAction.CREATE,
            patient_id=call.patient_id,
            entities=entities,
            detail=f"{len(prepared)} CDS cards from service {call.service_id}",
        )

    def recent(self, patient_id: str, since: datetime) -> list[LedgerCard]:
        """The patient's cards issued at or after `since`, oldest first (de-duplication and the
        alert budget count what was already shown)."""
        query = (
            select(cds_cards)
            .where(
                cds_cards.c.patient_hash == self.store.patient_hash(patient_id),
                cds_cards.c.created_at >= since,
            )
            .order_by(cds_cards.c.created_at, cds_cards.c.card_uuid)
        )
        with self.store.engine.connect() as connection:
            return [ledger_card(row) for row in connection.execute(query)]

    def card(self, card_uuid: str) -> LedgerCard | None:
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(cds_cards).where(cds_cards.c.card_uuid == card_uuid)
            ).first()
        return None if row is None else ledger_card(row)


def ledger_card(row) -> LedgerCard:  # type: ignore[no-untyped-def]
    """A cds_cards row as a LedgerCard."""
    return LedgerCard(
        card_uuid=row.card_uuid,
        service_id=row.service_id,
        key=row.card_key,
        indicator=row.indicator,
        model_version=row.model_version,
        playbook=row.playbook,
        unit=row.unit,
        suggestion_ids=tuple(orjson.loads(row.suggestion_ids)),
        override_reasons=tuple(orjson.loads(row.override_reasons)),
        created_at=row.created_at,
    )


def require_patient_write(
    access: AccessLayer, principal: Principal, ctx: AccessContext, action: AuditAction
) -> None:
    """The ledger writes patient records, so its caller needs the patient-write right (role,
    purpose and scopes, as every write; a refusal is audited by the access layer)."""
    access.authorize(principal, ctx, Permission.PATIENT_WRITE, action=action)


def _insert_call(connection: Connection, call: HookCall, patient_hash: str | None) -> None:
    try:
        connection.execute(
            insert(cds_hook_calls).values(
                hook_instance=call.hook_instance,
                service_id=call.service_id,
                issuer=call.issuer,
                patient_hash=patient_hash,
                received_at=call.received_at,
            )
        )
    except IntegrityError:
        # The primary key: another answer to this hookInstance committed (or is committing,
        # on PostgreSQL the insert waited for it). The caller's transaction rolls back whole.
        raise DuplicateHookInstance("this hookInstance was already answered") from None


def _insert_cards(connection: Connection, rows: list[dict]) -> None:
    try:
        connection.execute(insert(cds_cards), rows)
    except IntegrityError:
        raise LedgerError("a card uuid of this response was already recorded") from None


# -- checking and preparing ----------------------------------------------------------------------


def _check_call(call: HookCall) -> None:
    _require_text(call.hook_instance, "hookInstance")
    _require_text(call.service_id, "service id")
    _require_text(call.issuer, "issuer")
    if call.received_at.tzinfo is None:
        raise LedgerError("the hook call's received_at must be time-zone aware")
    if call.unit is not None:
        _require_text(call.unit, "unit")
    if call.patient_id is not None and not call.patient_id:
        raise LedgerError("the hook call's patient id is empty")


def _require_text(value: object, field: str, where: str = "") -> None:
    limit = _LIMITS[field]
    if not isinstance(value, str) or not value.strip():
        raise LedgerError(f"{where}{field} must be a non-empty string")
    if len(value) > limit:
        raise LedgerError(f"{where}{field} is longer than {limit} characters")


def _prepare_all(
    call: HookCall,
    cards: Sequence[IssuedCard],
    user: str | None,
    now: datetime,
    patient_hash: str | None,
) -> list[_Prepared]:
    prepared: list[_Prepared] = []
    seen_uuids: set[str] = set()
    for index, issued in enumerate(cards):
        item = _prepare(call, issued, user, now, f"cards[{index}]")
        item.row["patient_hash"] = patient_hash
        if item.row["card_uuid"] in seen_uuids:
            raise LedgerError(f"cards[{index}].uuid repeats an earlier card of this response")
        seen_uuids.add(item.row["card_uuid"])
        prepared.append(item)
    return prepared


def _prepare(
    call: HookCall, issued: IssuedCard, user: str | None, now: datetime, where: str
) -> _Prepared:
    card = issued.card
    if not isinstance(card, dict):
        raise LedgerError(f"{where} is not a JSON object")
    card_uuid = _card_uuid(card.get("uuid"), f"{where}.uuid")
    indicator = card.get("indicator")
    if indicator not in INDICATORS:
        raise LedgerError(f"{where}.indicator must be one of {', '.join(sorted(INDICATORS))}")
    _require_text(issued.key, "key", f"{where}: ")
    for field, value in (("model_version", issued.model_version), ("playbook", issued.playbook)):
        if value is not None:
            _require_text(value, field, f"{where}: ")
    row = {
        "card_uuid": card_uuid,
        "hook_instance": call.hook_instance,
        "service_id": call.service_id,
        "card_key": issued.key,
        "indicator": indicator,
        "demoted_from": issued.demoted_from,
        "model_version": issued.model_version,
        "playbook": issued.playbook,
        "unit": call.unit,
        "record_ref": None,
        "suggestion_ids": _json_list(_suggestion_ids(card, where), 2048, f"{where}.suggestions"),
        "override_reasons": _json_list(
            _override_codes(card, where), 4096, f"{where}.overrideReasons"
        ),
        "created_at": now,
    }
    if issued.record is None:
        return _Prepared(row=row, resources=())
    record_ref = _check_record(issued.record, call.patient_id, f"{where}.record")
    used = _check_used(issued.used, f"{where}.used")
    provenance = provenance_for(record_ref, card_uuid, issued, call, used, user, now)
    _validate(provenance, f"{where} (its Provenance)")
    row["record_ref"] = record_ref
    if issued.record_stored:
        return _Prepared(row=row, resources=(provenance,))
    return _Prepared(row=row, resources=(issued.record, provenance))


def _card_uuid(value: object, where: str) -> str:
    if not isinstance(value, str) or not _UUID.match(value):
        raise LedgerError(f"{where} must be a UUID")
    return value.lower()


def _suggestion_ids(card: dict, where: str) -> list[str]:
    suggestions = card.get("suggestions") or []
    if not isinstance(suggestions, list):
        raise LedgerError(f"{where}.suggestions must be a list")
    ids: list[str] = []
    for index, suggestion in enumerate(suggestions):
        value = suggestion.get("uuid") if isinstance(suggestion, dict) else None
        suggestion_id = _card_uuid(value, f"{where}.suggestions[{index}].uuid")
        if suggestion_id in ids:
            raise LedgerError(f"{where}.suggestions[{index}].uuid repeats an earlier suggestion")
        ids.append(suggestion_id)
    return ids


def _override_codes(card: dict, where: str) -> list[str]:
    reasons = card.get("overrideReasons") or []
    if not isinstance(reasons, list):
        raise LedgerError(f"{where}.overrideReasons must be a list of Codings")
    codes: list[str] = []
    for index, coding in enumerate(reasons):
        code = coding.get("code") if isinstance(coding, dict) else None
        if not isinstance(code, str) or not code or len(code) > 64:
            raise LedgerError(f"{where}.overrideReasons[{index}].code must be a code of 1-64 chars")
        if code in codes:
            raise LedgerError(f"{where}.overrideReasons[{index}] repeats code {code!r}")
        codes.append(code)
    return codes


def _json_list(values: list[str], limit: int, where: str) -> str:
    text = orjson.dumps(values).decode()
    if len(text) > limit:
        raise LedgerError(f"{where}: too many entries to record ({len(values)})")
    return text


def _check_record(record: object, patient_id: str | None, where: str) -> str:
    if not isinstance(record, dict) or record.get("resourceType") not in RECORD_TYPES:
        raise LedgerError(f"{where} must be a {' or '.join(sorted(RECORD_TYPES))}")
    if not isinstance(record.get("id"), str) or not record["id"]:
        raise LedgerError(f"{where}.id must be set")
    _validate(record, where)
    # A record filed under another patient than the call's would land in the wrong compartment.
    if patient_id_of(record) != patient_id:
        raise LedgerError(f"{where} is not about the patient of this hook call")
    return f"{record['resourceType']}/{record['id']}"


def _check_used(used: Sequence[str], where: str) -> tuple[str, ...]:
    for index, reference in enumerate(used):
        if not isinstance(reference, str) or not _REFERENCE.match(reference):
            raise LedgerError(f"{where}[{index}] must be a relative reference such as Type/id")
    return tuple(dict.fromkeys(used))


def _validate(resource: dict, where: str) -> None:
    errors = structural_errors(resource)
    if errors:
        path, message = errors[0]
        raise LedgerError(f"{where} is not valid FHIR R4: {path}: {message}")


# -- the Provenance --------------------------------------------------------------------------------


def provenance_for(
    record_ref: str,
    card_uuid: str,
    issued: IssuedCard,
    call: HookCall,
    used: tuple[str, ...],
    user: str | None,
    recorded: datetime,
) -> dict:
    """Who made the record and from what: careloop (with the model version) as author, the EHR
    that asked as informant (acting for the user, when one is named), each datum used as a
    source entity, for treatment."""
    provenance: dict = {
        "resourceType": "Provenance",
        "id": str(uuid.uuid5(PROVENANCE_NAMESPACE, card_uuid)),
        "target": [{"reference": record_ref}],
        "recorded": _fhir_instant(recorded),
        "reason": [
            {"coding": [{"system": V3_ACT_REASON, "code": Purpose.TREATMENT.value}]},
        ],
        "activity": {"coding": [{"system": DATA_OPERATION, "code": "CREATE"}]},
        "agent": [_author(issued), _ehr_agent(call.issuer, user)],
    }
    if used:
        provenance["entity"] = [{"role": "source", "what": {"reference": ref}} for ref in used]
    return provenance


def _author(issued: IssuedCard) -> dict:
    display = SERVER_NAME
    if issued.model_version:
        display += f", model {issued.model_version}"
    if issued.playbook:
        display += f", playbook {issued.playbook}"
    identifier = (
        {"system": CARELOOP_MODEL, "value": issued.model_version}
        if issued.model_version
        else {"system": CARELOOP_SOFTWARE, "value": SERVER_NAME}
    )
    return {
        "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "author"}]},
        "who": {"identifier": identifier, "display": display},
    }


def _ehr_agent(issuer: str, user: str | None) -> dict:
    agent: dict = {
        "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "informant"}]},
        "who": {"identifier": {"system": URI_SYSTEM, "value": issuer}, "display": "EHR"},
    }
    if user:
        if not _REFERENCE.match(user):
            raise LedgerError("the principal's fhirUser is not a relative reference")
        agent["onBehalfOf"] = {"reference": user}
    return agent
