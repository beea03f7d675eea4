"""The live monitoring path for every person, one sample at a time.

`Monitor.accept` takes samples in (roughly) time order, as the stream processor hands them over,
and does what a nurse's remote-monitoring service needs done with each:

1. refuse what cannot be a reading (implausible, unit mix-up, a device flooding faster than any
   real sensor samples), counted by reason and never scored;
2. score level signals against the person's baseline and learn them (`PersonState.observe`);
3. add up summed signals (steps per local day; sleep per night, credited to the day it ends) and
   collect the day's minute heart rate;
4. when a sample of a later local day arrives (or `close_due` finds the day over), close the
   day: observe its totals, derive resting heart rate from that day's heart rate if no device
   sent one, judge the day's wear, evaluate the multi-signal patterns and give them to the
   `AlertManager` (budget, de-duplication, hysteresis, quality gate) once.

The same code runs the replay and the evaluation, so their figures describe what runs live. The
whole state is a plain value (`to_dict`/`from_dict`), checkpointed by the worker.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from careloop.monitoring.alerts import (
    AlertChange,
    AlertManager,
    AlertPolicy,
    DayQuality,
    evidence_level,
)
from careloop.monitoring.baseline import (
    DAILY_SOURCE,
    INTRADAY,
    NO_STEP_MINUTES,
    daily_sample,
    resting_value,
)
from careloop.monitoring.engagement import CHECK_IN_SIGNALS
from careloop.monitoring.quality import MIXUP_SIGNALS, check_sample, likely_unit_mixup
from careloop.monitoring.signals import CATALOGUE, Sample, Signal
from careloop.monitoring.state import PersonState, deep_size

STATE_VERSION = 1
UNIT_HISTORY = 10  # recent accepted values per signal kept for the unit mix-up check
# The fastest real sensors: optical heart rate at 1 Hz (some report twice a second); anything
# else at most once a second. More samples than this in one minute is a device fault or a replay
# storm, and the excess is refused rather than let one device outweigh a person's day.
FLOOD_PER_MINUTE = {Signal.HEART_RATE: 120}
DEFAULT_FLOOD_PER_MINUTE = 60
# A day is closed this long after its local midnight when nothing newer arrived: devices sync
# late (a watch off the phone overnight), and a sample for a closed day can no longer count.
DEFAULT_CLOSE_GRACE = timedelta(hours=6)


@dataclass(frozen=True)
class DayOutcome:
    """One closed person-day: how unusual it was, the alert changes it made, its data quality."""

    person: str
    day: date
    score: float
    changes: tuple[AlertChange, ...]
    quality: DayQuality
    summaries: tuple[Sample, ...]  # the day's daily values (steps, sleep, derived resting HR)

    @property
    def alert(self) -> bool:
        return any(change.notify for change in self.changes)


@dataclass
class MonitorCounters:
    samples: int = 0
    days_closed: int = 0
    notifications: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


def bucket_time(sample: Sample) -> datetime:
    """The moment that decides a sample's day: a sleep episode counts for the day it ends (the
    night before today is today's sleep, and a device can only report it on waking)."""
    if sample.signal is Signal.SLEEP_MINUTES and sample.period_minutes not in (None, 1440):
        return sample.time + timedelta(minutes=sample.period_minutes)
    return sample.time


class _OpenDay:
    """What one local day of one person has brought so far."""

    __slots__ = ("day", "signals", "heart_hours", "heart_seen", "largest_z", "totals",
                 "minutes", "active", "sent_resting")  # fmt: skip

    def __init__(self, day: date) -> None:
        self.day = day
        self.signals: set[Signal] = set()
        self.heart_hours: set[int] = set()
        self.heart_seen = False
        self.largest_z = 0.0
        self.totals: dict[Signal, float] = {}
        self.minutes: dict[int, list[float]] = {}  # UTC minute -> [sum, count] of heart rate
        self.active: set[int] = set()  # UTC minutes with steps
        self.sent_resting = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "signals": sorted(s.value for s in self.signals),
            "heart_hours": sorted(self.heart_hours),
            "heart_seen": self.heart_seen,
            "largest_z": self.largest_z,
            "totals": {s.value: v for s, v in self.totals.items()},
            "minutes": {str(m): pair for m, pair in self.minutes.items()},
            "active": sorted(self.active),
            "sent_resting": self.sent_resting,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _OpenDay:
        opened = cls(date.fromisoformat(data["day"]))
        opened.signals = {Signal(s) for s in data["signals"]}
        opened.heart_hours = {int(h) for h in data["heart_hours"]}
        opened.heart_seen = bool(data["heart_seen"])
        opened.largest_z = float(data["largest_z"])
        opened.totals = {Signal(s): float(v) for s, v in data["totals"].items()}
        opened.minutes = {int(m): [float(a), float(b)] for m, (a, b) in data["minutes"].items()}
        opened.active = {int(m) for m in data["active"]}
        opened.sent_resting = bool(data["sent_resting"])
        return opened


class _Person:
    __slots__ = ("state", "day", "recent", "last_seen", "flood_minute", "flood_counts",
                 "intraday", "check_ins")  # fmt: skip

    def __init__(self, state: PersonState) -> None:
        self.state = state
        self.day: _OpenDay | None = None
        self.recent: dict[Signal, list[float]] = {}
        self.last_seen: datetime | None = None
        self.flood_minute = -1
        self.flood_counts: dict[Signal, int] = {}
        self.intraday = False  # has this person's device ever sent intraday heart rate?
        self.check_ins: dict[Signal, tuple[int, datetime]] = {}  # readings and the latest

    @property
    def offset(self) -> int:
        return self.state.utc_offset_minutes

    def local_day(self, moment: datetime) -> date:
        return (moment + timedelta(minutes=self.offset)).date()


class Monitor:
    """Every monitored person's baselines, open day and alerts; see the module doc."""

    def __init__(
        self,
        policy: AlertPolicy | None = None,
        *,
        tz: tzinfo = UTC,
        clock: Any = None,
        close_grace: timedelta = DEFAULT_CLOSE_GRACE,
    ) -> None:
        self.manager = AlertManager(policy)
        self.tz = tz
        self.close_grace = close_grace
        self._clock = clock or (lambda: datetime.now(UTC))
        self.persons: dict[str, _Person] = {}
        self.counters = MonitorCounters()
        self._touched: set[str] = set()

    # ----- intake -------------------------------------------------------------------------

    def accept(self, sample: Sample) -> list[DayOutcome]:
        """Fold one sample in; the days it closed (usually none)."""
        self.counters.samples += 1
        person = self._person(sample)
        self._touched.add(sample.person_id)
        reason = self._refusal(person, sample)
        if reason is not None:
            self.counters.refuse(reason)
            return []
        if person.last_seen is None or sample.time > person.last_seen:
            person.last_seen = sample.time
        if sample.signal in CHECK_IN_SIGNALS:
            count, last = person.check_ins.get(sample.signal, (0, sample.time))
            person.check_ins[sample.signal] = (count + 1, max(last, sample.time))
        day = person.local_day(bucket_time(sample))
        closed: list[DayOutcome] = []
        if person.day is not None and day > person.day.day:
            closed.append(self._close(sample.person_id, person))
        if person.day is not None and day < person.day.day:
            self._late(person, sample)
            return closed
        person.day = person.day or _OpenDay(day)
        self._add(person, person.day, sample)
        return closed

    def close_due(self, now: datetime | None = None) -> list[DayOutcome]:
        """Close every open day whose local midnight passed more than `close_grace` ago: a
        person whose device went quiet still gets their day judged."""
        now = now or self._clock()
        due = []
        for person_id, person in self.persons.items():
            if person.day is None:
                continue
            end = _local_midnight_utc(person.day.day + timedelta(days=1), person.offset)
            if now >= end + self.close_grace:
                due.append(self._close(person_id, person))
        return due

    def finish(self) -> list[DayOutcome]:
        """Close every open day (the end of a replay)."""
        return [
            self._close(person_id, person)
            for person_id, person in sorted(self.persons.items())
            if person.day is not None
        ]

    def last_seen(self) -> dict[str, datetime | None]:
        """When each person's devices last sent anything (engagement checks read this)."""
        return {person_id: person.last_seen for person_id, person in self.persons.items()}

    def forget(self, person_id: str) -> None:
        """Drop a person entirely: baselines, open day and alerts (their record was erased)."""
        self.persons.pop(person_id, None)
        self._touched.discard(person_id)
        self.manager.forget_person(person_id)

    def person_bytes(self, person_id: str) -> int:
        """Memory one monitored person costs: baselines, detectors, history and the open day
        (whose minute heart rate is the largest part for a watch that samples every few s)."""
        return deep_size(self.persons[person_id], set())

    def check_ins(self) -> dict[str, dict[Signal, tuple[int, datetime]]]:
        """Per person, each check-in signal's readings so far and the latest one's time."""
        return {pid: dict(person.check_ins) for pid, person in self.persons.items()}

    def history(self, person_id: str) -> dict[Signal, Any]:
        """The person's recent daily deviations per signal (charts read this)."""
        person = self.persons.get(person_id)
        return {} if person is None else dict(person.state.history)

    # ----- the steps ----------------------------------------------------------------------

    def _person(self, sample: Sample) -> _Person:
        person = self.persons.get(sample.person_id)
        if person is None:
            offset = sample.time.astimezone(self.tz).utcoffset() or timedelta(0)
            minutes = int(offset.total_seconds() // 60)
            person = _Person(PersonState(sample.person_id, minutes))
            self.persons[sample.person_id] = person
        return person

    def _refusal(self, person: _Person, sample: Sample) -> str | None:
        """A short reason (never the value: it may be PHI) the sample is refused, or None."""
        if sample.signal in MIXUP_SIGNALS:  # before the range: a wrong unit is often out of it
            history = person.recent.setdefault(sample.signal, [])
            if likely_unit_mixup(sample.signal, [*history, sample.value]) is not None:
                return f"unit mix-up {sample.signal.value}"
        problem = check_sample(sample, self._clock())
        if problem is not None:
            kind = "future-dated" if problem.endswith("in the future") else "implausible"
            return f"{kind} {sample.signal.value}"
        if self._flooding(person, sample):
            return f"flooding {sample.signal.value}"
        if sample.signal in MIXUP_SIGNALS:
            history = person.recent[sample.signal]
            history.append(sample.value)
            del history[:-UNIT_HISTORY]
        return None

    def _flooding(self, person: _Person, sample: Sample) -> bool:
        minute = int(sample.time.timestamp() // 60)
        if minute != person.flood_minute:
            person.flood_minute = minute
            person.flood_counts.clear()
        count = person.flood_counts.get(sample.signal, 0) + 1
        person.flood_counts[sample.signal] = count
        return count > FLOOD_PER_MINUTE.get(sample.signal, DEFAULT_FLOOD_PER_MINUTE)

    def _late(self, person: _Person, sample: Sample) -> None:
        """A sample for a day already closed: a level still teaches the baseline (the state
        keeps it out of the detectors); a summed value cannot join a total already judged."""
        if CATALOGUE[sample.signal].summed:
            self.counters.refuse(f"late {sample.signal.value}")
        else:
            person.state.observe(sample)

    def _add(self, person: _Person, day: _OpenDay, sample: Sample) -> None:
        signal = sample.signal
        if CATALOGUE[signal].summed:
            day.totals[signal] = day.totals.get(signal, 0.0) + sample.value
            if signal is Signal.STEPS and sample.value > 0:
                first = int(sample.time.timestamp() // 60)
                day.active.update(range(first, first + max(1, sample.period_minutes or 1)))
            return
        if signal is Signal.HEART_RATE:
            person.intraday = True
            day.heart_seen = True
            # the time-of-day baseline learns every reading; the day is judged on its resting
            # value, derived at close from these minutes
            if not person.state.observe(sample).deviation.plausible:
                return
            minute = int(sample.time.timestamp() // 60)
            pair = day.minutes.get(minute)
            if pair is None:
                day.minutes[minute] = [sample.value, 1.0]
            else:
                pair[0] += sample.value
                pair[1] += 1.0
            local_hour = (sample.time + timedelta(minutes=person.offset)).hour
            day.heart_hours.add(local_hour)
            day.signals.add(signal)
            return  # intraday heart rate is judged through the day's resting value
        if signal is Signal.RESTING_HEART_RATE:
            day.sent_resting = True
        _note(day, sample, person.state)

    def _close(self, person_id: str, person: _Person) -> DayOutcome:
        day = person.day
        assert day is not None
        person.day = None
        self._touched.add(person_id)
        summaries = list(self._summaries(person_id, person, day))
        for summary in summaries:
            _note(day, summary, person.state)
        quality = _quality(day, person.intraday)
        end = _local_midnight_utc(day.day + timedelta(days=1), person.offset)
        findings = person.state.findings()
        changes = self.manager.consider(person_id, findings, quality, end)
        levels = [
            evidence_level(gated, day.day)
            for finding in findings
            if (gated := self.manager.gate(finding, quality)) is not None
        ]
        score = max([day.largest_z, *(level for level in levels if math.isfinite(level))])
        outcome = DayOutcome(person_id, day.day, score, tuple(changes), quality, tuple(summaries))
        self.counters.days_closed += 1
        self.counters.notifications += int(outcome.alert)
        return outcome

    def _summaries(self, person_id: str, person: _Person, day: _OpenDay) -> Iterable[Sample]:
        """The day's daily values: each summed signal's total, and resting heart rate derived
        from the day's heart rate when the device sent none."""
        for signal, total in sorted(day.totals.items()):
            yield daily_sample(person_id, signal, day.day, total, person.offset)
        if not day.sent_resting:
            resting = resting_from_minutes(day.minutes, day.active if day.active else None)
            if resting is not None:
                yield daily_sample(
                    person_id, Signal.RESTING_HEART_RATE, day.day, resting, person.offset
                )

    # ----- checkpoint ---------------------------------------------------------------------

    def person_snapshot(self, person_id: str) -> dict[str, Any]:
        """One person's part of the state (JSON-able), saved apart so a checkpoint writes only
        the people whose state changed."""
        person = self.persons[person_id]
        return {
            "state": person.state.to_dict(),
            "day": None if person.day is None else person.day.to_dict(),
            "recent": {s.value: list(v) for s, v in person.recent.items()},
            "last_seen": None if person.last_seen is None else person.last_seen.isoformat(),
            "intraday": person.intraday,
            "check_ins": {
                signal.value: [count, last.isoformat()]
                for signal, (count, last) in person.check_ins.items()
            },
        }

    def shared_snapshot(self) -> dict[str, Any]:
        """Everything that is not one person's: the alert manager and the counters."""
        return {
            "version": STATE_VERSION,
            "manager": self.manager.to_dict(),
            "counters": asdict(self.counters),
        }

    def take_touched(self) -> set[str]:
        """The persons whose state changed since the last call."""
        touched, self._touched = self._touched, set()
        return touched

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.shared_snapshot(),
            "persons": {person_id: self.person_snapshot(person_id) for person_id in self.persons},
        }

    def load(self, shared: dict[str, Any], persons: dict[str, dict[str, Any]]) -> None:
        """Load a checkpoint saved as `shared_snapshot` plus `person_snapshot`s."""
        self.restore({**shared, "persons": persons})

    def restore(self, data: dict[str, Any]) -> None:
        """Load `to_dict`; a ValueError says what is wrong and leaves this monitor as it was."""
        try:
            if data["version"] != STATE_VERSION:
                raise ValueError(f"unsupported monitor state version {data['version']!r}")
            persons = {pid: _person_from_dict(saved) for pid, saved in data["persons"].items()}
            manager = AlertManager.from_dict(data["manager"], self.manager.policy)
            counters = MonitorCounters(**data["counters"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"invalid monitor state: {error}") from None
        self.persons, self.manager, self.counters = persons, manager, counters


def _person_from_dict(saved: dict[str, Any]) -> _Person:
    person = _Person(PersonState.from_dict(saved["state"]))
    person.day = None if saved["day"] is None else _OpenDay.from_dict(saved["day"])
    person.recent = {Signal(s): [float(v) for v in values] for s, values in saved["recent"].items()}
    seen = saved["last_seen"]
    person.last_seen = None if seen is None else datetime.fromisoformat(seen)
    person.intraday = bool(saved["intraday"])
    person.check_ins = {
        Signal(signal): (int(count), datetime.fromisoformat(last))
        for signal, (count, last) in saved["check_ins"].items()
    }
    return person


def _note(day: _OpenDay, sample: Sample, state: PersonState) -> None:
    """Observe a level or daily sample and keep what the day's score and quality need."""
    deviation = state.observe(sample).deviation
    if not deviation.plausible:
        return
    day.signals.add(sample.signal)
    speaks = not deviation.prior_dominated and math.isfinite(deviation.z)
    if sample.signal not in INTRADAY and speaks:
        day.largest_z = max(day.largest_z, abs(deviation.z))


def _quality(day: _OpenDay, intraday: bool) -> DayQuality:
    """Wear = local hours with heart rate; a person whose device sends no intraday heart rate
    (daily summaries only) is taken as worn all day."""
    hours = float(len(day.heart_hours)) if intraday else 24.0
    off_wrist = intraday and not day.heart_hours
    return DayQuality(day.day, hours, frozenset(day.signals), off_wrist)


def _local_midnight_utc(day: date, offset_minutes: int) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(minutes=offset_minutes)


def resting_from_minutes(minutes: dict[int, list[float]], active: set[int] | None) -> float | None:
    """A day's resting heart rate from its minute heart rate (see baseline.resting_heart_rate:
    with steps, the mean of minutes after 12 step-free minutes; without, the 10th percentile)."""
    values = [
        total / count
        for minute, (total, count) in minutes.items()
        if active is None or not _recently_active(active, minute)
    ]
    return resting_value(values, with_steps=active is not None)


def _recently_active(active: set[int], minute: int) -> bool:
    return any(minute - back in active for back in range(NO_STEP_MINUTES + 1))


__all__ = ["DAILY_SOURCE", "DayOutcome", "Monitor", "MonitorCounters", "bucket_time"]
