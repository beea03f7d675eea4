"""From pattern findings to alerts a nurse will not learn to ignore.

Detectors say what the data shows; this module decides what reaches a person, and when. Alarm
fatigue is the failure mode to design against: in hospital monitoring 72-99% of alarms are false
or not actionable, and clinicians exposed to them stop responding (Sendelbach & Funk, AACN Adv
Crit Care 2013). An implanted heart-failure monitor that is trusted is held to about 1.5
unexplained alerts per patient-year (HeartLogic, Boehmer et al., JACC Heart Fail 2017). So:

- budget: at most `monthly_budget[tier]` notifications per person per calendar month (UTC) for
  the non-urgent tiers (defaults: 2 information, 4 nurse-review). Urgent ones are never held back,
  but they are tallied and use up the nurse-review budget, since they take the same nurse's time.
- de-duplication: a pattern still active for a person is one alert whose evidence is updated.
- hysteresis: an alert clears only after its pattern has been absent on `clear_days` days with
  enough data, and a new episode within `rearm_days` of the last one clearing must show a stronger
  pattern (`reraise_level`) than the detector's own threshold: evidence hovering around the
  threshold gives one alert, not one a day.
- snooze: acknowledging silences the pattern for `ack_snooze_days`; a nurse may snooze longer.
  Only an escalation to a higher tier breaks through.
- tiers from the pattern and its size, with the guidance cited at `TierRules`.
- data-quality gating: nothing is raised from a day with too little wear, without the signal
  at all, or with the device off the wrist; such a day also does not count towards clearing.

Every finding that does not become a notification is counted by reason (per evaluation), so the
evaluation can report the false-alert burden that was avoided and why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from careloop.monitoring.baseline import saved_state_reason
from careloop.monitoring.detectors import (
    FALLING_SPO2,
    HEART_FAILURE,
    HF_GAIN_3_DAYS_KG,
    HF_GAIN_7_DAYS_KG,
    INFECTION,
    INFECTION_RHR_Z,
    SPO2_DROP_POINTS,
    Evidence,
    Finding,
)
from careloop.monitoring.signals import Signal

STATE_VERSION = 1


class Tier(StrEnum):
    INFORMATION = "information"
    NURSE_REVIEW = "nurse-review"
    URGENT = "urgent"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Tier.INFORMATION: 0, Tier.NURSE_REVIEW: 1, Tier.URGENT: 2}


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"


class Suppressed(StrEnum):
    """Why a finding did not become a notification."""

    BUDGET = "budget"
    DUPLICATE = "duplicate"
    SNOOZED = "snoozed"
    QUALITY = "quality"
    HYSTERESIS = "hysteresis"


# Signals measured on the wrist: meaningless when the watch was off or worn only briefly.
WRIST_SIGNALS = frozenset(
    {Signal.HEART_RATE, Signal.RESTING_HEART_RATE, Signal.HRV_RMSSD, Signal.SPO2,
     Signal.STEPS, Signal.SLEEP_MINUTES}
)  # fmt: skip
# Patterns that mean nothing without a supporting signal (the detector requires one).
NEEDS_SUPPORT = frozenset({INFECTION})


@dataclass(frozen=True)
class DayQuality:
    """How much data the person's day has: hours with heart-rate readings (wear), which signals
    sent anything at all, and whether the device reported being off the wrist."""

    day: date
    wear_hours: float
    signals: frozenset[Signal]
    off_wrist: bool = False


@dataclass(frozen=True)
class TierRules:
    """Sizes at which a pattern becomes urgent.

    SpO2 at or under 92% sustained: NHS England's COVID-19 oximetry at home pathway and BTS 2017
    (O'Driscoll et al., Thorax 2017) treat 92% or lower as needing urgent assessment in a person
    without chronic lung disease. Weight up over 2 kg within 3 days in heart failure: ESC 2021
    guideline (McDonagh et al., Eur Heart J 2021;42:3599-3726) asks patients to act on it
    promptly. A slower gain (2.5 kg in 7 days) and an infection-like pattern go to nurse review;
    an infection-like pattern whose resting heart rate rose less than `infection_review_bpm`
    (the low end of the 3-10 bpm rises before symptoms, Mishra et al., Nat Biomed Eng 2020) is
    information only."""

    spo2_urgent_percent: float = 92.0
    hf_urgent_gain_kg: float = HF_GAIN_3_DAYS_KG
    hf_urgent_days: int = 3
    infection_review_bpm: float = 3.0


@dataclass(frozen=True)
class AlertPolicy:
    """Everything about alerting that a deployment may tune; defaults as in the module doc."""

    monthly_budget: Mapping[Tier, int] = field(
        default_factory=lambda: {Tier.INFORMATION: 2, Tier.NURSE_REVIEW: 4}
    )
    raise_level: float = 1.0  # evidence level (1.0 = the detector's threshold) to open an alert
    reraise_level: float = 1.25  # a new episode soon after the last cleared needs more
    rearm_days: int = 7
    clear_days: int = 3  # absent on this many days with good data before an alert resolves
    ack_snooze_days: int = 3
    min_wear_hours: float = 10.0  # a valid wear day (Troiano et al., Med Sci Sports Exerc 2008)
    tiers: TierRules = field(default_factory=TierRules)

    def __post_init__(self) -> None:
        if self.clear_days < 1 or self.rearm_days < 0 or self.ack_snooze_days < 0:
            raise ValueError("clear_days must be >= 1 and rearm/snooze days >= 0")
        if self.reraise_level < self.raise_level or self.raise_level <= 0:
            raise ValueError("need 0 < raise_level <= reraise_level")
        if any(count < 0 for count in self.monthly_budget.values()):
            raise ValueError("a monthly budget cannot be negative")

    def budget(self, tier: Tier) -> int | None:
        """Monthly notifications allowed for a tier; None for unlimited (urgent)."""
        if tier is Tier.URGENT:
            return None
        return self.monthly_budget.get(tier, 0)


def _days_span(evidence: Evidence, day: date) -> int:
    return max(0, (day - evidence.since).days)


def evidence_level(finding: Finding, day: date) -> float:
    """How strong the pattern is, as a multiple of the threshold its detector fires at (so 1.0
    is just at it): the core signal's rise or fall divided by that threshold."""
    core = finding.evidence[0]
    if finding.pattern == INFECTION:
        return core.z / INFECTION_RHR_Z
    if finding.pattern == FALLING_SPO2:
        return -core.change / SPO2_DROP_POINTS
    if finding.pattern == HEART_FAILURE:
        short = _days_span(core, day) <= 3
        return core.change / (HF_GAIN_3_DAYS_KG if short else HF_GAIN_7_DAYS_KG)
    return 1.0


def tier_for(finding: Finding, day: date, rules: TierRules) -> Tier:
    """The escalation tier of a finding on `day` (see `TierRules`)."""
    core = finding.evidence[0]
    if finding.pattern == FALLING_SPO2:
        return Tier.URGENT if core.value <= rules.spo2_urgent_percent else Tier.NURSE_REVIEW
    if finding.pattern == HEART_FAILURE:
        fast = _days_span(core, day) <= rules.hf_urgent_days
        return Tier.URGENT if fast and core.change > rules.hf_urgent_gain_kg else Tier.NURSE_REVIEW
    if finding.pattern == INFECTION:
        return Tier.NURSE_REVIEW if core.change >= rules.infection_review_bpm else Tier.INFORMATION
    return Tier.INFORMATION


@dataclass
class Alert:
    """One episode of one pattern for one person, as the care team sees it."""

    id: str
    person_id: str
    pattern: str
    tier: Tier
    since: date
    raised_at: datetime
    evidence: tuple[Evidence, ...]
    state: AlertState = AlertState.OPEN
    level: float = 1.0
    updated_at: datetime | None = None
    snoozed_until: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    absent_days: int = 0
    last_day: date | None = None  # the latest day evaluated for this alert

    def headline(self) -> str:
        """E.g. 'Nurse review: falling oxygen saturation since 3 Mar 2024.'"""
        words = PATTERN_WORDS.get(self.pattern, self.pattern)
        return f"{TIER_WORDS[self.tier]}: {words} since {_day(self.since)}."

    def explain(self) -> str:
        """A few plain sentences: what, how urgent, since when, and each signal against this
        person's own baseline in their units and in deviations."""
        head = self.headline()
        lines = [head, *(describe_evidence(item) for item in self.evidence)]
        if self.state is not AlertState.OPEN:
            lines.append(f"Status: {self.state.value}.")
        return " ".join(lines)


TIER_WORDS = {
    Tier.INFORMATION: "For information",
    Tier.NURSE_REVIEW: "Nurse review",
    Tier.URGENT: "URGENT",
}
PATTERN_WORDS = {
    INFECTION: "signs like an infection starting",
    HEART_FAILURE: "weight gain suggesting fluid build-up (heart failure)",
    FALLING_SPO2: "falling oxygen saturation",
}
SIGNAL_WORDS = {
    Signal.HEART_RATE: ("Heart rate", "bpm", 0),
    Signal.RESTING_HEART_RATE: ("Resting heart rate", "bpm", 0),
    Signal.HRV_RMSSD: ("Heart rate variability", "ms", 0),
    Signal.SPO2: ("Oxygen saturation", "%", 0),
    Signal.STEPS: ("Steps", "steps/day", 0),
    Signal.SLEEP_MINUTES: ("Sleep", "min", 0),
    Signal.WEIGHT: ("Weight", "kg", 1),
    Signal.SYSTOLIC_BP: ("Systolic blood pressure", "mmHg", 0),
    Signal.DIASTOLIC_BP: ("Diastolic blood pressure", "mmHg", 0),
    Signal.GLUCOSE: ("Glucose", "mg/dL", 0),
    Signal.BODY_TEMPERATURE: ("Body temperature", "degC", 1),
}


def _day(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def describe_evidence(item: Evidence) -> str:
    """E.g. 'Resting heart rate up 7 bpm to 65 bpm (usual 58 bpm, +3.5 SD) since 3 Mar 2024.'"""
    name, unit, places = SIGNAL_WORDS[item.signal]
    points = " points" if item.signal is Signal.SPO2 else f" {unit}"
    after = "%" if item.signal is Signal.SPO2 else f" {unit}"
    direction = "up" if item.change >= 0 else "down"
    return (
        f"{name} {direction} {abs(item.change):.{places}f}{points} to {item.value:.{places}f}"
        f"{after} (usual {item.baseline:.{places}f}{after}, {item.z:+.1f} SD) "
        f"since {_day(item.since)}."
    )


class AlertChange(NamedTuple):
    """What `consider` did to an alert. `notify` is True for the kinds that reach a person
    (raised, reraised, escalated); `updated` and `resolved` only refresh what is shown."""

    kind: str
    alert: Alert

    @property
    def notify(self) -> bool:
        return self.kind in NOTIFYING


RAISED, UPDATED, ESCALATED, RERAISED, RESOLVED = (
    "raised", "updated", "escalated", "reraised", "resolved"
)  # fmt: skip
NOTIFYING = frozenset({RAISED, ESCALATED, RERAISED})


def alert_id(person_id: str, pattern: str, episode: int) -> str:
    """Stable for the same person, pattern and episode number (replays give the same ids), a
    valid FHIR id, and not revealing the person's identifier."""
    digest = hashlib.sha256(f"{person_id}\x1f{pattern}\x1f{episode}".encode()).hexdigest()
    return "alert-" + digest[:40]


def _aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware")


class AlertManager:
    """The alerting state of every monitored person; a plain value, checkpointed as JSON."""

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        self.alerts: dict[str, Alert] = {}
        self.current: dict[tuple[str, str], str] = {}  # (person, pattern) -> latest alert id
        self.episodes: dict[tuple[str, str], int] = {}
        self.tally: dict[str, tuple[str, dict[Tier, int]]] = {}  # person -> (month, per tier)
        self.suppressed: dict[Suppressed, int] = {reason: 0 for reason in Suppressed}

    # ----- the decision ---------------------------------------------------------------------

    def consider(
        self,
        person_id: str,
        findings: Sequence[Finding],
        day_quality: DayQuality,
        now: datetime,
    ) -> list[AlertChange]:
        """Fold one evaluation of a person's findings in; the changes it made, in order."""
        _aware(now, "now")
        present: dict[str, Finding] = {}
        for finding in findings:
            gated = self.gate(finding, day_quality)
            if gated is None:
                self.suppressed[Suppressed.QUALITY] += 1
                continue
            day = day_quality.day
            earlier = present.get(gated.pattern)
            if earlier is None or evidence_level(gated, day) > evidence_level(earlier, day):
                present[gated.pattern] = gated
        changes = [
            change
            for finding in present.values()
            if (change := self._present(person_id, finding, day_quality.day, now)) is not None
        ]
        changes.extend(self._absent(person_id, set(present), day_quality, now))
        return changes

    def gate(self, finding: Finding, quality: DayQuality) -> Finding | None:
        """The finding with only evidence from signals the day's data supports, or None when
        its core signal (or every supporting one a pattern needs) is not supported."""
        if not finding.evidence or not self.usable(finding.evidence[0].signal, quality):
            return None
        kept = tuple(item for item in finding.evidence if self.usable(item.signal, quality))
        if finding.pattern in NEEDS_SUPPORT and len(kept) < 2:
            return None
        return replace(finding, evidence=kept)

    def usable(self, signal: Signal, quality: DayQuality) -> bool:
        """Can the day's data say anything about `signal`?"""
        if signal not in quality.signals:
            return False
        if signal in WRIST_SIGNALS:
            return not quality.off_wrist and quality.wear_hours >= self.policy.min_wear_hours
        return True

    def _present(
        self, person: str, finding: Finding, day: date, now: datetime
    ) -> AlertChange | None:
        tier = tier_for(finding, day, self.policy.tiers)
        level = evidence_level(finding, day)
        alert = self.alerts.get(self.current.get((person, finding.pattern), ""))
        if alert is None or alert.state is AlertState.RESOLVED:
            return self._new_episode(person, finding, tier, level, alert, day, now)
        alert.absent_days, alert.last_day = 0, day
        alert.evidence, alert.level, alert.updated_at = finding.evidence, level, now
        if tier.rank > alert.tier.rank:
            if not self._spend(person, tier, now):
                return AlertChange(UPDATED, alert)
            alert.tier, alert.state, alert.snoozed_until = tier, AlertState.OPEN, None
            return AlertChange(ESCALATED, alert)
        if alert.state is AlertState.OPEN:
            self.suppressed[Suppressed.DUPLICATE] += 1
            return AlertChange(UPDATED, alert)
        if alert.snoozed_until is not None and now < alert.snoozed_until:
            self.suppressed[Suppressed.SNOOZED] += 1
            return None
        if not self._spend(person, alert.tier, now):
            return None
        alert.state, alert.snoozed_until = AlertState.OPEN, None
        return AlertChange(RERAISED, alert)

    def _new_episode(
        self,
        person: str,
        finding: Finding,
        tier: Tier,
        level: float,
        last: Alert | None,
        day: date,
        now: datetime,
    ) -> AlertChange | None:
        needed = self.policy.raise_level
        recent = (
            last is not None
            and last.resolved_at is not None
            and (now - last.resolved_at < timedelta(days=self.policy.rearm_days))
        )
        if recent and last is not None and tier.rank <= last.tier.rank:
            needed = self.policy.reraise_level
        if level < needed:
            self.suppressed[Suppressed.HYSTERESIS] += 1
            return None
        if not self._spend(person, tier, now):
            return None
        key = (person, finding.pattern)
        episode = self.episodes.get(key, 0) + 1
        self.episodes[key] = episode
        alert = Alert(
            alert_id(person, finding.pattern, episode), person, finding.pattern, tier,
            finding.since, now, finding.evidence, level=level, updated_at=now, last_day=day,
        )  # fmt: skip
        self.alerts[alert.id] = alert
        self.current[key] = alert.id
        return AlertChange(RAISED, alert)

    def _spend(self, person: str, tier: Tier, now: datetime) -> bool:
        """Take one notification of `tier` from the person's month; False (and counted) when the
        budget is spent. Urgent always passes, and counts against the nurse-review budget."""
        month = f"{now.astimezone(UTC):%Y-%m}"
        saved_month, counts = self.tally.get(person, (month, {}))
        if saved_month != month:
            counts = {}
        allowed = self.policy.budget(tier)
        if allowed is not None and counts.get(tier, 0) >= allowed:
            self.suppressed[Suppressed.BUDGET] += 1
            self.tally[person] = (month, counts)
            return False
        counts[tier] = counts.get(tier, 0) + 1
        if tier is Tier.URGENT:
            counts[Tier.NURSE_REVIEW] = counts.get(Tier.NURSE_REVIEW, 0) + 1
        self.tally[person] = (month, counts)
        return True

    def _absent(
        self, person: str, present: set[str], quality: DayQuality, now: datetime
    ) -> list[AlertChange]:
        """Count a day of absence for each live alert of the person whose pattern is gone, on
        a day whose data could have shown it; resolve after `clear_days` such days."""
        changes = []
        for (owner, pattern), alert_key in list(self.current.items()):
            alert = self.alerts[alert_key]
            if owner != person or pattern in present or alert.state is AlertState.RESOLVED:
                continue
            if not alert.evidence or not self.usable(alert.evidence[0].signal, quality):
                continue
            if alert.last_day is not None and quality.day <= alert.last_day:
                continue  # the same day evaluated again: it counts once
            alert.absent_days += 1
            alert.last_day = quality.day
            if alert.absent_days >= self.policy.clear_days:
                alert.state, alert.resolved_at, alert.updated_at = AlertState.RESOLVED, now, now
                alert.snoozed_until = None
                changes.append(AlertChange(RESOLVED, alert))
        self._forget(person, now)
        return changes

    def _forget(self, person: str, now: datetime) -> None:
        """Drop the person's resolved alerts past the re-arm window (bounded memory); the
        episode counter stays, so later ids never repeat."""
        horizon = timedelta(days=self.policy.rearm_days)
        for key, alert_key in list(self.current.items()):
            alert = self.alerts[alert_key]
            if (
                key[0] == person
                and alert.resolved_at is not None
                and now - alert.resolved_at > horizon
            ):
                del self.current[key]
        live = set(self.current.values())
        for alert_key in [k for k, a in self.alerts.items() if a.person_id == person]:
            if alert_key not in live:
                del self.alerts[alert_key]

    def forget_person(self, person: str) -> None:
        """Drop everything kept about one person (their record was erased)."""
        self.alerts = {k: a for k, a in self.alerts.items() if a.person_id != person}
        self.current = {k: v for k, v in self.current.items() if k[0] != person}
        self.episodes = {k: v for k, v in self.episodes.items() if k[0] != person}
        self.tally.pop(person, None)

    def persons(self) -> set[str]:
        """Everyone the manager keeps anything about."""
        return {a.person_id for a in self.alerts.values()} | set(self.tally)

    # ----- what the care team does ----------------------------------------------------------

    def _live(self, alert_key: str) -> Alert:
        alert = self.alerts.get(alert_key)
        if alert is None:
            raise KeyError(f"no alert {alert_key!r}")
        if alert.state is AlertState.RESOLVED:
            raise ValueError(f"alert {alert_key!r} is already resolved")
        return alert

    def acknowledge(self, alert_key: str, by: str, now: datetime) -> Alert:
        """Someone has seen it: no re-raise for `ack_snooze_days` unless it escalates."""
        _aware(now, "now")
        alert = self._live(alert_key)
        alert.state, alert.acknowledged_by, alert.acknowledged_at = AlertState.ACKNOWLEDGED, by, now
        alert.snoozed_until = now + timedelta(days=self.policy.ack_snooze_days)
        alert.updated_at = now
        return alert

    def snooze(self, alert_key: str, days: int, now: datetime) -> Alert:
        """Silence the alert for `days` (it still escalates, and still resolves)."""
        _aware(now, "now")
        if days < 1:
            raise ValueError(f"snooze needs at least 1 day, got {days}")
        alert = self._live(alert_key)
        alert.state, alert.updated_at = AlertState.SNOOZED, now
        alert.snoozed_until = now + timedelta(days=days)
        return alert

    def open_alerts(self, person_id: str | None = None) -> list[Alert]:
        """Alerts not yet resolved, for one person or everyone."""
        return [
            alert
            for alert in self.alerts.values()
            if alert.state is not AlertState.RESOLVED
            and (person_id is None or alert.person_id == person_id)
        ]

    # ----- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot of the state (the policy is configuration, not state)."""
        return {
            "version": STATE_VERSION,
            "alerts": [_alert_to_json(alert) for alert in self.alerts.values()],
            "current": [[p, pattern, key] for (p, pattern), key in self.current.items()],
            "episodes": [[p, pattern, n] for (p, pattern), n in self.episodes.items()],
            "tally": {
                person: [month, {tier.value: n for tier, n in counts.items()}]
                for person, (month, counts) in self.tally.items()
            },
            "suppressed": {reason.value: n for reason, n in self.suppressed.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], policy: AlertPolicy | None = None) -> AlertManager:
        """Rebuild from `to_dict`; raises ValueError naming what is wrong (never half-built)."""
        manager = cls(policy)
        try:
            if data["version"] != STATE_VERSION:
                raise ValueError(f"unsupported alert state version {data['version']!r}")
            alerts = [_alert_from_json(item) for item in data["alerts"]]
            manager.alerts = {alert.id: alert for alert in alerts}
            manager.current = {(str(p), str(t)): str(k) for p, t, k in data["current"]}
            if any(key not in manager.alerts for key in manager.current.values()):
                raise ValueError("a current alert is missing from the alerts")
            manager.episodes = {(str(p), str(t)): int(n) for p, t, n in data["episodes"]}
            manager.tally = {
                str(person): (str(month), {Tier(t): int(n) for t, n in counts.items()})
                for person, (month, counts) in data["tally"].items()
            }
            for reason, count in data["suppressed"].items():
                manager.suppressed[Suppressed(reason)] = int(count)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"invalid alert state: {saved_state_reason(error)}") from None
        return manager


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("an alert time has no time zone")
    return moment


def _evidence_to_json(item: Evidence) -> list[Any]:
    return [item.signal.value, item.value, item.baseline, item.change, item.z, item.unit,
            item.since.isoformat()]  # fmt: skip


def _evidence_from_json(saved: Iterable[Any]) -> Evidence:
    signal, value, baseline, change, z, unit, since = saved
    return Evidence(Signal(signal), float(value), float(baseline), float(change), float(z),
                    str(unit), date.fromisoformat(since))  # fmt: skip


def _alert_to_json(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "person_id": alert.person_id,
        "pattern": alert.pattern,
        "tier": alert.tier.value,
        "since": alert.since.isoformat(),
        "raised_at": alert.raised_at.isoformat(),
        "evidence": [_evidence_to_json(item) for item in alert.evidence],
        "state": alert.state.value,
        "level": alert.level,
        "updated_at": _time(alert.updated_at),
        "snoozed_until": _time(alert.snoozed_until),
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": _time(alert.acknowledged_at),
        "resolved_at": _time(alert.resolved_at),
        "absent_days": alert.absent_days,
        "last_day": None if alert.last_day is None else alert.last_day.isoformat(),
    }


def _alert_from_json(saved: Mapping[str, Any]) -> Alert:
    raised = _parse_time(saved["raised_at"])
    if raised is None:
        raise ValueError("an alert has no raised_at")
    by = saved["acknowledged_by"]
    return Alert(
        id=str(saved["id"]),
        person_id=str(saved["person_id"]),
        pattern=str(saved["pattern"]),
        tier=Tier(saved["tier"]),
        since=date.fromisoformat(saved["since"]),
        raised_at=raised,
        evidence=tuple(_evidence_from_json(item) for item in saved["evidence"]),
        state=AlertState(saved["state"]),
        level=float(saved["level"]),
        updated_at=_parse_time(saved["updated_at"]),
        snoozed_until=_parse_time(saved["snoozed_until"]),
        acknowledged_by=None if by is None else str(by),
        acknowledged_at=_parse_time(saved["acknowledged_at"]),
        resolved_at=_parse_time(saved["resolved_at"]),
        absent_days=int(saved["absent_days"]),
        last_day=None if saved["last_day"] is None else date.fromisoformat(saved["last_day"]),
    )
