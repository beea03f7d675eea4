"""Remote-monitoring alerts on `patient-view`: one card per live alert in careloop's store.

The monitoring worker stores each alert it raises as a Flag (active while the episode lives), a
DetectedIssue (the finding: each signal against the person's own baseline, the tier, the
evidence level, and a chart per signal), a Task for the care team and the charts as Media. When
a clinician opens the patient, careloop reads them through the access layer (as the EHR, for
treatment: the patient's consents apply and the read is audited) and turns each active Flag into
a card that says what is happening and since when, how far each signal is from this person's
usual (in their units and in deviations), how sure that is, what could be done instead, who is
already on it, and the evidence, with links to the charts.

The cards are `IssuedCard`s like every other: the alert budget rations their interruptions and
the ledger records each with a Provenance. The record a card renders is the stored DetectedIssue
itself, which the ledger points at and never rewrites (`record_stored`): one alert stays one
finding however often its card is shown, and a call never overwrites the worker's newer copy.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from careloop.access.errors import AccessDenied
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal
from careloop.audit.events import AuditAction
from careloop.cds.cards import OVERRIDE_SYSTEM, SAFETY_NOTE, TOPIC_SYSTEM, CardContext, short
from careloop.cds.evidence import Citation
from careloop.cds.hooks import CdsRequestError
from careloop.cds.ledger import IssuedCard
from careloop.monitoring.detectors import FALLING_SPO2, HEART_FAILURE, INFECTION
from careloop.monitoring.fhir_alerts import (
    ALERT_ID_SYSTEM,
    BASELINE_DAYS_EXTENSION,
    LEVEL_EXTENSION,
    PATTERN_SYSTEM,
    SIGNAL_SYSTEM,
    TIER_EXTENSION,
)

SOURCE_LABEL = "careloop remote monitoring"
MONITORING_TYPES = ("Flag", "DetectedIssue", "Task")
INDICATOR = {"urgent": "critical", "nurse-review": "warning", "information": "info"}
# When the DetectedIssue carries no tier (written by an older version): from its severity.
SEVERITY_INDICATOR = {"high": "critical", "moderate": "warning", "low": "info"}
# Task states in which nobody has finished with the alert yet.
OPEN_TASK_STATES = frozenset(
    {"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"}
)
TOPIC = {"system": TOPIC_SYSTEM, "code": "remote-monitoring", "display": "Remote monitoring"}
# What a clinician may say when declining: each is data on why an alert was not useful.
OVERRIDE_REASONS = (
    ("explained", "Explained by something known (exercise, travel, alcohol, a known illness)"),
    ("device-problem", "Device or data problem"),
    ("already-managed", "Already being managed"),
    ("not-clinically-relevant", "Not clinically relevant for this patient"),
)

MISHRA_2020 = Citation(
    "Mishra et al. Pre-symptomatic detection of COVID-19 from smartwatch data. "
    "Nat Biomed Eng 2020;4:1208-1220",
    "https://doi.org/10.1038/s41551-020-00640-6",
)
QUER_2021 = Citation(
    "Quer et al. Wearable sensor data and self-reported symptoms for COVID-19 detection. "
    "Nat Med 2021;27:73-77",
    "https://doi.org/10.1038/s41591-020-1123-x",
)
MCDONAGH_2021 = Citation(
    "McDonagh et al. 2021 ESC Guidelines for the diagnosis and treatment of acute and chronic "
    "heart failure. Eur Heart J 2021;42:3599-3726",
    "https://doi.org/10.1093/eurheartj/ehab368",
)
ODRISCOLL_2017 = Citation(
    "O'Driscoll et al. BTS guideline for oxygen use in adults in healthcare and emergency "
    "settings. Thorax 2017;72(Suppl 1):ii1-ii90",
    "https://doi.org/10.1136/thoraxjnl-2016-209729",
)
# The sources detectors.py and alerts.py cite for each pattern's thresholds and tiers.
EVIDENCE = {
    INFECTION: (MISHRA_2020, QUER_2021),
    HEART_FAILURE: (MCDONAGH_2021,),
    FALLING_SPO2: (ODRISCOLL_2017,),
}

WAIT = (
    "Watchful waiting: keep monitoring; the alert resolves by itself once the pattern has been "
    "absent on enough days with good data."
)
CALL = (
    "Telephone check: ask about symptoms, how the device was worn, and anything that explains "
    "the change (exercise, alcohol, travel, a missed dose)."
)
ALTERNATIVES = {
    INFECTION: (
        WAIT,
        CALL + " For an infection: fever, cough, sore throat, tiredness.",
        "In-person assessment: temperature, examination and testing as indicated.",
    ),
    HEART_FAILURE: (
        WAIT,
        CALL + " For fluid build-up: breathlessness, ankle swelling, sleeping propped up.",
        "In-person assessment of fluid status and review of the diuretic dose (the ESC 2021 "
        "guideline asks patients to act on a weight gain of more than 2 kg in 3 days).",
    ),
    FALLING_SPO2: (
        WAIT,
        CALL
        + " For low oxygen: breathlessness, chest pain, confusion; repeat the reading at rest.",
        "In-person assessment with a clinical pulse oximeter: 92% or lower needs urgent "
        "assessment in a person without chronic lung disease (BTS 2017).",
    ),
}
DEFAULT_ALTERNATIVES = (WAIT, CALL, "In-person assessment.")


@dataclass(frozen=True)
class LiveAlert:
    """One active monitoring Flag with the DetectedIssue and open Task of its alert."""

    alert_id: str
    flag: dict
    issue: dict | None
    task: dict | None


def monitoring_cards(
    access: AccessLayer,
    principal: Principal,
    access_ctx: AccessContext,
    card_ctx: CardContext,
    public_url: str,
) -> list[IssuedCard]:
    """A card for each live monitoring alert of the patient in careloop's store."""
    try:
        release = access.patient_compartment(
            principal, access_ctx, card_ctx.patient_id, MONITORING_TYPES, action=AuditAction.READ
        )
    except AccessDenied as exc:
        raise CdsRequestError(403, str(exc)) from None
    alerts = live_alerts([item.body for item in release.resources])
    return [monitoring_card(alert, card_ctx, public_url) for alert in alerts]


def live_alerts(resources: Sequence[dict]) -> list[LiveAlert]:
    """The active monitoring Flags among `resources`, each with its alert's DetectedIssue and
    open Task (matched by the alert identifier), oldest episode first."""
    by_alert: dict[tuple[str, str], dict] = {}
    for resource in resources:
        alert_key = _alert_id(resource)
        if alert_key is not None:
            by_alert[(str(resource.get("resourceType")), alert_key)] = resource
    alerts = [
        LiveAlert(
            alert_key,
            flag,
            by_alert.get(("DetectedIssue", alert_key)),
            _open(by_alert.get(("Task", alert_key))),
        )
        for (kind, alert_key), flag in by_alert.items()
        if kind == "Flag" and _is_live_monitoring_flag(flag)
    ]
    return sorted(alerts, key=lambda alert: str(alert.flag.get("period", {}).get("start", "")))


def monitoring_card(alert: LiveAlert, ctx: CardContext, public_url: str) -> IssuedCard:
    """The card of one live alert (see the module docstring for what it says)."""
    issue = alert.issue or {}
    pattern = _pattern(alert.flag)
    signals = _signals(issue)
    charts = [_chart_link(public_url, alert.alert_id, code, name) for code, name, _, _ in signals]
    lines = [
        *_what_lines(alert, issue),
        *_signal_lines(signals, charts),
        *_confidence_lines(issue, signals),
        *_task_lines(alert.task),
        "",
        "**Alternatives considered:**",
        *[f"- {text}" for text in ALTERNATIVES.get(pattern, DEFAULT_ALTERNATIVES)],
        *_evidence_lines(EVIDENCE.get(pattern, ())),
        "",
        SAFETY_NOTE,
    ]
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": short(_headline(alert.flag, issue)),
        "indicator": _indicator(issue, alert.task),
        "detail": "\n".join(lines),
        "source": {"label": SOURCE_LABEL, "topic": TOPIC},
        "overrideReasons": [
            {"system": OVERRIDE_SYSTEM, "code": code, "display": display}
            for code, display in OVERRIDE_REASONS
        ],
        "links": [
            *[{"label": label, "url": url, "type": "absolute"} for label, url in charts],
            {"label": "Open the patient in careloop", "url": ctx.patient_url, "type": "absolute"},
        ],
    }
    return IssuedCard(
        card=card,
        key=f"monitoring:{alert.alert_id}",
        model_version=None,
        playbook=None,
        record=alert.issue,
        used=_used(alert),
        record_stored=True,  # the worker keeps the DetectedIssue current; the card points at it
    )


def chart_url(public_url: str, alert_key: str, signal: str) -> str:
    """Where the chart route serves one signal's chart of an alert."""
    return f"{public_url}/monitoring/alerts/{quote(alert_key, safe='')}/chart/{quote(signal)}"


# ----- reading the stored resources ---------------------------------------------------------


def _alert_id(resource: dict) -> str | None:
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == ALERT_ID_SYSTEM:
            value = identifier.get("value")
            return value if isinstance(value, str) and value else None
    return None


def _codings(concept: object) -> list[dict]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return [c for c in codings or [] if isinstance(c, dict)]


def _is_live_monitoring_flag(flag: dict) -> bool:
    coded = any(c.get("system") == PATTERN_SYSTEM for c in _codings(flag.get("code")))
    return coded and flag.get("status") == "active"


def _open(task: dict | None) -> dict | None:
    return task if task is not None and task.get("status") in OPEN_TASK_STATES else None


def _pattern(flag: dict) -> str | None:
    return next(
        (c.get("code") for c in _codings(flag.get("code")) if c.get("system") == PATTERN_SYSTEM),
        None,
    )


def _extension(element: dict, url: str, kind: str) -> object:
    for extension in element.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == url:
            return extension.get(kind)
    return None


def _signals(issue: dict) -> list[tuple[str, str, str, int | None]]:
    """(signal code, name, the sentence against the baseline, days of own data) per evidence."""
    found = []
    for entry in issue.get("evidence") or []:
        for concept in entry.get("code") or []:
            coding = next((c for c in _codings(concept) if c.get("system") == SIGNAL_SYSTEM), None)
            if coding is None or not isinstance(coding.get("code"), str):
                continue
            days = _extension(entry, BASELINE_DAYS_EXTENSION, "valueUnsignedInt")
            found.append(
                (
                    coding["code"],
                    str(coding.get("display") or coding["code"]),
                    str(concept.get("text") or ""),
                    days if isinstance(days, int) else None,
                )
            )
    return found


def _headline(flag: dict, issue: dict) -> str:
    for concept in (issue.get("code"), flag.get("code")):
        if isinstance(concept, dict) and isinstance(concept.get("text"), str):
            return concept["text"]
    return "Remote monitoring alert"


def _indicator(issue: dict, task: dict | None) -> str:
    """From the alert's tier; else its severity; else the Task's priority; warning if nothing
    says (an alert whose urgency is unknown still deserves a look)."""
    tier = _extension(issue, TIER_EXTENSION, "valueCode")
    if tier in INDICATOR:
        return INDICATOR[str(tier)]
    if issue.get("severity") in SEVERITY_INDICATOR:
        return SEVERITY_INDICATOR[issue["severity"]]
    priority = (task or {}).get("priority")
    return {"stat": "critical", "routine": "info"}.get(str(priority), "warning")


def _used(alert: LiveAlert) -> tuple[str, ...]:
    """The stored resources the card was made from (the Provenance's sources)."""
    used = [f"Flag/{alert.flag.get('id')}"]
    if alert.task is not None:
        used.append(f"Task/{alert.task.get('id')}")
    for entry in (alert.issue or {}).get("evidence") or []:
        for detail in entry.get("detail") or []:
            reference = detail.get("reference") if isinstance(detail, dict) else None
            if isinstance(reference, str) and reference.startswith("Media/"):
                used.append(reference)
    return tuple(used)


# ----- the detail, section by section ----------------------------------------------------


def _what_lines(alert: LiveAlert, issue: dict) -> list[str]:
    since = (alert.flag.get("period") or {}).get("start")
    raised = _moment(issue.get("identifiedDateTime"))
    facts = [
        f"pattern present since {since}" if since else "",
        f"raised {raised}" if raised else "",
    ]
    known = [fact for fact in facts if fact]
    what = f"**{_headline(alert.flag, issue)}**"
    return [what + (f" ({'; '.join(known)})" if known else "")]


def _signal_lines(
    signals: Sequence[tuple[str, str, str, int | None]], charts: Sequence[tuple[str, str]]
) -> list[str]:
    if not signals:
        return []
    lines = ["", "**Against this person's own baseline:**"]
    for (_code, _name, sentence, _days), (label, url) in zip(signals, charts, strict=True):
        lines.append(f"- {sentence} [{label}]({url})")
    return lines


def _confidence_lines(
    issue: dict, signals: Sequence[tuple[str, str, str, int | None]]
) -> list[str]:
    """How sure: how many days of the person's own data each baseline rests on, and how far the
    pattern is past the threshold its detector fires at."""
    parts = []
    days = [f"{name.lower()} {count} days" for _c, name, _s, count in signals if count is not None]
    if days:
        parts.append(f"the personal baselines rest on the person's own data ({', '.join(days)})")
    level = _extension(issue, LEVEL_EXTENSION, "valueDecimal")
    if isinstance(level, int | float):
        parts.append(
            f"the pattern is at {level:.1f} times the level at which its detector fires "
            "(1.0 = just at the threshold)"
        )
    if not parts:
        return []
    return ["", "**How sure:** " + "; ".join(parts) + "."]


def _task_lines(task: dict | None) -> list[str]:
    if task is None:
        return ["", "**Follow-up:** no open task for this alert."]
    owner = task.get("owner") or {}
    who = owner.get("display") or owner.get("reference") or "the care team"
    due = _moment(((task.get("restriction") or {}).get("period") or {}).get("end"))
    status = task.get("status", "requested")
    when = f", due by {due}" if due else ""
    return ["", f"**Follow-up:** open task for {who}: {status}{when}."]


def _evidence_lines(citations: Sequence[Citation]) -> list[str]:
    if not citations:
        return []
    lines = ["", "**Evidence:**"]
    lines += [f"- [{c.title}]({c.url})" if c.url else f"- {c.title}" for c in citations]
    return lines


def _chart_link(public_url: str, alert_key: str, signal: str, name: str) -> tuple[str, str]:
    return f"Chart: {name} against the usual range", chart_url(public_url, alert_key, signal)


def _moment(value: object) -> str | None:
    """A FHIR instant as '2024-03-04 10:00 UTC'; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
