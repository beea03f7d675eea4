"""The clinician worklist in real Chromium: the nurse sees their patients ranked with trend
sparklines, acknowledges a sepsis alert and snoozes another; refusals of what is not an alert.

The demo population's stays are all complete, so nobody is in alert at the demo's latest data.
Two patients who are deteriorating now (the synthetic generator's septic stays, cut a few hours
after onset: `careloop.worklist.demo`) are added to the shared demo site and put in the demo
nurse's care; the snapshot refresh then raises a real sepsis alert for each. They are new
patients, so the demo's first five (which other tests use) are not touched.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Role
from careloop.worklist.demo import add_deteriorating_patient
from careloop.worklist.rows import SNOOZED_UNTIL
from careloop.worklist.snapshot import SEPSIS_REVIEW_TOKEN, refresh_all
from ui_support import PHONE, accessibility_violations, screenshot

ROOT = Path(__file__).resolve().parents[1]
NURSE = "Practitioner/demo-nurse"


def _name(patient: dict) -> str:
    name = patient["name"][0]
    return name.get("text") or " ".join([*name.get("given", []), name.get("family", "")])


@pytest.fixture(scope="module")
def alerts(ui_site):  # noqa: ANN001, ANN201
    """Two deteriorating patients in the nurse's care, the snapshot refreshed: their names."""
    store = ui_site.store
    access = AccessLayer(store)
    names = {}
    for seed in (13, 14):  # not 12, the default, which `careloop demo` may add itself
        patient_id = add_deteriorating_patient(store, [NURSE], seed=seed)
        names[patient_id] = _name(store.read("Patient", patient_id).body)
    monitor = Principal("local:test-worklist", "local", Role.MONITOR)
    refresh_all(
        store,
        ROOT / "models" / "sepsis",
        monitor,
        AccessContext(Purpose.TREATMENT, source="test"),
        access=access,
    )
    for patient_id in names:
        assert store.search("Task", patient_id=patient_id, codes=[SEPSIS_REVIEW_TOKEN]).total == 1
    return names


def _row(page, name: str):  # noqa: ANN001, ANN202
    return page.locator("table.worklist tbody tr", has=page.get_by_role("link", name=name))


def _risks(page) -> list[float]:  # noqa: ANN001
    texts = page.locator("table.worklist tbody td.risk").all_inner_texts()
    return [float(m.group(1)) for t in texts if (m := re.match(r"([\d.]+)%", t))]


def test_nurse_acknowledges_a_sepsis_alert_on_the_ranked_worklist(
    ui_site, browser_page, alerts
) -> None:
    page = browser_page
    ui_site.sign_in(page, "nurse")
    assert page.url.endswith("/app/worklist")
    first_id, first_name = next(iter(alerts.items()))
    rows = page.locator("table.worklist tbody tr")
    assert rows.count() >= 7  # the demo's five and the two deteriorating now
    # new alerts on top, then by risk; every scored row has its trend drawn, named in words
    states = [rows.nth(i).locator("td").nth(2).inner_text() for i in range(rows.count())]
    new = [i for i, text in enumerate(states) if "New alert" in text]
    assert new == list(range(len(new))) and len(new) >= 2
    calm_risks = _risks(page)[len(new) :]
    assert calm_risks == sorted(calm_risks, reverse=True)
    sparks = page.locator("table.worklist svg[role='img']")
    assert sparks.count() >= 7
    assert "last 24 hours" in sparks.first.locator("title").text_content()
    link = _row(page, first_name).get_by_role("link", name=first_name)
    assert link.get_attribute("href") == f"/app/patients/{first_id}"
    assert accessibility_violations(page) == []
    screenshot(page, "worklist-ranked")

    row = _row(page, first_name)
    assert "never" in row.inner_text()
    row.get_by_role("button", name=f"Acknowledge the sepsis risk alert of {first_name}").click()
    page.wait_for_load_state("domcontentloaded")
    assert "Alert acknowledged." in page.locator("main").inner_text()
    row = _row(page, first_name)
    assert "Acknowledged" in row.inner_text()
    assert row.locator("td[data-label='Last acknowledged']").inner_text() == "0 min ago"
    assert row.get_by_role("button", name=re.compile("Acknowledge")).count() == 0
    # acknowledged, it no longer ranks above the patient who still has a new alert
    names = page.locator("table.worklist tbody tr td:first-child").all_inner_texts()
    other_name = [name for pid, name in alerts.items() if pid != first_id][0]
    assert names.index(other_name) < names.index(first_name)
    task = ui_site.store.search("Task", patient_id=first_id, codes=[SEPSIS_REVIEW_TOKEN]).resources[
        0
    ]
    assert task.body["status"] == "accepted"
    assert task.body["owner"]["identifier"]["value"] == NURSE
    assert task.body["executionPeriod"]["start"]
    assert accessibility_violations(page) == []
    screenshot(page, "worklist-acknowledged")


def test_nurse_snoozes_an_alert_on_a_phone_and_what_is_not_an_alert_is_refused(
    ui_site, browser_page, alerts
) -> None:
    page = browser_page
    page.set_viewport_size(PHONE)
    ui_site.sign_in(page, "nurse")
    patient_id, name = list(alerts.items())[1]
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    row = _row(page, name)
    row.get_by_label("Snooze for").select_option("4")
    row.get_by_role("button", name=f"Snooze the sepsis risk alert of {name}").click()
    page.wait_for_load_state("domcontentloaded")
    assert "Alert snoozed." in page.locator("main").inner_text()
    row = _row(page, name)
    assert "Snoozed" in row.inner_text() and "snoozed until" in row.inner_text()
    task = ui_site.store.search(
        "Task", patient_id=patient_id, codes=[SEPSIS_REVIEW_TOKEN]
    ).resources[0]
    assert task.body["status"] == "on-hold"
    assert [e["url"] for e in task.body["extension"]] == [SNOOZED_UNTIL]
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert accessibility_violations(page) == []
    screenshot(page, "worklist-snoozed-phone")

    # refusals: a Task that is not an alert, one that does not exist, a snooze out of range
    csrf = page.locator("input[name='csrf_token']").first.get_attribute("value")
    other = ui_site.store.search("Task", count=200).resources
    not_alert = next(t for t in other if t.body["id"].startswith("gap-"))
    base = ui_site.url("/app/worklist/alerts")
    answer = page.request.post(
        f"{base}/{not_alert.body['id']}/acknowledge", form={"csrf_token": csrf}
    )
    assert answer.status == 400 and "not an alert" in answer.text()
    answer = page.request.post(f"{base}/no-such-task/acknowledge", form={"csrf_token": csrf})
    assert answer.status == 404
    answer = page.request.post(
        f"{base}/{task.body['id']}/snooze", form={"csrf_token": csrf, "hours": "48"}
    )
    assert answer.status == 400 and "1, 4 or 8 hours" in answer.text()
    answer = page.request.post(f"{base}/{task.body['id']}/acknowledge", form={})
    assert answer.status == 403  # no CSRF token: the framework refuses the form
    still = ui_site.store.read("Task", task.body["id"]).body
    assert still["status"] == "on-hold"
