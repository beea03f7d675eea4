"""The governance console in real Chromium: the AI committee reads the registry, one model's
card, fairness and drift, and the alert analytics; the auditor reviews the trail; other roles
are refused. Every page is checked by axe and at phone size, and kept as a screenshot."""

from __future__ import annotations

import json

from careloop.audit.log import AuditLog
from careloop.governance.adapters import SHIPPED_MODELS
from ui_support import PHONE, accessibility_violations, screenshot

MODELS = "/app/governance/models"
ALERTS = "/app/governance/alerts"
AUDIT = "/app/governance/audit"
READMISSION = json.loads((SHIPPED_MODELS / "readmission" / "model.json").read_text())["version"]


def fits_a_phone(page) -> bool:  # noqa: ANN001
    page.set_viewport_size(PHONE)
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_committee_reads_the_registry_and_one_model(ui_site, browser_page) -> None:
    page = browser_page
    ui_site.sign_in(page, "ai-committee")
    assert page.url.endswith(MODELS)  # the committee lands on the registry
    main = page.locator("main")
    assert page.get_by_role("heading", level=1).inner_text() == "Models"
    assert page.get_by_role("heading", name="readmission", level=2).is_visible()
    assert page.get_by_role("heading", name="sepsis", level=2).is_visible()
    assert main.inner_text().count("active") >= 2
    page.get_by_text(f"Alert policy and state history of {READMISSION}").click()
    assert "demo: shipped model" in main.inner_text()
    assert accessibility_violations(page) == []
    screenshot(page, "console-models")

    page.get_by_role("link", name=READMISSION).first.click()
    page.wait_for_load_state("domcontentloaded")
    assert page.url.endswith(f"{MODELS}/{READMISSION}")
    text = main.inner_text()
    assert "intact (files match the checksum recorded at registration)" in text
    # the card, rendered from Markdown under the page's own headings
    assert page.get_by_role("heading", name=f"Model card: {READMISSION}", level=3).is_visible()
    assert page.get_by_role("heading", name="Intended use", level=4).is_visible()
    # fairness, from the artifact's fairness.json
    assert page.get_by_role("heading", name="By race", level=3).is_visible()
    assert "age_band=[80-90)" in text and "too small to judge" in text
    assert "fewer than 5" in text  # the group of one patient of unknown sex
    # drift: the demo has run no check, and says so
    assert "No drift checks yet for this version." in text
    assert page.locator("script").count() == 0
    assert accessibility_violations(page) == []
    screenshot(page, "console-model-version")
    assert fits_a_phone(page)
    screenshot(page, "console-model-version-phone")
    page.goto(ui_site.url(MODELS))
    assert fits_a_phone(page)

    missing = page.goto(ui_site.url(f"{MODELS}/readmission-no-such-version"))
    assert missing is not None and missing.status == 404
    assert "No registered model has this version" in page.inner_text("main")
    bad = page.goto(ui_site.url(f"{MODELS}/%3Cscript%3E"))
    assert bad is not None and bad.status == 400
    assert "letters, digits" in page.inner_text("main")
    refused = page.goto(ui_site.url(AUDIT))  # the committee does not review the audit trail
    assert refused is not None and refused.status == 403


def test_committee_reads_alert_burden_and_overrides(ui_site, browser_page) -> None:
    page = browser_page
    ui_site.sign_in(page, "ai-committee")
    page.get_by_role("link", name="Alerts and overrides").click()
    page.wait_for_load_state("domcontentloaded")
    text = page.inner_text("main")
    assert "careloop-patient-view" in text  # the demo's patient-view cards
    assert "playbook:diabetes-hba1c-follow-up" in text
    assert "the budget demoted" in text
    assert page.get_by_role("img", name="Cards per day").count() == 1
    assert accessibility_violations(page) == []
    screenshot(page, "console-alerts")
    assert fits_a_phone(page)
    screenshot(page, "console-alerts-phone")

    page.get_by_label("From (YYYY-MM-DD)").fill("2020-01-01")
    page.get_by_label("To, included (YYYY-MM-DD)").fill("2020-01-31")
    page.get_by_role("button", name="Show this period").click()
    page.wait_for_load_state("domcontentloaded")
    assert "since=2020-01-01" in page.url
    assert "No card was issued in this period." in page.inner_text("main")

    bad = page.goto(ui_site.url(f"{ALERTS}?since=2026-02-30"))
    assert bad is not None and bad.status == 400
    assert "'since'" in page.inner_text("main")
    bad = page.goto(ui_site.url(f"{ALERTS}?until=tomorrow"))
    assert bad is not None and bad.status == 400
    assert "'until'" in page.inner_text("main")


def test_auditor_reviews_the_trail_and_the_view_is_audited(ui_site, browser_page) -> None:
    page = browser_page
    ui_site.sign_in(page, "auditor")
    page.get_by_role("link", name="Audit").click()
    page.wait_for_load_state("domcontentloaded")
    assert page.url.endswith(AUDIT)
    text = page.inner_text("main")
    assert "verified" in text and "The whole chain is intact" in text
    assert "Refused pages and requests" in text
    assert page.locator("script").count() == 0
    assert accessibility_violations(page) == []
    screenshot(page, "console-audit")
    assert fits_a_phone(page)
    screenshot(page, "console-audit-phone")
    reviews = [
        event
        for event in AuditLog(ui_site.store).events(agent="auditor")
        if event.action == "audit-review"
    ]
    assert reviews and "review page" in (reviews[-1].resource.get("outcomeDesc") or "")
    bad = page.goto(ui_site.url(f"{AUDIT}?since=2026-03-02&until=2026-03-01"))
    assert bad is not None and bad.status == 400


def test_clinicians_and_patients_are_refused(ui_site, browser_page) -> None:
    page = browser_page
    ui_site.sign_in(page, "clinician")
    assert not page.get_by_role("link", name="Models").count()  # never linked
    refused = page.goto(ui_site.url(MODELS))
    assert refused is not None and refused.status == 403
    assert "Your role does not open this page." in page.inner_text("main")
    page.context.clear_cookies()

    ui_site.sign_in(page, "patient")
    for path in (MODELS, f"{MODELS}/{READMISSION}", ALERTS, AUDIT):
        refused = page.goto(ui_site.url(path))
        assert refused is not None and refused.status == 403, path
