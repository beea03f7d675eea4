"""Transport and response hardening: TLS-only patient data, security headers on every response.

Plain ASGI middleware so they wrap every response, the error responses included.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careloop.web.outcomes import Issue, outcome_response

HSTS = "max-age=31536000; includeSubDomains"
# An API answers JSON only: nothing may be framed, scripted or fetched from it as a page.
API_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
# no patient data, and probes and API tooling read them before TLS is sorted out
PLAIN_HTTP_PATHS = frozenset({"/healthz", "/openapi.json"})


class SecurityHeadersMiddleware:
    """Adds the security headers, HSTS over TLS, and `Cache-Control: no-store` unless a route
    set its own: a shared cache must never keep a patient's data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in API_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Cache-Control", "no-store")
                if secure:
                    headers.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, with_headers)


class TlsOnlyMiddleware:
    """Refuses every request that did not arrive over TLS (except the liveness probe).

    Installed unless the app runs in demo mode on loopback, the one case where plain HTTP is
    allowed, so patient data never crosses a network in the clear.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("scheme") != "https"
            and scope.get("path") not in PLAIN_HTTP_PATHS
        ):
            issue = Issue("error", "security", "careloop serves patient data only over HTTPS")
            await outcome_response(403, [issue])(scope, receive, send)
            return
        await self.app(scope, receive, send)
