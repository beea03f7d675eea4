"""The CDS Hooks 2.0 request as careloop accepts it, and the errors a call can get.

The structures follow the specification (https://cds-hooks.hl7.org/2.0/): a request names its
hook, a hookInstance, the hook's context and, optionally, prefetched data and the FHIR server
(with an access token) the service may query. Parsing is strict where a wrong value would change
the answer (a missing patientId, a draftOrders that is not a Bundle) and lenient where the
specification allows extensions (unknown members are ignored).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_REQUEST_BYTES = 8 * 1024 * 1024  # a prefetch of a long ICU stay fits; more is an attack
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_USER = re.compile(r"^(Practitioner|PractitionerRole|Patient|RelatedPerson)/[A-Za-z0-9\-.]{1,64}$")
_HOOK_INSTANCE = re.compile(r"^[A-Za-z0-9\-]{8,64}$")


class CdsRequestError(Exception):
    """A call careloop cannot answer as asked. `status` is the HTTP status (400 for a malformed
    request, 404 for an unknown service, 409 for a repeated hookInstance, 412 when the data
    needed cannot be had); the message says what is wrong and where, never a patient's data."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FhirAuthorization(BaseModel):
    """An access token the EHR grants the service for its FHIR server (OAuth 2.0 bearer)."""

    model_config = ConfigDict(extra="ignore")

    access_token: str = Field(min_length=1, max_length=8192)
    token_type: str = Field(pattern="^[Bb]earer$")
    expires_in: int = Field(ge=0)
    scope: str = Field(max_length=4096)
    subject: str = Field(max_length=255)
    patient: str | None = Field(default=None, max_length=64)


class HookRequestBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hook: str = Field(min_length=1, max_length=64)
    hookInstance: str = Field(min_length=1, max_length=64)  # noqa: N815 (the spec's name)
    fhirServer: str | None = Field(default=None, max_length=2048)  # noqa: N815
    fhirAuthorization: FhirAuthorization | None = None  # noqa: N815
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None


@dataclass(frozen=True)
class HookRequest:
    """A validated call: who is asked about which patient, with the drafts when ordering."""

    hook: str
    hook_instance: str
    patient_id: str
    user_id: str
    encounter_id: str | None
    fhir_server: str | None
    fhir_authorization: FhirAuthorization | None
    prefetch: dict[str, Any]
    draft_orders: dict | None = None  # order-select / order-sign: a FHIR Bundle
    selections: tuple[str, ...] = ()  # order-select: references of the orders just selected


def parse_hook_request(body: bytes, expected_hook: str) -> HookRequest:
    """The request of a call to a service of hook `expected_hook`, or CdsRequestError(400)."""
    if len(body) > MAX_REQUEST_BYTES:
        raise CdsRequestError(413, f"the request is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CdsRequestError(400, f"the body is not JSON: {exc.msg} at byte {exc.pos}") from None
    if not isinstance(document, dict):
        raise CdsRequestError(400, "the body must be a JSON object (a CDS Hooks request)")
    try:
        parsed = HookRequestBody.model_validate(document)
    except ValidationError as exc:
        raise CdsRequestError(400, f"invalid CDS Hooks request: {_where(exc)}") from None
    if parsed.hook != expected_hook:
        raise CdsRequestError(
            400, f"this service answers the '{expected_hook}' hook, not '{parsed.hook}'"
        )
    if not _HOOK_INSTANCE.match(parsed.hookInstance):
        raise CdsRequestError(400, "hookInstance must be a UUID (letters, digits and '-')")
    if parsed.fhirServer is not None and not parsed.fhirServer.startswith(("https://", "http://")):
        raise CdsRequestError(400, "fhirServer must be an absolute http(s) URL")
    if parsed.fhirAuthorization is not None and parsed.fhirServer is None:
        raise CdsRequestError(400, "fhirAuthorization was given without a fhirServer")
    return _with_context(parsed, expected_hook)


def _with_context(parsed: HookRequestBody, hook: str) -> HookRequest:
    context = parsed.context
    patient_id = _context_string(context, "patientId", _ID, "a FHIR id")
    user_id = _context_string(context, "userId", _USER, "a Practitioner/... reference")
    encounter_id = None
    if "encounterId" in context:
        encounter_id = _context_string(context, "encounterId", _ID, "a FHIR id")
    draft_orders = None
    selections: tuple[str, ...] = ()
    if hook in ("order-select", "order-sign"):
        draft_orders = _draft_orders(context)
    if hook == "order-select":
        selections = _selections(context, draft_orders or {})
    prefetch = parsed.prefetch or {}
    return HookRequest(
        hook=hook,
        hook_instance=parsed.hookInstance,
        patient_id=patient_id,
        user_id=user_id,
        encounter_id=encounter_id,
        fhir_server=parsed.fhirServer.rstrip("/") if parsed.fhirServer else None,
        fhir_authorization=parsed.fhirAuthorization,
        prefetch=prefetch,
        draft_orders=draft_orders,
        selections=selections,
    )


def _context_string(context: dict, name: str, pattern: re.Pattern[str], what: str) -> str:
    value = context.get(name)
    if value is None:
        raise CdsRequestError(400, f"context.{name} is required")
    if not isinstance(value, str) or not pattern.match(value):
        raise CdsRequestError(400, f"context.{name} must be {what}")
    return value


def _draft_orders(context: dict) -> dict:
    bundle = context.get("draftOrders")
    if bundle is None:
        raise CdsRequestError(400, "context.draftOrders is required")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise CdsRequestError(400, "context.draftOrders must be a FHIR Bundle")
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise CdsRequestError(400, "context.draftOrders.entry must be a list")
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise CdsRequestError(400, f"context.draftOrders.entry[{index}] has no resource")
        if not isinstance(resource.get("id"), str) or not _ID.match(resource["id"]):
            raise CdsRequestError(400, f"context.draftOrders.entry[{index}].resource needs an id")
    return bundle


def _selections(context: dict, draft_orders: dict) -> tuple[str, ...]:
    selections = context.get("selections")
    if not isinstance(selections, list) or not selections:
        raise CdsRequestError(400, "context.selections must list the selected draft orders")
    known = {
        f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
        for entry in draft_orders.get("entry", [])
    }
    for index, selection in enumerate(selections):
        if not isinstance(selection, str) or selection not in known:
            raise CdsRequestError(
                400, f"context.selections[{index}] does not name an order in draftOrders"
            )
    return tuple(selections)


def draft_resources(request: HookRequest) -> list[dict]:
    """The resources of the request's draftOrders Bundle."""
    if request.draft_orders is None:
        return []
    return [entry["resource"] for entry in request.draft_orders.get("entry", [])]


def _where(exc: ValidationError) -> str:
    """Locations and messages of a pydantic error, without echoing the values sent."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()[:5]
    )
