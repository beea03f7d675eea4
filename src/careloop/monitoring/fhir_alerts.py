"""Alerts as FHIR R4: a Flag on the patient's record and a Task in the care team's queue.

The Flag is what any EHR view shows while the alert lives (status active, category clinical,
period from the episode's start); the Task is the work item: who should look (a nurse), how soon
(priority and a due time by tier), and the plain-language explanation to read. Both take their id
from the alert's, so re-sending after an update rewrites the same resources.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from careloop.monitoring.alerts import Alert, AlertState, Tier
from careloop.monitoring.engagement import EngagementGap

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
    """A routine Task for a coach or nurse to ask why a person's devices went quiet."""
    if gap.days_silent is None:
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
    """One Task per person and silence (same last-seen time, same id), not one per check."""
    seen = "never" if gap.last_seen is None else _instant(gap.last_seen)
    return "gap-" + hashlib.sha256(f"{gap.person_id}\x1f{seen}".encode()).hexdigest()[:40]
