"""Refusing samples that cannot be true before they reach a baseline.

An impossible value is a device or unit error, never an alert: it must not move a person's
baseline nor page anyone. A unit mix-up (pounds typed as kilograms, a mmol/L meter read as mg/dL)
gives plausible-looking numbers, so it is found by comparing with the person's own history; a
temperature sent in Fahrenheit as Celsius is told by its range alone.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta

from careloop.monitoring.signals import CATALOGUE, Sample, Signal

CLOCK_SKEW = timedelta(minutes=5)
POUNDS_PER_KG = 2.20462
MGDL_PER_MMOLL = 18.016
MIN_HISTORY = 3  # earlier values needed before a median means anything
RATIO_TOLERANCE = 0.07  # relative: day-to-day change is far smaller than a unit factor
# 30-45 degC written in Fahrenheit: a living person's temperature in the wrong unit
FAHRENHEIT_RANGE = (86.0, 113.0)
MIXUP_SIGNALS = frozenset({Signal.WEIGHT, Signal.GLUCOSE, Signal.BODY_TEMPERATURE})


def check_sample(sample: Sample, now: datetime) -> str | None:
    """Why the sample is refused, or None when it may be used."""
    info = CATALOGUE[sample.signal]
    if not math.isfinite(sample.value):
        return f"{sample.signal.value}: value is not a finite number"
    high = info.high_for(sample.period_minutes)
    if not info.low <= sample.value <= high:
        return (
            f"{sample.signal.value}: {sample.value:g} {info.unit} is outside the possible "
            f"range {info.low:g}-{high:g}"
        )
    if sample.time > now + CLOCK_SKEW:
        return f"{sample.signal.value}: dated {sample.time.isoformat()}, in the future"
    return None


def _near(ratio: float, expected: float) -> bool:
    return abs(ratio / expected - 1) <= RATIO_TOLERANCE


def likely_unit_mixup(signal: Signal, values: Sequence[float]) -> str | None:
    """A suspected unit mix-up in the last of `values` (earlier ones: the person's recent
    readings, oldest first, all in the canonical unit), or None."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or signal not in MIXUP_SIGNALS:
        return None
    latest, history = finite[-1], finite[:-1]
    if len(history) < MIN_HISTORY:
        return _without_history(signal, latest)
    median = statistics.median(history)
    if median <= 0:
        return None
    ratio = latest / median
    if signal is Signal.WEIGHT and _near(ratio, POUNDS_PER_KG):
        return f"weight {latest:g} kg is about 2.2x the recent median {median:g} kg: pounds?"
    if signal is Signal.WEIGHT and _near(ratio, 1 / POUNDS_PER_KG):
        return f"weight {latest:g} kg is about 0.45x the recent median {median:g}: history in lb?"
    if signal is Signal.GLUCOSE and _near(ratio, 1 / MGDL_PER_MMOLL):
        return f"glucose {latest:g} mg/dL is about 18x below the recent median {median:g}: mmol/L?"
    return None


def _without_history(signal: Signal, latest: float) -> str | None:
    """Without history: 1-20 'mg/dL' glucose is not survivable but is the usual range in
    mmol/L; 86-113 'degC' is not survivable but is a body temperature in Fahrenheit."""
    if signal is Signal.GLUCOSE and 1 <= latest < CATALOGUE[Signal.GLUCOSE].low:
        return f"glucose {latest:g} mg/dL is in the mmol/L range: mmol/L?"
    low, high = FAHRENHEIT_RANGE
    if signal is Signal.BODY_TEMPERATURE and low <= latest <= high:
        return f"body temperature {latest:g} degC is in the Fahrenheit range: degF?"
    return None
