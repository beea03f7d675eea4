"""The FastAPI application: routes, and errors that are always OperationOutcomes.

No error leaves as a traceback or as FastAPI's own JSON: FHIR clients parse OperationOutcome, and
an unexpected exception's text may hold patient data, so a 500 says only that it happened.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careloop import __version__
from careloop.access.consent import ConsentPolicy
from careloop.access.layer import AccessLayer
from careloop.access.roles import Permission
from careloop.cds.budget import AlertBudget
from careloop.cds.client_auth import CdsClientRegistry, CdsJwtVerifier
from careloop.cds.feedback import FeedbackBook
from careloop.cds.knowledge_page import knowledge_page
from careloop.cds.ledger import CardLedger
from careloop.cds.medsafety import SafetyKnowledge
from careloop.cds.playbooks import PlaybookLibrary
from careloop.cds.prefetch import DataGatherer
from careloop.cds.risk import CalibrationBins
from careloop.cds.services import CdsEngine
from careloop.identity.clients import ClientRegistry
from careloop.identity.ratelimit import RateLimiter
from careloop.identity.sessions import SessionManager
from careloop.identity.tokens import TokenService
from careloop.identity.users import UserDirectory
from careloop.sepsis.model import SepsisModel
from careloop.store.repository import ResourceStore
from careloop.web import openapi_docs as docs
from careloop.web.auth import PERMISSION_KEY, SESSION_COOKIE, WebSecurity, permission_extra
from careloop.web.auth_routes import build_auth_router
from careloop.web.cds_routes import CdsCorsMiddleware, build_cds_router, build_model_card_router
from careloop.web.fhir_routes import FhirService, build_router
from careloop.web.hardening import SecurityHeadersMiddleware, TlsOnlyMiddleware
from careloop.web.monitoring_routes import build_monitoring_router
from careloop.web.outcomes import FhirError, Issue, outcome_response
from careloop.web.oversight_routes import build_oversight_router
from careloop.web.responses import FHIR_JSON, FhirJSONResponse
from careloop.web.rights_routes import build_rights_router
from careloop.web.sepsis_routes import build_sepsis_router
from careloop.web.ui.framework import UI_PREFIX, UiError, error_page
from careloop.web.ui.pages import include_pages
from careloop.web.ui.services import UiServices

logger = logging.getLogger("careloop.web")

_HTTP_ISSUE_CODES = {404: "not-found", 405: "not-supported", 413: "too-long"}


@dataclass(frozen=True)
class AppSettings:
    """How one app is exposed and guarded. Defaults are the production ones."""

    public_url: str = "https://127.0.0.1:8443"  # as clients see it: the token audience
    plain_http_allowed: bool = False  # only demo mode on loopback sets this
    consent_policy: ConsentPolicy = field(default_factory=ConsentPolicy)
    session_idle: timedelta = timedelta(minutes=15)
    break_glass_duration: timedelta = timedelta(hours=1)
    max_body_bytes: int = 64 * 1024 * 1024
    max_ndjson_bytes: int = 1024**3
    # token buckets per client address (and per user name for login): burst, then per second
    login_burst: int = 10
    login_per_second: float = 10 / 60
    token_burst: int = 30
    token_per_second: float = 1.0
    sepsis_model: Path | None = None  # a trained model directory; None: risk answers 503
    # CDS Hooks: the ONC interaction lists, extra playbook directories, the alert budget and
    # the browser origins allowed to call (CORS)
    ddi_dir: Path | None = None
    playbook_dirs: tuple[Path, ...] = ()
    cds_alert_budget: int = 6
    cds_repeat_after: timedelta = timedelta(hours=4)
    cds_cors_origins: tuple[str, ...] = ("*",)
    registry_root: Path | None = None  # the model registry's artifacts (the governance console)


def create_app(store: ResourceStore, settings: AppSettings | None = None) -> FastAPI:
    """The careloop HTTP API over one store; the caller owns (and closes) the store.

    Every route but the liveness probe, the capability statement and sign-in itself needs an
    authenticated caller with the route's permission; patient data passes the access layer.
    """
    settings = settings or AppSettings()
    app = FastAPI(
        title="careloop FHIR API",
        version=__version__,
        description=(
            "FHIR R4 ingest (transaction/batch Bundles, Bulk NDJSON), read and search, behind "
            "SMART Backend Services bearer tokens or a signed-in session; consent-filtered and "
            "audited. Send `X-Purpose-Of-Use` (v3-ActReason) to state a purpose."
        ),
        docs_url=None,  # Swagger UI loads scripts from a CDN; the spec is at /openapi.json
        redoc_url=None,
    )
    access = AccessLayer(
        store,
        consent_policy=settings.consent_policy,
        break_glass_duration=settings.break_glass_duration,
    )
    security = WebSecurity(
        access=access,
        tokens=TokenService(
            store, ClientRegistry(store), token_url=settings.public_url.rstrip("/") + "/auth/token"
        ),
        sessions=SessionManager(store, idle_timeout=settings.session_idle),
        users=UserDirectory(store),
    )
    service = FhirService(store, access, settings.max_body_bytes, settings.max_ndjson_bytes)
    app.state.fhir = service
    app.state.security = security

    @app.get("/healthz", summary="Liveness", openapi_extra=permission_extra(Permission.PUBLIC))
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(build_router(service))
    login_limiter = RateLimiter(settings.login_burst, settings.login_per_second)
    app.include_router(
        build_auth_router(
            security, login_limiter, RateLimiter(settings.token_burst, settings.token_per_second)
        )
    )
    app.include_router(build_rights_router(service))
    app.include_router(build_oversight_router(security))
    model = SepsisModel.load(settings.sepsis_model) if settings.sepsis_model else None
    app.include_router(build_sepsis_router(security, model))
    app.include_router(build_monitoring_router(security))
    engine, feedback = _include_cds(app, store, security, settings, model)
    include_pages(
        app,
        UiServices(
            store=store,
            security=security,
            fhir=service,
            cds=engine,
            feedback=feedback,
            login_limiter=login_limiter,
            registry_root=settings.registry_root,
            sepsis_model_dir=settings.sepsis_model,
            demo=settings.plain_http_allowed,  # plain HTTP is allowed in demo mode only
        ),
    )
    app.add_exception_handler(FhirError, _fhir_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    if not settings.plain_http_allowed:
        app.add_middleware(TlsOnlyMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(CdsCorsMiddleware, origins=settings.cds_cors_origins)
    app.add_middleware(InternalErrorMiddleware)
    _finish_openapi(app)
    return app


def cds_engine(
    store: ResourceStore, access: AccessLayer, settings: AppSettings, model: SepsisModel | None
) -> CdsEngine:
    """The CDS Hooks engine. Its knowledge is loaded once, here, so a broken playbook or
    interaction file stops the server at start rather than a card at the bedside."""
    return CdsEngine(
        ledger=CardLedger(store, access),
        gatherer=DataGatherer(access),
        playbooks=PlaybookLibrary.load(settings.playbook_dirs),
        safety=SafetyKnowledge.load(settings.ddi_dir),
        model=model,
        calibration=CalibrationBins.load(settings.sepsis_model),
        public_url=settings.public_url.rstrip("/"),
        budget=AlertBudget(settings.cds_alert_budget, settings.cds_repeat_after),
    )


def _include_cds(
    app: FastAPI,
    store: ResourceStore,
    security: WebSecurity,
    settings: AppSettings,
    model: SepsisModel | None,
) -> tuple[CdsEngine, FeedbackBook]:
    engine = cds_engine(store, security.access, settings, model)
    verifier = CdsJwtVerifier(store, CdsClientRegistry(store))
    feedback = FeedbackBook(store, security.access)
    app.include_router(build_cds_router(security, engine, verifier, feedback, engine.public_url))
    card = settings.sepsis_model / "MODEL_CARD.md" if settings.sepsis_model else None
    text = card.read_text(encoding="utf-8") if card and card.exists() else None
    knowledge = knowledge_page(engine.playbooks, engine.safety)
    app.include_router(build_model_card_router(text, knowledge))
    return engine, feedback


async def _fhir_error(_request: Request, exc: Exception) -> FhirJSONResponse:
    assert isinstance(exc, FhirError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, method not allowed) as OperationOutcomes."""
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path.startswith(UI_PREFIX + "/"):  # a person's browser: a page, not JSON
        title = "Not found" if exc.status_code == 404 else "Not available"
        message = "There is no such page." if exc.status_code == 404 else "That did not work."
        return error_page(request, UiError(exc.status_code, title, message))
    code = _HTTP_ISSUE_CODES.get(exc.status_code, "processing")
    # the path is not repeated: it can hold a patient's id
    message = f"{request.method}: {exc.detail}"
    if exc.status_code == 404:
        message = "no such FHIR endpoint; see /fhir/metadata"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("allow", "")
        message = f"{request.method} is not supported on this path; allowed: {allowed}"
    return outcome_response(exc.status_code, [Issue("error", code, message)], exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> FhirJSONResponse:
    assert isinstance(exc, RequestValidationError)
    # locations and messages only: pydantic's `input` would echo the request back
    where = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in exc.errors()[:5]
    )
    return outcome_response(400, [Issue("error", "invalid", f"invalid request: {where}")])


class InternalErrorMiddleware:
    """Turns an unhandled exception into a 500 OperationOutcome, logging the details server-side.

    A plain ASGI middleware rather than an exception handler: Starlette re-raises after calling a
    handler for `Exception`, which a test client would surface as a crash rather than a response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            _log_without_phi(scope, exc)
            if started:
                raise  # too late for a clean answer; the server closes the connection
            issue = Issue("fatal", "exception", "internal error; it has been logged")
            await outcome_response(500, [issue])(scope, receive, send)


def _log_without_phi(scope: Scope, exc: Exception) -> None:
    """Enough to find the bug, nothing about the patient.

    The raw path holds ids and an exception's message may quote request values, so the log
    names the route template, the exception type and where it was raised, never the message.
    """
    template = getattr(scope.get("route"), "path", "<no route>")
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "<unknown>"
    logger.error(
        "unhandled %s on %s %s, raised at %s",
        type(exc).__name__,
        scope.get("method"),
        template,
        where,
    )


def _finish_openapi(app: FastAPI) -> None:
    """Complete what FastAPI cannot infer: the security schemes, the 401/403 every guarded route
    may answer, the 429 of the sign-in routes, and no 422 (ours are 400s, checked by the
    routes). Every operation keeps the permission it needs in `x-careloop-permission`."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            for path, path_item in schema.get("paths", {}).items():
                for operation in path_item.values():
                    _complete_operation(path, operation)
            components = schema.setdefault("components", {})
            schemas = components.get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            if not schemas:
                components.pop("schemas", None)
            components["securitySchemes"] = SECURITY_SCHEMES
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


OAUTH_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from POST /auth/token (SMART Backend Services).",
    },
    "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
    "cdsHooksJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The EHR's signed CDS Hooks JWT (RS384 or ES384), aud = the URL called.",
    },
}


def _complete_operation(path: str, operation: dict) -> None:
    responses = operation.setdefault("responses", {})
    response = responses.get("422", {})
    if "HTTPValidationError" in str(response):
        del responses["422"]
    outcome = {"content": {FHIR_JSON: {"schema": docs.OPERATION_OUTCOME}}}
    permission = operation.get(PERMISSION_KEY)
    if permission == Permission.CDS_HOOKS.value:
        responses.setdefault("401", {"description": "Not authenticated", **outcome})
    elif permission != Permission.PUBLIC.value:
        operation["security"] = [{"bearer": []}, {"session": []}]
        responses.setdefault("400", {"description": "Bad request", **outcome})
        responses.setdefault("401", {"description": "Not authenticated", **outcome})
        responses.setdefault("403", {"description": "Not permitted", **outcome})
    if "requestBody" in operation:
        responses.setdefault("413", {"description": "Body too large", **outcome})
        responses.setdefault("415", {"description": "Unsupported content type", **outcome})
    if path == "/auth/token":  # OAuth 2.0 answers every error in its own JSON (RFC 6749 §5.2)
        oauth = {"content": {"application/json": {"schema": OAUTH_ERROR}}}
        for status in ("400", "401", "413", "415", "429"):
            responses[status] = {"description": "Refused", **oauth}
    elif path.startswith("/auth/"):
        responses.setdefault("400", {"description": "Bad request", **outcome})
        responses.setdefault("401", {"description": "Refused", **outcome})
        responses.setdefault("415", {"description": "Not a form", **outcome})
        responses.setdefault("429", {"description": "Too many attempts", **outcome})
