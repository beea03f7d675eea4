"""Signing in and out of the web pages in real Chromium, and the refusals every page shares:
expired sessions, forged and cross-site forms, open redirects, a patient editing the URL to
reach another record. Each refusal is checked in the audit trail too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from careloop.access.layer import AccessLayer
from careloop.access.principal import Purpose
from careloop.access.roles import Role
from careloop.audit.log import AuditLog
from careloop.cli_rights import local_context, local_principal
from careloop.store.schema import web_sessions
from ui_support import PHONE, accessibility_violations, external_requests, screenshot

LANDING = {
    "nurse": "/app/worklist",
    "clinician": "/app/worklist",
    "patient": "/app/me",
    "ai-committee": "/app/governance/models",
    "auditor": "/app/governance/models",
    "admin": "/app/account",
    "pharmacist": "/app/worklist",
    "care-coordinator": "/app/worklist",
    "data-scientist": "/app/governance/models",
}


def audit_flags_since(site, moment: datetime) -> list[frozenset[str]]:
    return [event.flags for event in AuditLog(site.store).events(since=moment)]


def patient_ids(site, count: int) -> list[str]:
    page, _ = AccessLayer(site.store).search(
        local_principal(Role.CLINICIAN),
        local_context(Purpose.TREATMENT),
        "Patient",
        lambda _patient: site.store.search("Patient", count=count),
        patient_id=None,
        query_text=f"_count={count}",
    )
    return [str(item.body["id"]) for item in page.resources]


@pytest.mark.parametrize("username", sorted(LANDING))
def test_each_demo_role_signs_in_and_lands_where_it_works(ui_site, browser_page, username) -> None:
    page = browser_page
    ui_site.sign_in(page, username, through_form=True)
    assert page.url == ui_site.url(LANDING[username])
    assert page.locator("h1").count() == 1
    # the navigation offers only what the role may open
    links = page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts()
    if username == "patient":
        assert links == ["My care", "My data", "Sharing", "Messages"]
    if username in ("nurse", "clinician"):
        assert "Worklist" in links and "Audit" not in links and "Models" not in links
    if username == "auditor":
        assert "Audit" in links and "Worklist" not in links
    if username == "admin":
        assert links == []


def test_sign_in_page_is_accessible_and_refuses_a_wrong_code(ui_site, browser_page) -> None:
    page = browser_page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    started = datetime.now(UTC)
    page.goto(ui_site.url("/app/login"))
    assert accessibility_violations(page) == []
    headers = page.request.get(ui_site.url("/app/login")).headers
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "script-src" not in headers["content-security-policy"]  # no script, from anywhere
    page.get_by_label("User name").fill("nurse")
    page.get_by_label("Password").fill("careloop-demo-password")
    page.get_by_label("Code from your authenticator app").fill("000000")
    page.get_by_role("button", name="Sign in").click()
    assert "/app/login" in page.url
    assert "not right" in page.get_by_role("alert").inner_text()
    assert accessibility_violations(page) == []
    assert external_requests(requested, ui_site.base_url) == []
    screenshot(page, "session-sign-in-refused")
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert any("failed-login" in flags for flags in audit_flags_since(ui_site, started))


def test_expired_session_goes_to_sign_in_is_audited_and_comes_back(ui_site, browser_page) -> None:
    page = browser_page
    ui_site.sign_in(page, "clinician", through_form=True)
    started = datetime.now(UTC)
    # the session has been idle longer than the idle timeout (15 minutes by default)
    with ui_site.store.engine.begin() as connection:
        connection.execute(
            update(web_sessions)
            .where(web_sessions.c.username == "clinician", web_sessions.c.ended_at.is_(None))
            .values(last_seen=datetime.now(UTC) - timedelta(hours=1))
        )
    page.goto(ui_site.url("/app/account"))
    assert "/app/login" in page.url
    assert "without activity" in page.get_by_role("status").inner_text()
    assert any("expired-session" in flags for flags in audit_flags_since(ui_site, started))
    screenshot(page, "session-expired")
    # signing in again returns to the page that was asked for
    page.get_by_label("User name").fill("clinician")
    page.get_by_label("Password").fill("careloop-demo-password")
    page.get_by_label("Code from your authenticator app").fill(ui_site.next_code("clinician"))
    page.get_by_role("button", name="Sign in").click()
    assert page.url == ui_site.url("/app/account")


def test_forged_and_cross_site_forms_change_nothing(ui_site, browser_page) -> None:
    page = browser_page
    ui_site.sign_in(page, "patient")
    started = datetime.now(UTC)
    # a form without the session's token (what a forged request carries)
    forged = page.request.post(
        ui_site.url("/app/language"), form={"lang": "es", "csrf_token": "guess"}, max_redirects=0
    )
    assert forged.status == 403
    assert "did not come from your careloop session" in forged.text()
    assert any("csrf" in flags for flags in audit_flags_since(ui_site, started))
    # a page on another site (localhost is another site than 127.0.0.1) posting to careloop:
    # the strict cookie is not sent with it, so it reaches the sign-in page and changes nothing
    page.goto(ui_site.base_url.replace("127.0.0.1", "localhost") + "/healthz")
    page.set_content(
        f'<form method="post" action="{ui_site.url("/app/language")}">'
        '<input name="lang" value="es"><button>go</button></form>'
    )
    page.get_by_role("button", name="go").click()
    page.wait_for_load_state("domcontentloaded")
    assert "/app/login" in page.url
    page.goto(ui_site.url("/app/me"))
    assert page.locator("html").get_attribute("lang") == "en"


def test_no_open_redirect_after_sign_in(ui_site, browser_page) -> None:
    page = browser_page
    page.goto(ui_site.url("/app/login?next=https://attacker.example/phish"))
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("careloop-demo-password")
    page.get_by_label("Code from your authenticator app").fill(ui_site.next_code("admin"))
    page.get_by_role("button", name="Sign in").click()
    assert page.url == ui_site.url("/app/account")


def test_patient_editing_the_url_reaches_no_other_record_and_is_audited(
    ui_site, browser_page
) -> None:
    own, other = patient_ids(ui_site, 2)
    page = browser_page
    ui_site.sign_in(page, "patient")
    started = datetime.now(UTC)
    for path in (f"/app/patients/{other}", f"/fhir/Patient/{other}"):
        response = page.goto(ui_site.url(path))
        assert response is not None and response.status == 403, path
        assert other not in page.content()
    screenshot(page, "session-patient-url-refused")
    events = list(AuditLog(ui_site.store).events(since=started))
    refused = [e for e in events if "other-patient" in e.flags]
    assert refused and all(e.agent == "patient" for e in refused)
    assert own != other


def test_sign_out_ends_the_session(ui_site, browser_page) -> None:
    page = browser_page
    ui_site.sign_in(page, "admin")
    assert accessibility_violations(page) == []
    page.get_by_role("button", name="Sign out").click()
    assert "/app/login" in page.url
    page.goto(ui_site.url("/app/account"))
    assert "/app/login" in page.url


def test_keyboard_alone_reaches_the_content_and_the_form(ui_site, browser_page) -> None:
    page = browser_page
    page.goto(ui_site.url("/app/login"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # from the content, Tab walks the form in order and Enter submits it
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "username"
    page.keyboard.type("admin")
    page.keyboard.press("Tab")
    page.keyboard.type("careloop-demo-password")
    page.keyboard.press("Tab")
    page.keyboard.type(ui_site.next_code("admin"))
    page.keyboard.press("Enter")
    page.wait_for_url(ui_site.url("/app/account"))
    # a visible focus ring: the outline our stylesheet draws on focus
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
