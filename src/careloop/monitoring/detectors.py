"""Change detection on robust deviations, and multi-signal patterns over daily summaries.

A single day 2 deviations above baseline happens to everyone after a bad night or a hard
workout; a shift that persists for days is what illness looks like. CUSUM accumulates evidence
of a sustained shift and says when it began; EWMA smooths the daily deviations so a slow drift
shows. Both run online on the `z` that `SignalBaseline.score_one` gives, one update per value.

The patterns combine signals the way clinical guidance and wearable studies describe an episode
(infection, heart-failure decompensation, falling oxygen saturation), and each finding carries its
evidence: which signals, by how much in units and deviations, since when.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from careloop.monitoring.baseline import Deviation
from careloop.monitoring.signals import Signal

UP = "up"
DOWN = "down"


class DetectorState(NamedTuple):
    """A detector after one update: its statistics, the direction alarmed (or None), and since
    when the shift behind the statistic has run (None while no excursion is under way)."""

    upper: float
    lower: float
    alarm: str | None
    since: datetime | None


def _time_to_json(time: datetime | None) -> str | None:
    return None if time is None else time.isoformat()


def _time_from_json(text: str | None) -> datetime | None:
    if text is None:
        return None
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"detector time {text!r} has no time zone")
    return parsed


class Cusum:
    """Tabular CUSUM on robust z (Page 1954; Montgomery, Introduction to Statistical Quality
    Control, ch. 9): S+ = max(0, S+ + z - k), S- = max(0, S- - z - k), alarm when S > h.

    `k` is half the shift (in deviations) worth detecting fast; k = 0.5 and h = 4 detect a one-
    deviation shift in about 8 values with roughly 170 values between false alarms on in-control
    normal data (ARL0). For a daily resting heart rate a 1-deviation shift is about 2-4 bpm, well
    inside the 3-10 bpm rises seen before symptoms of infection (Mishra et al., Nat Biomed Eng
    2020), so larger shifts alarm within a few days. After an alarm the statistic resets, so a
    continuing shift alarms again only after fresh evidence (no alert every day)."""

    __slots__ = ("k", "h", "two_sided", "reset", "upper", "lower", "since_up", "since_down")

    def __init__(self, k: float = 0.5, h: float = 4.0, two_sided: bool = True, reset: bool = True):
        if not (k >= 0 and h > 0):
            raise ValueError(f"CUSUM needs k >= 0 and h > 0, got k={k}, h={h}")
        self.k, self.h, self.two_sided, self.reset = k, h, two_sided, reset
        self.upper = self.lower = 0.0
        self.since_up: datetime | None = None
        self.since_down: datetime | None = None

    def update(self, z: float, time: datetime) -> DetectorState:
        """Fold one deviation in; a non-finite z is ignored rather than poisoning the sum."""
        if not math.isfinite(z):
            return DetectorState(self.upper, self.lower, None, self._since())
        upper = max(0.0, self.upper + z - self.k)
        self.since_up = None if upper == 0.0 else (self.since_up if self.upper > 0 else time)
        self.upper = upper
        if self.two_sided:
            lower = max(0.0, self.lower - z - self.k)
            self.since_down = None if lower == 0.0 else (self.since_down if self.lower else time)
            self.lower = lower
        alarm = UP if self.upper > self.h else DOWN if self.lower > self.h else None
        state = DetectorState(self.upper, self.lower, alarm, self._since(alarm))
        if alarm and self.reset:
            self.upper = self.lower = 0.0
            self.since_up = self.since_down = None
        return state

    def _since(self, alarm: str | None = None) -> datetime | None:
        if alarm == DOWN or (alarm is None and self.lower > self.upper):
            return self.since_down
        return self.since_up

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "cusum",
            "k": self.k,
            "h": self.h,
            "two_sided": self.two_sided,
            "reset": self.reset,
            "upper": self.upper,
            "lower": self.lower,
            "since_up": _time_to_json(self.since_up),
            "since_down": _time_to_json(self.since_down),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cusum:
        detector = cls(float(data["k"]), float(data["h"]), bool(data["two_sided"]))
        detector.reset = bool(data["reset"])
        detector.upper, detector.lower = float(data["upper"]), float(data["lower"])
        detector.since_up = _time_from_json(data["since_up"])
        detector.since_down = _time_from_json(data["since_down"])
        return detector


class Ewma:
    """EWMA of robust z (Roberts 1959; Lucas & Saccucci, Technometrics 1990): E = lam*z +
    (1-lam)*E, alarm when |E| exceeds L * sqrt(lam / (2 - lam)), its asymptotic standard
    deviation times L. lam = 0.2, L = 3 is a common choice that reacts to drifts of about one
    deviation within a week of daily values. `since` is when E last left zero's side."""

    __slots__ = ("lam", "width", "limit", "value", "since")

    def __init__(self, lam: float = 0.2, width: float = 3.0):
        if not (0 < lam <= 1 and width > 0):
            raise ValueError(f"EWMA needs 0 < lam <= 1 and L > 0, got lam={lam}, L={width}")
        self.lam, self.width = lam, width
        self.limit = width * math.sqrt(lam / (2 - lam))
        self.value = 0.0
        self.since: datetime | None = None

    def update(self, z: float, time: datetime) -> DetectorState:
        """Fold one deviation in; a non-finite z is ignored."""
        if not math.isfinite(z):
            return DetectorState(max(self.value, 0.0), max(-self.value, 0.0), None, self.since)
        previous = self.value
        self.value = self.lam * z + (1 - self.lam) * previous
        if self.value == 0.0 or (previous * self.value) <= 0.0:
            self.since = None if self.value == 0.0 else time
        alarm = UP if self.value > self.limit else DOWN if self.value < -self.limit else None
        return DetectorState(max(self.value, 0.0), max(-self.value, 0.0), alarm, self.since)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "ewma",
            "lam": self.lam,
            "width": self.width,
            "value": self.value,
            "since": _time_to_json(self.since),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ewma:
        detector = cls(float(data["lam"]), float(data["width"]))
        detector.value = float(data["value"])
        detector.since = _time_from_json(data["since"])
        return detector


# ----- multi-signal patterns over daily summaries ----------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """One signal's part in a finding: latest value against baseline, in units and deviations."""

    signal: Signal
    value: float
    baseline: float
    change: float  # value - baseline, in `unit`
    z: float
    unit: str
    since: date


@dataclass(frozen=True)
class Finding:
    """A multi-signal pattern: what, since when, and the evidence for it."""

    pattern: str
    since: date
    evidence: tuple[Evidence, ...]


DayDeviation = tuple[date, Deviation]
History = Mapping[Signal, Sequence[DayDeviation]]

INFECTION = "infection-like"
HEART_FAILURE = "heart-failure-decompensation"
FALLING_SPO2 = "falling-spo2"

# Infection-like: resting heart rate elevated for 2+ days is the core signal, with HRV falling or
# sleep/activity changing in support (Mishra et al., Nat Biomed Eng 2020: elevated RHR and
# steps change before symptoms; Quer et al., Nat Med 2021 (DETECT): RHR, sleep and activity
# together beat any alone; Natarajan et al., npj Digit Med 2020: RHR up and HRV down in COVID-19).
INFECTION_RHR_Z = 2.0
INFECTION_SUPPORT_Z = 1.5
INFECTION_MIN_DAYS = 2
# Heart failure: ESC 2021 HF guideline (McDonagh et al., Eur Heart J 2021;42:3599-3726) tells
# patients to act on a weight gain over 2 kg in 3 days; US patient guidance (AHA/HFSA) uses about
# 5 lb (2.3 kg) in a week; we default to 2.5 kg in 7 days as our issue specifies.
HF_GAIN_3_DAYS_KG = 2.0
HF_GAIN_7_DAYS_KG = 2.5
HF_SUPPORT_Z = 1.5
# Falling SpO2: healthy adults sit at 96-98% (BTS 2017); a fall of 3 points or more from a
# person's own baseline, sustained 2 days, is more than device noise (about +/-2 points for a
# pulse oximeter, ISO 80601-2-61) and is the size of change home-monitoring programmes act on.
SPO2_DROP_POINTS = 3.0
SPO2_Z = -2.0
SPO2_MIN_DAYS = 2


def _run(days: Sequence[DayDeviation], test: Any) -> list[DayDeviation]:
    """The trailing run of consecutive calendar days (ending at the last day) passing `test`."""
    run: list[DayDeviation] = []
    for day, deviation in reversed(days):
        if run and (run[0][0] - day).days != 1:
            break
        if not (deviation.plausible and not deviation.prior_dominated and test(deviation)):
            break
        run.insert(0, (day, deviation))
    return run


def _evidence(run: Sequence[DayDeviation]) -> Evidence:
    day, latest = run[-1]
    return Evidence(
        latest.signal, latest.value, latest.median, latest.value - latest.median, latest.z,
        latest.unit, run[0][0],
    )  # fmt: skip


def _supporting(history: History, signal: Signal, test: Any, last: date) -> Evidence | None:
    """A supporting signal's evidence when its latest day (the same day as the core) passes."""
    run = _run(history.get(signal, ()), test)
    if not run or run[-1][0] != last:
        return None
    return _evidence(run)


def infection_like(history: History) -> Finding | None:
    """Resting heart rate up for 2+ days, with HRV down or sleep or activity changed."""
    core = _run(history.get(Signal.RESTING_HEART_RATE, ()), lambda d: d.z >= INFECTION_RHR_Z)
    if len(core) < INFECTION_MIN_DAYS:
        return None
    last = core[-1][0]
    support = [
        _supporting(history, Signal.HRV_RMSSD, lambda d: d.z <= -INFECTION_SUPPORT_Z, last),
        _supporting(history, Signal.SLEEP_MINUTES, lambda d: abs(d.z) >= INFECTION_SUPPORT_Z, last),
        _supporting(history, Signal.STEPS, lambda d: abs(d.z) >= INFECTION_SUPPORT_Z, last),
    ]
    found = [item for item in support if item is not None]
    if not found:
        return None
    return Finding(INFECTION, core[0][0], (_evidence(core), *found))


def _weight_gain(weights: Sequence[DayDeviation], span_days: int) -> tuple[float, date] | None:
    """Gain from the lowest weight in the `span_days` before the last day, and that day."""
    plausible = [(day, dev.value) for day, dev in weights if dev.plausible]
    if len(plausible) < 2:
        return None
    last_day, last_value = plausible[-1]
    earlier = [(v, d) for d, v in plausible[:-1] if 0 < (last_day - d).days <= span_days]
    if not earlier:
        return None
    low_value, low_day = min(earlier)
    return last_value - low_value, low_day


def heart_failure_decompensation(history: History) -> Finding | None:
    """Weight up over 2 kg in 3 days or 2.5 kg in 7, with resting HR up or activity down
    reported in support when present (weight gain alone is enough to ask for a review)."""
    weights = history.get(Signal.WEIGHT, ())
    gain = None
    for span, threshold in ((3, HF_GAIN_3_DAYS_KG), (7, HF_GAIN_7_DAYS_KG)):
        found = _weight_gain(weights, span)
        if found and found[0] > threshold:
            gain = found
            break
    if gain is None:
        return None
    last_day, latest = weights[-1]
    weight = Evidence(Signal.WEIGHT, latest.value, latest.value - gain[0], gain[0], latest.z,
                      latest.unit, gain[1])  # fmt: skip
    support = [
        _supporting(history, Signal.RESTING_HEART_RATE, lambda d: d.z >= HF_SUPPORT_Z, last_day),
        _supporting(history, Signal.STEPS, lambda d: d.z <= -HF_SUPPORT_Z, last_day),
    ]
    return Finding(HEART_FAILURE, gain[1], (weight, *[s for s in support if s is not None]))


def falling_spo2(history: History) -> Finding | None:
    """SpO2 3+ points and 2+ deviations under the person's baseline for 2+ consecutive days."""
    run = _run(
        history.get(Signal.SPO2, ()),
        lambda d: d.median - d.value >= SPO2_DROP_POINTS and d.z <= SPO2_Z,
    )
    if len(run) < SPO2_MIN_DAYS:
        return None
    return Finding(FALLING_SPO2, run[0][0], (_evidence(run),))


PATTERNS = (infection_like, heart_failure_decompensation, falling_spo2)


def find_patterns(history: History) -> list[Finding]:
    """Every pattern the daily history currently shows."""
    return [finding for pattern in PATTERNS if (finding := pattern(history)) is not None]
