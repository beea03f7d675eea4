"""The FastAPI application: routes, and errors that are always OperationOutcomes.

No error leaves as a traceback or as FastAPI's own JSON: FHIR clients parse OperationOutcome, and
an unexpected exception's text may hold patient data, so a 500 says only that it happened.
"""

from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careloop import __version__
from careloop.store.repository import ResourceStore
from careloop.web.fhir_routes import FhirService, build_router
from careloop.web.outcomes import FhirError, Issue, outcome_response
from careloop.web.responses import FhirJSONResponse

logger = logging.getLogger("careloop.web")

_HTTP_ISSUE_CODES = {404: "not-found", 405: "not-supported", 413: "too-long"}


def create_app(
    store: ResourceStore,
    *,
    max_body_bytes: int = 64 * 1024 * 1024,
    max_ndjson_bytes: int = 1024**3,
) -> FastAPI:
    """The careloop HTTP API over one store; the caller owns (and closes) the store."""
    app = FastAPI(
        title="careloop FHIR API",
        version=__version__,
        description="FHIR R4 ingest (transaction/batch Bundles, Bulk NDJSON), read and search.",
    )
    service = FhirService(store, max_body_bytes, max_ndjson_bytes)
    app.state.fhir = service

    @app.get("/healthz", summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(build_router(service))
    app.add_exception_handler(FhirError, _fhir_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(InternalErrorMiddleware)
    _drop_unused_validation_responses(app)
    return app


async def _fhir_error(_request: Request, exc: Exception) -> FhirJSONResponse:
    assert isinstance(exc, FhirError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> FhirJSONResponse:
    """Starlette's own errors (no such route, method not allowed) as OperationOutcomes."""
    assert isinstance(exc, StarletteHTTPException)
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


def _drop_unused_validation_responses(app: FastAPI) -> None:
    """FastAPI documents a 422 validation error for every route with parameters; ours are plain
    strings checked by the routes (answering 400), so that response never happens."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            for path_item in schema.get("paths", {}).values():
                for operation in path_item.values():
                    response = operation.get("responses", {}).get("422", {})
                    if "HTTPValidationError" in str(response):
                        del operation["responses"]["422"]
            schemas = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            if not schemas:
                schema.pop("components", None)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
