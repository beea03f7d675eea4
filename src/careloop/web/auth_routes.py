"""Signing in: the SMART Backend Services token endpoint for API clients, and the password +
TOTP login with a session cookie for people. Both are rate-limited and every attempt is audited.

The token endpoint answers in OAuth 2.0's own error format (RFC 6749 §5.2), not OperationOutcome,
because OAuth client libraries parse that.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from careloop.access.roles import Permission, Role
from careloop.audit.events import AuditAction, AuditOutcome, AuditRecord
from careloop.identity import AuthenticationError
from careloop.identity.ratelimit import RateLimiter
from careloop.identity.tokens import claimed_client_id
from careloop.web.auth import (
    SESSION_COOKIE,
    Caller,
    WebSecurity,
    caller_for,
    permission_extra,
)
from careloop.web.body import FORM_TYPES, read_limited, require_content_type
from careloop.web.outcomes import FhirError

MAX_AUTH_FORM_BYTES = 16 * 1024
USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
TOKEN_SCOPES = "system/*.cruds system/*.rs system/Observation.rs"


def build_auth_router(
    security: WebSecurity, login_limiter: RateLimiter, token_limiter: RateLimiter
) -> APIRouter:
    router = APIRouter(tags=["Sign-in"])

    @router.get(
        "/.well-known/smart-configuration",
        summary="SMART configuration (token endpoint, supported auth methods)",
        openapi_extra=permission_extra(Permission.PUBLIC),
    )
    def smart_configuration() -> dict[str, Any]:
        return {
            "token_endpoint": security.tokens.token_url,
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": [
                "RS384",
                "ES384",
                "RS256",
                "ES256",
            ],
            "grant_types_supported": ["client_credentials"],
            "scopes_supported": TOKEN_SCOPES.split(),
            "capabilities": ["client-confidential-asymmetric", "permission-v2"],
        }

    @router.post(
        "/auth/token",
        summary="OAuth 2.0 client_credentials with a signed JWT client assertion",
        response_model=None,
        openapi_extra=permission_extra(Permission.PUBLIC, _form_body(["grant_type"])),
    )
    async def token(request: Request) -> JSONResponse:
        try:
            _limit(token_limiter, _address(request))
            form = await _form(request)
        except FhirError as exc:  # OAuth clients parse OAuth errors, not OperationOutcomes
            description = exc.issues[0].diagnostics if exc.issues else "invalid request"
            body = {"error": "invalid_request", "error_description": description}
            return JSONResponse(body, status_code=exc.status, headers={**NO_STORE, **exc.headers})
        try:
            issued = await run_in_threadpool(security.tokens.issue, form)
        except AuthenticationError as exc:
            audit_sign_in(security, request, AuditAction.TOKEN, _client_of(form), False, exc)
            status = exc.status if exc.status in (400, 401) else 400
            body = {"error": getattr(exc, "code", "invalid_request"), "error_description": str(exc)}
            return JSONResponse(body, status_code=status, headers=NO_STORE)
        audit_sign_in(security, request, AuditAction.TOKEN, _client_of(form), True)
        return JSONResponse(
            {
                "access_token": issued.access_token,
                "token_type": "bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope,
            },
            headers=NO_STORE,
        )

    @router.post(
        "/auth/login",
        summary="Sign in with user name, password and TOTP code; sets the session cookie",
        response_model=None,
        openapi_extra=permission_extra(
            Permission.PUBLIC, _form_body(["username", "password", "code"])
        ),
    )
    async def login(request: Request) -> JSONResponse:
        address = _address(request)
        _limit(login_limiter, address)
        form = await _form(request)
        username = form.get("username", "")
        if USERNAME_PATTERN.match(username):
            _limit(login_limiter, f"user:{username}")
        try:
            principal = await run_in_threadpool(
                security.users.login, username, form.get("password", ""), form.get("code", "")
            )
        except AuthenticationError as exc:
            audit_sign_in(security, request, AuditAction.LOGIN, _safe_name(username), False, exc)
            raise FhirError.of(401, "login", str(exc)) from None
        session = await run_in_threadpool(security.sessions.start, principal)
        audit_sign_in(
            security, request, AuditAction.LOGIN, principal.subject, True, role=principal.role
        )
        response = JSONResponse(
            {
                "username": principal.subject,
                "role": principal.role.value,
                "csrf_token": session.csrf_token,
                "idle_timeout_seconds": int(security.sessions.idle_timeout.total_seconds()),
            },
            headers=NO_STORE,
        )
        response.set_cookie(
            SESSION_COOKIE,
            session.token,
            httponly=True,
            secure=True,
            samesite="strict",
            path="/",
        )
        return response

    @router.post(
        "/auth/logout",
        summary="End the session",
        response_model=None,
        openapi_extra=permission_extra(Permission.SESSION),
    )
    def logout(request: Request, caller: Caller = caller_for(Permission.SESSION)) -> JSONResponse:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            security.sessions.end(token)
        security.access.record(caller.principal, caller.ctx, AuditAction.LOGOUT)
        response = JSONResponse({"signed_out": True}, headers=NO_STORE)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True)
        return response

    @router.get(
        "/auth/whoami",
        summary="The signed-in principal",
        openapi_extra=permission_extra(Permission.SESSION),
    )
    def whoami(caller: Caller = caller_for(Permission.SESSION)) -> dict[str, Any]:
        principal = caller.principal
        return {
            "subject": principal.subject,
            "kind": principal.kind,
            "role": principal.role.value,
            "fhir_user": principal.fhir_user,
            "purpose": caller.ctx.purpose.value,
            "scopes": sorted(principal.scopes) if principal.scopes is not None else None,
        }

    return router


async def _form(request: Request) -> dict[str, str]:
    require_content_type(request, FORM_TYPES)
    body = await read_limited(request, MAX_AUTH_FORM_BYTES)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise FhirError.of(400, "structure", "the body is not UTF-8 form-encoded fields") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise FhirError.of(400, "structure", f"the field '{name[:32]}' is repeated")
        form[name] = value
    return form


def _limit(limiter: RateLimiter, key: str) -> None:
    retry_after = limiter.check(key)
    if retry_after is not None:
        issues = FhirError.of(429, "throttled", "too many attempts; wait and try again").issues
        raise FhirError(429, issues, {"Retry-After": str(max(1, math.ceil(retry_after)))})


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _client_of(form: dict[str, str]) -> str:
    """The client id an assertion claims (for the audit only; nothing here trusts it)."""
    claimed = claimed_client_id(form.get("client_assertion", ""))
    return claimed if claimed and _CLIENT_ID.match(claimed) else "unknown-client"


def _safe_name(username: str) -> str:
    return username if USERNAME_PATTERN.match(username) else "unknown-user"


def audit_sign_in(
    security: WebSecurity,
    request: Request,
    action: AuditAction,
    agent: str,
    succeeded: bool,
    exc: Exception | None = None,
    role: Role | None = None,
) -> None:
    """Every sign-in attempt, failed or not; a failure has no role yet, only a claimed name."""
    failure = f"refused: {getattr(exc, 'code', 'invalid')}" if exc is not None else None
    security.access.audit.append(
        AuditRecord(
            action=action,
            outcome=AuditOutcome.SUCCESS if succeeded else AuditOutcome.MINOR_FAILURE,
            agent=agent,
            role=role.value if role else "unauthenticated",
            agent_kind="client" if action is AuditAction.TOKEN else "user",
            fhir_user=None,
            purpose=None,
            patient_id=None,
            source_address=_address(request),
            flags=frozenset() if succeeded else frozenset({"failed-login"}),
            detail=failure,
        )
    )


def _form_body(required: list[str]) -> dict[str, Any]:
    properties = {name: {"type": "string"} for name in required}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "properties": properties, "required": required}
                }
            },
        }
    }
