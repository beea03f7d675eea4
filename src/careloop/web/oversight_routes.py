"""The routes of the roles that see no clinical content: the auditor (verify and review the trail),
the administrator (people, clients, care relationships), and the data scientist (de-identified
exports only)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from careloop.access.errors import AccessDenied
from careloop.access.rights import deidentified_compartments
from careloop.access.roles import Permission
from careloop.audit.events import AuditAction
from careloop.audit.review import review
from careloop.identity.clients import ClientRegistry
from careloop.web import openapi_docs as docs
from careloop.web.auth import Caller, WebSecurity, caller_for, denied, permission_extra
from careloop.web.fhir_routes import check_id
from careloop.web.outcomes import FhirError
from careloop.web.rights_routes import _json_body, _json_object, _text_field

MAX_EXPORT_PATIENTS = 100_000
_REFERENCE_TYPES = ("Practitioner/", "PractitionerRole/", "Organization/", "CareTeam/")


def build_oversight_router(security: WebSecurity) -> APIRouter:
    router = APIRouter(tags=["Oversight"])
    access = security.access

    @router.get(
        "/audit/verify",
        summary="Verify the audit trail's hash chain",
        openapi_extra=permission_extra(Permission.AUDIT_READ),
    )
    def audit_verify(caller: Caller = caller_for(Permission.AUDIT_READ)) -> dict[str, Any]:
        report = access.audit.verify()
        access.record(caller.principal, caller.ctx, AuditAction.AUDIT_REVIEW, detail="verify")
        return {
            "ok": report.ok,
            "events_checked": report.events_checked,
            "findings": [
                {"seq": f.seq, "kind": f.kind, "detail": f.detail} for f in report.findings
            ],
        }

    @router.get(
        "/audit/review",
        summary="The audit review report for a period (ISO 8601 since/until)",
        openapi_extra=permission_extra(Permission.AUDIT_READ),
    )
    def audit_review(
        since: str, until: str, caller: Caller = caller_for(Permission.AUDIT_READ)
    ) -> dict[str, Any]:
        start, end = _instant(since, "since"), _instant(until, "until")
        if end <= start:
            raise FhirError.of(400, "value", "until must be after since")
        report = review(access.audit, access.store, since=start, until=end)
        access.record(caller.principal, caller.ctx, AuditAction.AUDIT_REVIEW, detail="review")
        return report.to_json()

    @router.get(
        "/admin/users",
        summary="People who can sign in (no secrets)",
        openapi_extra=permission_extra(Permission.ACCESS_ADMIN),
    )
    def list_users(caller: Caller = caller_for(Permission.ACCESS_ADMIN)) -> list[dict[str, Any]]:
        access.record(caller.principal, caller.ctx, AuditAction.ADMIN, detail="list users")
        return [_plain(user) for user in security.users.list()]

    @router.get(
        "/admin/clients",
        summary="Registered API clients (no keys)",
        openapi_extra=permission_extra(Permission.ACCESS_ADMIN),
    )
    def list_clients(
        caller: Caller = caller_for(Permission.ACCESS_ADMIN),
    ) -> list[dict[str, Any]]:
        access.record(caller.principal, caller.ctx, AuditAction.ADMIN, detail="list clients")
        return [_plain(client) for client in ClientRegistry(access.store).list()]

    @router.post(
        "/admin/care-relationships",
        summary="Record that a practitioner cares for a patient",
        openapi_extra=permission_extra(
            Permission.ACCESS_ADMIN, _json_body({"practitioner": "string", "patient": "string"})
        ),
    )
    async def assign(
        request: Request, caller: Caller = caller_for(Permission.ACCESS_ADMIN)
    ) -> dict[str, Any]:
        body = await _json_object(request)
        practitioner, patient_id = _text_field(body, "practitioner"), _text_field(body, "patient")
        if not practitioner.startswith(_REFERENCE_TYPES):
            raise FhirError.of(400, "value", "practitioner must be a Practitioner/... reference")
        check_id(practitioner.partition("/")[2])
        check_id(patient_id)
        await run_in_threadpool(access.relationships.assign, practitioner, patient_id)
        access.record(
            caller.principal,
            caller.ctx,
            AuditAction.ADMIN,
            patient_id=patient_id,
            detail="care relationship recorded",
        )
        return {"assigned": True}

    @router.get(
        "/deid/export",
        summary="De-identified patient compartments as NDJSON (research or model training)",
        response_model=None,
        responses=docs.responses(
            docs.NDJSON_TEXT, (400, 403), ok_media_type="application/fhir+ndjson"
        ),
        openapi_extra=permission_extra(Permission.DEIDENTIFIED_EXPORT),
    )
    def deid_export(
        limit: int = 100, caller: Caller = caller_for(Permission.DEIDENTIFIED_EXPORT)
    ) -> StreamingResponse:
        if not 1 <= limit <= MAX_EXPORT_PATIENTS:
            raise FhirError.of(400, "value", f"limit must be 1 to {MAX_EXPORT_PATIENTS}")
        lines = _ndjson(access, caller, limit)
        try:
            first = next(lines)  # refusals surface here, before the response starts
        except StopIteration:
            first = b""
        except AccessDenied as exc:
            raise denied(exc) from None
        return StreamingResponse(_chain(first, lines), media_type="application/fhir+ndjson")

    return router


def _ndjson(access: Any, caller: Caller, limit: int) -> Iterator[bytes]:
    compartments = deidentified_compartments(access, caller.principal, caller.ctx)
    for done, resources in enumerate(compartments, start=1):
        yield b"".join(orjson.dumps(resource) + b"\n" for resource in resources)
        if done >= limit:
            return


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _instant(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FhirError.of(400, "value", f"{name} is not an ISO 8601 date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _plain(item: Any) -> dict[str, Any]:
    """A summary dataclass as JSON-able fields."""
    fields = getattr(item, "__dataclass_fields__", {})
    return {name: _json_value(getattr(item, name)) for name in fields}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set | tuple | list):
        return sorted(str(v) for v in value)
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)
