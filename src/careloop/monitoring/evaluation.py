"""How good are the monitoring alerts on real wearable data, and what can each data set show?

Every figure comes from replaying real streams through the live path (`replay_samples`: quality
checks, personal baselines, detectors, the alert manager with budget, de-duplication, hysteresis
and the quality gate) with the default `AlertPolicy`; nothing here is tuned to the results.

Definitions, fixed before any result was looked at:

- **No-event person-days** (false-alert burden): every Fitbit day (healthy volunteers, one
  month); every day of a Welltory participant without a `symptoms_onset`; and Welltory days more
  than `NO_EVENT_MARGIN_DAYS` (14) days before an onset. Why 14: COVID-19 incubation is up to
  about 14 days (Lauer et al., Ann Intern Med 2020: 97.5% within 11.5 days) and wearable signals
  move up to about 9 days before symptoms (Mishra et al., Nat Biomed Eng 2020), so days further
  out are unlikely to carry the illness. Days from 14 days before an onset onwards are left out.
- **Smartwatch participants** (Stanford) all had COVID-19 at dates we do not have: their alert
  rate is reported apart and is not a false-alert rate. Persons with steps but no heart rate have
  no resting heart rate, so no pattern can fire for them; they are counted, not scored.
- **Injected episodes** on the smartwatch streams of persons with heart rate: a resting-heart-rate
  rise of `size` bpm that ramps linearly over `ramp_days` days from midnight of the start day and
  is at full size from midnight of the **onset** day (as symptoms would begin), stays there for
  the onset day and the `FULL_AFTER_ONSET_DAYS` after it, and recovers linearly over
  `RECOVERY_DAYS`. The rise is added to the per-minute heart rate, and the day's resting heart
  rate is derived again from it by the live path's own rule (`baseline.resting_heart_rate`, which
  the `Monitor` applies to a day's minutes), so the derivation path is exercised. Activity drops
  with the rise: steps scaled by `1 - STEPS_DROP * rise / size` (at most 40% fewer). Scaling
  leaves step-free minutes step-free, so which minutes count as at rest does not change. The
  smartwatch has no HRV or sleep, so those cannot fall. An episode starts at
  a random day (fixed seed) with at least `HISTORY_DAYS` days of resting heart rate before it and
  its detection window inside the recorded span; every size and ramp is tried at the same starts.
- **Detected**: a notification in [start, onset + `DETECT_AFTER_ONSET_DAYS`]; **lead time** is
  onset minus the first such day (negative when the alert came after onset).
- **Welltory onsets**: participants with any data before their onset; alerted when notified on day
  -7 .. 0 of the onset (`ONSET_WINDOW_DAYS`); a stricter cohort also needs `HISTORY_DAYS` days of
  data before onset (a baseline of their own) and data in that week.
- **Population thresholds** on the same daily streams and the same quality gate: resting heart
  rate over 100 bpm, SpO2 under 92%. A rule notifies on the first usable day it holds, then stays
  quiet until it has not held on `clear_days` usable days (the same de-duplication and clearing
  as the alert manager; no budget). The **equal-burden** threshold lowers a resting-heart-rate
  limit one bpm at a time from 150 bpm (nothing is over it), on the no-event streams only, until
  it alerts more often there than the personal method: the last limit at or under the personal
  burden and the first above it are both reported, and the verdict compares against the one whose
  burden equals the personal method's or, failing that, the first one above it.

All exports are read in UTC (they carry no zone), so local days are the recorded dates.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from careloop.monitoring.alerts import AlertManager, AlertPolicy, DayQuality
from careloop.monitoring.baseline import resting_heart_rate
from careloop.monitoring.importers import (
    ExportError,
    ImportReport,
    find_exports,
    read_fitbit,
    read_smartwatch_heart_rate,
    read_smartwatch_steps,
    read_welltory,
    smartwatch_persons,
    welltory_onsets,
)
from careloop.monitoring.replay import ReplayRow, replay_samples
from careloop.monitoring.signals import CATALOGUE, Sample, Signal
from careloop.stats import bootstrap_ci, wilson

DAYS_PER_MONTH = 365.25 / 12
NO_EVENT_MARGIN_DAYS = 14
ONSET_WINDOW_DAYS = 7
HISTORY_DAYS = 14
SIZES_BPM = (3.0, 5.0, 7.0, 10.0)
RAMP_DAYS = (2, 3, 4, 5)
FULL_AFTER_ONSET_DAYS = 2
RECOVERY_DAYS = 3
DETECT_AFTER_ONSET_DAYS = 2
STEPS_DROP = 0.4
STARTS_PER_PERSON = 4
SEED = 20200601
BOOTSTRAP_RESAMPLES = 1000
LOWEST_SCANNED_BPM = 40
PERSONAL = "personal"
FITBIT = "fitbit"
WELLTORY_NO_ONSET = "welltory without onset"
WELLTORY_BEFORE = "welltory >14 days before onset"


# ----- statistics ------------------------------------------------------------------------------


def _poisson_cdf(count: int, mean: float) -> float:
    """P(X <= count) for X ~ Poisson(mean), summed in log space (no overflow for large means)."""
    if mean <= 0:
        return 1.0
    log_mean = math.log(mean)
    terms = (math.exp(i * log_mean - mean - math.lgamma(i + 1)) for i in range(count + 1))
    return min(1.0, math.fsum(terms))


def _mean_where_cdf(count: int, target: float) -> float:
    """The Poisson mean at which P(X <= count) equals `target` (it falls as the mean grows)."""
    low, high = 0.0, 10.0 + 4.0 * count
    for _ in range(200):
        middle = (low + high) / 2
        if _poisson_cdf(count, middle) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def poisson_interval(count: int, exposure: float, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval of a rate: `count` events over `exposure` (e.g. person-months)."""
    if exposure <= 0:
        raise ValueError("exposure must be positive")
    tail = (1 - level) / 2
    low = 0.0 if count == 0 else _mean_where_cdf(count - 1, 1 - tail)
    return low / exposure, _mean_where_cdf(count, tail) / exposure


def _rounded(value: float | None, places: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, places)


def burden(rows: Iterable[ReplayRow], *, seed: int = 0) -> dict[str, Any]:
    """Persons, person-days, person-months, alerts and alerts per person-month, with an exact
    Poisson 95% interval and a bootstrap-by-person one (alerts cluster within persons)."""
    per_person: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # [days, alerts]
    for row in rows:
        per_person[row.person][0] += 1
        per_person[row.person][1] += row.alert
    days = sum(d for d, _ in per_person.values())
    alerts = sum(a for _, a in per_person.values())
    months = days / DAYS_PER_MONTH
    summary: dict[str, Any] = {
        "persons": len(per_person),
        "person_days": days,
        "person_months": round(months, 2),
        "alerts": alerts,
        "per_person_month": None,
        "poisson_95": None,
        "bootstrap_95": None,
    }
    if days == 0:
        return summary
    summary["per_person_month"] = _rounded(alerts / months)
    summary["poisson_95"] = [_rounded(v) for v in poisson_interval(alerts, months)]
    groups = list(per_person.values())
    _, low, high = bootstrap_ci(_rate_of, groups, n=BOOTSTRAP_RESAMPLES, seed=seed)
    summary["bootstrap_95"] = [_rounded(low), _rounded(high)]
    return summary


def _rate_of(groups: Sequence[list[int]]) -> float:
    days = sum(d for d, _ in groups)
    return sum(a for _, a in groups) / (days / DAYS_PER_MONTH) if days else math.nan


def detection(leads: Sequence[int | None]) -> dict[str, Any]:
    """Share detected (Wilson 95%) and lead times from one lead per episode (None = missed)."""
    found = [lead for lead in leads if lead is not None]
    share = len(found) / len(leads) if leads else None
    low, high = wilson(share or 0.0, len(leads))
    return {
        "episodes": len(leads),
        "detected": len(found),
        "share": _rounded(share),
        "wilson_95": [_rounded(low), _rounded(high)] if leads else None,
        "median_lead_days": statistics.median(found) if found else None,
        "lead_days_quartiles": _quartiles(found),
    }


def _quartiles(values: Sequence[int]) -> list[float] | None:
    if len(values) < 2:
        return None
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return [low, high]


# ----- population threshold rules --------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdRule:
    """A population rule on a daily signal: fires when the value is over (or under) `limit`."""

    signal: Signal
    limit: float
    over: bool

    @property
    def name(self) -> str:
        short = "rhr" if self.signal is Signal.RESTING_HEART_RATE else self.signal.value
        return f"{short}{'>' if self.over else '<'}{self.limit:g}"

    def fires(self, value: float) -> bool:
        return value > self.limit if self.over else value < self.limit


RHR_OVER_100 = ThresholdRule(Signal.RESTING_HEART_RATE, 100.0, over=True)
SPO2_UNDER_92 = ThresholdRule(Signal.SPO2, 92.0, over=False)

DailyValues = dict[Signal, dict[date, float]]


def usable_daily_values(samples: Sequence[Sample], policy: AlertPolicy) -> DailyValues:
    """Each day's resting heart rate and SpO2, on days the live quality gate lets them speak:
    enough wear (hours with heart rate, when the source sends it) and the signal present."""
    gate = AlertManager(policy)
    hours: dict[date, set[int]] = defaultdict(set)
    for sample in samples:
        if sample.signal is Signal.HEART_RATE:
            moment = sample.time.astimezone(UTC)
            hours[moment.date()].add(moment.hour)
    intraday = bool(hours)
    values: DailyValues = {Signal.RESTING_HEART_RATE: {}, Signal.SPO2: {}}
    for sample in sorted(samples, key=lambda s: s.time):
        if sample.signal not in values or not CATALOGUE[sample.signal].plausible(sample.value):
            continue
        day = sample.time.astimezone(UTC).date()
        wear = float(len(hours.get(day, ()))) if intraday else 24.0
        if gate.usable(sample.signal, DayQuality(day, wear, frozenset({sample.signal}))):
            values[sample.signal][day] = sample.value  # the day's latest, as the live path keeps
    return values


def rule_alert_days(
    values: Mapping[date, float], rule: ThresholdRule, clear_days: int
) -> set[date]:
    """Days the rule notifies: the first usable day it holds, then not again until it has not
    held on `clear_days` usable days (de-duplication and clearing as the alert manager does)."""
    alerts: set[date] = set()
    active, quiet = False, 0
    for day in sorted(values):
        if rule.fires(values[day]):
            if not active:
                alerts.add(day)
            active, quiet = True, 0
        elif active:
            quiet += 1
            active = quiet < clear_days
    return alerts


def rule_rows(
    rows: Sequence[ReplayRow],
    daily: Mapping[str, DailyValues],
    rule: ThresholdRule,
    clear_days: int,
) -> list[ReplayRow]:
    """The rule's rows over the same person-days as `rows` (score = the day's value or 0)."""
    alerts = {
        person: rule_alert_days(values.get(rule.signal, {}), rule, clear_days)
        for person, values in daily.items()
    }
    result = []
    for row in rows:
        value = daily.get(row.person, {}).get(rule.signal, {}).get(row.date, 0.0)
        alert = int(row.date in alerts.get(row.person, set()))
        result.append(ReplayRow(row.person, row.date, value, alert))
    return result


# ----- labelled and no-event exports (Fitbit, Welltory) ----------------------------------------


@dataclass
class Cohort:
    """Replayed persons of one or more exports: personal rows, usable daily values, sources."""

    rows: list[ReplayRow] = field(default_factory=list)
    daily: dict[str, DailyValues] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    onsets: dict[str, date] = field(default_factory=dict)


def _by_person(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        grouped[sample.person_id].append(sample)
    return grouped


def replay_cohort(
    exports: Mapping[str, Path], policy: AlertPolicy, imports: dict[str, ImportReport]
) -> Cohort:
    """Replay the Fitbit and Welltory exports found (either may be missing)."""
    cohort = Cohort()
    readers = {"fitbit": read_fitbit, "welltory": read_welltory}
    for name, reader in readers.items():
        if name not in exports:
            continue
        report = imports.setdefault(name, ImportReport())
        grouped = _by_person(reader(exports[name], report, tz=UTC))
        cohort.rows.extend(replay_samples(grouped, tz=UTC, policy=policy))
        for person, samples in grouped.items():
            cohort.daily[person] = usable_daily_values(samples, policy)
            cohort.source[person] = name
    if "welltory" in exports:
        cohort.onsets = welltory_onsets(exports["welltory"])
    return cohort


def no_event_stream(cohort: Cohort, row: ReplayRow) -> str | None:
    """Which no-event stream a person-day belongs to, or None when something may have happened."""
    if cohort.source.get(row.person) == "fitbit":
        return FITBIT
    onset = cohort.onsets.get(row.person)
    if onset is None:
        return WELLTORY_NO_ONSET
    return WELLTORY_BEFORE if (onset - row.date).days > NO_EVENT_MARGIN_DAYS else None


def no_event_burden(cohort: Cohort, rows: Sequence[ReplayRow], seed: int) -> dict[str, Any]:
    """A method's burden on each no-event stream and on all of them together."""
    streams: dict[str, list[ReplayRow]] = defaultdict(list)
    for row in rows:
        stream = no_event_stream(cohort, row)
        if stream is not None:
            streams[stream].append(row)
    result = {
        name: burden(streams[name], seed=seed)
        for name in (FITBIT, WELLTORY_NO_ONSET, WELLTORY_BEFORE)
        if name in streams
    }
    result["all"] = burden([row for name in streams for row in streams[name]], seed=seed)
    return result


def no_event_alerts(cohort: Cohort, rows: Iterable[ReplayRow]) -> int:
    return sum(row.alert for row in rows if no_event_stream(cohort, row) is not None)


def scan_rhr_thresholds(
    cohort: Cohort, personal_alerts: int, clear_days: int
) -> tuple[list[list[float]], ThresholdRule, ThresholdRule | None]:
    """Lower a resting-heart-rate limit one bpm at a time on the no-event streams, from the
    highest plausible value (150 bpm: nothing is over it) down to 40, until it alerts there more
    than the personal method: the scan ([limit, alerts]), the last limit at or under the
    personal burden and the first over it (None when even 40 bpm is not)."""
    no_event = [row for row in cohort.rows if no_event_stream(cohort, row) is not None]
    top = int(CATALOGUE[Signal.RESTING_HEART_RATE].high)
    scan: list[list[float]] = []
    under = ThresholdRule(Signal.RESTING_HEART_RATE, float(top), over=True)
    for limit in range(top, LOWEST_SCANNED_BPM - 1, -1):
        rule = ThresholdRule(Signal.RESTING_HEART_RATE, float(limit), over=True)
        alerts = sum(row.alert for row in rule_rows(no_event, cohort.daily, rule, clear_days))
        scan.append([float(limit), float(alerts)])
        if alerts > personal_alerts:
            return scan, under, rule
        under = rule
    return scan, under, None


def onset_outcomes(cohort: Cohort, rows: Sequence[ReplayRow]) -> list[dict[str, Any]]:
    """Per Welltory participant with data before their onset: days of data before it, whether
    the onset week (day -7 .. 0) has data, and the lead of the first alert in it (or None)."""
    by_person: dict[str, list[ReplayRow]] = defaultdict(list)
    for row in rows:
        if row.person in cohort.onsets:
            by_person[row.person].append(row)
    outcomes = []
    for person in sorted(by_person):
        onset = cohort.onsets[person]
        offsets = [((row.date - onset).days, row.alert) for row in by_person[person]]
        before = sum(1 for offset, _ in offsets if offset < 0)
        if before == 0:
            continue
        window = [(o, a) for o, a in offsets if -ONSET_WINDOW_DAYS <= o <= 0]
        alerted = [o for o, a in window if a]
        lead = -min(alerted) if alerted else None
        outcomes.append(
            {"person": person, "days_before": before, "week_data": bool(window), "lead_days": lead}
        )
    return outcomes


def onset_summary(outcomes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Detection in the onset week for everyone with data before onset, and for the stricter
    cohort with `HISTORY_DAYS` days of data before it and data in that week."""
    strict = [o for o in outcomes if o["days_before"] >= HISTORY_DAYS and o["week_data"]]
    return {
        "with_data_before_onset": detection([o["lead_days"] for o in outcomes]),
        "with_history_and_week_data": detection([o["lead_days"] for o in strict]),
    }


# ----- smartwatch streams and injected episodes ------------------------------------------------


@dataclass
class WatchPerson:
    """One smartwatch person's data, reduced once: per-minute mean heart rate and minute steps
    (by day, for deriving resting heart rate again), hourly heart rate (wear time) and hourly
    steps as the replay sees them, and the resting heart rate derived per day."""

    person_id: str
    minute_hr: dict[date, list[Sample]]
    minute_steps: dict[date, list[Sample]]
    hourly_hr: list[Sample]
    hourly_steps: list[Sample]
    rhr: dict[date, Sample]


def _minute_means(samples: Iterable[Sample]) -> dict[datetime, float]:
    sums: dict[datetime, list[float]] = {}
    for sample in samples:
        entry = sums.setdefault(sample.time.replace(second=0, microsecond=0), [0.0, 0.0])
        entry[0] += sample.value
        entry[1] += 1
    return {minute: total / count for minute, (total, count) in sums.items()}


def _hourly(
    person_id: str, signal: Signal, minutes: Mapping[datetime, float], mean: bool
) -> list[Sample]:
    """One sample per hour with data: the mean (heart rate) or total (steps) of its minutes."""
    hours: dict[datetime, list[float]] = defaultdict(list)
    for minute, value in minutes.items():
        hours[minute.replace(minute=0)].append(value)
    period = None if mean else 60
    return [
        Sample(
            person_id,
            signal,
            hour,
            sum(values) / len(values) if mean else sum(values),
            f"{person_id}-{signal.value}-60m-{hour.isoformat()}",
            "evaluation-hourly",
            period,
        )
        for hour, values in sorted(hours.items())
    ]


def reduce_watch_person(folder: Path, person: str, report: ImportReport) -> WatchPerson:
    """Read a person's heart rate and minute steps once and reduce them (see `WatchPerson`).

    Per-minute means give `resting_heart_rate` exactly what the raw readings would, since
    it averages each minute first."""
    person_id = f"stanford-{person}"
    means = _minute_means(read_smartwatch_heart_rate(folder, person, report, tz=UTC))
    minute_hr: dict[date, list[Sample]] = defaultdict(list)
    for minute, value in sorted(means.items()):
        sample = Sample(
            person_id,
            Signal.HEART_RATE,
            minute,
            value,
            f"{person_id}-hr-{minute.isoformat()}",
            "evaluation-minute",
        )
        minute_hr[minute.date()].append(sample)
    steps = list(read_smartwatch_steps(folder, person, report, period_minutes=1, tz=UTC))
    minute_steps: dict[date, list[Sample]] = defaultdict(list)
    for sample in steps:
        minute_steps[sample.time.date()].append(sample)
    all_minutes = [sample for day in minute_hr.values() for sample in day]
    rhr = {s.time.date(): s for s in resting_heart_rate(all_minutes, steps)}
    step_minutes = {sample.time: sample.value for sample in steps}
    return WatchPerson(
        person_id,
        dict(minute_hr),
        dict(minute_steps),
        _hourly(person_id, Signal.HEART_RATE, means, mean=True),
        _hourly(person_id, Signal.STEPS, step_minutes, mean=False),
        rhr,
    )


@dataclass(frozen=True)
class Episode:
    """An injected infection-like episode (see the module doc for its shape)."""

    person: str
    start: date
    ramp_days: int
    size_bpm: float

    @property
    def onset(self) -> date:
        return self.start + timedelta(days=self.ramp_days)

    @property
    def detect_until(self) -> date:
        return self.onset + timedelta(days=DETECT_AFTER_ONSET_DAYS)

    @property
    def end(self) -> date:
        """The last day the rise is still there (recovery over)."""
        return self.onset + timedelta(days=FULL_AFTER_ONSET_DAYS + RECOVERY_DAYS)

    def days(self) -> list[date]:
        count = (self.end - self.start).days + 1
        return [self.start + timedelta(days=n) for n in range(count)]

    def rise(self, moment: datetime) -> float:
        """The resting-heart-rate rise (bpm) at `moment`."""
        begin = datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)
        elapsed = (moment - begin) / timedelta(days=1)
        full_until = self.ramp_days + 1 + FULL_AFTER_ONSET_DAYS
        if elapsed <= 0 or elapsed >= full_until + RECOVERY_DAYS:
            return 0.0
        if elapsed < self.ramp_days:
            return self.size_bpm * elapsed / self.ramp_days
        if elapsed < full_until:
            return self.size_bpm
        return self.size_bpm * (1 - (elapsed - full_until) / RECOVERY_DAYS)


HALF_HOUR = timedelta(minutes=30)


def _injected_rhr(person: WatchPerson, episode: Episode) -> dict[date, Sample]:
    """Resting heart rate per day with the rise added to every minute of the episode's days,
    derived again (steps from the day before too: rest looks back 12 minutes)."""
    days = episode.days()
    heart = [
        replace(sample, value=sample.value + episode.rise(sample.time))
        for day in days
        for sample in person.minute_hr.get(day, ())
    ]
    steps = [
        s for day in [days[0] - timedelta(days=1), *days] for s in person.minute_steps.get(day, ())
    ]
    derived = {s.time.date(): s for s in resting_heart_rate(heart, steps)}
    rhr = {day: sample for day, sample in person.rhr.items() if day not in set(days)}
    rhr.update({day: sample for day, sample in derived.items() if day in set(days)})
    return rhr


def watch_samples(person: WatchPerson, episode: Episode | None = None) -> list[Sample]:
    """What the replay gets for a smartwatch person: hourly heart rate and steps and the daily
    resting heart rate, with `episode` injected when given."""
    if episode is None:
        return [*person.hourly_hr, *person.hourly_steps, *person.rhr.values()]
    heart = [
        replace(s, value=s.value + rise) if (rise := episode.rise(s.time + HALF_HOUR)) else s
        for s in person.hourly_hr
    ]
    steps = [
        replace(s, value=s.value * (1 - STEPS_DROP * rise / episode.size_bpm))
        if (rise := episode.rise(s.time + HALF_HOUR))
        else s
        for s in person.hourly_steps
    ]
    return [*heart, *steps, *_injected_rhr(person, episode).values()]


def episode_starts(
    rhr_days: Sequence[date], count: int, longest_ramp: int, rng: random.Random
) -> list[date]:
    """`count` random start days with `HISTORY_DAYS` days of resting heart rate before them and
    the longest episode's detection window inside the recorded span (fewer if not possible)."""
    days = sorted(rhr_days)
    if len(days) <= HISTORY_DAYS:
        return []
    first = days[HISTORY_DAYS - 1] + timedelta(days=1)
    last = days[-1] - timedelta(days=longest_ramp + DETECT_AFTER_ONSET_DAYS)
    candidates = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return sorted(rng.sample(candidates, min(count, len(candidates))))


class Trial(NamedTuple):
    """One injected episode replayed. Per method: the first alert in the detection window (or
    None), the first alert in the same window of the stream without the episode (what chance
    alone gives), and the alerts outside the episode's days. Also how many days of the window
    have a resting heart rate, and how many replayed days lie outside the episode."""

    episode: Episode
    window_rhr_days: int
    first_alert: dict[str, date | None]
    without_injection: dict[str, date | None]
    outside_alerts: dict[str, int]
    outside_days: int


def method_rows(
    person_id: str, samples: list[Sample], rules: Sequence[ThresholdRule], policy: AlertPolicy
) -> dict[str, list[ReplayRow]]:
    """The personal method's replay of one person's stream and each rule's rows beside it."""
    rows = list(replay_samples({person_id: samples}, tz=UTC, policy=policy))
    daily = {person_id: usable_daily_values(samples, policy)}
    result = {PERSONAL: rows}
    for rule in rules:
        result[rule.name] = rule_rows(rows, daily, rule, policy.clear_days)
    return result


def _first_in_window(rows: Iterable[ReplayRow], episode: Episode) -> date | None:
    hits = [r.date for r in rows if r.alert and episode.start <= r.date <= episode.detect_until]
    return min(hits, default=None)


def run_trial(
    person: WatchPerson,
    episode: Episode,
    rules: Sequence[ThresholdRule],
    policy: AlertPolicy,
    base: Mapping[str, Sequence[ReplayRow]],
) -> Trial:
    """Replay the person's stream with `episode` injected; `base` is each method's rows for
    the stream without it."""
    samples = watch_samples(person, episode)
    by_method = method_rows(person.person_id, samples, rules, policy)
    window = [
        s.time.date()
        for s in samples
        if s.signal is Signal.RESTING_HEART_RATE
        and episode.start <= s.time.date() <= episode.detect_until
    ]
    inside = set(episode.days())
    first = {name: _first_in_window(rows, episode) for name, rows in by_method.items()}
    chance = {name: _first_in_window(rows, episode) for name, rows in base.items()}
    outside = {
        name: sum(r.alert for r in rows if r.date not in inside) for name, rows in by_method.items()
    }
    outside_days = sum(1 for r in by_method[PERSONAL] if r.date not in inside)
    return Trial(episode, len(window), first, chance, outside, outside_days)


def lead_days(trial: Trial, method: str, injected: bool = True) -> int | None:
    """Onset minus the first alert in the window (None when none); `injected=False` reads the
    same window of the stream without the episode."""
    first = (trial.first_alert if injected else trial.without_injection).get(method)
    return None if first is None else (trial.episode.onset - first).days


# ----- the whole evaluation --------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationOptions:
    """How much of the smartwatch data to use and how many episodes to inject."""

    watch_persons: int | None = None  # the first N smartwatch persons with heart rate
    starts_per_person: int = STARTS_PER_PERSON
    sizes_bpm: tuple[float, ...] = SIZES_BPM
    ramp_days: tuple[int, ...] = RAMP_DAYS
    seed: int = SEED
    policy: AlertPolicy = field(default_factory=AlertPolicy)


@dataclass
class Evaluation:
    """Every figure (`metrics`, JSON-able) and the injected trials behind them."""

    metrics: dict[str, Any]
    trials: list[Trial]
    methods: list[str]


def exports_to_evaluate(data_dir: Path) -> dict[str, Path]:
    """The exports DATA_DIR holds; ExportError naming the folder when it holds none."""
    found = find_exports(data_dir)
    if not found:
        raise ExportError(f"{data_dir}: no Fitbit, Welltory or smartwatch export found")
    return found


def evaluate_monitoring(
    data_dir: Path,
    options: EvaluationOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Run the whole evaluation on the exports in DATA_DIR (see the module doc)."""
    options = options or EvaluationOptions()
    say = progress or (lambda _message: None)
    exports = exports_to_evaluate(data_dir)
    imports: dict[str, ImportReport] = {}
    cohort = replay_cohort(exports, options.policy, imports)
    say(f"replayed {len(cohort.source)} Fitbit/Welltory persons")
    personal_alerts = no_event_alerts(cohort, cohort.rows)
    clear = options.policy.clear_days
    scan, under, over = scan_rhr_thresholds(cohort, personal_alerts, clear)
    rules = _rules(under, over)
    cohort_rows = {PERSONAL: cohort.rows}
    for rule in rules:
        cohort_rows[rule.name] = rule_rows(cohort.rows, cohort.daily, rule, clear)
    watch = _smartwatch(exports.get("smartwatch"), rules, options, imports, say)
    metrics = {
        "data": str(data_dir),
        "definitions": definitions(options),
        "policy": policy_settings(options.policy),
        "methods": _method_labels(rules, under, over),
        "method_signals": {PERSONAL: None, **{rule.name: rule.signal.value for rule in rules}},
        "equal_burden": _equal_burden(scan, under, over, cohort, cohort_rows),
        "no_event": {
            m: no_event_burden(cohort, rows, options.seed) for m, rows in cohort_rows.items()
        },
        "welltory_onsets": _welltory(cohort, cohort_rows),
        "smartwatch_observed": watch["observed"],
        "injected": injected_summary(watch["trials"], list(cohort_rows)),
        "imports": {name: _import_counts(report) for name, report in sorted(imports.items())},
    }
    metrics["verdict"] = verdict(metrics)
    return Evaluation(metrics, watch["trials"], list(cohort_rows))


def _rules(under: ThresholdRule, over: ThresholdRule | None) -> list[ThresholdRule]:
    rules = {rule.name: rule for rule in (RHR_OVER_100, SPO2_UNDER_92, under, over) if rule}
    return list(rules.values())


def _method_labels(
    rules: Sequence[ThresholdRule], under: ThresholdRule, over: ThresholdRule | None
) -> dict[str, str]:
    labels = {PERSONAL: "personal baselines (careloop, default policy)"}
    for rule in rules:
        unit = "bpm" if rule.signal is Signal.RESTING_HEART_RATE else "%"
        what = "resting heart rate" if rule.signal is Signal.RESTING_HEART_RATE else "SpO2"
        text = f"{what} {'over' if rule.over else 'under'} {rule.limit:g} {unit}"
        if rule == under and rule != RHR_OVER_100:
            text += " (equal burden: lowest limit at or under the personal no-event alerts)"
        if rule == over and rule != RHR_OVER_100:
            text += " (one bpm lower: the first limit over them)"
        labels[rule.name] = text
    return labels


def _equal_burden(
    scan: list[list[float]],
    under: ThresholdRule,
    over: ThresholdRule | None,
    cohort: Cohort,
    cohort_rows: Mapping[str, Sequence[ReplayRow]],
) -> dict[str, Any]:
    """The scan, the bracketing limits and which one the verdict compares against."""
    personal = no_event_alerts(cohort, cohort_rows[PERSONAL])
    at_under = no_event_alerts(cohort, cohort_rows[under.name])
    comparator = under if at_under == personal or over is None else over
    return {
        "scan_limit_and_no_event_alerts": scan,
        "personal_no_event_alerts": personal,
        "last_at_or_under": under.name,
        "last_at_or_under_bpm": under.limit,
        "first_over": None if over is None else over.name,
        "comparator": comparator.name,
    }


def _welltory(cohort: Cohort, cohort_rows: Mapping[str, Sequence[ReplayRow]]) -> dict[str, Any]:
    welltory_persons = {p for p, source in cohort.source.items() if source == "welltory"}
    outcomes = {m: onset_outcomes(cohort, rows) for m, rows in cohort_rows.items()}
    first = outcomes[PERSONAL]
    return {
        "participants": len(welltory_persons),
        "with_onset": sum(1 for p in welltory_persons if p in cohort.onsets),
        "with_data_before_onset": len(first),
        "with_history_and_week_data": sum(
            1 for o in first if o["days_before"] >= HISTORY_DAYS and o["week_data"]
        ),
        "by_method": {m: onset_summary(o) for m, o in outcomes.items()},
    }


def _smartwatch(
    folder: Path | None,
    rules: Sequence[ThresholdRule],
    options: EvaluationOptions,
    imports: dict[str, ImportReport],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Observed alert rates and injected trials, one person in memory at a time."""
    if folder is None:
        return {"observed": None, "trials": []}
    report = imports.setdefault("smartwatch", ImportReport())
    persons = smartwatch_persons(folder)
    with_hr = [
        p
        for p in persons
        if (folder / f"{p}_hr.csv.zip").is_file() and (folder / f"{p}_steps.csv.zip").is_file()
    ][: options.watch_persons]
    rng = random.Random(options.seed)
    observed: dict[str, list[ReplayRow]] = defaultdict(list)
    spreads: list[float] = []
    trials: list[Trial] = []
    for number, person in enumerate(with_hr, 1):
        reduced = reduce_watch_person(folder, person, report)
        base = method_rows(reduced.person_id, watch_samples(reduced), rules, options.policy)
        for name, rows in base.items():
            observed[name].extend(rows)
        spreads.extend(_robust_sd([s.value for s in reduced.rhr.values()]))
        trials.extend(_person_trials(reduced, base, rules, options, rng))
        say(f"smartwatch person {number}/{len(with_hr)}: {len(trials)} episodes so far")
    return {
        "observed": {
            "persons_with_heart_rate_and_steps": len(with_hr),
            "persons_without_heart_rate": sum(
                1 for p in persons if not (folder / f"{p}_hr.csv.zip").is_file()
            ),
            "derived_rhr_day_to_day_sd": _spread_summary(spreads),
            "by_method": {m: burden(rows, seed=options.seed) for m, rows in observed.items()},
        },
        "trials": trials,
    }


MAD_TO_SD = 1.4826  # a normal distribution's standard deviation per median absolute deviation


def _robust_sd(values: Sequence[float]) -> list[float]:
    """[MAD x 1.4826] of the values, or [] with fewer than two."""
    if len(values) < 2:
        return []
    centre = statistics.median(values)
    return [MAD_TO_SD * statistics.median(abs(v - centre) for v in values)]


def _spread_summary(spreads: Sequence[float]) -> dict[str, float] | None:
    if not spreads:
        return None
    return {
        "median": round(statistics.median(spreads), 2),
        "min": round(min(spreads), 2),
        "max": round(max(spreads), 2),
    }


def _person_trials(
    person: WatchPerson,
    base: Mapping[str, Sequence[ReplayRow]],
    rules: Sequence[ThresholdRule],
    options: EvaluationOptions,
    rng: random.Random,
) -> list[Trial]:
    starts = episode_starts(
        list(person.rhr), options.starts_per_person, max(options.ramp_days), rng
    )
    return [
        run_trial(person, Episode(person.person_id, start, ramp, size), rules, options.policy, base)
        for start in starts
        for ramp in options.ramp_days
        for size in options.sizes_bpm
    ]


def episode_detection(trials: Sequence[Trial], method: str) -> dict[str, Any]:
    """`detection` of the method on these episodes, with how many of the same windows had an
    alert in the stream without the episode (chance) and the share detected beyond that."""
    summary = detection([lead_days(t, method) for t in trials])
    chance = sum(1 for t in trials if t.without_injection[method] is not None)
    summary["alerted_without_injection"] = chance
    excess = (summary["detected"] - chance) / len(trials) if trials else None
    summary["share_beyond_chance"] = _rounded(excess)
    return summary


def _grouped(
    trials: Sequence[Trial], key: Callable[[Trial], str], methods: Sequence[str]
) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Trial]] = defaultdict(list)
    for trial in trials:
        groups[key(trial)].append(trial)
    return {
        m: {name: episode_detection(group, m) for name, group in groups.items()} for m in methods
    }


def injected_summary(trials: Sequence[Trial], methods: Sequence[str]) -> dict[str, Any]:
    """Detection overall, by size, by ramp and by both, per method; alerts outside episodes;
    and paired comparisons of each rule with the personal method."""
    if not trials:
        return {"episodes": 0}
    return {
        "episodes": len(trials),
        "persons": len({t.episode.person for t in trials}),
        "window_rhr_days_median": statistics.median(t.window_rhr_days for t in trials),
        "overall": {m: episode_detection(trials, m) for m in methods},
        "by_size": _grouped(trials, lambda t: f"{t.episode.size_bpm:g}", methods),
        "by_ramp_days": _grouped(trials, lambda t: str(t.episode.ramp_days), methods),
        "by_size_and_ramp": _grouped(
            trials, lambda t: f"{t.episode.size_bpm:g}/{t.episode.ramp_days}", methods
        ),
        "outside_windows": {m: _outside(trials, m) for m in methods},
        "paired_vs_personal": {m: paired(trials, PERSONAL, m) for m in methods if m != PERSONAL},
    }


def _outside(trials: Sequence[Trial], method: str) -> dict[str, Any]:
    """Alerts on trial days outside the injected episode (the same real streams, replayed once
    per trial, so this is a rate over replays, not over distinct person-months)."""
    alerts = sum(t.outside_alerts[method] for t in trials)
    months = sum(t.outside_days for t in trials) / DAYS_PER_MONTH
    return {
        "alerts": alerts,
        "replayed_person_months": round(months, 2),
        "per_person_month": _rounded(alerts / months) if months else None,
    }


def paired(trials: Sequence[Trial], first: str, second: str) -> dict[str, int]:
    """On the same episodes: which method alerted earlier (a miss counts as never)."""
    counts = {"first_earlier": 0, "second_earlier": 0, "same_day": 0, "both_missed": 0}
    for trial in trials:
        a, b = lead_days(trial, first), lead_days(trial, second)
        if a is None and b is None:
            counts["both_missed"] += 1
        elif b is None or (a is not None and a > b):
            counts["first_earlier"] += 1
        elif a is None or b > a:
            counts["second_earlier"] += 1
        else:
            counts["same_day"] += 1
    return counts


def verdict(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Does the personal method win on lead time at an equal or lower alert burden?

    Against the equal-burden comparator it wins when its no-event burden is not higher, it
    detects a larger share of injected episodes beyond what the same windows show without the
    episode, and on the same episodes it alerts earlier more often than the comparator does (a
    miss counting as never). Median leads and the Welltory onsets are reported beside it."""
    comparator = metrics["equal_burden"]["comparator"]
    no_event = metrics["no_event"]
    injected = metrics["injected"]
    if not injected.get("episodes"):
        return {"comparator": comparator, "wins": None, "reason": "no injected episodes"}
    mine, theirs = injected["overall"][PERSONAL], injected["overall"][comparator]
    pairs = injected["paired_vs_personal"][comparator]
    onsets = metrics["welltory_onsets"].get("by_method", {})
    figures = {
        "comparator": comparator,
        "personal_no_event_alerts": no_event[PERSONAL]["all"]["alerts"],
        "comparator_no_event_alerts": no_event[comparator]["all"]["alerts"],
        "personal_detected_share": mine["share"],
        "comparator_detected_share": theirs["share"],
        "personal_share_beyond_chance": mine["share_beyond_chance"],
        "comparator_share_beyond_chance": theirs["share_beyond_chance"],
        "personal_median_lead_days": mine["median_lead_days"],
        "comparator_median_lead_days": theirs["median_lead_days"],
        "personal_earlier": pairs["first_earlier"],
        "comparator_earlier": pairs["second_earlier"],
        "welltory_onsets_alerted": {
            m: [o["with_data_before_onset"]["detected"], o["with_data_before_onset"]["episodes"]]
            for m, o in onsets.items()
            if m in (PERSONAL, comparator)
        },
    }
    figures["wins"] = (
        figures["personal_no_event_alerts"] <= figures["comparator_no_event_alerts"]
        and (mine["share_beyond_chance"] or 0) > (theirs["share_beyond_chance"] or 0)
        and pairs["first_earlier"] > pairs["second_earlier"]
    )
    return figures


def definitions(options: EvaluationOptions) -> dict[str, Any]:
    return {
        "no_event_margin_days": NO_EVENT_MARGIN_DAYS,
        "onset_window_days": [-ONSET_WINDOW_DAYS, 0],
        "history_days": HISTORY_DAYS,
        "episode_sizes_bpm": list(options.sizes_bpm),
        "episode_ramp_days": list(options.ramp_days),
        "full_after_onset_days": FULL_AFTER_ONSET_DAYS,
        "recovery_days": RECOVERY_DAYS,
        "detect_after_onset_days": DETECT_AFTER_ONSET_DAYS,
        "steps_drop_at_full_size": STEPS_DROP,
        "starts_per_person": options.starts_per_person,
        "seed": options.seed,
        "days_per_month": round(DAYS_PER_MONTH, 4),
        "rise_added_to": "per-minute heart rate; resting heart rate derived again",
    }


def policy_settings(policy: AlertPolicy) -> dict[str, Any]:
    """The alert policy as run (defaults: nothing tuned to these results)."""
    from careloop.monitoring import detectors

    return {
        "monthly_budget": {tier.value: n for tier, n in policy.monthly_budget.items()},
        "raise_level": policy.raise_level,
        "reraise_level": policy.reraise_level,
        "rearm_days": policy.rearm_days,
        "clear_days": policy.clear_days,
        "min_wear_hours": policy.min_wear_hours,
        "infection_rhr_z": detectors.INFECTION_RHR_Z,
        "infection_support_z": detectors.INFECTION_SUPPORT_Z,
        "infection_min_days": detectors.INFECTION_MIN_DAYS,
        "spo2_drop_points": detectors.SPO2_DROP_POINTS,
    }


def _import_counts(report: ImportReport) -> dict[str, Any]:
    return {
        "persons": len(report.persons),
        "samples": dict(sorted(report.samples.items())),
        "skipped": dict(sorted(report.skipped.items())),
    }
