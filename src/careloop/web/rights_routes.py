"""Patient rights over HTTP (export, amendment, consent, erasure) and break-glass.

Thin: each route parses its input, then calls the guarded operation in `careloop.access.rights`,
which checks the right, the patient and consent and writes the audit record.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from careloop.access import rights
from careloop.access.errors import AccessDenied
from careloop.access.roles import Permission
from careloop.fhir.indexing import patient_id_of
from careloop.ingest import IngestProblem
from careloop.web import openapi_docs as docs
from careloop.web.auth import Caller, caller_for, denied, permission_extra
from careloop.web.body import FHIR_JSON_TYPES, read_limited, require_content_type
from careloop.web.fhir_routes import FhirService, check_depth, check_id
from careloop.web.outcomes import FhirError, issue_of_problem
from careloop.web.responses import FhirJSONResponse

MAX_RIGHTS_BODY = 256 * 1024
JSON_TYPES = ("application/json", *FHIR_JSON_TYPES)


def build_rights_router(service: FhirService) -> APIRouter:
    router = APIRouter(default_response_class=FhirJSONResponse, tags=["Patient rights"])
    access = service.access

    def write_one(resource: dict) -> None:
        with service.write_lock:
            try:
                service.ingestor.ingest_document(orjson.dumps(resource), "request body")
            except IngestProblem as problem:
                raise FhirError(422, [issue_of_problem(problem)]) from None

    @router.get(
        "/rights/Patient/{patient_id}/record",
        summary="Export a patient's record as a FHIR Bundle (right of access)",
        response_model=None,
        responses=docs.responses(docs.bundle_schema(["collection"]), (400, 403)),
        openapi_extra=permission_extra(Permission.RECORD_EXPORT),
    )
    def export_record(
        patient_id: str, caller: Caller = caller_for(Permission.RECORD_EXPORT)
    ) -> FhirJSONResponse:
        check_id(patient_id)
        bundle = _guard(partial(rights.export_record, access), caller, patient_id)
        return FhirJSONResponse(bundle, headers={"Cache-Control": "no-store"})

    @router.post(
        "/rights/Patient/{patient_id}/amendment",
        summary="Request an amendment of part of the record; answered with the Task",
        response_model=None,
        responses=docs.responses(docs.RESOURCE, (400, 403, 404, 422), ok_status=201),
        openapi_extra=permission_extra(
            Permission.AMENDMENT_REQUEST, _json_body({"target": "string", "change": "string"})
        ),
    )
    async def amendment(
        request: Request,
        patient_id: str,
        caller: Caller = caller_for(Permission.AMENDMENT_REQUEST),
    ) -> FhirJSONResponse:
        check_id(patient_id)
        body = await _json_object(request)
        target, change = _text_field(body, "target"), _text_field(body, "change")
        task = await run_in_threadpool(
            _guard,
            partial(rights.request_amendment, access),
            caller,
            patient_id,
            target,
            change,
            write_one,
        )
        return FhirJSONResponse(task, status_code=201)

    @router.post(
        "/rights/Patient/{patient_id}/consent",
        summary="Record the patient's Consent; enforced from the next read on",
        response_model=None,
        responses=docs.responses(docs.RESOURCE, (400, 403, 422), ok_status=201),
        openapi_extra=permission_extra(Permission.CONSENT_MANAGE, docs.json_body(docs.RESOURCE)),
    )
    async def consent(
        request: Request,
        patient_id: str,
        caller: Caller = caller_for(Permission.CONSENT_MANAGE),
    ) -> FhirJSONResponse:
        check_id(patient_id)
        body = await _json_object(request)
        if body.get("resourceType") != "Consent" or patient_id_of(body) != patient_id:
            raise FhirError.of(400, "invalid", "Consent.patient must reference this patient")
        stored = await run_in_threadpool(
            _guard, partial(rights.record_consent, access), caller, body, write_one
        )
        return FhirJSONResponse(stored, status_code=201)

    @router.post(
        "/rights/Patient/{patient_id}/erasure-request",
        summary="Ask for the record to be erased (carried out by an administrator)",
        response_model=None,
        response_class=JSONResponse,
        responses=docs.responses(
            docs.JSON_OBJECT, (400, 403, 404), ok_media_type="application/json"
        ),
        openapi_extra=permission_extra(Permission.ERASURE_REQUEST),
    )
    def erasure_request(
        patient_id: str, caller: Caller = caller_for(Permission.ERASURE_REQUEST)
    ) -> dict[str, Any]:
        check_id(patient_id)
        _guard(partial(rights.request_erasure, access), caller, patient_id)
        return {"requested": True}

    @router.post(
        "/rights/Patient/{patient_id}/erase",
        summary="Erase the record by destroying its key (crypto-shredding); leaves a tombstone",
        response_model=None,
        response_class=JSONResponse,
        responses=docs.responses(
            docs.JSON_OBJECT, (400, 403, 404), ok_media_type="application/json"
        ),
        openapi_extra=permission_extra(Permission.ERASURE_EXECUTE),
    )
    def erase(
        patient_id: str, caller: Caller = caller_for(Permission.ERASURE_EXECUTE)
    ) -> dict[str, Any]:
        check_id(patient_id)
        with service.write_lock:
            result = _guard(partial(rights.erase, access), caller, patient_id)
        return {
            "erased": True,
            "already_erased": result.already_erased,
            "resources_shredded": result.resources_shredded,
        }

    @router.post(
        "/access/break-glass",
        summary="Emergency access to one patient past consent: reason required, time-limited",
        response_model=None,
        response_class=JSONResponse,
        responses=docs.responses(
            docs.JSON_OBJECT, (400, 403, 404), ok_media_type="application/json"
        ),
        openapi_extra=permission_extra(
            Permission.BREAK_GLASS,
            _json_body({"patient": "string", "reason": "string", "minutes": "integer"}),
        ),
    )
    async def break_glass(
        request: Request, caller: Caller = caller_for(Permission.BREAK_GLASS)
    ) -> dict[str, Any]:
        body = await _json_object(request)
        patient_id = _text_field(body, "patient")
        check_id(patient_id)
        minutes = body.get("minutes", 60)
        if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= 240:
            raise FhirError.of(400, "value", "minutes must be a whole number from 1 to 240")
        grant = await run_in_threadpool(
            _guard,
            access.grant_break_glass,
            caller,
            patient_id,
            _text_field(body, "reason"),
            timedelta(minutes=minutes),
        )
        return {"grant_id": grant.grant_id, "expires_at": grant.expires_at.isoformat()}

    return router


def _guard(operation: Callable[..., Any], caller: Caller, *args: Any) -> Any:
    """Call a guarded operation as the caller; refusals and bad values become 403/404 and 400."""
    try:
        return operation(caller.principal, caller.ctx, *args)
    except AccessDenied as exc:
        raise denied(exc) from None
    except ValueError as exc:
        raise FhirError.of(400, "value", str(exc)) from None


async def _json_object(request: Request) -> dict:
    require_content_type(request, JSON_TYPES)
    data = await read_limited(request, MAX_RIGHTS_BODY)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise FhirError.of(400, "structure", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise FhirError.of(400, "structure", "the body must be a JSON object")
    check_depth(body)
    return body


def _text_field(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise FhirError.of(400, "required", f"'{name}' must be a non-empty string")
    return value


def _json_body(fields: dict[str, str]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in fields.items()},
        "required": list(fields),
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
