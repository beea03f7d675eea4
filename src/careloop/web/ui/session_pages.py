"""Signing in and out of the web pages, the landing page of each role, the language choice and
the stylesheet. Sign-in is the API's (password + TOTP, rate-limited, every attempt audited)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from careloop.access.roles import Permission
from careloop.audit.events import AuditAction
from careloop.identity import AuthenticationError
from careloop.web.auth import SESSION_COOKIE, permission_extra
from careloop.web.auth_routes import USERNAME_PATTERN, audit_sign_in
from careloop.web.ui.framework import (
    LANG_COOKIE,
    LANGUAGES,
    PAGE_HEADERS,
    STATIC_DIR,
    UI_PREFIX,
    UiCaller,
    UiError,
    home_path,
    read_form,
    redirect,
    render,
    safe_next,
    ui_caller,
)
from careloop.web.ui.services import UiServices

STYLESHEETS = frozenset({"careloop.css"})
HIDDEN = {"include_in_schema": False}


def build_session_router(services: UiServices) -> APIRouter:
    router = APIRouter(**HIDDEN)
    security = services.security

    @router.get(f"{UI_PREFIX}/login", openapi_extra=permission_extra(Permission.PUBLIC))
    def login_page(reason: str = "", next: str = "") -> HTMLResponse:  # noqa: A002
        return render(
            None,
            "login.html",
            title="Sign in",
            reason=reason[:200],
            next_path=safe_next(next) or "",
            error="",
            username="",
            demo=services.demo,
        )

    @router.post(f"{UI_PREFIX}/login", openapi_extra=permission_extra(Permission.PUBLIC))
    async def login(request: Request) -> Response:
        address = request.client.host if request.client else "unknown"
        form = await read_form(request)
        username = form.get("username", "").strip().lower()
        next_path = safe_next(form.get("next")) or ""
        if services.login_limiter.check(address) is not None or (
            USERNAME_PATTERN.match(username)
            and services.login_limiter.check(f"user:{username}") is not None
        ):
            raise UiError(429, "Too many attempts", "Wait a minute, then try again.")
        try:
            principal = await run_in_threadpool(
                security.users.login, username, form.get("password", ""), form.get("code", "")
            )
        except AuthenticationError as exc:
            audit_sign_in(security, request, AuditAction.LOGIN, username, False, exc)
            return render(
                None,
                "login.html",
                title="Sign in",
                status=401,
                reason="",
                next_path=next_path,
                error="The user name, password or code is not right.",
                username=username if USERNAME_PATTERN.match(username) else "",
                demo=services.demo,
            )
        session = await run_in_threadpool(security.sessions.start, principal)
        audit_sign_in(
            security, request, AuditAction.LOGIN, principal.subject, True, role=principal.role
        )
        response = redirect(next_path or home_path(principal.role))
        response.set_cookie(
            SESSION_COOKIE, session.token, httponly=True, secure=True, samesite="strict", path="/"
        )
        return response

    @router.post(f"{UI_PREFIX}/logout", openapi_extra=permission_extra(Permission.SESSION))
    def logout(request: Request, caller: UiCaller = ui_caller(Permission.SESSION)) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            security.sessions.end(token)
        security.access.record(caller.principal, caller.ctx, AuditAction.LOGOUT)
        response = redirect(f"{UI_PREFIX}/login?reason=You+are+signed+out.")
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True)
        return response

    @router.get(f"{UI_PREFIX}/", openapi_extra=permission_extra(Permission.SESSION))
    def home(caller: UiCaller = ui_caller(Permission.SESSION)) -> RedirectResponse:
        return RedirectResponse(home_path(caller.role), status_code=303)

    @router.get(f"{UI_PREFIX}/account", openapi_extra=permission_extra(Permission.SESSION))
    def account(caller: UiCaller = ui_caller(Permission.SESSION)) -> HTMLResponse:
        return render(caller, "account.html", title="Your account")

    @router.post(f"{UI_PREFIX}/language", openapi_extra=permission_extra(Permission.SESSION))
    def language(caller: UiCaller = ui_caller(Permission.SESSION)) -> Response:
        chosen = caller.form.get("lang", "")
        if chosen not in LANGUAGES:
            raise UiError(400, "Unknown language", "Choose English or Español.")
        back = safe_next(caller.form.get("next")) or home_path(caller.role)
        response = redirect(back)
        response.set_cookie(LANG_COOKIE, chosen, samesite="strict", secure=True, path="/")
        return response

    @router.get(f"{UI_PREFIX}/static/{{name}}", openapi_extra=permission_extra(Permission.PUBLIC))
    def static(name: str) -> Response:
        if name not in STYLESHEETS:
            raise UiError(404, "Not found", "There is no such file.")
        css = (STATIC_DIR / name).read_bytes()
        headers = {**PAGE_HEADERS, "Cache-Control": "public, max-age=3600"}
        return Response(css, media_type="text/css", headers=headers)

    return router
