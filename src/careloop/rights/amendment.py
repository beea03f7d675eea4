"""The right to amendment: a patient asks for a change to their record, and gets an answer.

A request is a FHIR R4 Task, the resource FHIR uses for "something someone asked to be done":

- `code`: HL7's task-code `change` ("Change the focal resource"), so any FHIR system reads it as
  a change request, plus careloop's own `amendment-request` coding, which says it is the patient's
  right being exercised (not, say, a clinician's correction);
- `focus`: the resource to amend; `for`: the patient, which files the Task in the patient's
  compartment (`careloop.fhir.indexing.patient_id_of`), sealed with the patient's data key and
  shredded with it on erasure;
- `status` requested, `intent` proposal (the patient proposes, the provider decides),
  `businessStatus` received, `authoredOn`, `requester`, and the requested change as an `input`.

`respond_to_amendment` records the decision on a copy: accepted → status `completed` (the request
is settled; making the change itself is a separate, ordinary write), rejected → status `rejected`;
the reason as `statusReason`, the decision as an `output`, the responder as `owner`.

The requested change and the reason are free text about the patient: PHI. They go into the Task
only, never into an exception message. Who may request or answer, and whether the focus belongs
to the patient (`target_in_compartment`), is for the access layer to check and audit.
"""

from __future__ import annotations

import copy
import re
import uuid
from datetime import UTC, datetime
from typing import Literal

from careloop.fhir.indexing import patient_id_of
from careloop.fhir.structure import FHIR_ID, model_class
from careloop.store.repository import ResourceStore

TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"
RIGHTS_CODE_SYSTEM = "https://careloop.dev/fhir/CodeSystem/patient-rights"
AMENDMENT_STATUS_SYSTEM = "https://careloop.dev/fhir/CodeSystem/amendment-status"
AMENDMENT_PARAMETER_SYSTEM = "https://careloop.dev/fhir/CodeSystem/amendment-parameter"
AMENDMENT_REQUEST_CODE = "amendment-request"
MAX_TEXT_LENGTH = 10_000  # characters of a requested change or a reason

# Task.requester and Task.owner reference types in R4
REQUESTER_TYPES = frozenset(
    {"Device", "Organization", "Patient", "Practitioner", "PractitionerRole", "RelatedPerson"}
)
OWNER_TYPES = REQUESTER_TYPES | {"CareTeam", "HealthcareService"}
OPEN_STATUSES = frozenset({"requested", "received", "accepted", "ready", "in-progress", "on-hold"})
Decision = Literal["accepted", "rejected"]

_REFERENCE = re.compile(
    r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$"
)
# C0 controls other than tab, newline and carriage return have no place in a written request
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class AmendmentError(ValueError):
    """An amendment request or answer is malformed; the message never echoes the text."""


def amendment_request(
    patient_id: str,
    target_reference: str,
    requested_change: str,
    requester_reference: str,
    *,
    now: datetime | None = None,
) -> dict:
    """A new amendment request Task (status requested, businessStatus received)."""
    if not isinstance(patient_id, str) or not FHIR_ID.match(patient_id):
        raise AmendmentError("the patient id is not a valid FHIR id")
    _reference_type(target_reference, "the resource to amend", None)
    _reference_type(requester_reference, "the requester", REQUESTER_TYPES)
    _check_text(requested_change, "the requested change")
    moment = _instant(now)
    return {
        "resourceType": "Task",
        "id": str(uuid.uuid4()),
        "status": "requested",
        "businessStatus": _business_status("received", "Received"),
        "intent": "proposal",
        "code": {
            "coding": [
                {
                    "system": TASK_CODE_SYSTEM,
                    "code": "change",
                    "display": "Change the focal resource",
                },
                {
                    "system": RIGHTS_CODE_SYSTEM,
                    "code": AMENDMENT_REQUEST_CODE,
                    "display": "Amendment request",
                },
            ],
            "text": "Amendment request",
        },
        "focus": {"reference": target_reference},
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": moment,
        "lastModified": moment,
        "requester": {"reference": requester_reference},
        "input": [
            {
                "type": _parameter("requested-change", "Requested change"),
                "valueString": requested_change,
            }
        ],
    }


def respond_to_amendment(
    task: dict,
    decision: Decision,
    reason: str,
    responder_reference: str,
    *,
    now: datetime | None = None,
) -> dict:
    """A copy of the request Task carrying the decision; the given Task is not changed."""
    if not is_amendment_request(task):
        raise AmendmentError("the Task is not a careloop amendment request")
    if task.get("status") not in OPEN_STATUSES:
        raise AmendmentError("this amendment request has already been answered")
    if decision not in ("accepted", "rejected"):
        raise AmendmentError("the decision must be 'accepted' or 'rejected'")
    _check_text(reason, "the reason for the decision")
    _reference_type(responder_reference, "the responder", OWNER_TYPES)
    answered = copy.deepcopy(task)
    answered["status"] = "completed" if decision == "accepted" else "rejected"
    answered["businessStatus"] = _business_status(decision, decision.capitalize())
    answered["statusReason"] = {"text": reason}
    answered["owner"] = {"reference": responder_reference}
    answered["lastModified"] = _instant(now)
    answered["output"] = [{"type": _parameter("decision", "Decision"), "valueCode": decision}]
    return answered


def is_amendment_request(resource: object) -> bool:
    """True for a Task carrying careloop's amendment-request code."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Task":
        return False
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    return isinstance(codings, list) and any(
        isinstance(coding, dict)
        and coding.get("system") == RIGHTS_CODE_SYSTEM
        and coding.get("code") == AMENDMENT_REQUEST_CODE
        for coding in codings
    )


def target_in_compartment(store: ResourceStore, patient_id: str, target_reference: str) -> bool:
    """Whether the resource to amend exists and belongs to this patient's compartment."""
    match = _REFERENCE.match(target_reference) if isinstance(target_reference, str) else None
    if match is None:
        return False
    stored = store.read(match.group(1), match.group(2))
    return stored is not None and patient_id_of(stored.body) == patient_id


def _reference_type(reference: object, what: str, allowed: frozenset[str] | None) -> str:
    match = _REFERENCE.match(reference) if isinstance(reference, str) else None
    if match is None:
        raise AmendmentError(f"{what} must be a reference of the form Type/id")
    resource_type = match.group(1)
    if model_class(resource_type) is None or resource_type == "Bundle":
        raise AmendmentError(f"{what} must name a FHIR R4 resource type")
    if allowed is not None and resource_type not in allowed:
        raise AmendmentError(f"{what} must be one of: {', '.join(sorted(allowed))}")
    return resource_type


def _check_text(text: object, what: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise AmendmentError(f"{what} must be non-empty text")
    if len(text) > MAX_TEXT_LENGTH:
        raise AmendmentError(f"{what} is longer than {MAX_TEXT_LENGTH} characters")
    if _CONTROL.search(text):
        raise AmendmentError(f"{what} contains control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise AmendmentError(f"{what} is not valid Unicode text") from None


def _business_status(code: str, display: str) -> dict:
    return {"coding": [{"system": AMENDMENT_STATUS_SYSTEM, "code": code, "display": display}]}


def _parameter(code: str, display: str) -> dict:
    return {"coding": [{"system": AMENDMENT_PARAMETER_SYSTEM, "code": code, "display": display}]}


def _instant(now: datetime | None) -> str:
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        raise AmendmentError("the time must be time-zone aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
