"""Alerts as FHIR R4: a Flag on the patient's record, a Task in the care team's queue, and the
DetectedIssue that explains it, with a Media chart per signal.

The Flag is what any EHR view shows while the alert lives (status active, category clinical,
period from the episode's start); the Task is the work item: who should look (a nurse), how soon
(priority and a due time by tier), and the plain-language explanation to read. The DetectedIssue
is the finding itself, as a CDS Hooks card renders it: the pattern, its severity and tier, each
signal against the person's own baseline (in their units and in deviations, with how many days of
their own data the baseline rests on) and, as evidence, the chart of each signal against its
usual range (an SVG in a Media). Every resource takes its id from the alert's, so re-sending
after an update rewrites the same resources.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from careloop.monitoring.alerts import (
    PATTERN_WORDS,
    SIGNAL_WORDS,
    Alert,
    AlertState,
    Tier,
    describe_evidence,
)
from careloop.monitoring.chart import chart_points, render_baseline_chart
from careloop.monitoring.detectors import Evidence, History
from careloop.monitoring.engagement import EngagementGap
from careloop.monitoring.signals import CATALOGUE, Signal

FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
PATTERN_SYSTEM = "https://careloop.dev/fhir/CodeSystem/monitoring-pattern"
TASK_CODE_SYSTEM = "https://careloop.dev/fhir/CodeSystem/monitoring-task"
ALERT_ID_SYSTEM = "https://careloop.dev/fhir/sid/monitoring-alert"
SNOMED = "http://snomed.info/sct"
NURSE = {"coding": [{"system": SNOMED, "code": "224535009", "display": "Registered nurse"}],
         "text": "Nurse"}  # fmt: skip

PRIORITY = {Tier.INFORMATION: "routine", Tier.NURSE_REVIEW: "urgent", Tier.URGENT: "stat"}
# How soon someone should have looked: urgent within the hour, a review within a working day,
# information within three days (it is read at the next routine review).
DUE = {
    Tier.INFORMATION: timedelta(days=3),
    Tier.NURSE_REVIEW: timedelta(hours=24),
    Tier.URGENT: timedelta(hours=1),
}
TASK_STATUS = {
    AlertState.OPEN: "requested",
    AlertState.ACKNOWLEDGED: "accepted",
    AlertState.SNOOZED: "on-hold",
    AlertState.RESOLVED: "cancelled",  # the data settled before anyone had to act
}
ENGAGEMENT_DUE = timedelta(days=3)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def flag_id(alert: Alert) -> str:
    return alert.id  # already a valid FHIR id, stable per episode


def task_id(alert: Alert) -> str:
    return "task-" + alert.id.removeprefix("alert-")


def alert_flag(alert: Alert) -> dict:
    """The alert as a Flag: active until the episode resolves."""
    period: dict = {"start": alert.since.isoformat()}
    if alert.resolved_at is not None:
        period["end"] = _instant(alert.resolved_at)
    return {
        "resourceType": "Flag",
        "id": flag_id(alert),
        "identifier": [{"system": ALERT_ID_SYSTEM, "value": alert.id}],
        "status": "inactive" if alert.state is AlertState.RESOLVED else "active",
        "category": [
            {"coding": [{"system": FLAG_CATEGORY, "code": "clinical", "display": "Clinical"}]}
        ],  # fmt: skip
        "code": {
            "coding": [{"system": PATTERN_SYSTEM, "code": alert.pattern}],
            "text": alert.headline(),
        },
        "subject": {"reference": f"Patient/{alert.person_id}"},
        "period": period,
    }


def alert_task(alert: Alert, issued: datetime | None = None, care_team: str | None = None) -> dict:
    """The alert as a Task for the care team's nurse queue. `issued` is when the current tier
    was set (raise or escalation), from which the due time runs; by default the last update."""
    issued = issued or alert.updated_at or alert.raised_at
    owner = {"reference": f"CareTeam/{care_team}"} if care_team else {"display": "Nurse queue"}
    taken_by = alert.acknowledged_by
    if taken_by:  # whoever took it on keeps it, across later updates of the alert
        owner = {"reference": taken_by} if "/" in taken_by else {"display": taken_by}
    return {
        "resourceType": "Task",
        "id": task_id(alert),
        "identifier": [{"system": ALERT_ID_SYSTEM, "value": alert.id}],
        "status": TASK_STATUS[alert.state],
        "intent": "order",
        "priority": PRIORITY[alert.tier],
        "code": {
            "coding": [{"system": TASK_CODE_SYSTEM, "code": "review-monitoring-alert"}],
            "text": "Review remote monitoring alert",
        },
        "description": alert.explain(),
        "focus": {"reference": f"Flag/{flag_id(alert)}"},
        "for": {"reference": f"Patient/{alert.person_id}"},
        "authoredOn": _instant(alert.raised_at),
        "lastModified": _instant(alert.updated_at or alert.raised_at),
        "performerType": [NURSE],
        "owner": owner,
        "restriction": {"period": {"end": _instant(issued + DUE[alert.tier])}},
    }


def engagement_task(gap: EngagementGap, now: datetime) -> dict:
    """A routine Task for a coach or nurse to ask why a person's devices went quiet, or why a
    regular check-in stopped."""
    if gap.signal is not None:
        name = SIGNAL_WORDS[gap.signal][0].lower()
        text = (
            f"No {name} reading for {gap.days_silent} days, though usually sent: ask whether "
            "the check-in is still possible."
        )
    elif gap.days_silent is None:
        text = "No device data received since enrolment: check the device set-up."
    else:
        text = f"No device data for {gap.days_silent} days: ask whether the device is still worn."
    digest = task_id_for_gap(gap)
    return {
        "resourceType": "Task",
        "id": digest,
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {
            "coding": [{"system": TASK_CODE_SYSTEM, "code": "engagement-gap"}],
            "text": "Remote monitoring engagement gap",
        },
        "description": text,
        "for": {"reference": f"Patient/{gap.person_id}"},
        "authoredOn": _instant(now),
        "performerType": [{"text": "Care coach or nurse"}],
        "restriction": {"period": {"end": _instant(now + ENGAGEMENT_DUE)}},
    }


def task_id_for_gap(gap: EngagementGap) -> str:
    """One Task per person, silence and signal (same last-seen time, same id), not one per
    check."""
    seen = "never" if gap.last_seen is None else _instant(gap.last_seen)
    what = "" if gap.signal is None else f"\x1f{gap.signal.value}"
    key = f"{gap.person_id}\x1f{seen}{what}"
    return "gap-" + hashlib.sha256(key.encode()).hexdigest()[:40]


# ----- the explanation: DetectedIssue and its charts ---------------------------------------------

MEDIA_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/media-type"
SIGNAL_SYSTEM = "https://careloop.dev/fhir/CodeSystem/monitoring-signal"
LOINC = "http://loinc.org"
_EXTENSION = "https://careloop.dev/fhir/StructureDefinition/"
TIER_EXTENSION = _EXTENSION + "monitoring-tier"
# How strong the pattern is, as a multiple of the threshold its detector fires at (1.0 = at it)
LEVEL_EXTENSION = _EXTENSION + "monitoring-evidence-level"
# On an evidence entry: how many days of the person's own data the signal's baseline rests on
BASELINE_DAYS_EXTENSION = _EXTENSION + "monitoring-baseline-days"
AUTHOR = "careloop remote monitoring"
SVG = "image/svg+xml"
SEVERITY = {Tier.URGENT: "high", Tier.NURSE_REVIEW: "moderate", Tier.INFORMATION: "low"}
MAX_ID = 64  # a FHIR id is 1 to 64 of A-Z a-z 0-9 - .
_HEX = re.compile(r"[0-9a-f]{1,40}")


def alert_hex(alert_key: str) -> str:
    """The hex part of an alert id ('alert-<40 hex>' from `alert_id`); any other id is hashed,
    so ids built from it stay valid FHIR ids whatever the alert id looks like."""
    rest = alert_key.removeprefix("alert-")
    if _HEX.fullmatch(rest):
        return rest
    return hashlib.sha256(alert_key.encode()).hexdigest()[:40]


def chart_media_id(alert_key: str, signal: Signal) -> str:
    """'chart-<hex>-<signal>', the hex cut (always the same way) to fit FHIR's 64 characters:
    'resting-heart-rate' leaves room for 39 of the 40 hex digits, which still tell alerts apart
    (the Media also names its alert in `identifier`, which the chart route checks)."""
    room = MAX_ID - len("chart-") - len("-") - len(signal.value)
    return f"chart-{alert_hex(alert_key)[:room]}-{signal.value}"


def detected_issue_id(alert: Alert) -> str:
    return "di-" + alert_hex(alert.id)


def chart_title(signal: Signal) -> str:
    return f"{SIGNAL_WORDS[signal][0]} against the usual range"


def alert_charts(alert: Alert, history: History) -> dict[Signal, str]:
    """One SVG per evidence signal: its recent daily values against the person's baseline band,
    the days since the signal's part of the pattern began marked."""
    charts: dict[Signal, str] = {}
    for item in alert.evidence:
        _name, unit, _places = SIGNAL_WORDS[item.signal]
        points = chart_points(history.get(item.signal, ()))
        charts[item.signal] = render_baseline_chart(
            chart_title(item.signal), unit, points, item.since
        )
    return charts


def baseline_days_of(history: History) -> dict[Signal, int]:
    """Per signal, how many days of the person's own data its baseline rested on at the latest
    plausible day (what an explanation states as its confidence)."""
    found: dict[Signal, int] = {}
    for signal, days in history.items():
        plausible = [deviation for _day, deviation in days if deviation.plausible]
        if plausible:
            found[signal] = plausible[-1].days
    return found


def chart_media(alert: Alert, signal: Signal, svg: str, created: datetime) -> dict:
    """The chart of one signal of an alert as a FHIR Media (the SVG inline, base64)."""
    return {
        "resourceType": "Media",
        "id": chart_media_id(alert.id, signal),
        "identifier": [{"system": ALERT_ID_SYSTEM, "value": alert.id}],
        "status": "completed",
        "type": {"coding": [{"system": MEDIA_TYPE_SYSTEM, "code": "image", "display": "Image"}]},
        "subject": {"reference": f"Patient/{alert.person_id}"},
        "createdDateTime": _instant(created),
        "content": {
            "contentType": SVG,
            "data": base64.b64encode(svg.encode("utf-8")).decode("ascii"),
            "title": chart_title(signal),
        },
    }


def alert_detected_issue(
    alert: Alert,
    media_ids: Sequence[str],
    baseline_days: Mapping[Signal, int] | None = None,
) -> dict:
    """The alert as a DetectedIssue: the finding a card renders, with each signal's chart (from
    `media_ids`, as `chart_media` names them) as evidence, and the tier and evidence level kept
    in extensions. `baseline_days` (`baseline_days_of(history)`) adds to each signal how many
    days of the person's own data its baseline rests on, which the card states as confidence.

    Status is "final" in every alert state. DetectedIssue.status is the status of the detection
    record (FHIR's ObservationStatus codes), not of the person's problem: the finding is complete
    when raised, later evidence becomes a new version of the same resource, and the episode's
    life (acknowledged, snoozed, resolved) is on the Flag and the Task. "cancelled" or
    "entered-in-error" would say the detection itself was void, which a resolved alert is not.
    """
    extension = [{"url": TIER_EXTENSION, "valueCode": alert.tier.value}]
    if math.isfinite(alert.level):
        extension.append({"url": LEVEL_EXTENSION, "valueDecimal": round(alert.level, 3)})
    charts = set(media_ids)
    return {
        "resourceType": "DetectedIssue",
        "id": detected_issue_id(alert),
        "extension": extension,
        "identifier": [{"system": ALERT_ID_SYSTEM, "value": alert.id}],
        "status": "final",
        "code": {
            "coding": [
                {
                    "system": PATTERN_SYSTEM,
                    "code": alert.pattern,
                    "display": PATTERN_WORDS.get(alert.pattern, alert.pattern),
                }
            ],
            "text": alert.headline(),
        },
        "severity": SEVERITY[alert.tier],
        "patient": {"reference": f"Patient/{alert.person_id}"},
        "identifiedDateTime": _instant(alert.raised_at),
        "author": {"display": AUTHOR},
        "detail": alert.explain(),
        "evidence": [
            _evidence_entry(alert.id, item, charts, (baseline_days or {}).get(item.signal))
            for item in alert.evidence
        ],
    }


def _evidence_entry(alert_key: str, item: Evidence, charts: set[str], days: int | None) -> dict:
    """One signal's part: coded (careloop's signal code and LOINC), described in words, with
    its chart when one was stored and the days its baseline rests on when known."""
    info = CATALOGUE[item.signal]
    entry: dict = {
        "code": [
            {
                "coding": [
                    {"system": SIGNAL_SYSTEM, "code": item.signal.value,
                     "display": SIGNAL_WORDS[item.signal][0]},
                    {"system": LOINC, "code": info.loinc, "display": info.display},
                ],
                "text": describe_evidence(item),
            }
        ]
    }  # fmt: skip
    if days is not None:
        entry["extension"] = [{"url": BASELINE_DAYS_EXTENSION, "valueUnsignedInt": days}]
    media = chart_media_id(alert_key, item.signal)
    if media in charts:
        entry["detail"] = [{"reference": f"Media/{media}", "display": chart_title(item.signal)}]
    return entry


def alert_resources(
    alert: Alert, history: History, now: datetime, care_team: str | None = None
) -> list[dict]:
    """Everything one alert is written as: its Flag, its DetectedIssue with a chart Media per
    evidence signal, and its Task (owned by `care_team`, else the nurse queue)."""
    charts = alert_charts(alert, history)
    media = [chart_media(alert, signal, svg, now) for signal, svg in charts.items()]
    issue = alert_detected_issue(alert, [m["id"] for m in media], baseline_days_of(history))
    return [alert_flag(alert), issue, *media, alert_task(alert, care_team=care_team)]
