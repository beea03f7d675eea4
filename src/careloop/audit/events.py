"""FHIR R4 AuditEvents in the shape of IHE Basic Audit Log Patterns (BALP).

The access layer describes what happened as an `AuditRecord` (who, what, why, about which
patient, with what outcome); `audit_event_resource` turns it into the AuditEvent the log seals
and stores. Following BALP:

- one event per patient: the patient is an entity of type 1 (Person), role 1 (Patient), so a
  patient's accounting of disclosures is a search by that entity;
- RESTful interactions are typed `rest` (audit-event-type) with the restful-interaction code as
  subtype; everything else uses the DICOM event ids (110110 Patient Record, 110114 User
  Authentication, 110106 Export, ...) with a careloop subtype;
- the requestor is an agent with `requestor: true`, its role and network address; careloop itself
  is a second, non-requesting agent and the `source.observer`;
- data touched are entities of role 4 (Domain Resource); a search's query string is an entity of
  role 24 (Query) carried base64-encoded in `entity.query`;
- purpose of use is `purposeOfEvent`; break-glass adds v3-ActReason `BTG` there and the
  `break-glass` flag, like every other flag, as a `meta.tag`.

Nothing here performs I/O; the dict is plain JSON data.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from careloop.access.principal import CARELOOP_PURPOSE, Purpose

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
CARELOOP_SUBTYPE = "https://careloop.dev/fhir/CodeSystem/audit-subtype"
CARELOOP_FLAG = "https://careloop.dev/fhir/CodeSystem/audit-flag"
CARELOOP_ROLE = "https://careloop.dev/fhir/CodeSystem/role"
CARELOOP_AGENT = "https://careloop.dev/fhir/sid/agent"
CARELOOP_SOFTWARE = "https://careloop.dev/fhir/sid/software"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SERVER_NAME = "careloop"


class AuditAction(StrEnum):
    READ = "read"
    VREAD = "vread"
    HISTORY = "history"
    SEARCH = "search"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    INGEST = "ingest"
    SCORE = "score"
    CARD = "card"
    FEEDBACK = "feedback"
    CONSENT_DECISION = "consent-decision"
    LOGIN = "login"
    LOGOUT = "logout"
    TOKEN = "token"
    BREAK_GLASS = "break-glass"
    EXPORT = "export"
    DEIDENTIFIED_EXPORT = "deidentified-export"
    AMENDMENT_REQUEST = "amendment-request"
    ERASURE = "erasure"
    RETENTION = "retention"
    AUDIT_REVIEW = "audit-review"
    ADMIN = "admin"


class AuditOutcome(StrEnum):
    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


@dataclass(frozen=True)
class AuditRecord:
    """What the access layer hands the log: one event, about at most one patient."""

    action: AuditAction
    outcome: AuditOutcome
    agent: str  # Principal.subject
    role: str  # Role value
    agent_kind: str  # user | client | local
    fhir_user: str | None
    purpose: str | None  # Purpose value (v3-ActReason code or MODELTRAIN)
    patient_id: str | None  # the patient this event is about (BALP: one event per patient)
    entities: tuple[str, ...] = ()  # references of data touched, e.g. "Observation/1"
    query: str | None = None  # the search query string, for SEARCH
    source_address: str | None = None
    flags: frozenset[str] = field(default_factory=frozenset)
    detail: str | None = None  # short, no PHI
    recorded: datetime | None = None  # defaults to now (aware UTC)


@dataclass(frozen=True)
class _EventKind:
    type_system: str
    type_code: str
    type_display: str
    subtype_system: str
    subtype_code: str
    action: str  # C R U D E


def _rest(subtype: str, action: str) -> _EventKind:
    return _EventKind(EVENT_TYPE, "rest", "Restful Operation", RESTFUL, subtype, action)


def _dicom(code: str, display: str, subtype: str, action: str) -> _EventKind:
    return _EventKind(DCM, code, display, CARELOOP_SUBTYPE, subtype, action)


_PATIENT_RECORD = ("110110", "Patient Record")
_AUTHENTICATION = ("110114", "User Authentication")
_EXPORT = ("110106", "Export")

KINDS: dict[AuditAction, _EventKind] = {
    AuditAction.READ: _rest("read", "R"),
    AuditAction.VREAD: _rest("vread", "R"),
    AuditAction.HISTORY: _rest("history-instance", "R"),
    AuditAction.SEARCH: _rest("search-type", "E"),  # BALP: a query is an Execute
    AuditAction.CREATE: _rest("create", "C"),
    AuditAction.UPDATE: _rest("update", "U"),
    AuditAction.DELETE: _rest("delete", "D"),
    AuditAction.INGEST: _rest("transaction", "C"),
    AuditAction.SCORE: _dicom(*_PATIENT_RECORD, "score", "E"),
    AuditAction.CARD: _dicom(*_PATIENT_RECORD, "card", "E"),
    AuditAction.FEEDBACK: _dicom(*_PATIENT_RECORD, "feedback", "C"),
    AuditAction.CONSENT_DECISION: _dicom(*_PATIENT_RECORD, "consent-decision", "E"),
    AuditAction.LOGIN: _EventKind(DCM, *_AUTHENTICATION, DCM, "110122", "E"),  # DCM Login
    AuditAction.LOGOUT: _EventKind(DCM, *_AUTHENTICATION, DCM, "110123", "E"),  # DCM Logout
    AuditAction.TOKEN: _dicom(*_AUTHENTICATION, "token", "E"),
    AuditAction.BREAK_GLASS: _dicom("110113", "Security Alert", "break-glass", "E"),
    AuditAction.EXPORT: _dicom(*_EXPORT, "export", "R"),  # DICOM: an export is a Read
    AuditAction.DEIDENTIFIED_EXPORT: _dicom(*_EXPORT, "deidentified-export", "R"),
    AuditAction.AMENDMENT_REQUEST: _dicom(*_PATIENT_RECORD, "amendment-request", "C"),
    AuditAction.ERASURE: _dicom(*_PATIENT_RECORD, "erasure", "D"),
    AuditAction.RETENTION: _dicom(*_PATIENT_RECORD, "retention", "D"),
    AuditAction.AUDIT_REVIEW: _dicom("110101", "Audit Log Used", "audit-review", "R"),
    AuditAction.ADMIN: _dicom("110136", "Security Roles Changed", "admin", "E"),
}

_DCM_SUBTYPE_DISPLAY = {"110122": "Login", "110123": "Logout"}


def audit_event_resource(record: AuditRecord, event_id: str, recorded: datetime) -> dict:
    """The FHIR R4 AuditEvent for one record (BALP shape; see the module docstring)."""
    kind = KINDS[AuditAction(record.action)]
    event: dict = {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": {
            "system": kind.type_system,
            "code": kind.type_code,
            "display": kind.type_display,
        },
        "subtype": [_subtype(kind)],
        "action": kind.action,
        "recorded": fhir_instant(recorded),
        "outcome": AuditOutcome(record.outcome).value,
        "agent": [_requestor(record, kind), _server_agent()],
        "source": {
            "site": SERVER_NAME,
            "observer": _server_reference(),
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if record.flags:
        event["meta"] = {
            "tag": [{"system": CARELOOP_FLAG, "code": flag} for flag in sorted(record.flags)]
        }
    if record.detail:
        event["outcomeDesc"] = record.detail
    purposes = _purposes(record)
    if purposes:
        event["purposeOfEvent"] = purposes
    entities = _entities(record)
    if entities:
        event["entity"] = entities
    return event


def fhir_instant(moment: datetime) -> str:
    """A FHIR instant in UTC with microseconds, the precision both backends store."""
    if moment.tzinfo is None:
        raise ValueError("audit timestamps must be time-zone aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _subtype(kind: _EventKind) -> dict:
    display = _DCM_SUBTYPE_DISPLAY.get(kind.subtype_code, kind.subtype_code)
    return {"system": kind.subtype_system, "code": kind.subtype_code, "display": display}


def _requestor(record: AuditRecord, kind: _EventKind) -> dict:
    who: dict = {
        "identifier": {"system": f"{CARELOOP_AGENT}/{record.agent_kind}", "value": record.agent}
    }
    if record.fhir_user:
        who["reference"] = record.fhir_user
    agent: dict = {
        "type": {"coding": [_agent_type(record.agent_kind, kind.action)]},
        "role": [{"coding": [{"system": CARELOOP_ROLE, "code": str(record.role)}]}],
        "who": who,
        "requestor": True,
    }
    if record.source_address:
        agent["network"] = {
            "address": record.source_address,
            "type": _network_type(record.source_address),
        }
    return agent


def _agent_type(agent_kind: str, action: str) -> dict:
    # BALP names a requesting system by DICOM "Source Role ID"; a person receives what is read
    # (information recipient) and authors what is written.
    if agent_kind == "client":
        return {"system": DCM, "code": "110153", "display": "Source Role ID"}
    if action in ("C", "U", "D"):
        return {"system": PARTICIPATION, "code": "AUT", "display": "author (originator)"}
    return {"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}


def _network_type(address: str) -> str:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return "1"  # machine name (e.g. "cli")
    return "2"  # IP address


def _server_reference() -> dict:
    return {
        "identifier": {"system": CARELOOP_SOFTWARE, "value": SERVER_NAME},
        "display": SERVER_NAME,
    }


def _server_agent() -> dict:
    return {
        "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": _server_reference(),
        "requestor": False,
    }


def _purposes(record: AuditRecord) -> list[dict]:
    codes: list[str] = [record.purpose] if record.purpose else []
    if "break-glass" in record.flags and Purpose.BREAK_THE_GLASS.value not in codes:
        codes.append(Purpose.BREAK_THE_GLASS.value)
    return [{"coding": [{"system": _purpose_system(code), "code": code}]} for code in codes]


def _purpose_system(code: str) -> str:
    try:
        return Purpose(code).system
    except ValueError:  # not one careloop knows, so not one it may claim for v3-ActReason
        return CARELOOP_PURPOSE


def _entities(record: AuditRecord) -> list[dict]:
    entities: list[dict] = []
    if record.patient_id:
        entities.append(
            {
                "what": {"reference": f"Patient/{record.patient_id}"},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    for reference in record.entities:
        entities.append(
            {
                "what": {"reference": reference},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    if record.query:
        entities.append(
            {
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": base64.b64encode(record.query.encode("utf-8")).decode("ascii"),
            }
        )
    return entities


# -- reading an AuditEvent back (the review) --------------------------------------------------


def patient_of(event: dict) -> str | None:
    """The patient id of the BALP patient entity, if the event is about a patient."""
    for entity in event.get("entity", ()):
        role = entity.get("role", {})
        reference = entity.get("what", {}).get("reference", "")
        is_patient = role.get("system") == OBJECT_ROLE and role.get("code") == "1"
        if is_patient and reference.startswith("Patient/"):
            return reference.removeprefix("Patient/")
    return None


def outcome_description(event: dict) -> str | None:
    text = event.get("outcomeDesc")
    return text if isinstance(text, str) and text else None
