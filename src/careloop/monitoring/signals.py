"""The signals remote monitoring reads: each with its LOINC code, canonical UCUM unit and the
range a living person's value can take (outside it, a sample is a device or unit error, never
an alert), and `Sample`, one reading in canonical units as every later stage sees it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Signal(StrEnum):
    HEART_RATE = "heart-rate"
    RESTING_HEART_RATE = "resting-heart-rate"
    HRV_RMSSD = "hrv-rmssd"
    SPO2 = "spo2"
    STEPS = "steps"
    SLEEP_MINUTES = "sleep-minutes"
    WEIGHT = "weight"
    SYSTOLIC_BP = "systolic-bp"
    DIASTOLIC_BP = "diastolic-bp"
    GLUCOSE = "glucose"
    BODY_TEMPERATURE = "body-temperature"


@dataclass(frozen=True)
class SignalInfo:
    signal: Signal
    loinc: str
    display: str
    unit: str  # UCUM, canonical: every Sample of this signal is in it
    low: float  # plausible for a living person (inclusive)
    high: float  # for a summed signal: over a whole day
    summed: bool = False  # counts per period (steps, sleep) rather than a level
    per_minute_high: float | None = None  # a summed signal's ceiling per minute of its period

    def high_for(self, period_minutes: int | None) -> float:
        """The highest plausible value of a sample over `period_minutes` (a summed signal's
        ceiling grows with its period, up to a day's; a level's does not)."""
        if not self.summed or self.per_minute_high is None or not period_minutes:
            return self.high
        return min(self.high, self.per_minute_high * period_minutes)

    def plausible(self, value: float, period_minutes: int | None = None) -> bool:
        return math.isfinite(value) and self.low <= value <= self.high_for(period_minutes)


CATALOGUE: dict[Signal, SignalInfo] = {
    info.signal: info
    for info in (
        SignalInfo(Signal.HEART_RATE, "8867-4", "Heart rate", "/min", 25, 250),
        SignalInfo(Signal.RESTING_HEART_RATE, "40443-4", "Heart rate --resting", "/min", 25, 150),
        SignalInfo(
            Signal.HRV_RMSSD,
            "80404-7",
            "R-R interval.standard deviation (Heart rate variability)",
            "ms",
            1,
            400,  # resting RMSSD of young, fit people reaches 300 ms and more
        ),
        SignalInfo(Signal.SPO2, "59408-5", "Oxygen saturation by pulse oximetry", "%", 50, 100),
        # 300 steps a minute is a sprint's cadence; 150,000 a day covers ultra-distance events
        SignalInfo(Signal.STEPS, "55423-8", "Number of steps", "{steps}", 0, 150000, True, 300),
        SignalInfo(Signal.SLEEP_MINUTES, "93832-4", "Sleep duration", "min", 0, 1440, True, 1),
        SignalInfo(Signal.WEIGHT, "29463-7", "Body weight", "kg", 20, 350),
        SignalInfo(Signal.SYSTOLIC_BP, "8480-6", "Systolic blood pressure", "mm[Hg]", 50, 260),
        SignalInfo(Signal.DIASTOLIC_BP, "8462-4", "Diastolic blood pressure", "mm[Hg]", 25, 160),
        SignalInfo(Signal.GLUCOSE, "2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 20, 800),
        # 25 degC is deep accidental hypothermia, 45 degC beyond any survived fever
        SignalInfo(Signal.BODY_TEMPERATURE, "8310-5", "Body temperature", "Cel", 25, 45),
    )
}
# Other LOINC codes for the same signal, read as it: 41950-7 "Number of steps in 24 hour
# Measured" is a day's steps (careloop's synthetic home monitoring writes it).
LOINC_ALIASES = {"41950-7": Signal.STEPS}
BY_LOINC = {info.loinc: info for info in CATALOGUE.values()} | {
    code: CATALOGUE[signal] for code, signal in LOINC_ALIASES.items()
}


@dataclass(frozen=True)
class Sample:
    """One reading, in the signal's canonical unit and aware UTC time.

    `sample_id` is stable for the same reading however often it arrives (a device retry, a
    replayed stream, a re-imported file), which is what makes processing idempotent.
    `period_minutes` is the span a summed signal counts over (60 for hourly steps)."""

    person_id: str
    signal: Signal
    time: datetime
    value: float
    sample_id: str
    source: str  # the device or import it came from, e.g. "fitbit-export"
    period_minutes: int | None = None

    def __post_init__(self) -> None:
        if self.time.tzinfo is None:
            raise ValueError("Sample.time must be timezone-aware")
