"""One monitored person's whole state: a baseline per signal, CUSUM and EWMA per daily signal,
and a short daily history for the multi-signal patterns.

It is a plain value that serializes to a JSON-able dict and back, so the monitoring worker can
checkpoint it and carry on after a restart with identical scores; `approximate_bytes` tells how
much memory a monitored person costs, which sizes a deployment.
"""

from __future__ import annotations

import sys
from collections import deque
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from careloop.monitoring.baseline import INTRADAY, Deviation, SignalBaseline, saved_state_reason
from careloop.monitoring.detectors import Cusum, DetectorState, Ewma, Finding, find_patterns
from careloop.monitoring.signals import Sample, Signal

HISTORY_DAYS = 14  # the longest pattern looks back 7 days; twice that leaves room for "since"
STATE_VERSION = 1


class Observation(NamedTuple):
    """What one sample did: its deviation, and the detectors' state after it (None when the
    detectors did not run: an intraday signal, an implausible value, a late sample, or a baseline
    still mostly the population prior, where a large z says nothing about this person yet)."""

    deviation: Deviation
    cusum: DetectorState | None
    ewma: DetectorState | None


class PersonState:
    """Everything monitoring keeps about one person; `observe` is the single entry point."""

    __slots__ = ("person_id", "utc_offset_minutes", "window_days", "baselines", "cusums",
                 "ewmas", "history")  # fmt: skip

    def __init__(self, person_id: str, utc_offset_minutes: int = 0, window_days: int = 28):
        self.person_id = person_id
        self.utc_offset_minutes = utc_offset_minutes
        self.window_days = window_days
        self.baselines: dict[Signal, SignalBaseline] = {}
        self.cusums: dict[Signal, Cusum] = {}
        self.ewmas: dict[Signal, Ewma] = {}
        self.history: dict[Signal, deque[tuple[date, Deviation]]] = {}

    def baseline(self, signal: Signal) -> SignalBaseline:
        """The signal's baseline, created from the population prior on first use."""
        found = self.baselines.get(signal)
        if found is None:
            found = SignalBaseline(signal, self.utc_offset_minutes, self.window_days)
            self.baselines[signal] = found
        return found

    def observe(self, sample: Sample) -> Observation:
        """Score the sample against the baseline as it stood, then learn it and run detectors."""
        if sample.person_id != self.person_id:
            raise ValueError("sample belongs to another person than this state")
        baseline = self.baseline(sample.signal)
        deviation = baseline.score_one(sample)
        baseline.learn_one(sample)
        if sample.signal in INTRADAY or not deviation.plausible:
            return Observation(deviation, None, None)
        if not self._remember(sample.signal, self._local_day(sample.time), deviation):
            return Observation(deviation, None, None)
        if deviation.prior_dominated:
            return Observation(deviation, None, None)
        cusum = self.cusums.setdefault(sample.signal, Cusum())
        ewma = self.ewmas.setdefault(sample.signal, Ewma())
        return Observation(
            deviation, cusum.update(deviation.z, sample.time), ewma.update(deviation.z, sample.time)
        )

    def findings(self) -> list[Finding]:
        """The multi-signal patterns the recent daily history shows."""
        return find_patterns(self.history)

    def _local_day(self, time: datetime) -> date:
        return (time + timedelta(minutes=self.utc_offset_minutes)).date()

    def _remember(self, signal: Signal, day: date, deviation: Deviation) -> bool:
        """Keep the day's latest deviation; False for a day older than the newest one kept, which
        came too late to feed order-sensitive detectors."""
        days = self.history.setdefault(signal, deque(maxlen=HISTORY_DAYS))
        if days and day < days[-1][0]:
            return False
        if days and day == days[-1][0]:
            days[-1] = (day, deviation)
        else:
            days.append((day, deviation))
        return True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot (str keys, lists, numbers, ISO times)."""
        return {
            "version": STATE_VERSION,
            "person_id": self.person_id,
            "utc_offset_minutes": self.utc_offset_minutes,
            "window_days": self.window_days,
            "baselines": [baseline.to_dict() for baseline in self.baselines.values()],
            "cusums": {signal.value: d.to_dict() for signal, d in self.cusums.items()},
            "ewmas": {signal.value: d.to_dict() for signal, d in self.ewmas.items()},
            "history": {
                signal.value: [[day.isoformat(), _deviation_to_json(dev)] for day, dev in days]
                for signal, days in self.history.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PersonState:
        """Rebuild from `to_dict`; raises ValueError saying what is wrong (never half-built)."""
        try:
            if data["version"] != STATE_VERSION:
                raise ValueError(f"unsupported state version {data['version']!r}")
            state = cls(str(data["person_id"]), int(data["utc_offset_minutes"]),
                        int(data["window_days"]))  # fmt: skip
            for saved in data["baselines"]:
                baseline = SignalBaseline.from_dict(saved)
                state.baselines[baseline.signal] = baseline
            state.cusums = {Signal(s): Cusum.from_dict(d) for s, d in data["cusums"].items()}
            state.ewmas = {Signal(s): Ewma.from_dict(d) for s, d in data["ewmas"].items()}
            for signal, days in data["history"].items():
                state.history[Signal(signal)] = deque(
                    ((date.fromisoformat(day), _deviation_from_json(dev)) for day, dev in days),
                    maxlen=HISTORY_DAYS,
                )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"invalid monitoring state: {saved_state_reason(error)}") from None
        return state

    def approximate_bytes(self) -> int:
        """Memory held by this person's state, counting every container and value once."""
        return deep_size(self, set())


def _deviation_to_json(deviation: Deviation) -> list[Any]:
    return [
        deviation.signal.value, deviation.time.isoformat(), deviation.value, deviation.median,
        deviation.scale, deviation.z, deviation.unit, deviation.days, deviation.prior_dominated,
        deviation.plausible,
    ]  # fmt: skip


def _deviation_from_json(saved: list[Any]) -> Deviation:
    signal, time, value, centre, scale, z, unit, days, prior, plausible = saved
    parsed = datetime.fromisoformat(time)
    if parsed.tzinfo is None:
        raise ValueError(f"history time {time!r} has no time zone")
    return Deviation(
        Signal(signal), parsed, float(value), float(centre), float(scale), float(z), str(unit),
        int(days), bool(prior), bool(plausible),
    )  # fmt: skip


_SHARED = (str, int, float, bool, type(None), Signal, date, datetime)


def deep_size(obj: object, seen: set[int]) -> int:
    """sys.getsizeof over the object graph (containers and __slots__), each object once. Enum
    members and small interned values are shared by every person, so they are not counted."""
    if id(obj) in seen or isinstance(obj, Signal) or obj is None or isinstance(obj, bool):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        return size + sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    if isinstance(obj, list | tuple | deque | set | frozenset):
        return size + sum(deep_size(item, seen) for item in obj)
    if isinstance(obj, _SHARED):
        return size
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name != "prior" and hasattr(obj, name):  # priors are module-level, shared
                size += deep_size(getattr(obj, name), seen)
    return size
