"""CDS Hooks over HTTP: discovery, the services, feedback, and CORS as the specification asks.

These routes are not opened by careloop's bearer tokens or sessions: every call, discovery
included, carries the EHR's signed JWT, checked against the exact URL called (its `aud`).
Refusals are audited like any other refused request.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Permission, Role
from careloop.audit.events import AuditAction, AuditOutcome
from careloop.cds.client_auth import CdsAuthError, CdsCaller, CdsJwtVerifier
from careloop.cds.feedback import FeedbackBook, FeedbackError, parse_feedback
from careloop.cds.hooks import MAX_REQUEST_BYTES, CdsRequestError
from careloop.cds.services import CdsEngine, principal_for
from careloop.web import openapi_docs as docs
from careloop.web.auth import WebSecurity, permission_extra
from careloop.web.body import FHIR_JSON_TYPES, read_limited, require_content_type
from careloop.web.outcomes import FhirError, Issue

CDS_PREFIX = "/cds-services"
CDS_SECURITY = [{"cdsHooksJwt": []}]
CARD_SCHEMA = {
    "type": "object",
    "required": ["summary", "indicator", "source"],
    "properties": {
        "uuid": {"type": "string"},
        "summary": {"type": "string", "maxLength": 140},
        "detail": {"type": "string"},
        "indicator": {"enum": ["info", "warning", "critical"]},
        "source": {"type": "object", "required": ["label"]},
        "suggestions": {"type": "array", "items": {"type": "object"}},
        "selectionBehavior": {"enum": ["at-most-one", "any"]},
        "overrideReasons": {"type": "array", "items": {"type": "object"}},
        "links": {"type": "array", "items": {"type": "object"}},
    },
}
CARDS_SCHEMA = {
    "type": "object",
    "required": ["cards"],
    "properties": {"cards": {"type": "array", "items": CARD_SCHEMA}},
}
DISCOVERY_SCHEMA = {
    "type": "object",
    "required": ["services"],
    "properties": {"services": {"type": "array", "items": {"type": "object"}}},
}
HOOK_REQUEST_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object"}}},
}


def build_cds_router(
    security: WebSecurity,
    engine: CdsEngine,
    verifier: CdsJwtVerifier,
    feedback: FeedbackBook,
    public_url: str,
) -> APIRouter:
    router = APIRouter(tags=["CDS Hooks"])

    def caller_of(request: Request) -> CdsCaller:
        audience = public_url.rstrip("/") + request.url.path
        try:
            return verifier.verify(request.headers.get("authorization"), audience)
        except CdsAuthError as exc:
            _audit_refusal(security, request, f"CDS Hooks JWT refused: {exc}")
            raise FhirError(
                401,
                [Issue("error", "login", f"CDS Hooks authentication failed: {exc}")],
                {"WWW-Authenticate": 'Bearer realm="careloop-cds-hooks"'},
            ) from None

    @router.get(
        CDS_PREFIX,
        summary="CDS Hooks discovery: the services careloop offers and their prefetch",
        responses=docs.responses(DISCOVERY_SCHEMA, (401,), ok_media_type="application/json"),
        openapi_extra=permission_extra(Permission.CDS_HOOKS, {"security": CDS_SECURITY}),
    )
    def discovery(request: Request) -> dict[str, Any]:
        caller_of(request)
        return engine.discovery()

    @router.post(
        CDS_PREFIX + "/{service_id}",
        summary="Call a CDS service (patient-view, order-select, order-sign)",
        responses=docs.responses(
            CARDS_SCHEMA, (400, 401, 403, 404, 409, 412, 413), ok_media_type="application/json"
        ),
        openapi_extra=permission_extra(
            Permission.CDS_HOOKS, {"security": CDS_SECURITY, "requestBody": HOOK_REQUEST_BODY}
        ),
    )
    async def call(service_id: str, request: Request) -> JSONResponse:
        caller = caller_of(request)
        body = await _body(request)
        try:
            answer = engine.call(service_id, body, caller, _source(request))
        except CdsRequestError as exc:
            _audit_refusal(security, request, f"CDS call refused with {exc.status}", caller)
            raise FhirError.of(exc.status, _issue_code(exc.status), str(exc)) from None
        return JSONResponse(answer)

    @router.post(
        CDS_PREFIX + "/{service_id}/feedback",
        summary="Feedback on cards: accepted or overridden, with the reason",
        responses=docs.responses(
            docs.JSON_OBJECT, (400, 401, 404, 409, 413, 422), ok_media_type="application/json"
        ),
        openapi_extra=permission_extra(
            Permission.CDS_HOOKS, {"security": CDS_SECURITY, "requestBody": HOOK_REQUEST_BODY}
        ),
    )
    async def give_feedback(service_id: str, request: Request) -> JSONResponse:
        caller = caller_of(request)
        body = await _body(request)
        principal = principal_for(caller, None)
        ctx = AccessContext(Purpose.TREATMENT, "", _source(request))
        try:
            parsed = parse_feedback(body)
            result = feedback.submit(service_id, caller.client.issuer, parsed, principal, ctx)
        except FeedbackError as exc:
            _audit_refusal(security, request, f"feedback refused with {exc.status}", caller)
            raise FhirError.of(exc.status, _issue_code(exc.status), str(exc)) from None
        return JSONResponse({"recorded": result.recorded, "repeated": result.repeated})

    return router


def build_model_card_router(model_card: str | None, knowledge: str) -> APIRouter:
    """What the cards' sources link to: the shipped model's card and the reviewed knowledge.
    Public, as a clinician follows them from the EHR; neither holds patient data."""
    router = APIRouter(tags=["CDS Hooks"])

    @router.get(
        "/knowledge/cds",
        summary="The playbooks and medication-safety knowledge behind the cards (Markdown)",
        responses=docs.responses({"type": "string"}, (), ok_media_type="text/markdown"),
        openapi_extra=permission_extra(Permission.PUBLIC),
    )
    def cds_knowledge() -> PlainTextResponse:
        return PlainTextResponse(knowledge, media_type="text/markdown; charset=utf-8")

    @router.get(
        "/models/sepsis/card",
        summary="The sepsis model's model card (Markdown)",
        responses=docs.responses({"type": "string"}, (404,), ok_media_type="text/markdown"),
        openapi_extra=permission_extra(Permission.PUBLIC),
    )
    def sepsis_card() -> PlainTextResponse:
        if model_card is None:
            raise FhirError.of(404, "not-found", "no sepsis model is installed")
        return PlainTextResponse(model_card, media_type="text/markdown; charset=utf-8")

    return router


async def _body(request: Request) -> bytes:
    """The JSON body, refused unread past the limit (Content-Length, then while streaming)."""
    require_content_type(request, FHIR_JSON_TYPES)
    return await read_limited(request, MAX_REQUEST_BYTES)


def _source(request: Request) -> str:
    return request.client.host if request.client else ""


def _issue_code(status: int) -> str:
    return {404: "not-found", 409: "duplicate", 412: "incomplete", 413: "too-long"}.get(
        status, "invalid"
    )


def _audit_refusal(
    security: WebSecurity, request: Request, detail: str, caller: CdsCaller | None = None
) -> None:
    principal = (
        principal_for(caller, None)
        if caller
        else Principal(subject="cds:unauthenticated", kind="client", role=Role.EHR)
    )
    security.access.record(
        principal,
        AccessContext(Purpose.TREATMENT, "", _source(request)),
        AuditAction.CARD,
        AuditOutcome.MINOR_FAILURE,
        flags={"rejected-input"},
        detail=detail[:400],
    )


class CdsCorsMiddleware:
    """CORS for the CDS Hooks routes, which browser-based EHRs and the CDS Hooks sandbox call.

    Preflight requests (no JWT: browsers do not send one) are answered here; actual responses
    get `Access-Control-Allow-Origin`. No credentials are allowed: calls authenticate with the
    JWT in the Authorization header, never with cookies.
    """

    def __init__(self, app: ASGIApp, origins: tuple[str, ...] = ("*",)) -> None:
        self.app = app
        self.origins = origins

    def _allowed_origin(self, origin: str | None) -> str | None:
        if origin is None:
            return None
        if "*" in self.origins:
            return "*"
        return origin if origin in self.origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == CDS_PREFIX or path.startswith(CDS_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        headers = dict(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in scope.get("headers", [])
        )
        allowed = self._allowed_origin(headers.get("origin"))
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            preflight = PlainTextResponse("", status_code=204 if allowed else 403)
            if allowed:
                preflight.headers.update(
                    {
                        "Access-Control-Allow-Origin": allowed,
                        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                        "Access-Control-Allow-Headers": "Authorization, Content-Type",
                        "Access-Control-Max-Age": "600",
                        "Vary": "Origin",
                    }
                )
            await preflight(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start" and allowed:
                response_headers = MutableHeaders(scope=message)
                response_headers["Access-Control-Allow-Origin"] = allowed
                response_headers["Vary"] = "Origin"
            await send(message)

        await self.app(scope, receive, with_cors)
