"""A person's own usual range for each charted signal, and the recent series drawn against it.

The clinician's patient page charts vitals, labs and home-device data against the person's own
baseline band rather than a population range. The rule, in full:

* **What is charted.** Inpatient vitals and labs (everything not sent by a device): the latest
  72 hours ending at the person's latest clinical reading. Home-device data (an Observation with
  a `device`): one value per UTC day (a level's median for the day; a total's largest report of
  the day, because a device's daily total and careloop's own summary of it repeat one number),
  over the latest 60 days ending at the latest device day. Readings in a unit other than the
  signal's usual one are left out of the chart and counted, never converted by guess.
* **Which data the band is learnt from.** The person's own values *before* the recent part (the
  last 24 hours for vitals and labs, the last 14 days for device data), going back at most 30
  days (vitals, labs) or 28 days (device data, the window remote monitoring's own baselines use):
  the band says what was usual for this person before whatever is happening now, and the recent
  values are then judged against it.
* **The band.** The median of those values ± 2 robust standard deviations, the robust standard
  deviation being 1.4826 × the median absolute deviation (MAD; the same estimator as remote
  monitoring, `monitoring.baseline`), never less than a per-signal floor (the measurement's own
  resolution and day-to-day noise), so a person whose readings repeat exactly does not get a
  band of zero width. For a normally distributed signal the band holds about 95% of the usual
  values; the median and MAD ignore the odd outlier in the reference.
* **Enough data.** At least 6 readings for a vital sign, 3 for a lab, 7 days for device data;
  with fewer, there is no band and the page says "not enough data for a personal baseline".

Remote monitoring's `SignalBaseline` is not reused whole: it starts from a population prior and
shrinks towards the person (right for alerting from day one, wrong for a chart labelled "this
person's own band"), and it is an online estimator fed sample by sample. Its estimator (median
and MAD, `MAD_TO_SD`), its window (`DEFAULT_WINDOW_DAYS`) and its floors (`PRIORS`) are.

Pure: plain data in, plain data out, no I/O and no clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from statistics import median
from typing import Literal

from careloop.fhir import codes
from careloop.monitoring.baseline import DEFAULT_WINDOW_DAYS, MAD_TO_SD, PRIORS
from careloop.monitoring.signals import Signal
from careloop.timeline import ObservationPoint, PatientTimeline

Kind = Literal["vital", "lab", "device"]
BAND_WIDTH_SD = 2.0  # the band is median ± 2 robust SD
MIN_POINTS: dict[Kind, int] = {"vital": 6, "lab": 3, "device": 7}
CLINICAL_WINDOW = timedelta(hours=72)
DEVICE_WINDOW_DAYS = 60
RECENT: dict[Kind, timedelta] = {
    "vital": timedelta(hours=24),
    "lab": timedelta(hours=24),
    "device": timedelta(days=14),
}
LOOKBACK: dict[Kind, timedelta] = {
    "vital": timedelta(days=30),
    "lab": timedelta(days=30),
    "device": timedelta(days=DEFAULT_WINDOW_DAYS),
}


@dataclass(frozen=True)
class ChartSignal:
    """One signal the page may chart: how to find it, how to word it, how to band it."""

    key: str
    name: str
    codes: tuple[str, ...]  # LOINC codes it is found by
    unit: str  # the usual unit as written in the data (UCUM code or its human form)
    unit_text: str  # the unit as a reader sees it
    kind: Kind
    floor: float  # the smallest robust SD used
    decimals: int = 0
    summed: bool = False  # a device total per day (steps, sleep) rather than a level
    aliases: tuple[str, ...] = ()  # other spellings of the same unit
    # units with an exact factor to the usual one (UCUM definitions, not guesses): h -> min
    factors: tuple[tuple[str, float], ...] = ()


def _device_floor(signal: Signal) -> float:
    return PRIORS[signal].floor


CLINICAL_SIGNALS: tuple[ChartSignal, ...] = (
    ChartSignal(
        "hr",
        "Heart rate",
        (codes.HEART_RATE,),
        "/min",
        "/min",
        "vital",
        2.0,
        aliases=("beats/min", "{beats}/min", "bpm", "beats/minute"),
    ),
    ChartSignal(
        "resp",
        "Respiratory rate",
        (codes.RESPIRATORY_RATE,),
        "/min",
        "/min",
        "vital",
        1.0,
        aliases=("breaths/min", "{breaths}/min", "breaths/minute"),
    ),
    ChartSignal(
        "temp",
        "Temperature",
        (codes.BODY_TEMPERATURE,),
        "Cel",
        "°C",
        "vital",
        0.1,
        1,
        aliases=("°C", "degC", "C"),
    ),
    ChartSignal(
        "sbp",
        "Systolic blood pressure",
        (codes.SYSTOLIC_BP,),
        "mm[Hg]",
        "mmHg",
        "vital",
        3.0,
        aliases=("mmHg",),
    ),
    ChartSignal(
        "spo2", "Oxygen saturation", (codes.OXYGEN_SATURATION, "2708-6"), "%", "%", "vital", 0.5
    ),
    ChartSignal("lactate", "Lactate", (codes.LACTATE,), "mmol/L", "mmol/L", "lab", 0.1, 1),
    ChartSignal(
        "wbc",
        "White cell count",
        (codes.WBC,),
        "10*3/uL",
        "×10³/µL",
        "lab",
        0.3,
        1,
        aliases=("10^3/uL", "K/uL", "10*9/L", "10^9/L", "x10E3/uL"),
    ),
    ChartSignal("creatinine", "Creatinine", (codes.CREATININE,), "mg/dL", "mg/dL", "lab", 0.05, 2),
)

DEVICE_SIGNALS: tuple[ChartSignal, ...] = (
    ChartSignal(
        "rhr",
        "Resting heart rate",
        (codes.RESTING_HEART_RATE,),
        "/min",
        "/min",
        "device",
        _device_floor(Signal.RESTING_HEART_RATE),
        aliases=("beats/min", "{beats}/min", "bpm", "beats/minute"),
    ),
    ChartSignal(
        "hrv",
        "Heart rate variability (RMSSD)",
        ("80404-7",),
        "ms",
        "ms",
        "device",
        _device_floor(Signal.HRV_RMSSD),
    ),
    ChartSignal(
        "home-spo2",
        "Oxygen saturation at home",
        (codes.OXYGEN_SATURATION,),
        "%",
        "%",
        "device",
        _device_floor(Signal.SPO2),
    ),
    ChartSignal(
        "steps",
        "Steps per day",
        ("41950-7", "55423-8"),
        "{steps}",
        "steps",
        "device",
        _device_floor(Signal.STEPS),
        summed=True,
        aliases=("steps", "/d", "{steps}/d", "steps/day"),
    ),
    ChartSignal(
        "sleep",
        "Sleep per night",
        ("93832-4",),
        "min",
        "min",
        "device",
        _device_floor(Signal.SLEEP_MINUTES),
        summed=True,
        factors=(("h", 60.0), ("hour", 60.0), ("hours", 60.0)),
    ),
    ChartSignal(
        "weight",
        "Body weight at home",
        ("29463-7",),
        "kg",
        "kg",
        "device",
        _device_floor(Signal.WEIGHT),
        1,
    ),
)


@dataclass(frozen=True)
class Point:
    time: datetime
    value: float


@dataclass(frozen=True)
class Band:
    """The person's usual range: median ± 2 robust SD of `count` reference values taken
    between `start` and `end`."""

    median: float
    spread: float  # the robust SD (1.4826 × MAD, at least the signal's floor)
    count: int
    start: datetime
    end: datetime

    @property
    def low(self) -> float:
        return self.median - BAND_WIDTH_SD * self.spread

    @property
    def high(self) -> float:
        return self.median + BAND_WIDTH_SD * self.spread

    def distance(self, value: float) -> float:
        """How far `value` lies outside the band (negative below, 0 inside)."""
        if value > self.high:
            return value - self.high
        if value < self.low:
            return value - self.low
        return 0.0

    def z(self, value: float) -> float:
        """Robust SDs from the median."""
        return (value - self.median) / self.spread


@dataclass(frozen=True)
class SignalSeries:
    """What one chart shows: the recent points, the band or why there is none."""

    signal: ChartSignal
    points: tuple[Point, ...]  # within [start, end], time order
    start: datetime
    end: datetime
    band: Band | None
    reference_count: int  # values available to learn the band from (below the minimum: no band)
    other_units: int = 0  # readings left out because their unit is not the signal's

    @property
    def latest(self) -> Point | None:
        return self.points[-1] if self.points else None

    @property
    def outside(self) -> int:
        """Charted points outside the band."""
        if self.band is None:
            return 0
        return sum(1 for point in self.points if self.band.distance(point.value) != 0)


def personal_band(
    values: Sequence[float], *, floor: float, minimum: int, start: datetime, end: datetime
) -> Band | None:
    """Median ± 2 robust SD of `values` (see the module docstring); None with fewer than
    `minimum` values."""
    if len(values) < max(minimum, 1):
        return None
    centre = median(values)
    mad = median(abs(value - centre) for value in values)
    return Band(centre, max(MAD_TO_SD * mad, floor), len(values), start, end)


def in_usual_unit(signal: ChartSignal, value: float, unit: str | None) -> float | None:
    """`value` in the signal's usual unit, or None when its unit is another one. A reading
    without a unit is taken as the usual unit (devices often omit it)."""
    if unit is None or unit in (signal.unit, signal.unit_text, *signal.aliases):
        return value
    factor = dict(signal.factors).get(unit)
    return None if factor is None else value * factor


def daily_values(points: Iterable[Point], summed: bool) -> list[Point]:
    """One value per UTC day, stamped at noon: a level's median, a total's largest report."""
    by_day: dict[date, list[float]] = defaultdict(list)
    for point in points:
        by_day[point.time.date()].append(point.value)
    out = []
    for day in sorted(by_day):
        values = by_day[day]
        value = max(values) if summed else median(values)
        out.append(Point(datetime(day.year, day.month, day.day, 12, tzinfo=UTC), value))
    return out


def _numeric(points: Iterable[ObservationPoint], signal: ChartSignal) -> tuple[list[Point], int]:
    kept, other = [], 0
    for point in points:
        if point.value is None:
            continue
        value = in_usual_unit(signal, point.value, point.unit)
        if value is None:
            other += 1
        else:
            kept.append(Point(point.time, value))
    return kept, other


def latest_time(timeline: PatientTimeline, signals: Sequence[ChartSignal]) -> datetime | None:
    """The latest reading of any of `signals` (the end of the charted window)."""
    times = [point.time for s in signals if (point := timeline.latest(s.codes)) is not None]
    return max(times) if times else None


def clinical_series(timeline: PatientTimeline, signal: ChartSignal, end: datetime) -> SignalSeries:
    """The latest 72 hours of a vital or lab to `end`, with the band from before the last
    24 hours (see the module docstring)."""
    start = end - CLINICAL_WINDOW
    after_end = end + timedelta(microseconds=1)  # windows are half-open; the end is included
    recent_from = end - RECENT[signal.kind]
    shown, other = _numeric(timeline.observations(signal.codes, start, after_end), signal)
    ref_from = recent_from - LOOKBACK[signal.kind]
    reference, _ = _numeric(timeline.observations(signal.codes, ref_from, recent_from), signal)
    band = personal_band(
        [p.value for p in reference],
        floor=signal.floor,
        minimum=MIN_POINTS[signal.kind],
        start=reference[0].time if reference else ref_from,
        end=reference[-1].time if reference else recent_from,
    )
    return SignalSeries(signal, tuple(shown), start, end, band, len(reference), other)


def device_series(timeline: PatientTimeline, signal: ChartSignal, end: datetime) -> SignalSeries:
    """The latest 60 days of a device signal, a value per day, to the day of `end`, with the
    band from the 28 days before the last 14 (see the module docstring)."""
    last_day = datetime(end.year, end.month, end.day, tzinfo=UTC)
    stop = last_day + timedelta(days=1)
    first = stop - timedelta(days=DEVICE_WINDOW_DAYS)
    recent_from = stop - RECENT["device"]
    ref_from = recent_from - LOOKBACK["device"]
    raw, other = _numeric(timeline.observations(signal.codes, min(first, ref_from), stop), signal)
    days = daily_values(raw, signal.summed)
    shown = tuple(p for p in days if p.time >= first)
    reference = [p for p in days if ref_from <= p.time < recent_from]
    band = personal_band(
        [p.value for p in reference],
        floor=signal.floor,
        minimum=MIN_POINTS["device"],
        start=reference[0].time if reference else ref_from,
        end=reference[-1].time if reference else recent_from,
    )
    return SignalSeries(signal, shown, first, stop, band, len(reference), other)


def chart_series(clinical: PatientTimeline, device: PatientTimeline) -> list[SignalSeries]:
    """Every signal with data in its window, clinical ones first, in catalogue order."""
    found: list[SignalSeries] = []
    end = latest_time(clinical, CLINICAL_SIGNALS)
    if end is not None:
        for signal in CLINICAL_SIGNALS:
            series = clinical_series(clinical, signal, end)
            if series.points:
                found.append(series)
    end = latest_time(device, DEVICE_SIGNALS)
    if end is not None:
        for signal in DEVICE_SIGNALS:
            series = device_series(device, signal, end)
            if series.points:
                found.append(series)
    return found


def split_device_data(resources: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """(clinical, device): an Observation naming a `device` came from a home or wearable device;
    everything else (and every non-Observation, which the timeline needs) is clinical."""
    clinical, device = [], []
    for resource in resources:
        is_device = resource.get("resourceType") == "Observation" and "device" in resource
        (device if is_device else clinical).append(resource)
    patients = [r for r in clinical if r.get("resourceType") == "Patient"]
    return clinical, patients + device
