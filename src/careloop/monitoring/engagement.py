"""Engagement drop-off: a person whose devices have sent nothing for days, or who stopped a
check-in they used to do (a daily weight, a blood pressure, a glucose reading).

Silence is not a clinical finding, but it blinds every detector: a patient who stopped wearing
the watch or weighing themselves is unmonitored, and a coach or nurse should ask why. So it
raises a low-priority finding (a routine Task), never an alert through the clinical budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from careloop.monitoring.signals import Signal

DEFAULT_GAP_DAYS = 3
# Readings a person takes on purpose (a check-in), unlike what a worn device records by itself.
CHECK_IN_SIGNALS = frozenset(
    {Signal.WEIGHT, Signal.SYSTOLIC_BP, Signal.GLUCOSE, Signal.BODY_TEMPERATURE}
)
# A check-in counts as a habit once sent this many times; only then is its absence news.
HABIT_READINGS = 3


@dataclass(frozen=True)
class EngagementGap:
    """No device data from `person_id` for `days_silent` whole days (`last_seen` None: the
    person is enrolled but has never sent anything)."""

    person_id: str
    last_seen: datetime | None
    days_silent: int | None
    signal: Signal | None = None  # a missed check-in of this signal; None: all devices silent


def engagement_gaps(
    last_sample_time_by_person: Mapping[str, datetime | None],
    now: datetime,
    days: int = DEFAULT_GAP_DAYS,
) -> list[EngagementGap]:
    """People silent for at least `days` days, longest silence first (never-seen first of all).

    A last sample dated after `now` (a device clock ahead) counts as seen just now."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    gaps = []
    for person, last in last_sample_time_by_person.items():
        if last is None:
            gaps.append(EngagementGap(person, None, None))
            continue
        if last.tzinfo is None:
            raise ValueError("a last sample time is not timezone-aware")
        silent = max(now - last, timedelta(0))
        if silent >= timedelta(days=days):
            gaps.append(EngagementGap(person, last, silent.days))
    return sorted(
        gaps, key=lambda g: (g.days_silent is not None, -(g.days_silent or 0), g.person_id)
    )


def missed_check_ins(
    check_ins: Mapping[str, Mapping[Signal, tuple[int, datetime]]],
    now: datetime,
    days: int = DEFAULT_GAP_DAYS,
) -> list[EngagementGap]:
    """Check-ins a person had made a habit of (`HABIT_READINGS` or more readings) and has not
    sent for at least `days` days. `check_ins` maps person -> signal -> (readings, last time)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    gaps = []
    for person, signals in check_ins.items():
        for signal, (readings, last) in signals.items():
            silent = max(now - last, timedelta(0))
            if readings >= HABIT_READINGS and silent >= timedelta(days=days):
                gaps.append(EngagementGap(person, last, silent.days, signal))
    return sorted(gaps, key=lambda g: (-(g.days_silent or 0), g.person_id, str(g.signal)))
