"""The patient portal and the care team's inbox in real Chromium.

The demo `patient` account is patient 1 (cared for by the demo nurse): My care, My data and
the download, and messages use it without changing what other tests see. Sharing and the
deletion request run on a second account created here for the demo's 8th patient, who has home
device data, no care relationship and no CDS cards, so nobody else's tests look at them; the
sharing test restores the usual settings at its end, and a deletion request erases nothing.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Role
from careloop.cds.feedback import FeedbackBook, parse_feedback
from careloop.cds.ledger import CardLedger, HookCall, IssuedCard
from careloop.fhir import codes
from careloop.fhir.indexing import patient_id_of
from careloop.identity.users import DEMO_PASSWORD, UserDirectory, demo_totp_secret
from careloop.portal import catalogue
from ui_support import PHONE, accessibility_violations, screenshot

SECOND_PATIENT_USER = "portal-patient-eight"
NURSE = Principal("nurse", "user", Role.NURSE, fhir_user="Practitioner/demo-nurse")
TREAT = AccessContext(Purpose.TREATMENT, source="127.0.0.1")
CLINICIAN = Principal("local:portal-test", "local", Role.CLINICIAN)


def demo_patients(store, count: int = 10) -> list[str]:  # noqa: ANN001
    page, _ = AccessLayer(store).search(
        CLINICIAN,
        TREAT,
        "Patient",
        lambda _p: store.search("Patient", count=count),
        patient_id=None,
        query_text=f"_count={count}",
    )
    return [str(item.body["id"]) for item in page.resources]


@pytest.fixture(scope="module")
def second_patient(ui_site) -> str:  # noqa: ANN001
    """A patient account for the demo's 8th patient (home devices, nobody else's tests)."""
    patient_id = demo_patients(ui_site.store)[7]
    users = UserDirectory(ui_site.store)
    if users.get(SECOND_PATIENT_USER) is None:
        users.add(
            SECOND_PATIENT_USER,
            Role.PATIENT,
            DEMO_PASSWORD,
            f"Patient/{patient_id}",
            totp_secret=demo_totp_secret(SECOND_PATIENT_USER),
        )
    return patient_id


def no_horizontal_scroll(page) -> bool:  # noqa: ANN001
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def check_phone(page, name: str) -> None:  # noqa: ANN001
    page.set_viewport_size(PHONE)
    assert no_horizontal_scroll(page), f"{name} scrolls sideways on a phone"
    screenshot(page, f"portal-{name}-phone")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_patient_reads_my_care_in_english_then_spanish(ui_site, browser_page) -> None:
    page = browser_page
    ui_site.sign_in(page, "patient")
    assert page.url.endswith("/app/me")
    assert page.get_by_role("heading", level=1).inner_text() == "My care"
    assert page.locator("html").get_attribute("lang") == "en"
    main = page.inner_text("main")
    assert catalogue.SENTENCES["care.intro"]["en"] in main
    # the demo patient has sepsis checks and cards, but until a clinician accepts a card the
    # plan says so plainly (another test file may accept one: then its catalogue phrase shows)
    plan_said = catalogue.SENTENCES["care.nothing_accepted"]["en"] in main or (
        catalogue.SENTENCES["care.accepted_intro"]["en"] in main
    )
    assert plan_said
    assert "Vital signs" in main and "Lab tests" in main
    assert accessibility_violations(page) == []
    screenshot(page, "portal-care-en")

    page.get_by_label("Language · Idioma").select_option("es")
    page.get_by_role("button", name="Change").click()
    page.wait_for_load_state("domcontentloaded")
    assert page.url.endswith("/app/me")
    assert page.locator("html").get_attribute("lang") == "es"
    assert page.get_by_role("heading", level=1).inner_text() == "Mi cuidado"
    # the frame around the page speaks Spanish too: navigation, sign-out, skip link
    nav = page.get_by_role("navigation", name="Principal").get_by_role("link")
    assert nav.all_inner_texts() == ["Mi cuidado", "Mis datos", "Compartir", "Mensajes"]
    assert page.get_by_role("button", name="Cerrar sesión").is_visible()
    assert page.get_by_role("link", name="Saltar al contenido").count() == 1
    main = page.inner_text("main")
    assert catalogue.SENTENCES["care.intro"]["es"] in main
    assert "Signos vitales" in main
    assert accessibility_violations(page) == []
    screenshot(page, "portal-care-es")
    check_phone(page, "care-es")
    # the choice of language holds on every page of the portal
    for path, heading in (
        ("/app/me/data", "Mis datos"),
        ("/app/me/sharing", "Compartir"),
        ("/app/me/messages", "Mensajes"),
    ):
        page.goto(ui_site.url(path))
        assert page.get_by_role("heading", level=1).inner_text() == heading
        assert page.locator("html").get_attribute("lang") == "es"
        assert accessibility_violations(page) == [], path
    screenshot(page, "portal-messages-es")


def test_patient_sees_who_read_their_record_and_downloads_it(ui_site, browser_page) -> None:
    page = browser_page
    patient_id = demo_patients(ui_site.store, 1)[0]
    access = AccessLayer(ui_site.store)
    access.patient_compartment(NURSE, TREAT, patient_id, ["Condition"])  # the nurse opens it
    ui_site.sign_in(page, "patient")
    page.goto(ui_site.url("/app/me/data"))
    assert page.get_by_role("heading", level=1).inner_text() == "My data"
    history = page.locator("#access-history tbody tr")
    newest_nurse = history.filter(has_text="nurse (nurse)").first
    assert "to treat you" in newest_nurse.inner_text()
    assert "read" in newest_nurse.inner_text()
    counts = page.inner_text("#data-counts")
    assert "Vital signs" in counts and "Lab tests" in counts
    assert accessibility_violations(page) == []
    screenshot(page, "portal-data")
    # the patient's look at the history is itself on the trail
    looked = [
        event
        for event in access.audit.events(patient_id=patient_id)
        if event.action == "audit-review" and event.agent == "patient"
    ]
    assert looked

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download my record (JSON file)").click()
    download = download_info.value
    assert download.suggested_filename.startswith("careloop-record-")
    assert download.suggested_filename.endswith(".json")
    bundle = json.loads(Path(download.path()).read_text(encoding="utf-8"))
    assert bundle["resourceType"] == "Bundle"
    resources = [entry["resource"] for entry in bundle["entry"]]
    assert any(r["resourceType"] == "Patient" and r["id"] == patient_id for r in resources)
    assert len(resources) > 100
    assert {patient_id_of(r) for r in resources} <= {patient_id, None}
    exports = [
        event
        for event in access.audit.events(patient_id=patient_id)
        if event.action == "export" and event.agent == "patient"
    ]
    assert exports
    check_phone(page, "data")


def test_a_sharing_choice_is_enforced_on_the_next_read(ui_site, browser_page, second_patient):
    page = browser_page
    access = AccessLayer(ui_site.store)

    def nurse_reads_steps() -> tuple[int, int]:
        found, withheld = access.search(
            NURSE,
            TREAT,
            "Observation",
            lambda pid: ui_site.store.search(
                "Observation", patient_id=pid, codes=[f"{codes.LOINC}|{codes.STEPS_24H}"], count=20
            ),
            patient_id=second_patient,
            query_text="code=steps",
        )
        return len(found.resources), withheld

    shared, withheld = nurse_reads_steps()
    assert shared > 0 and withheld == 0
    ui_site.sign_in(page, SECOND_PATIENT_USER)
    page.goto(ui_site.url("/app/me/sharing"))
    home_devices = page.get_by_label("My care team: Home devices and wearables: Allow")
    assert home_devices.is_checked()
    research = page.get_by_label("Research: My whole record: Allow")
    assert research.is_checked()
    assert accessibility_violations(page) == []
    screenshot(page, "portal-sharing-before")
    home_devices.uncheck()
    research.uncheck()
    page.get_by_role("button", name="Save my choices").click()
    page.wait_for_load_state("domcontentloaded")
    assert page.locator("#sharing-saved").is_visible()
    assert not page.get_by_label("My care team: Home devices and wearables: Allow").is_checked()
    assert not page.get_by_label("Research: Vital signs: Allow").is_checked()
    assert page.get_by_label("My care team: Vital signs: Allow").is_checked()
    screenshot(page, "portal-sharing-saved")
    check_phone(page, "sharing")

    assert nurse_reads_steps() == (0, shared)  # withheld from the next read on
    heart_rate, _ = access.search(
        NURSE,
        TREAT,
        "Observation",
        lambda pid: ui_site.store.search("Observation", patient_id=pid, count=20),
        patient_id=second_patient,
        query_text="all observations",
    )
    assert heart_rate.resources  # the rest of the record is still shared
    scientist = Principal("ds", "user", Role.DATA_SCIENTIST)
    research_ctx = AccessContext(Purpose.RESEARCH, source="cli")
    assert list(access.consented_patients(scientist, research_ctx, [second_patient])) == []

    # back to the usual settings, as other tests expect
    page.get_by_role("button", name="Go back to the usual settings").click()
    page.wait_for_load_state("domcontentloaded")
    assert page.get_by_label("My care team: Home devices and wearables: Allow").is_checked()
    assert nurse_reads_steps() == (shared, 0)
    assert list(access.consented_patients(scientist, research_ctx, [second_patient]))


def test_a_message_with_script_is_shown_escaped_and_answered(ui_site, chromium) -> None:
    patient_context = chromium.new_context(viewport={"width": 1280, "height": 900})
    nurse_context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        patient, nurse = patient_context.new_page(), nurse_context.new_page()
        dialogs: list[str] = []
        for page in (patient, nurse):
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        marker = uuid.uuid4().hex[:8]
        text = f"<script>alert(1)</script> question {marker}"
        ui_site.sign_in(patient, "patient")
        refused = patient.goto(ui_site.url("/app/inbox"))  # the care team's inbox is not theirs
        assert refused is not None and refused.status == 403
        patient.goto(ui_site.url("/app/me/messages"))
        patient.get_by_label("Your message").fill(text)
        patient.get_by_role("button", name="Send", exact=True).click()
        patient.wait_for_load_state("domcontentloaded")
        assert patient.locator("#message-sent").is_visible()
        mine = patient.locator("#conversation li").filter(has_text=marker)
        assert mine.locator(".message-text").inner_text() == text
        assert "&lt;script&gt;" in mine.inner_html()
        assert accessibility_violations(patient) == []
        screenshot(patient, "portal-messages")

        too_long = "x" * 2001
        patient.evaluate("document.getElementById('message').removeAttribute('maxlength')")
        patient.get_by_label("Your message").fill(too_long)
        patient.get_by_role("button", name="Send", exact=True).click()
        assert "at most 2000 characters" in patient.inner_text("#message-error")

        ui_site.sign_in(nurse, "nurse")
        nurse.goto(ui_site.url("/app/inbox"))
        thread = nurse.locator("article.thread").filter(has_text=marker)
        assert thread.locator(".message-text").first.inner_text() == text
        assert "&lt;script&gt;" in thread.inner_html()
        assert accessibility_violations(nurse) == []
        screenshot(nurse, "inbox")
        thread.get_by_role("textbox").fill(f"We will call you today ({marker}).")
        thread.get_by_role("button", name="Send reply").click()
        nurse.wait_for_load_state("domcontentloaded")
        assert nurse.locator("#reply-sent").is_visible()
        check_phone(nurse, "inbox")

        patient.goto(ui_site.url("/app/me/messages"))
        answer = patient.locator("#conversation li").filter(has_text=f"call you today ({marker})")
        assert "Your care team (nurse (nurse))" in answer.inner_text()
        check_phone(patient, "messages")
        assert dialogs == []
    finally:
        patient_context.close()
        nurse_context.close()


def accept_a_card(store, patient_id: str, key: str) -> None:  # noqa: ANN001
    """A card issued to the demo EHR and accepted by a clinician, as the ledger records them."""
    access = AccessLayer(store)
    now = datetime.now(UTC) - timedelta(minutes=1)
    card_id, suggestion = str(uuid.uuid4()), str(uuid.uuid4())
    service = "careloop-patient-view"
    call = HookCall(str(uuid.uuid4()), service, "portal-test", patient_id, now, None)
    card = {"uuid": card_id, "indicator": "info", "summary": "x",
            "suggestions": [{"uuid": suggestion, "label": "x"}]}  # fmt: skip
    issued = IssuedCard(card, key, None, "ckd-monitoring@1.0.0", None, ())
    CardLedger(store, access).record(call, [issued], CLINICIAN, TREAT)
    feedback = parse_feedback(
        {
            "feedback": [
                {
                    "card": card_id,
                    "outcome": "accepted",
                    "acceptedSuggestions": [{"id": suggestion}],
                    "outcomeTimestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                }
            ]
        }
    )
    FeedbackBook(store, access).submit("careloop-patient-view", "portal-test", feedback,
                                       CLINICIAN, TREAT)  # fmt: skip


def test_accepted_plan_and_a_deletion_request(ui_site, browser_page, second_patient) -> None:
    page = browser_page
    accept_a_card(ui_site.store, second_patient, "playbook:ckd-monitoring")
    ui_site.sign_in(page, SECOND_PATIENT_USER)
    main = page.inner_text("main")
    assert catalogue.PLAN_ITEMS["playbook:ckd-monitoring"]["en"] in main
    assert catalogue.SENTENCES["care.home_watch"]["en"] in main  # home devices
    assert "Home devices and wearables" in main
    screenshot(page, "portal-care-accepted")

    page.goto(ui_site.url("/app/me/data"))
    page.get_by_role("button", name="Send my request").click()  # not confirmed: the browser asks
    assert page.url.endswith("/app/me/data")
    page.get_by_label("I understand. Please delete my record.").check()
    page.get_by_role("button", name="Send my request").click()
    page.wait_for_load_state("domcontentloaded")
    received = page.locator("#erasure-received")
    assert catalogue.SENTENCES["data.delete_requested"]["en"] in received.inner_text()
    assert accessibility_violations(page) == []
    screenshot(page, "portal-erasure-requested")
    # a request erases nothing: the record is there until an administrator acts
    assert ui_site.store.read("Patient", second_patient) is not None
    requested = [
        event
        for event in AccessLayer(ui_site.store).audit.events(patient_id=second_patient)
        if "erasure-requested" in event.flags
    ]
    assert requested and requested[-1].agent == SECOND_PATIENT_USER
