"""Monitoring alerts explained: the DetectedIssue and chart Media built from a real alert are
valid FHIR R4; a patient with a live alert stored in careloop gets its card from a real
patient-view call (budgeted and recorded like every card); a resolved alert gives none; and the
chart the card links to is served, through the access layer, to those who may see it."""

from __future__ import annotations

import base64
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from fhir.resources.R4B import get_fhir_model_class
from sqlalchemy import select

from api_clients import BASE_URL, auth, bearer_token, practitioner_for
from careloop.access.roles import Role
from careloop.audit.log import AuditLog
from careloop.cds.cards import CardContext
from careloop.cds.monitoring_cards import SOURCE_LABEL, chart_url, live_alerts, monitoring_card
from careloop.ingest.validation import structural_errors, terminology_warnings
from careloop.monitoring.alerts import (
    RAISED,
    RESOLVED,
    Alert,
    AlertManager,
    AlertPolicy,
    DayQuality,
    Tier,
    describe_evidence,
)
from careloop.monitoring.detectors import FALLING_SPO2, Evidence, Finding
from careloop.monitoring.fhir_alerts import (
    BASELINE_DAYS_EXTENSION,
    DUE,
    TIER_EXTENSION,
    alert_charts,
    alert_detected_issue,
    alert_flag,
    alert_resources,
    chart_media,
    chart_media_id,
    detected_issue_id,
)
from careloop.monitoring.signals import Sample, Signal
from careloop.monitoring.state import PersonState
from careloop.store.repository import ResourceStore
from careloop.store.schema import cds_cards
from careloop.web import create_app
from careloop.web.app import AppSettings
from cds_support import check_response, hook_request
from test_cds_service import PATIENT_VIEW, call, cds, ehr, small_patient  # noqa: F401 (fixtures)

START = datetime(2024, 3, 1, tzinfo=UTC)
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
SVG_NS = "{http://www.w3.org/2000/svg}"


@dataclass
class Episode:
    """A person's monitoring state and the alert raised from it, as the worker would have them."""

    manager: AlertManager
    state: PersonState
    alert: Alert


def quality(day: date) -> DayQuality:
    return DayQuality(day, 20.0, frozenset(Signal))


def infection_episode(person: str, seed: int = 5, ill_from: int = 22, days: int = 26) -> Episode:
    """Three weeks of normal daily resting heart rate and HRV, then resting heart rate up 8 bpm
    and HRV down 20 ms: the infection-like pattern, raised by the alert manager."""
    rng = random.Random(seed)
    state, manager = PersonState(person), AlertManager(AlertPolicy(clear_days=2))
    for day in range(days):
        ill = day >= ill_from
        when = START + timedelta(days=day, hours=7)
        for signal, value in (
            (Signal.RESTING_HEART_RATE, 58 + (8 if ill else 0) + rng.gauss(0, 1.0)),
            (Signal.HRV_RMSSD, 55 - (20 if ill else 0) + rng.gauss(0, 3.0)),
        ):
            state.observe(Sample(person, signal, when, value, f"{signal}:{day}", "test"))
        manager.consider(person, state.findings(), quality(when.date()), when + timedelta(hours=2))
    (alert,) = manager.open_alerts(person)
    return Episode(manager, state, alert)


def urgent_spo2_alert(person: str) -> Alert:
    """An SpO2 fall to 90% over two days: urgent by the BTS threshold."""
    since = date(2024, 3, 20)
    evidence = Evidence(Signal.SPO2, 90.0, 97.0, -7.0, -5.8, "%", since)
    manager = AlertManager()
    finding_day = since + timedelta(days=1)
    changes = manager.consider(
        person,
        [Finding(FALLING_SPO2, since, (evidence,))],
        quality(finding_day),
        datetime(2024, 3, 21, 8, tzinfo=UTC),
    )
    assert [c.kind for c in changes] == [RAISED]
    return changes[0].alert


def episode_resources(episode: Episode) -> list[dict]:
    """What the monitoring worker writes for the episode's alert (the same builder)."""
    alert = episode.alert
    return alert_resources(alert, episode.state.history, alert.raised_at)


def store_for(store: ResourceStore, person: str, resources: list[dict]) -> None:
    patient = {"resourceType": "Patient", "id": person, "gender": "female"}
    with store.transaction() as transaction:
        transaction.put_resources([patient, *resources])


def validate(resource: dict) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert structural_errors(resource, "library") == []
    assert terminology_warnings(resource) == []
    assert FHIR_ID.match(resource["id"])


# ----- the FHIR resources ------------------------------------------------------------------------


def test_the_explanation_resources_are_valid_fhir_r4() -> None:
    episode = infection_episode("p-fhir")
    resources = episode_resources(episode)
    for resource in resources:
        validate(resource)
    kinds = [r["resourceType"] for r in resources]
    assert kinds == ["Flag", "DetectedIssue", "Media", "Media", "Task"]
    spo2 = urgent_spo2_alert("p-fhir")
    validate(alert_detected_issue(spo2, []))
    validate(chart_media(spo2, Signal.SPO2, "<svg/>", spo2.raised_at))


def test_the_detected_issue_carries_tier_severity_evidence_and_charts() -> None:
    episode = infection_episode("p-di")
    alert = episode.alert
    issue, media = episode_resources(episode)[1], episode_resources(episode)[2:4]
    assert issue["id"] == detected_issue_id(alert) == "di-" + alert.id.removeprefix("alert-")
    assert issue["status"] == "final"
    assert issue["identifier"] == [{"system": media[0]["identifier"][0]["system"],
                                    "value": alert.id}]  # fmt: skip
    assert issue["code"]["coding"][0]["code"] == alert.pattern
    assert issue["code"]["text"] == alert.headline()
    assert issue["detail"] == alert.explain()
    assert issue["identifiedDateTime"] == alert.raised_at.isoformat().replace("+00:00", "Z")
    assert issue["author"] == {"display": "careloop remote monitoring"}
    assert {"url": TIER_EXTENSION, "valueCode": alert.tier.value} in issue["extension"]
    entries = issue["evidence"]
    assert len(entries) == len(alert.evidence) == 2
    for entry, item, chart in zip(entries, alert.evidence, media, strict=True):
        assert entry["code"][0]["text"] == describe_evidence(item)
        assert entry["detail"] == [{"reference": f"Media/{chart['id']}",
                                    "display": chart["content"]["title"]}]  # fmt: skip
        days = episode.state.history[item.signal][-1][1].days
        assert entry["extension"] == [{"url": BASELINE_DAYS_EXTENSION, "valueUnsignedInt": days}]
    severities = {
        tier: alert_detected_issue(replace(alert, tier=tier), [])["severity"] for tier in Tier
    }
    assert severities == {Tier.URGENT: "high", Tier.NURSE_REVIEW: "moderate",
                          Tier.INFORMATION: "low"}  # fmt: skip
    # without a stored chart there is nothing to point at
    assert all("detail" not in entry for entry in alert_detected_issue(alert, [])["evidence"])


def test_chart_media_ids_fit_fhir_and_are_stable_per_alert_and_signal() -> None:
    alert = infection_episode("p-ids").alert
    ids = {signal: chart_media_id(alert.id, signal) for signal in Signal}
    assert all(FHIR_ID.match(value) for value in ids.values())
    assert len(set(ids.values())) == len(Signal)
    assert chart_media_id(alert.id, Signal.STEPS) == ids[Signal.STEPS]
    other = replace(alert, id=alert.id[:-1] + ("0" if alert.id[-1] != "0" else "1"))
    assert chart_media_id(other.id, Signal.STEPS) != ids[Signal.STEPS]
    for odd in ("x" * 64, "alert-NOT-HEX", "a.b"):
        assert FHIR_ID.match(chart_media_id(odd, Signal.RESTING_HEART_RATE))
        assert FHIR_ID.match(detected_issue_id(replace(alert, id=odd)))
    media = chart_media(alert, Signal.HRV_RMSSD, "<svg/>", alert.raised_at)
    assert media["content"]["contentType"] == "image/svg+xml"
    assert base64.b64decode(media["content"]["data"]) == b"<svg/>"
    assert media["content"]["title"] == "Heart rate variability against the usual range"


def test_alert_charts_draw_each_evidence_signal_against_its_baseline() -> None:
    episode = infection_episode("p-charts")
    charts = alert_charts(episode.alert, episode.state.history)
    assert list(charts) == [item.signal for item in episode.alert.evidence]
    for item in episode.alert.evidence:
        root = ET.fromstring(charts[item.signal])
        desc = root.find(f"{SVG_NS}desc").text
        assert f"The days since {item.since.day} {item.since:%b %Y} are marked" in desc
        assert "14 days with data" in desc  # the state keeps two weeks of daily history
    # a signal with no history still gets a (small) chart that says so
    bare = alert_charts(episode.alert, {})
    assert all("Not enough data" in svg for svg in bare.values())


def test_live_alerts_pair_active_monitoring_flags_with_their_issue_and_open_task() -> None:
    episode = infection_episode("p-live")
    flag, issue, *media, task = episode_resources(episode)
    other_flag = {**flag, "id": "f-other", "identifier": [], "code": {"text": "Fall risk"}}
    done = {**task, "status": "completed"}
    gap_task = {"resourceType": "Task", "id": "gap-1", "status": "requested"}
    (live,) = live_alerts([other_flag, issue, *media, done, gap_task, flag])
    assert live.alert_id == episode.alert.id
    assert live.flag is flag and live.issue is issue and live.task is None
    assert live_alerts([{**flag, "status": "inactive"}, issue, task]) == []
    # a Flag whose DetectedIssue is missing still shows, its urgency from the Task's priority
    (bare,) = live_alerts([flag, task])
    ctx = CardContext("p-live", START, "https://x/app/patients/p-live", "m", "k")
    card = monitoring_card(bare, ctx, "https://x").card
    assert bare.issue is None and card["indicator"] == "warning"
    assert card["summary"] == episode.alert.headline()


# ----- the card on patient-view ----------------------------------------------------------------


def monitoring(document: dict) -> list[dict]:
    return [c for c in document["cards"] if c["source"]["label"] == SOURCE_LABEL]


@pytest.mark.parametrize("prefetched", [True, False], ids=["ehr-prefetch", "careloop-store"])
def test_a_live_alert_in_careloop_becomes_a_patient_view_card(
    cds: TestClient,  # noqa: F811
    ehr,  # noqa: F811
    store: ResourceStore,
    prefetched: bool,
) -> None:
    person = "mon-p1"
    episode = infection_episode(person)
    alert = episode.alert
    resources = episode_resources(episode)
    store_for(store, person, resources)
    prefetch = small_patient(person) if prefetched else None
    answer = call(cds, ehr, PATIENT_VIEW, hook_request("patient-view", person, prefetch=prefetch))
    assert answer.status_code == 200, answer.text
    check_response(answer.json())
    (card,) = monitoring(answer.json())
    assert card["summary"] == alert.headline() and len(card["summary"]) < 140
    assert card["indicator"] == "warning"  # nurse review
    detail = card["detail"]
    for item in alert.evidence:
        assert describe_evidence(item) in detail
    days = episode.state.history[Signal.RESTING_HEART_RATE][-1][1].days
    assert f"rest on the person's own data (resting heart rate {days} days" in detail
    assert f"at {alert.level:.1f} times the level at which its detector fires" in detail
    due = (alert.updated_at or alert.raised_at) + DUE[alert.tier]
    assert f"open task for Nurse queue: requested, due by {due:%Y-%m-%d %H:%M} UTC." in detail
    for part in ("Watchful waiting", "Telephone check", "In-person assessment"):
        assert part in detail
    assert "https://doi.org/10.1038/s41551-020-00640-6" in detail
    assert "https://doi.org/10.1038/s41591-020-1123-x" in detail
    links = [link["url"] for link in card["links"]]
    assert links == [
        chart_url(BASE_URL, alert.id, Signal.RESTING_HEART_RATE.value),
        chart_url(BASE_URL, alert.id, Signal.HRV_RMSSD.value),
        f"{BASE_URL}/app/patients/{person}",
    ]
    assert {link["type"] for link in card["links"]} == {"absolute"}
    # recorded like every card: a ledger row, and a Provenance on the alert's own DetectedIssue,
    # which is not rewritten (still its first version)
    with store.engine.connect() as connection:
        keys = connection.execute(sa.select(cds_cards.c.card_key, cds_cards.c.record_ref)).all()
    assert (f"monitoring:{alert.id}", f"DetectedIssue/{detected_issue_id(alert)}") in keys
    assert store.read("DetectedIssue", detected_issue_id(alert)).version == 1
    provenance = [
        p.body
        for p in store.search("Provenance", count=100).resources
        if p.body["target"] == [{"reference": f"DetectedIssue/{detected_issue_id(alert)}"}]
    ]
    assert len(provenance) == 1
    sources = {entity["what"]["reference"] for entity in provenance[0]["entity"]}
    assert sources == {f"{r['resourceType']}/{r['id']}" for r in resources
                       if r["resourceType"] in ("Flag", "Task", "Media")}  # fmt: skip
    # the read of careloop's monitoring records was audited, as the EHR, for treatment
    reads = [
        event
        for event in AuditLog(store).events(patient_id=person)
        if event.action == "read" and f"Flag/{alert.id}" in str(event.resource.get("entity", ""))
    ]
    assert reads and {(e.role, e.purpose) for e in reads} == {("ehr", "TREAT")}


def open_chart_twice(cds: TestClient, ehr, person: str) -> list[list[dict]]:  # noqa: F811
    """The monitoring cards of two patient-view calls in a row, as the EHR would get them."""
    answers = []
    for _ in range(2):
        request = hook_request("patient-view", person, prefetch=small_patient(person))
        answer = call(cds, ehr, PATIENT_VIEW, request)
        assert answer.status_code == 200, answer.text
        answers.append(monitoring(answer.json()))
    return answers


def test_the_card_is_rationed_by_the_alert_budget(
    cds: TestClient,  # noqa: F811
    ehr,  # noqa: F811
    store: ResourceStore,
) -> None:
    person = "mon-p2"
    store_for(store, person, episode_resources(infection_episode(person)))
    cards = [card for answer in open_chart_twice(cds, ehr, person) for card in answer]
    assert [card["indicator"] for card in cards] == ["warning", "info"]
    assert "Already raised" in cards[1]["detail"]
    # the ledger keeps what the budget did, for the alert-burden analytics
    with store.engine.connect() as connection:
        kept = connection.execute(
            select(cds_cards.c.indicator, cds_cards.c.demoted_from)
            .where(cds_cards.c.card_uuid.in_([card["uuid"] for card in cards]))
            .order_by(cds_cards.c.created_at)
        ).all()
    assert [tuple(row) for row in kept] == [("warning", None), ("info", "warning")]


def test_an_urgent_alert_is_critical_and_like_any_card_not_repeated_within_hours(
    cds: TestClient,  # noqa: F811
    ehr,  # noqa: F811
    store: ResourceStore,
) -> None:
    person = "mon-p3"
    alert = urgent_spo2_alert(person)
    media = chart_media(alert, Signal.SPO2, "<svg xmlns='http://www.w3.org/2000/svg'/>", START)
    store_for(store, person, [alert_flag(alert), alert_detected_issue(alert, [media["id"]]),
                              media])  # fmt: skip
    cards = [card for (card,) in open_chart_twice(cds, ehr, person)]
    for card in cards:
        assert "BTS guideline for oxygen use" in card["detail"]
        assert "no open task for this alert" in card["detail"]
    assert [card["indicator"] for card in cards] == ["critical", "info"]
    assert "Severity on its own: critical" in cards[1]["detail"]


def test_a_resolved_alert_gives_no_card(
    cds: TestClient,  # noqa: F811
    ehr,  # noqa: F811
    store: ResourceStore,
) -> None:
    person = "mon-p4"
    episode = infection_episode(person)
    last = START + timedelta(days=26, hours=9)
    for extra in range(2):  # two good days without the pattern clear it (clear_days=2)
        day = last + timedelta(days=extra)
        changes = episode.manager.consider(person, [], quality(day.date()), day)
    assert [c.kind for c in changes] == [RESOLVED]
    resources = episode_resources(episode)
    assert resources[0]["status"] == "inactive"
    store_for(store, person, resources)
    answer = call(
        cds, ehr, PATIENT_VIEW, hook_request("patient-view", person, prefetch=small_patient(person))
    )
    assert answer.status_code == 200, answer.text
    assert monitoring(answer.json()) == []


# ----- the chart route -------------------------------------------------------------------------


@pytest.fixture
def api(store: ResourceStore) -> Iterator[TestClient]:
    with TestClient(create_app(store, AppSettings(public_url=BASE_URL)), base_url=BASE_URL) as c:
        yield c


def chart_path(alert: Alert, signal: Signal) -> str:
    return chart_url("", alert.id, signal.value)


def test_the_chart_route_serves_the_svg_to_a_clinician_and_audits_it(
    api: TestClient, store: ResourceStore
) -> None:
    person = "mon-p5"
    episode = infection_episode(person)
    store_for(store, person, episode_resources(episode))
    expected = alert_charts(episode.alert, episode.state.history)[Signal.RESTING_HEART_RATE]
    clinician = auth(bearer_token(api, store, Role.CLINICIAN,
                                  fhir_user=practitioner_for(Role.CLINICIAN)))  # fmt: skip
    answer = api.get(chart_path(episode.alert, Signal.RESTING_HEART_RATE), headers=clinician)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/svg+xml"
    assert answer.headers["content-security-policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'"
    )
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.text == expected
    media = f"Media/{chart_media_id(episode.alert.id, Signal.RESTING_HEART_RATE)}"
    reads = [
        e
        for e in AuditLog(store).events(patient_id=person)
        if e.action == "read" and media in str(e.resource.get("entity", ""))
    ]
    assert len(reads) == 1 and reads[0].role == "clinician" and reads[0].outcome == "0"


def test_the_chart_route_refuses_what_the_caller_may_not_see(
    api: TestClient, store: ResourceStore
) -> None:
    person = "mon-p6"
    episode = infection_episode(person)
    store_for(store, person, episode_resources(episode))
    path = chart_path(episode.alert, Signal.HRV_RMSSD)
    someone_else = auth(bearer_token(api, store, Role.PATIENT, fhir_user="Patient/mon-other"))
    refused = api.get(path, headers=someone_else)
    assert refused.status_code in (403, 404), refused.text
    assert refused.headers["content-type"].startswith("application/fhir+json")
    flagged = [e for e in AuditLog(store).events(patient_id=person) if "other-patient" in e.flags]
    assert flagged, "the attempt is audited"
    own = auth(bearer_token(api, store, Role.PATIENT, fhir_user=f"Patient/{person}"))
    assert api.get(path, headers=own).status_code == 200
    assert api.get(path).status_code == 401
    clinician = auth(bearer_token(api, store, Role.CLINICIAN,
                                  fhir_user=practitioner_for(Role.CLINICIAN)))  # fmt: skip
    # a signal the alert has no chart for, an unknown signal, an unknown alert, a malformed id
    assert api.get(chart_path(episode.alert, Signal.SPO2), headers=clinician).status_code == 404
    assert api.get(path.replace("hrv-rmssd", "mood"), headers=clinician).status_code == 404
    unknown = replace(episode.alert, id="alert-" + "0" * 40)
    assert api.get(chart_path(unknown, Signal.HRV_RMSSD), headers=clinician).status_code == 404
    bad = api.get("/monitoring/alerts/not%20an%20id/chart/spo2", headers=clinician)
    assert bad.status_code == 400
