"""Personal baselines on synthetic streams with known properties, and on a real Welltory stream."""

from __future__ import annotations

import csv
import json
import math
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.monitoring.baseline import (
    PRIORS,
    SignalBaseline,
    histogram_median_mad,
    resting_heart_rate,
)
from careloop.monitoring.signals import Sample, Signal
from conftest import shared_data

START = datetime(2024, 3, 1, tzinfo=UTC)


def sample(signal: Signal, time: datetime, value: float, person: str = "p1") -> Sample:
    return Sample(person, signal, time, value, f"{person}:{signal}:{time.isoformat()}", "test")


def daily(signal: Signal, values: list[float], start: datetime = START) -> list[Sample]:
    return [sample(signal, start + timedelta(days=i), v) for i, v in enumerate(values)]


def feed(baseline: SignalBaseline, samples: list[Sample]) -> list:
    """Score each sample before learning it, as monitoring does."""
    deviations = []
    for item in samples:
        deviations.append(baseline.score_one(item))
        baseline.learn_one(item)
    return deviations


def test_constant_person_scores_near_zero() -> None:
    rng = random.Random(1)
    values = [58 + rng.gauss(0, 1.0) for _ in range(40)]
    deviations = feed(
        SignalBaseline(Signal.RESTING_HEART_RATE), daily(Signal.RESTING_HEART_RATE, values)
    )
    late = deviations[21:]
    assert all(abs(d.z) < 3.5 for d in late)
    assert abs(sum(d.z for d in late) / len(late)) < 0.5
    assert abs(late[-1].median - 58) < 1.0


def test_prior_dominates_at_start_and_fades() -> None:
    baseline = SignalBaseline(Signal.RESTING_HEART_RATE)
    deviations = feed(baseline, daily(Signal.RESTING_HEART_RATE, [50.0] * 60))
    prior = PRIORS[Signal.RESTING_HEART_RATE]
    first = deviations[0]
    assert first.median == prior.medians[0] and first.scale == prior.scale
    assert first.prior_dominated and first.days == 0
    # the centre trusts the person after a day (k = (3/8)^2), the scale after a week (k = 7)
    k_centre = prior.centre_pseudo_days
    assert k_centre == pytest.approx((3 / 8) ** 2)
    assert deviations[1].median == pytest.approx((65 * k_centre + 50) / (1 + k_centre))
    assert deviations[7].scale == pytest.approx(math.sqrt(prior.scale**2 / 2))
    assert deviations[6].prior_dominated and not deviations[7].prior_dominated
    # the window holds 28 days but the prior keeps fading: 59 days seen, not 28
    assert deviations[-1].days == 28
    assert deviations[-1].median == pytest.approx(65 - 15 * 59 / (59 + k_centre))
    assert deviations[-1].scale == prior.floor
    medians = [d.median for d in deviations]
    scales = [d.scale for d in deviations]
    assert medians == sorted(medians, reverse=True) and scales == sorted(scales, reverse=True)


def test_low_normal_person_is_judged_against_their_own_normal() -> None:
    """45 bpm is this athlete's normal: after calibration it scores near 0, and a rise to 52
    (normal for the population) scores high."""
    rng = random.Random(2)
    values = [45 + rng.gauss(0, 0.8) for _ in range(30)]
    baseline = SignalBaseline(Signal.RESTING_HEART_RATE)
    deviations = feed(baseline, daily(Signal.RESTING_HEART_RATE, values))
    assert deviations[0].z < -2  # against the population prior alone 45 looks abnormal
    assert abs(deviations[-1].z) < 2.5
    rise = baseline.score_one(sample(Signal.RESTING_HEART_RATE, START + timedelta(days=30), 52))
    assert rise.z > 3


def test_time_of_day_bands_are_separate() -> None:
    """Night heart rate 50, afternoon 90: each is normal in its own band, not in the other's."""
    baseline = SignalBaseline(Signal.HEART_RATE)
    rng = random.Random(3)
    for day in range(21):
        for minute in range(0, 1440, 10):
            hour = minute // 60
            level = 50 if hour < 6 else 90 if 12 <= hour < 18 else 70
            when = START + timedelta(days=day, minutes=minute)
            baseline.learn_one(sample(Signal.HEART_RATE, when, level + rng.gauss(0, 3)))
    night = START + timedelta(days=21, hours=2)
    afternoon = START + timedelta(days=21, hours=14)
    assert abs(baseline.score_one(sample(Signal.HEART_RATE, night, 50)).z) < 1
    assert abs(baseline.score_one(sample(Signal.HEART_RATE, afternoon, 90)).z) < 1
    assert baseline.score_one(sample(Signal.HEART_RATE, night, 90)).z > 4
    assert baseline.score_one(sample(Signal.HEART_RATE, afternoon, 50)).z < -4


def test_bands_follow_local_time() -> None:
    """A person at UTC-5: 07:00 UTC is 02:00 local, a night band."""
    baseline = SignalBaseline(Signal.HEART_RATE, utc_offset_minutes=-300)
    for day in range(10):
        for hour in range(24):
            local_night = (hour - 5) % 24 < 6
            when = START + timedelta(days=day, hours=hour)
            baseline.learn_one(sample(Signal.HEART_RATE, when, 50 if local_night else 80))
    baseline.close_day(START + timedelta(days=11))
    median, _, days = baseline.baseline(START + timedelta(days=11, hours=7))
    assert days == 10 and median < 60


def test_implausible_values_are_neither_learnt_nor_alarming() -> None:
    baseline = SignalBaseline(Signal.RESTING_HEART_RATE)
    feed(baseline, daily(Signal.RESTING_HEART_RATE, [60.0] * 10))
    bad = sample(Signal.RESTING_HEART_RATE, START + timedelta(days=10), 600.0)
    deviation = baseline.score_one(bad)
    before = baseline.baseline(START)
    assert not deviation.plausible and deviation.z == 0.0
    assert not baseline.learn_one(bad)
    assert baseline.baseline(START) == before


def test_late_sample_for_a_committed_day_is_not_learnt() -> None:
    baseline = SignalBaseline(Signal.RESTING_HEART_RATE)
    feed(baseline, daily(Signal.RESTING_HEART_RATE, [60.0] * 5))
    late = sample(Signal.RESTING_HEART_RATE, START + timedelta(days=1, hours=3), 90.0)
    assert not baseline.learn_one(late)


def test_summed_signal_uses_the_day_total() -> None:
    baseline = SignalBaseline(Signal.STEPS)
    for day in range(12):
        for hour in range(24):
            when = START + timedelta(days=day, hours=hour)
            baseline.learn_one(sample(Signal.STEPS, when, 500.0))
    baseline.close_day(START + timedelta(days=12))
    median, scale, days = baseline.baseline(START)
    assert days == 12
    assert median == pytest.approx(PRIORS[Signal.STEPS].medians[0] / 13 + 12_000 * 12 / 13)
    assert scale >= PRIORS[Signal.STEPS].floor


def test_state_round_trip_gives_identical_scores() -> None:
    rng = random.Random(4)
    baseline = SignalBaseline(Signal.HEART_RATE, utc_offset_minutes=120)
    stream = [
        sample(Signal.HEART_RATE, START + timedelta(minutes=7 * i), 60 + rng.gauss(0, 8))
        for i in range(3_000)
    ]
    feed(baseline, stream[:2_000])
    restored = SignalBaseline.from_dict(json.loads(json.dumps(baseline.to_dict())))
    assert feed(restored, stream[2_000:]) == feed(baseline, stream[2_000:])


def test_invalid_saved_state_is_a_clear_error() -> None:
    saved = SignalBaseline(Signal.SPO2).to_dict()
    saved["bands"] = []
    with pytest.raises(ValueError, match="invalid baseline state"):
        SignalBaseline.from_dict(saved)


def test_histogram_median_mad_is_exact() -> None:
    values = [1, 2, 2, 3, 10, 11]
    hist: dict[int, int] = {}
    for value in values:
        hist[value] = hist.get(value, 0) + 1
    centre, mad = histogram_median_mad(hist, 1.0)
    assert centre == 2.5  # median of 6 values: mean of the 3rd and 4th
    assert mad == pytest.approx(1.0)  # |deviations| 1.5 .5 .5 .5 7.5 8.5 -> median 1.0


@settings(max_examples=200, deadline=None)
@given(
    signal=st.sampled_from(list(Signal)),
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=40),
    step_minutes=st.integers(min_value=1, max_value=3_000),
)
def test_arbitrary_finite_values_never_crash(
    signal: Signal, values: list[float], step_minutes: int
) -> None:
    baseline = SignalBaseline(signal)
    stream = [
        sample(signal, START + timedelta(minutes=step_minutes * i), v) for i, v in enumerate(values)
    ]
    for deviation in feed(baseline, stream):
        assert math.isfinite(deviation.z) and deviation.scale > 0


def _minute_stream(level_at_rest: float, level_active: float) -> tuple[list, list]:
    """Two days: active (steps) 08:00-20:00 with a high heart rate, resting otherwise."""
    heart, steps = [], []
    for minute in range(2 * 1440):
        when = START + timedelta(minutes=minute)
        active = 8 * 60 <= minute % 1440 < 20 * 60
        heart.append(sample(Signal.HEART_RATE, when, level_active if active else level_at_rest))
        if active:
            steps.append(sample(Signal.STEPS, when, 30.0))
    return heart, steps


def test_resting_heart_rate_with_steps_uses_step_free_minutes() -> None:
    heart, steps = _minute_stream(52.0, 95.0)
    derived = resting_heart_rate(heart, steps)
    assert [s.value for s in derived] == [52.0, 52.0]
    assert all(s.signal == Signal.RESTING_HEART_RATE for s in derived)


def test_resting_heart_rate_without_steps_uses_the_low_tail() -> None:
    heart, _ = _minute_stream(52.0, 95.0)
    assert [s.value for s in resting_heart_rate(heart)] == [52.0, 52.0]
    too_little = resting_heart_rate(heart[:30])
    assert too_little == []


@pytest.mark.shared_data
def test_real_welltory_resting_pulse_gives_sensible_baselines() -> None:
    """The participant with the most resting-pulse days: a finite, plausible baseline."""
    path = shared_data("wearables/welltory_hrv_covid19/wearables.csv")
    per_person: dict[str, list[tuple[date, float]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["resting_pulse"]:
                day = date.fromisoformat(row["day"])
                per_person.setdefault(row["user_code"], []).append(
                    (day, float(row["resting_pulse"]))
                )
    person, rows = max(per_person.items(), key=lambda item: len(item[1]))
    rows.sort()
    baseline = SignalBaseline(Signal.RESTING_HEART_RATE)
    stream = [
        sample(Signal.RESTING_HEART_RATE, datetime(d.year, d.month, d.day, tzinfo=UTC), v, person)
        for d, v in rows
    ]
    deviations = feed(baseline, stream)
    assert len(deviations) > 60
    assert all(math.isfinite(d.z) for d in deviations)
    median, scale, days = baseline.baseline(stream[-1].time)
    assert 35 < median < 110 and 1.0 <= scale < 15 and days == 28
    own = sorted(v for _, v in rows[-28:])
    assert abs(median - own[len(own) // 2]) < 5
    share_extreme = sum(abs(d.z) > 4 for d in deviations[14:]) / len(deviations[14:])
    assert share_extreme < 0.1
