"""Who is calling: bearer tokens (API clients) and session cookies (people), and the per-route
permission every route declares.

Each route states its `Permission` twice over, on purpose: as a dependency that enforces it, and
as `x-careloop-permission` in the OpenAPI operation, which the route-by-role test reads to check
every route against the authorization table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from careloop.access.errors import AccessDenied
from careloop.access.layer import AccessLayer
from careloop.access.principal import DEFAULT_PURPOSE, AccessContext, Principal, Purpose
from careloop.access.roles import Permission
from careloop.identity import AuthenticationError
from careloop.identity.sessions import SessionManager
from careloop.identity.tokens import TokenService
from careloop.identity.users import UserDirectory
from careloop.web.outcomes import FhirError, Issue

SESSION_COOKIE = "__Host-careloop-session"
CSRF_HEADER = "x-csrf-token"
PURPOSE_HEADER = "x-purpose-of-use"
PERMISSION_KEY = "x-careloop-permission"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    principal: Principal
    ctx: AccessContext


@dataclass
class WebSecurity:
    """The identity services and the access layer of one app."""

    access: AccessLayer
    tokens: TokenService
    sessions: SessionManager
    users: UserDirectory

    def principal_of(self, request: Request) -> Principal:
        authorization = request.headers.get("authorization")
        if authorization is not None:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                raise _unauthenticated("use 'Authorization: Bearer <token>'")
            return self.tokens.authenticate(credentials.strip())
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is None:
            raise _unauthenticated("sign in, or send a bearer token from /auth/token")
        principal, csrf_hash = self.sessions.resume(cookie)
        if request.method not in SAFE_METHODS:
            presented = request.headers.get(CSRF_HEADER, "")
            if not self.sessions.check_csrf(csrf_hash, presented):
                raise FhirError.of(403, "security", f"missing or wrong {CSRF_HEADER} header")
        return principal


def permission_extra(permission: Permission, extra: dict[str, Any] | None = None) -> dict:
    """openapi_extra naming a route's permission (merged with any other extra)."""
    return {**(extra or {}), PERMISSION_KEY: permission.value}


def requires(permission: Permission) -> Callable[[Request], Caller]:
    """A dependency resolving the caller and enforcing `permission` (audited when refused)."""

    def dependency(request: Request) -> Caller:
        security: WebSecurity = request.app.state.security
        try:
            principal = security.principal_of(request)
        except AuthenticationError as exc:
            raise _unauthenticated(str(exc)) from None
        ctx = AccessContext(
            purpose=_purpose(request, principal),
            request_id=request.headers.get("x-request-id", "")[:64],
            source=request.client.host if request.client else "",
        )
        try:
            security.access.authorize(principal, ctx, permission)
        except AccessDenied as exc:
            raise FhirError.of(exc.status, "forbidden", str(exc)) from None
        return Caller(principal, ctx)

    return dependency


def caller_for(permission: Permission) -> Any:
    return Depends(requires(permission))


def _purpose(request: Request, principal: Principal) -> Purpose:
    stated = request.headers.get(PURPOSE_HEADER)
    if stated is None:
        return DEFAULT_PURPOSE[principal.role]
    try:
        return Purpose.parse(stated[:32])
    except ValueError as exc:
        raise FhirError.of(400, "value", f"{PURPOSE_HEADER}: {exc}") from None


def _unauthenticated(message: str) -> FhirError:
    return FhirError(
        401,
        [Issue("error", "login", f"authentication required: {message}")],
        {"WWW-Authenticate": 'Bearer realm="careloop"'},
    )


def denied(exc: AccessDenied) -> FhirError:
    code = "forbidden" if exc.status == 403 else "not-found"
    return FhirError.of(exc.status, code, str(exc))
