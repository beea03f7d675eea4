"""Replay a whole wearable export through the monitoring path, day by day, as if it were live.

For every person, in time order: quality checks (`check_sample`, unit mix-ups), the person's
baselines and detectors (`PersonState.observe`), the day's multi-signal findings, and one
`AlertManager.consider` per person-day. The output is one row per person-day with data, which is
what an evaluation against labelled onsets (Welltory) or an alert-burden count (Fitbit) needs.

Exports carry summed signals at their own grain (hourly steps, sleep episodes), while baselines
and detectors judge a day's total: steps become steps per local day and sleep episodes minutes
per night before they are observed, exactly as the live worker's daily summaries would.

A day's `score` is the largest of (a) the absolute robust deviation `|z|` of any daily signal
observed that day, counting only deviations that are plausible and no longer dominated by the
population prior (before that, a large z says nothing about this person), and (b) the evidence
level of any finding that passed the day's quality gate (1.0 = the detector's threshold). Both
are on a "how unusual" scale where larger means more so, so the maximum ranks days sensibly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import NamedTuple

from careloop.monitoring.alerts import AlertManager, AlertPolicy, DayQuality, evidence_level
from careloop.monitoring.baseline import INTRADAY, daily_totals, sleep_per_night
from careloop.monitoring.importers import (
    ExportError,
    ImportReport,
    find_exports,
    read_fitbit,
    read_welltory,
)
from careloop.monitoring.quality import check_sample, likely_unit_mixup
from careloop.monitoring.signals import CATALOGUE, Sample, Signal
from careloop.monitoring.state import Observation, PersonState

UNIT_HISTORY = 10  # recent accepted values per signal kept for the unit mix-up check


class ReplayRow(NamedTuple):
    """One person-day: how unusual it was, and whether a notification went out (1) or not."""

    person: str
    date: date
    score: float
    alert: int


@dataclass
class ReplayCounters:
    """What a run did: persons and person-days replayed, notifications sent, samples refused
    by the quality checks (by reason), and findings held back by the alert manager (by reason)."""

    persons: int = 0
    person_days: int = 0
    alerts: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)
    imports: dict[str, ImportReport] = field(default_factory=dict)


def replayable_exports(data_dir: Path) -> dict[str, Path]:
    """The Fitbit and Welltory exports DATA_DIR holds (the smartwatch is not replayed yet).

    Raises ExportError when the folder is missing, unreadable, or holds neither."""
    found = {
        name: folder
        for name, folder in find_exports(data_dir).items()
        if name in ("fitbit", "welltory")
    }
    if not found:
        raise ExportError(f"{data_dir}: no Fitbit or Welltory export found")
    return found


def replay(
    data_dir: Path,
    *,
    tz: tzinfo = UTC,
    limit_persons: int | None = None,
    counters: ReplayCounters | None = None,
    policy: AlertPolicy | None = None,
) -> Iterator[ReplayRow]:
    """Rows for every person-day of every export in DATA_DIR, persons in sorted order.

    Exports record local wall-clock times without a zone; `tz` is the zone to read them in.
    `counters`, when given, is filled in as the run goes (complete once the iterator is done).
    Export errors (a missing file, wrong columns) raise ExportError before any row is yielded."""
    counters = counters if counters is not None else ReplayCounters()
    by_person: dict[str, list[Sample]] = defaultdict(list)
    for name, folder in replayable_exports(data_dir).items():
        report = counters.imports.setdefault(name, ImportReport())
        reader = read_fitbit if name == "fitbit" else read_welltory
        for sample in reader(folder, report, tz=tz):
            by_person[sample.person_id].append(sample)
    persons = sorted(by_person)[:limit_persons]
    yield from replay_samples({p: by_person[p] for p in persons}, tz=tz, counters=counters,
                              policy=policy)  # fmt: skip


def replay_samples(
    by_person: dict[str, Sequence[Sample]],
    *,
    tz: tzinfo = UTC,
    counters: ReplayCounters | None = None,
    policy: AlertPolicy | None = None,
) -> Iterator[ReplayRow]:
    """Rows for the given samples (each person's in any order), persons in sorted order."""
    counters = counters if counters is not None else ReplayCounters()
    manager = AlertManager(policy)
    for person in sorted(by_person):
        counters.persons += 1
        yield from _replay_person(person, by_person[person], tz, manager, counters)
    counters.suppressed = {reason.value: n for reason, n in manager.suppressed.items()}


def _offset_minutes(samples: Sequence[Sample], tz: tzinfo) -> int:
    """The zone's UTC offset at the person's first sample (baselines take one fixed offset)."""
    first = min((s.time for s in samples), default=datetime(2000, 1, 1, tzinfo=UTC))
    offset = first.astimezone(tz).utcoffset() or timedelta(0)
    return int(offset.total_seconds() // 60)


def daily_stream(samples: Iterable[Sample], offset_minutes: int) -> list[Sample]:
    """The samples as baselines judge them, in time order: summed signals as one total per
    local day (sleep per night when it came as episodes), levels and heart rate as they are."""
    summed: dict[Signal, list[Sample]] = defaultdict(list)
    episodes: list[Sample] = []
    kept: list[Sample] = []
    for sample in samples:
        if not CATALOGUE[sample.signal].summed:
            kept.append(sample)
        elif sample.signal is Signal.SLEEP_MINUTES and sample.period_minutes != 1440:
            episodes.append(sample)
        else:
            summed[sample.signal].append(sample)
    for signal, items in summed.items():
        kept.extend(daily_totals(items, signal, offset_minutes))
    kept.extend(sleep_per_night(episodes, offset_minutes))
    return sorted(kept, key=lambda s: (s.time, s.signal.value, s.sample_id))


class _Day:
    """What one local day of one person brought: signals, wear hours, and deviations."""

    def __init__(self, day: date) -> None:
        self.day = day
        self.signals: set[Signal] = set()
        self.heart_hours: set[int] = set()
        self.heart_seen = False
        self.largest_z = 0.0

    def add(self, sample: Sample, observation: Observation, hour: int) -> None:
        deviation = observation.deviation
        if sample.signal is Signal.HEART_RATE:
            self.heart_seen = True
            if deviation.plausible:
                self.heart_hours.add(hour)
        if deviation.plausible:
            self.signals.add(sample.signal)
        speaks = deviation.plausible and not deviation.prior_dominated
        if sample.signal not in INTRADAY and speaks and math.isfinite(deviation.z):
            self.largest_z = max(self.largest_z, abs(deviation.z))

    def quality(self, intraday_heart_rate: bool) -> DayQuality:
        """Wear = local hours with a plausible heart rate; a person whose source sends no
        intraday heart rate (daily summaries) is taken as worn all day."""
        hours = float(len(self.heart_hours)) if intraday_heart_rate else 24.0
        off_wrist = self.heart_seen and not self.heart_hours
        return DayQuality(self.day, hours, frozenset(self.signals), off_wrist)


def _replay_person(
    person: str,
    samples: Sequence[Sample],
    tz: tzinfo,
    manager: AlertManager,
    counters: ReplayCounters,
) -> Iterator[ReplayRow]:
    offset = _offset_minutes(samples, tz)
    state = PersonState(person, offset)
    intraday = any(s.signal is Signal.HEART_RATE for s in samples)
    recent: dict[Signal, list[float]] = defaultdict(list)
    now = datetime.now(UTC)
    current: _Day | None = None
    for sample in daily_stream(samples, offset):
        local = sample.time + timedelta(minutes=offset)
        if current is not None and local.date() != current.day:
            yield _close_day(person, current, state, manager, intraday, offset, counters)
            current = None
        reason = _refusal(sample, recent, now)
        if reason is not None:
            counters.refused[reason] = counters.refused.get(reason, 0) + 1
            continue
        current = current or _Day(local.date())
        current.add(sample, state.observe(sample), local.hour)
    if current is not None:
        yield _close_day(person, current, state, manager, intraday, offset, counters)


def _refusal(sample: Sample, recent: dict[Signal, list[float]], now: datetime) -> str | None:
    """A short reason (never the value: it may be PHI) the sample is refused, or None."""
    if check_sample(sample, now) is not None:
        return f"implausible {sample.signal.value}"
    history = recent[sample.signal]
    if sample.signal in (Signal.WEIGHT, Signal.GLUCOSE):
        if likely_unit_mixup(sample.signal, [*history, sample.value]) is not None:
            return f"unit mix-up {sample.signal.value}"
        history.append(sample.value)
        del history[:-UNIT_HISTORY]
    return None


def _close_day(
    person: str,
    day: _Day,
    state: PersonState,
    manager: AlertManager,
    intraday: bool,
    offset: int,
    counters: ReplayCounters,
) -> ReplayRow:
    """Evaluate the finished day: findings, one alert decision, and the day's row."""
    quality = day.quality(intraday)
    end = datetime(day.day.year, day.day.month, day.day.day, tzinfo=UTC) + timedelta(
        days=1, minutes=-offset
    )
    findings = state.findings()
    changes = manager.consider(person, findings, quality, end)
    levels = [
        evidence_level(gated, day.day)
        for finding in findings
        if (gated := manager.gate(finding, quality)) is not None
    ]
    score = max([day.largest_z, *(level for level in levels if math.isfinite(level))])
    alert = int(any(change.notify for change in changes))
    counters.person_days += 1
    counters.alerts += alert
    return ReplayRow(person, day.day, round(score, 4), alert)
