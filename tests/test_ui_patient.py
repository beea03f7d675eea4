"""The clinician's patient page in real Chromium: charts against the personal band, the cards of
opening the chart, accepting and overriding them with a reason, and every refusal.

Writes (feedback) go to demo patients 2-5 only; patient 1 is read.
"""

from __future__ import annotations

import re

import orjson
from sqlalchemy import select

from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Role
from careloop.cds.feedback import MAX_COMMENT, FeedbackBook
from careloop.cds.overrides import override_report
from careloop.store.schema import cds_feedback
from careloop.web.ui.framework import CSRF_FIELD
from careloop.web.ui.patient_pages import WEB_PAGES_ISSUER
from ui_support import PHONE, accessibility_violations, screenshot

SCRIPT = "<script>alert(1)</script>"
CLINICIAN = Principal("demo-check", "local", Role.CLINICIAN, "Practitioner/demo-clinician")
CTX = AccessContext(Purpose.TREATMENT, "test", "test")


def demo_patients(site, count: int = 5) -> list[str]:  # noqa: ANN001
    """The first demo patients, found as the demo clinician through the access layer."""
    store = site.store
    page, _withheld = AccessLayer(store).search(
        CLINICIAN,
        CTX,
        "Patient",
        lambda _patient: store.search("Patient", count=count),
        patient_id=None,
        query_text=f"_count={count}",
    )
    return [str(item.body["id"]) for item in page.resources]


def test_clinician_sees_charts_against_the_personal_band_and_the_cards(
    ui_site, browser_page
) -> None:
    page = browser_page
    first = demo_patients(ui_site)[0]
    ui_site.sign_in(page, "clinician")
    response = page.goto(ui_site.url(f"/app/patients/{first}"))
    assert response is not None and response.status == 200
    assert page.locator("h1").count() == 1
    charts = page.locator("figure.timeline")
    assert charts.count() >= 3
    assert page.locator("svg.chart[role='img'] title").count() == charts.count()
    assert page.locator("svg.chart rect.band").count() >= 1  # someone's own band, shaded
    heart = page.locator("#chart-hr figcaption").inner_text()
    assert re.search(r"Heart rate: latest \d+ /min", heart)
    assert "Usual band" in heart or "Not enough data for a personal baseline" in heart
    cards = page.locator("article.patient-card")
    assert cards.count() >= 1
    first_card = cards.first
    assert first_card.locator(".badge").first.inner_text() in ("Critical", "Warning", "Information")
    assert first_card.get_by_text("Confidence").count() == 1
    assert first_card.get_by_role("button", name=re.compile("^Accept")).count() == 1
    assert page.locator("main script").count() == 0
    assert accessibility_violations(page) == []
    screenshot(page, "patient-page-clinician")

    page.set_viewport_size(PHONE)
    page.goto(ui_site.url(f"/app/patients/{first}"))
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert accessibility_violations(page) == []
    screenshot(page, "patient-page-phone")

    # refusals: not an id, nobody by that id
    assert page.goto(ui_site.url("/app/patients/not%20an%20id")).status == 400
    assert "Not a patient id" in page.inner_text("main")
    assert page.goto(ui_site.url("/app/patients/no-such-patient-0")).status == 404
    assert "No such patient" in page.inner_text("main")


def _answerable_cards(page) -> list:  # noqa: ANN001
    """Cards with suggestions to accept and reasons to override."""
    return [
        card
        for card in page.locator("article.patient-card").all()
        if card.locator("input[type=checkbox]").count() and card.locator("select").count()
    ]


def test_nurse_accepts_one_card_and_overrides_another_with_an_escaped_comment(
    ui_site, browser_page
) -> None:
    page = browser_page
    ui_site.sign_in(page, "nurse")
    for patient_id in demo_patients(ui_site)[1:5]:  # patients 2-5: writes allowed
        page.goto(ui_site.url(f"/app/patients/{patient_id}"))
        if len(_answerable_cards(page)) >= 2:
            break
    else:
        raise AssertionError("no demo patient 2-5 has two cards to accept and override")
    accept = _answerable_cards(page)[0]
    accepted_uuid = accept.get_attribute("data-card")
    accepted_summary = accept.locator("h3").inner_text()
    accepted_label = accept.locator(".choice label").first.inner_text()
    suggestion_id = accept.locator("input[type=checkbox]").first.get_attribute("id")[2:]
    accept.locator("input[type=checkbox]").first.check()
    accept.get_by_role("button", name="Accept the ticked actions").click()
    page.wait_for_load_state("domcontentloaded")
    assert "/app/patients/" in page.url
    assert f"Accepted: {accepted_label}" in page.inner_text("section[aria-labelledby=decisions]")

    # the page was opened again (so its cards were issued again): override another card
    cards = _answerable_cards(page)
    target = next(c for c in cards if c.locator("h3").inner_text() != accepted_summary)
    assert (
        "Already recorded on this alert"
        in next(c for c in cards if c.locator("h3").inner_text() == accepted_summary).inner_text()
    )
    overridden_uuid = target.get_attribute("data-card")
    reason = target.locator("select option").nth(1)
    reason_code, reason_text = reason.get_attribute("value"), reason.inner_text()
    target.locator("select").select_option(reason_code)
    target.get_by_label(re.compile("^Comment")).fill(SCRIPT)
    target.get_by_role("button", name="Override").click()
    page.wait_for_load_state("domcontentloaded")
    section = page.locator("section[aria-labelledby=decisions]")
    assert f"Overridden: {reason_text}" in section.inner_text()
    assert section.locator("td.comment", has_text=SCRIPT).count() == 1  # the text, shown
    assert page.locator("main script").count() == 0  # and no script element made of it
    assert accessibility_violations(page) == []
    screenshot(page, "patient-page-feedback-recorded")

    # in the store: the same loop as CDS Hooks feedback, tied to the cards
    with ui_site.store.engine.connect() as connection:
        rows = {
            row.card_uuid: row
            for row in connection.execute(
                select(cds_feedback).where(
                    cds_feedback.c.card_uuid.in_([accepted_uuid, overridden_uuid])
                )
            )
        }
    assert rows[accepted_uuid].outcome == "accepted"
    assert orjson.loads(rows[accepted_uuid].accepted_suggestions) == [suggestion_id]
    assert rows[overridden_uuid].outcome == "overridden"
    assert rows[overridden_uuid].override_reason == reason_code
    assert {rows[u].issuer for u in rows} == {WEB_PAGES_ISSUER}
    book = FeedbackBook(ui_site.store, AccessLayer(ui_site.store))
    comment = book.comment(overridden_uuid, rows[overridden_uuid].outcome_timestamp, CLINICIAN, CTX)
    assert comment == SCRIPT  # stored as given
    report = override_report(ui_site.store, by=("service",))
    assert report.total.overridden >= 1 and report.total.accepted >= 1


def test_refusals_and_roles_without_the_write_right(ui_site, browser_page, chromium) -> None:
    page = browser_page
    patients = demo_patients(ui_site)
    second, third = patients[1], patients[2]
    ui_site.sign_in(page, "care-coordinator")
    page.goto(ui_site.url(f"/app/patients/{second}"))
    assert page.locator("article.patient-card").count() >= 1  # sees the cards
    assert page.locator("article.patient-card form").count() == 0  # but records nothing
    assert "needs the patient-write right" in page.inner_text("main")
    card = page.locator("article.patient-card").first.get_attribute("data-card")
    csrf = page.locator(f"input[name={CSRF_FIELD}]").first.get_attribute("value")
    refused = page.request.post(
        ui_site.url(f"/app/patients/{second}/cards/{card}/feedback"),
        form={CSRF_FIELD: csrf, "outcome": "accepted"},
    )
    assert refused.status == 403

    # a clinician's bad forms: each refused with what is wrong, nothing saved
    context = chromium.new_context()
    clinician = context.new_page()
    ui_site.sign_in(clinician, "clinician")
    clinician.goto(ui_site.url(f"/app/patients/{second}"))
    card = clinician.locator("article.patient-card").first.get_attribute("data-card")
    csrf = clinician.locator(f"input[name={CSRF_FIELD}]").first.get_attribute("value")

    def post(patient: str, card_uuid: str, **fields: str):  # noqa: ANN202
        return clinician.request.post(
            ui_site.url(f"/app/patients/{patient}/cards/{card_uuid}/feedback"),
            form={CSRF_FIELD: csrf, **fields},
        )

    missing = post(second, card, outcome="overridden", reason="", comment="x")
    assert missing.status == 400 and "Reason missing" in missing.text()
    reason = clinician.locator("article.patient-card").first.locator("select option").nth(1)
    too_long = post(
        second,
        card,
        outcome="overridden",
        reason=reason.get_attribute("value") or "",
        comment="x" * (MAX_COMMENT + 1),
    )
    assert too_long.status == 400 and "at most 2,000 characters" in too_long.text()
    unknown = post(second, "00000000-0000-4000-8000-000000000000", outcome="accepted")
    assert unknown.status == 404
    other = post(third, card, outcome="accepted")
    assert other.status == 400 and "not about this patient" in other.text()
    forged = clinician.request.post(
        ui_site.url(f"/app/patients/{second}/cards/{card}/feedback"),
        form={CSRF_FIELD: "forged", "outcome": "accepted"},
    )
    assert forged.status == 403
    context.close()

    # a patient account never reaches the care team's page, not even for their own record
    context = chromium.new_context()
    patient = context.new_page()
    ui_site.sign_in(patient, "patient")
    for patient_id in (patients[0], second):
        answer = patient.goto(ui_site.url(f"/app/patients/{patient_id}"))
        assert answer is not None and answer.status == 403
        assert "for the care team" in patient.inner_text("main")
    context.close()
