"""All the page routers of the app, and how their refusals are shown."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from careloop.web.ui import console, patient_pages, portal, worklist_pages
from careloop.web.ui.framework import (
    SignInRequired,
    UiError,
    error_page,
    sign_in_redirect,
)
from careloop.web.ui.services import UiServices
from careloop.web.ui.session_pages import build_session_router


def include_pages(app: FastAPI, services: UiServices) -> None:
    app.include_router(build_session_router(services))
    for pages in (worklist_pages, patient_pages, portal, console):
        app.include_router(pages.build_router(services))
    app.add_exception_handler(UiError, _ui_error)
    app.add_exception_handler(SignInRequired, _sign_in)


async def _ui_error(request: Request, exc: Exception) -> HTMLResponse:
    assert isinstance(exc, UiError)
    return error_page(request, exc)


async def _sign_in(_request: Request, exc: Exception) -> RedirectResponse:
    assert isinstance(exc, SignInRequired)
    return sign_in_redirect(exc)
