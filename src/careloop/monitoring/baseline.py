"""Personal baselines: for each person and signal, where their normal lies and how wide it is.

A population threshold (resting heart rate over 100, SpO2 under 92) is wrong for many people: a
fit person whose normal is 45 bpm is already ill at 60. So every signal is judged against the
person's own robust baseline, which starts from a population prior (below, cited) and shrinks
towards the person's own values as days accumulate, with the weight `n / (n + k)`: `n` is the
number of days of the person's own ever learnt (not only those still in the window, so the prior
fades for good), `k` a pseudo-count of days per signal.

Estimator, and why: a bounded window of the most recent `window_days` *daily* summaries per band,
with an exact median and MAD over that window. Days, not samples, are the unit because wearable
samples within a day are strongly autocorrelated (a second-by-second heart rate stream is not
86,400 independent facts), and because illness shifts a person over days. A window keeps memory
bounded and lets the baseline follow slow change (fitness, season); the exact median of at most
a few dozen values is cheap when it is only recomputed once per band per day, so scoring a sample
is O(1). Within a day, readings go into a small histogram at the signal's resolution (1 bpm for
heart rate), which gives that day's exact median and spread in bounded memory however many
readings a device sends. Summed signals (steps, sleep) keep the day's total instead.

Heart rate has time-of-day structure (night is lower than afternoon), so it keeps six bands of
four local hours each; every other signal keeps one band. Local time comes from the person's UTC
offset, since a "night" band in UTC is meaningless for a person elsewhere.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from statistics import median
from typing import Any, NamedTuple

from careloop.monitoring.signals import CATALOGUE, Sample, Signal

DAY_SECONDS = 86_400
BAND_SECONDS = 4 * 3_600  # six four-hour bands for intraday signals
MAD_TO_SD = 1.4826  # MAD times this estimates a normal standard deviation
INTRADAY: frozenset[Signal] = frozenset({Signal.HEART_RATE})
DEFAULT_WINDOW_DAYS = 28  # about a month: long enough to be stable, short enough to follow fitness
DAILY_SOURCE = "careloop-daily"


@dataclass(frozen=True)
class Prior:
    """A population starting point for one signal.

    `medians` holds one value per band (six for heart rate, otherwise one). `scale` is a robust
    standard deviation of one person's values from day to day (how much a typical person
    varies around their own normal), not the spread between people: z is always about this
    person. `pseudo_days` is `k` in `n / (n + k)` for the scale, and says when the baseline stops
    being "mostly prior". `between` is the spread of normal values between people; the centre
    shrinks with the pseudo-count `(scale / between) ** 2`, the normal-normal (empirical Bayes)
    weight of a population mean against n days of one person's values: when people differ far
    more than a person's days do (resting heart rate: 8 bpm against 3), a single day of the
    person's own data outweighs the population, and an athlete at 45 bpm is not pulled towards
    65 for weeks. `floor` is the smallest scale ever used (device resolution and day-to-day
    noise), so a person whose readings repeat for a week does not turn a 1-unit wobble into
    z = 10; `resolution` is the histogram bin width for readings within a day."""

    medians: tuple[float, ...]
    scale: float
    pseudo_days: float
    floor: float
    resolution: float
    between: float

    @property
    def centre_pseudo_days(self) -> float:
        return (self.scale / self.between) ** 2


# Population priors. Figures are rounded from the sources and only matter for the first days.
PRIORS: dict[Signal, Prior] = {
    # Quer et al., PLoS One 2020;15(2):e0227709 (92,457 adults wearing Fitbit): mean daily resting
    # heart rate 65.5 bpm; a person's own daily value mostly stays within a few bpm of their
    # mean, so the day-to-day scale is taken as 3 bpm (our rounding).
    Signal.RESTING_HEART_RATE: Prior((65.0,), 3.0, 7.0, 1.0, 0.1, 8.0),
    # Intraday heart rate: our rounded assumption anchored on the resting figure above: near
    # resting in the night bands (00-08 local), some 10-15 bpm higher while awake and moving; the
    # scale is wide because single readings vary within a day as well as between days.
    Signal.HEART_RATE: Prior((62.0, 62.0, 75.0, 80.0, 80.0, 72.0), 12.0, 7.0, 2.0, 1.0, 10.0),
    # Nunan, Sandercock, Brodie. Pacing Clin Electrophysiol 2010;33(11):1407-17 (systematic review
    # of short-term HRV norms): RMSSD about 42 ms in healthy adults; day-to-day variation within
    # a person is large for RMSSD (a coefficient of variation of roughly 20-25%), hence 10 ms.
    Signal.HRV_RMSSD: Prior((42.0,), 10.0, 7.0, 2.0, 0.5, 15.0),
    # O'Driscoll et al., BTS guideline for oxygen use, Thorax 2017;72(Suppl 1): healthy adults at
    # rest and sea level have SpO2 of about 96-98%.
    Signal.SPO2: Prior((97.0,), 1.0, 7.0, 0.5, 0.1, 1.5),
    # Tudor-Locke et al., Int J Behav Nutr Phys Act 2011;8:79: healthy adults take roughly
    # 4,000-18,000 steps a day; ~7,000 is a typical middle; days differ by thousands.
    Signal.STEPS: Prior((7000.0,), 3000.0, 5.0, 300.0, 1.0, 3000.0),
    # Hirshkowitz et al., Sleep Health 2015;1(1):40-43 (NSF): adults are advised 7-9 h; nights
    # differ by about an hour.
    Signal.SLEEP_MINUTES: Prior((420.0,), 60.0, 5.0, 15.0, 1.0, 60.0),
    # Body weight: the population centre says nothing about one person and fades after a day;
    # daily fluctuation (fluid, meals) is about half a kilogram to a kilogram.
    Signal.WEIGHT: Prior((75.0,), 1.0, 3.0, 0.3, 0.05, 15.0),
    # Adult blood pressure and fasting glucose, rounded (adult population means; ADA normal
    # fasting glucose under 100 mg/dL); day-to-day variation within a person in the scale.
    Signal.SYSTOLIC_BP: Prior((122.0,), 9.0, 5.0, 3.0, 1.0, 15.0),
    Signal.DIASTOLIC_BP: Prior((76.0,), 6.0, 5.0, 2.0, 1.0, 10.0),
    Signal.GLUCOSE: Prior((100.0,), 15.0, 5.0, 5.0, 1.0, 20.0),
    # Geneva et al., Open Forum Infect Dis 2019;6(4):ofz032 (systematic review): mean oral
    # temperature of healthy adults about 36.6 degC, people differing by a few tenths; a
    # person's own readings vary by about 0.3 degC from day to day (our rounding).
    Signal.BODY_TEMPERATURE: Prior((36.6,), 0.3, 5.0, 0.1, 0.05, 0.4),
}


class Deviation(NamedTuple):
    """How far one value lies from the person's baseline, in the signal's unit and in robust
    deviations (`z`). `days` is how many days the person's own baseline rests on; `prior_dominated`
    says the population prior still weighs more than the person's own data, so a large `z` is not
    yet a statement about this person. An implausible value (a device or unit error) keeps
    `plausible=False` and `z = 0.0`: it must never become an alert."""

    signal: Signal
    time: datetime
    value: float
    median: float
    scale: float
    z: float
    unit: str
    days: int
    prior_dominated: bool
    plausible: bool = True


def _hist_quantile(items: list[tuple[float, int]], total: int, q: float) -> float:
    """The q-quantile (lower/upper average at an exact split) of (value, count) pairs, sorted."""
    target = q * total
    cumulative = 0
    for index, (value, count) in enumerate(items):
        cumulative += count
        if cumulative > target:
            return value
        if cumulative == target:  # exactly between two readings: average them, as a median does
            following = items[index + 1][0] if index + 1 < len(items) else value
            return (value + following) / 2
    return items[-1][0]


def histogram_median_mad(hist: dict[int, int], resolution: float) -> tuple[float, float]:
    """Exact median and MAD (in value units) of readings binned at `resolution`."""
    total = sum(hist.values())
    values = sorted((key * resolution, count) for key, count in hist.items())
    centre = _hist_quantile(values, total, 0.5)
    spreads = sorted((abs(value - centre), count) for value, count in values)
    return centre, _hist_quantile(spreads, total, 0.5)


class _Band:
    """One time-of-day band: the open day's accumulator and the window of committed days."""

    __slots__ = ("days", "open_day", "hist", "total", "median", "scale", "n", "seen")

    def __init__(self, window_days: int) -> None:
        self.days: deque[tuple[int, float, float]] = deque(maxlen=window_days)
        self.open_day: int | None = None
        self.hist: dict[int, int] = {}
        self.total = 0.0
        self.median = 0.0
        self.scale = 0.0
        self.n = 0  # days in the window
        self.seen = 0  # days ever committed: the shrinkage weight, so the prior fades for good


class SignalBaseline:
    """The online baseline of one signal for one person: `learn_one` and `score_one`.

    Score a sample before learning it, so a value is never judged against itself. A sample from
    a day earlier than the band's open day comes too late to change a committed day and is not
    learnt (`learn_one` returns False); scoring it is still fine."""

    __slots__ = ("signal", "prior", "offset_seconds", "window_days", "bands", "summed", "unit")

    def __init__(
        self,
        signal: Signal,
        utc_offset_minutes: int = 0,
        window_days: int = DEFAULT_WINDOW_DAYS,
        prior: Prior | None = None,
    ) -> None:
        if window_days < 1:
            raise ValueError(f"window_days must be at least 1, got {window_days}")
        if not -24 * 60 < utc_offset_minutes < 24 * 60:
            raise ValueError(f"utc_offset_minutes out of range: {utc_offset_minutes}")
        self.signal = signal
        self.prior = prior or PRIORS[signal]
        self.offset_seconds = utc_offset_minutes * 60
        self.window_days = window_days
        self.summed = CATALOGUE[signal].summed
        self.unit = CATALOGUE[signal].unit
        count = DAY_SECONDS // BAND_SECONDS if signal in INTRADAY else 1
        if len(self.prior.medians) != count:
            raise ValueError(f"prior for {signal} needs {count} band medians")
        self.bands = [_Band(window_days) for _ in range(count)]
        for index in range(count):
            self._refresh(index)

    def _locate(self, time: datetime) -> tuple[int, int]:
        """(local day number, band index) of a time."""
        local = time.timestamp() + self.offset_seconds
        day = int(local // DAY_SECONDS)
        if len(self.bands) == 1:
            return day, 0
        return day, int(local - day * DAY_SECONDS) // BAND_SECONDS

    def plausible(self, value: float, period_minutes: int | None = None) -> bool:
        return CATALOGUE[self.signal].plausible(value, period_minutes)

    def learn_one(self, sample: Sample) -> bool:
        """Fold a sample into the open day; True when it was learnt."""
        value = sample.value
        if not self.plausible(value, sample.period_minutes):
            return False
        day, index = self._locate(sample.time)
        band = self.bands[index]
        if band.open_day != day:
            if band.open_day is not None and day < band.open_day:
                return False
            self._commit(index)
            band.open_day = day
        if self.summed:
            band.total += value
        else:
            key = round(value / self.prior.resolution)
            band.hist[key] = band.hist.get(key, 0) + 1
        return True

    def score_one(self, sample: Sample) -> Deviation:
        """The sample's deviation from the baseline of completed days (and the prior).

        A sample from a later day than the band's open one first commits that day, which
        `learn_one` would do anyway: yesterday counts as soon as today begins."""
        day, index = self._locate(sample.time)
        band = self.bands[index]
        if band.open_day is not None and band.open_day < day:
            self._commit(index)  # the open day is over: judge today against it too
        k = self.prior.pseudo_days
        if not self.plausible(sample.value, sample.period_minutes):
            return Deviation(
                self.signal, sample.time, sample.value, band.median, band.scale, 0.0,
                self.unit, band.n, band.seen < k, False,
            )  # fmt: skip
        z = (sample.value - band.median) / band.scale
        return Deviation(
            self.signal, sample.time, sample.value, band.median, band.scale, z,
            self.unit, band.n, band.seen < k,
        )  # fmt: skip

    def close_day(self, before: datetime) -> None:
        """Commit every open day that ended before `before` (end of a replay, a quiet device)."""
        limit, _ = self._locate(before)
        for index, band in enumerate(self.bands):
            if band.open_day is not None and band.open_day < limit:
                self._commit(index)

    def _commit(self, index: int) -> None:
        """Move the open day's summary into the window and refresh the cached baseline."""
        band = self.bands[index]
        if band.open_day is None:
            return
        if self.summed:
            band.days.append((band.open_day, band.total, 0.0))
            band.seen += 1
        elif band.hist:
            centre, mad = histogram_median_mad(band.hist, self.prior.resolution)
            band.days.append((band.open_day, centre, MAD_TO_SD * mad))
            band.seen += 1
        band.open_day, band.hist, band.total = None, {}, 0.0
        self._refresh(index)

    def _refresh(self, index: int) -> None:
        """Recompute the band's shrunk median and scale from its window and the prior."""
        band = self.bands[index]
        prior = self.prior
        n = len(band.days)
        own_median, own_scale = _own_baseline(band.days) if n else (0.0, 0.0)
        band.n = n
        centre = band.seen / (band.seen + prior.centre_pseudo_days)
        band.median = (1 - centre) * prior.medians[index] + centre * own_median
        weight = band.seen / (band.seen + prior.pseudo_days)
        variance = (1 - weight) * prior.scale**2 + weight * own_scale**2
        band.scale = max(math.sqrt(variance), prior.floor)

    def baseline(self, time: datetime) -> tuple[float, float, int]:
        """(median, scale, days) of the band `time` falls in, for explanations and charts."""
        band = self.bands[self._locate(time)[1]]
        return band.median, band.scale, band.n

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot; `from_dict` rebuilds an identical baseline."""
        return {
            "signal": self.signal.value,
            "utc_offset_minutes": self.offset_seconds // 60,
            "window_days": self.window_days,
            "bands": [
                {
                    "days": [list(entry) for entry in band.days],
                    "open_day": band.open_day,
                    "hist": [[key, count] for key, count in band.hist.items()],
                    "total": band.total,
                    "seen": band.seen,
                }
                for band in self.bands
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SignalBaseline:
        """Rebuild from `to_dict`; raises ValueError naming what is wrong."""
        try:
            signal = Signal(data["signal"])
            baseline = cls(signal, int(data["utc_offset_minutes"]), int(data["window_days"]))
            bands = data["bands"]
            if len(bands) != len(baseline.bands):
                raise ValueError(f"expected {len(baseline.bands)} bands, got {len(bands)}")
            for index, (band, saved) in enumerate(zip(baseline.bands, bands, strict=True)):
                band.days.extend((int(d), float(c), float(s)) for d, c, s in saved["days"])
                band.open_day = None if saved["open_day"] is None else int(saved["open_day"])
                band.hist = {int(key): int(count) for key, count in saved["hist"]}
                band.total = float(saved["total"])
                band.seen = int(saved["seen"])
                if band.seen < len(band.days):
                    raise ValueError("a band has seen fewer days than its window holds")
                baseline._refresh(index)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"invalid baseline state: {saved_state_reason(error)}") from None
        return baseline


def saved_state_reason(error: Exception) -> str:
    """Why a saved state is unusable, naming fields but never echoing values (health data)."""
    if isinstance(error, KeyError):
        return f"missing field {error}"
    if isinstance(error, ValueError) and not str(error).startswith(("invalid literal", "could")):
        return str(error)  # our own messages, which name structure only
    return f"malformed value ({type(error).__name__})"


def _own_baseline(days: Iterable[tuple[int, float, float]]) -> tuple[float, float]:
    """The person's own median and robust scale over the window of days.

    The scale combines the spread between days' medians (MAD) with the typical spread within a
    day (median of days' within-day spreads): a single reading varies by both."""
    centres = [centre for _, centre, _ in days]
    own_median = median(centres)
    between = MAD_TO_SD * median([abs(c - own_median) for c in centres])
    within = median([spread for _, _, spread in days])
    return own_median, math.hypot(between, within)


# ----- daily aggregation helpers ---------------------------------------------------------------


def _local_date(time: datetime, utc_offset_minutes: int) -> date:
    return (time + timedelta(minutes=utc_offset_minutes)).date()


def daily_sample(person_id: str, signal: Signal, day: date, value: float, offset: int) -> Sample:
    """A one-day summary sample, timed at local midnight of its day (as UTC)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(minutes=offset)
    return Sample(
        person_id, signal, start, value, f"{person_id}:{signal.value}:{day.isoformat()}",
        DAILY_SOURCE, 1440,
    )  # fmt: skip


# Mishra et al., Nat Biomed Eng 2020;4:1208-1220: resting heart rate is heart rate in minutes
# with no steps in the preceding 12 minutes.
NO_STEP_MINUTES = 12
# Without steps, the low tail of the day's minute-averaged heart rate stands in for rest: the
# 10th percentile is near the sleeping and sitting level and ignores a few artefactually low
# minutes. At least an hour of minutes is needed, or the day has too little data to judge.
RESTING_QUANTILE = 0.10
MIN_MINUTES = 60


def resting_heart_rate(
    heart_rate: Iterable[Sample],
    steps: Iterable[Sample] | None = None,
    utc_offset_minutes: int = 0,
) -> list[Sample]:
    """Resting heart rate per person and local day, from intraday heart rate.

    With a steps stream, the mean heart rate of minutes after 12 step-free minutes (Mishra et al.
    2020); without one, the 10th percentile of minute means. Days with under an hour of qualifying
    minutes give no value rather than a guess."""
    minutes = _minute_means(heart_rate)
    active = _active_minutes(steps) if steps is not None else None
    per_day: dict[tuple[str, date], list[float]] = {}
    for (person, minute), value in minutes.items():
        if active is not None and _recently_active(active, person, minute):
            continue
        moment = datetime.fromtimestamp(minute * 60, UTC)
        per_day.setdefault((person, _local_date(moment, utc_offset_minutes)), []).append(value)
    result = []
    for (person, day), values in sorted(per_day.items()):
        value = resting_value(values, with_steps=active is not None)
        if value is not None:
            result.append(
                daily_sample(person, Signal.RESTING_HEART_RATE, day, value, utc_offset_minutes)
            )
    return result


def resting_value(minute_means: list[float], *, with_steps: bool) -> float | None:
    """A day's resting heart rate from its qualifying minute means: their mean when steps
    told which minutes were at rest, else their 10th percentile; None under an hour of minutes."""
    if len(minute_means) < MIN_MINUTES:
        return None
    if with_steps:
        return sum(minute_means) / len(minute_means)
    return sorted(minute_means)[int(RESTING_QUANTILE * (len(minute_means) - 1))]


def _minute_means(heart_rate: Iterable[Sample]) -> dict[tuple[str, int], float]:
    """Plausible heart rate readings averaged per person and UTC minute."""
    sums: dict[tuple[str, int], list[float]] = {}
    low, high = CATALOGUE[Signal.HEART_RATE].low, CATALOGUE[Signal.HEART_RATE].high
    for sample in heart_rate:
        if sample.signal != Signal.HEART_RATE or not low <= sample.value <= high:
            continue
        key = (sample.person_id, int(sample.time.timestamp() // 60))
        entry = sums.setdefault(key, [0.0, 0.0])
        entry[0] += sample.value
        entry[1] += 1
    return {key: total / count for key, (total, count) in sums.items()}


def _active_minutes(steps: Iterable[Sample]) -> set[tuple[str, int]]:
    """(person, UTC minute) pairs with any steps, spreading a longer period over its minutes."""
    active: set[tuple[str, int]] = set()
    for sample in steps:
        if sample.signal != Signal.STEPS or not sample.value > 0:
            continue
        first = int(sample.time.timestamp() // 60)
        for minute in range(first, first + max(1, sample.period_minutes or 1)):
            active.add((sample.person_id, minute))
    return active


def _recently_active(active: set[tuple[str, int]], person: str, minute: int) -> bool:
    return any((person, minute - back) in active for back in range(NO_STEP_MINUTES + 1))
