"""What every web page shares: templates, the signed-in caller, form CSRF, errors as pages.

The pages are rendered on the server (Jinja2, autoescaped) and work without JavaScript, so the
browser runs nothing but our own stylesheet: the Content-Security-Policy forbids scripts from
anywhere but our own origin, every inline script and every external asset.

Sessions are the API's (`identity.sessions`, the same cookie); a page reads the caller from the
cookie and, unlike the API, answers a missing or expired session with the sign-in page. Forms
carry a CSRF token derived from the session token (an HMAC, so nothing extra is stored and only
a holder of the cookie can compute it); every refused form and expired session is audited.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from careloop.access.errors import AccessDenied
from careloop.access.principal import DEFAULT_PURPOSE, AccessContext, Principal
from careloop.access.roles import CARE_ROLES, Permission, Role, allows
from careloop.audit.events import AuditAction, AuditOutcome, AuditRecord
from careloop.identity import AuthenticationError
from careloop.web.auth import SESSION_COOKIE, WebSecurity
from careloop.web.body import FORM_TYPES, read_limited
from careloop.web.outcomes import FhirError

UI_PREFIX = "/app"
TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
CSRF_FIELD = "csrf_token"
LANG_COOKIE = "careloop-lang"
LANGUAGES = ("en", "es")
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 200
# Pages may load our own stylesheet and images, submit forms to us, and nothing else.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"}

templates = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class UiError(Exception):
    """A refusal shown as a page: status, a heading and a sentence saying what is wrong."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in page, told why, and brought back."""

    def __init__(self, reason: str, next_path: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.next_path = next_path


@dataclass(frozen=True)
class UiCaller:
    """The signed-in person on one request."""

    principal: Principal
    ctx: AccessContext
    csrf: str  # the token this session's forms carry
    lang: str  # "en" or "es"
    form: dict[str, str] = field(default_factory=dict)  # a POST's fields, CSRF checked

    @property
    def role(self) -> Role:
        return self.principal.role


def form_token(session_token: str) -> str:
    """The CSRF token of a session's forms: keyed by the session token, which only the
    browser holding the cookie knows, and different from anything the server stores."""
    return hmac.new(session_token.encode("utf-8"), b"careloop-ui-form-v1", "sha256").hexdigest()


def ui_caller(permission: Permission) -> Any:
    """A FastAPI dependency: the signed-in caller holding `permission`, its form read and its
    CSRF token checked on POST. Missing or expired session: SignInRequired (audited when a
    session was presented). Not permitted: UiError 403 (audited by the access layer)."""

    async def dependency(request: Request) -> UiCaller:
        security: WebSecurity = request.app.state.security
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            raise SignInRequired("Please sign in.", _here(request))
        try:
            principal, _csrf_hash = security.sessions.resume(token)
        except AuthenticationError as exc:
            _audit_refusal(security, request, "expired-session", str(exc))
            raise SignInRequired(str(exc), _here(request)) from None
        ctx = AccessContext(
            purpose=DEFAULT_PURPOSE[principal.role],
            request_id=request.headers.get("x-request-id", "")[:64],
            source=request.client.host if request.client else "",
        )
        csrf = form_token(token)
        form: dict[str, str] = {}
        if request.method == "POST":
            form = await read_form(request)
            presented = form.pop(CSRF_FIELD, "")
            if not hmac.compare_digest(presented.encode("utf-8"), csrf.encode("utf-8")):
                _audit_refusal(
                    security, request, "csrf", "a form without this session's token", principal
                )
                raise UiError(
                    403,
                    "Form refused",
                    "This form did not come from your careloop session, so nothing was saved. "
                    "Go back, reload the page and try again.",
                )
        try:
            security.access.authorize(principal, ctx, permission)
        except AccessDenied:
            raise UiError(403, "Not available", "Your role does not open this page.") from None
        return UiCaller(principal, ctx, csrf, language_of(request), form)

    return Depends(dependency)


async def read_form(request: Request) -> dict[str, str]:
    """A url-encoded form, bounded in size and fields; UiError 400/413/415 naming the problem."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in FORM_TYPES:
        raise UiError(415, "Not a form", "Send the form as application/x-www-form-urlencoded.")
    try:
        body = await read_limited(request, MAX_FORM_BYTES)
    except FhirError:
        raise UiError(413, "Too long", "The form is longer than careloop accepts.") from None
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise UiError(400, "Unreadable form", "The form is not UTF-8 form fields.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise UiError(400, "Unreadable form", f"The field '{name[:32]}' came twice.")
        form[name] = value
    return form


CARE_ROLE_NAMES = "clinicians, nurses, pharmacists and care coordinators"


def require_care_role(caller: UiCaller, page: str) -> None:
    """The care team's pages (the worklist, a patient's page, the inbox) refuse other roles that
    hold the same permission: a patient holds patient-read, for their own record only."""
    if caller.role not in CARE_ROLES:
        raise UiError(
            403,
            "Not available",
            f"The {page} is for the care team ({CARE_ROLE_NAMES}); your role "
            f"({caller.role.value}) does not open it.",
        )


def language_of(request: Request) -> str:
    """The chosen language (cookie), else the browser's first of ours, else English."""
    chosen = request.cookies.get(LANG_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "en"


def render(
    caller: UiCaller | None,
    template: str,
    *,
    title: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page from `template`, with the navigation of the caller's role."""
    page = templates.get_template(template).render(
        title=title,
        caller=caller,
        nav=navigation(caller.role, caller.lang) if caller else [],
        lang=caller.lang if caller else "en",
        csrf_field=CSRF_FIELD,
        prefix=UI_PREFIX,
        **context,
    )
    return HTMLResponse(page, status_code=status, headers=PAGE_HEADERS)


def redirect(path: str) -> RedirectResponse:
    """After a POST: see the result with a GET (303), so a reload does not submit twice."""
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str


# the portal speaks the patient's language; staff pages are in English
PATIENT_NAV = {
    "en": ("My care", "My data", "Sharing", "Messages"),
    "es": ("Mi cuidado", "Mis datos", "Compartir", "Mensajes"),
}


def navigation(role: Role, lang: str = "en") -> list[NavItem]:
    """The places a role may go; a page a role may not open is never linked."""
    items: list[NavItem] = []
    if role in CARE_ROLES:
        items.append(NavItem("Worklist", f"{UI_PREFIX}/worklist"))
        items.append(NavItem("Messages", f"{UI_PREFIX}/inbox"))
    if role is Role.PATIENT:
        labels = PATIENT_NAV[lang] if lang in PATIENT_NAV else PATIENT_NAV["en"]
        paths = ("", "/data", "/sharing", "/messages")
        pairs = zip(labels, paths, strict=True)
        items += [NavItem(label, f"{UI_PREFIX}/me{path}") for label, path in pairs]
    if allows(role, Permission.MODEL_GOVERNANCE):
        items += [
            NavItem("Models", f"{UI_PREFIX}/governance/models"),
            NavItem("Alerts and overrides", f"{UI_PREFIX}/governance/alerts"),
        ]
    if allows(role, Permission.AUDIT_READ):
        items.append(NavItem("Audit", f"{UI_PREFIX}/governance/audit"))
    return items


def home_path(role: Role) -> str:
    """Where a role lands after signing in."""
    items = navigation(role)
    return items[0].path if items else f"{UI_PREFIX}/account"


def safe_next(path: str | None) -> str | None:
    """A same-site path under /app to return to after sign-in, or None (no open redirect)."""
    if not path or not path.startswith(UI_PREFIX + "/") or "//" in path or "\\" in path:
        return None
    if len(path) > 512 or any(ord(ch) < 0x20 for ch in path):
        return None
    return path


def sign_in_redirect(exc: SignInRequired) -> RedirectResponse:
    target = f"{UI_PREFIX}/login?reason={quote(exc.reason[:200])}"
    if safe_next(exc.next_path):
        target += f"&next={quote(exc.next_path)}"
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})


def error_page(request: Request, exc: UiError) -> HTMLResponse:
    return render(
        None,
        "error.html",
        title=exc.title,
        status=exc.status,
        message=exc.message,
        home=f"{UI_PREFIX}/",
    )


def _here(request: Request) -> str:
    path = request.url.path
    if request.method != "GET":
        return UI_PREFIX + "/"
    query = request.url.query
    return f"{path}?{query}" if query else path


def _audit_refusal(
    security: WebSecurity,
    request: Request,
    flag: str,
    detail: str,
    principal: Principal | None = None,
) -> None:
    """A refused page request: an expired or unknown session, or a forged form."""
    security.access.audit.append(
        AuditRecord(
            action=AuditAction.LOGIN if principal is None else AuditAction.UPDATE,
            outcome=AuditOutcome.MINOR_FAILURE,
            agent=principal.subject if principal else "unknown-user",
            role=principal.role.value if principal else "unauthenticated",
            agent_kind="user",
            fhir_user=principal.fhir_user if principal else None,
            purpose=None,
            patient_id=None,
            source_address=request.client.host if request.client else "",
            flags=frozenset({flag}),
            detail=f"web page refused: {detail[:160]}",
        )
    )


def now_utc() -> datetime:
    return datetime.now(UTC)


def since_text(moment: datetime | None, now: datetime | None = None) -> str:
    """'12 min ago', '3 h ago', '2 d ago' or 'never': what a busy nurse reads at a glance."""
    if moment is None:
        return "never"
    seconds = max(0, int(((now or now_utc()) - moment).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


Handler = Callable[..., Any]
