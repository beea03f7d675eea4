"""CUSUM and EWMA on baseline deviations, the multi-signal patterns, and the per-person state."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.monitoring.baseline import Deviation
from careloop.monitoring.detectors import (
    DOWN,
    FALLING_SPO2,
    HEART_FAILURE,
    INFECTION,
    UP,
    Cusum,
    Ewma,
    falling_spo2,
    find_patterns,
    heart_failure_decompensation,
    infection_like,
)
from careloop.monitoring.signals import CATALOGUE, Sample, Signal
from careloop.monitoring.state import PersonState

START = datetime(2024, 3, 1, tzinfo=UTC)


def day_sample(signal: Signal, day: int, value: float, person: str = "p1") -> Sample:
    when = START + timedelta(days=day, hours=7)
    return Sample(person, signal, when, value, f"{person}:{signal}:{day}", "test")


def rhr_stream(seed: int, days: int, normal: float, shift: float, onset: int, ramp: int) -> list:
    """Daily resting heart rate around `normal` (SD 1.2 bpm), rising by `shift` bpm linearly
    over `ramp` days from day `onset` (no shift when onset >= days)."""
    rng = random.Random(seed)
    values = []
    for day in range(days):
        progress = min(max(day - onset + 1, 0) / ramp, 1.0)
        values.append(normal + shift * progress + rng.gauss(0, 1.2))
    return values


def run_person(values: list[float], signal: Signal = Signal.RESTING_HEART_RATE) -> list:
    state = PersonState("p1")
    return [state.observe(day_sample(signal, day, value)) for day, value in enumerate(values)]


def first_alarm(observations: list, direction: str = UP) -> int | None:
    for day, observation in enumerate(observations):
        if observation.cusum is not None and observation.cusum.alarm == direction:
            return day
    return None


@pytest.mark.parametrize("shift", [3.0, 5.0, 10.0])
@pytest.mark.parametrize("ramp", [2, 5])
def test_cusum_detects_a_resting_heart_rate_rise_within_days(shift: float, ramp: int) -> None:
    onset = 35
    for seed in range(3):
        observations = run_person(rhr_stream(seed, 50, 60.0, shift, onset, ramp))
        assert first_alarm(observations[:onset]) is None  # no false alarm while well
        found = first_alarm(observations)
        assert found is not None and onset <= found <= onset + ramp + 3
        alarm = observations[found].cusum
        assert alarm.since is not None
        since_day = (alarm.since - START).days
        assert onset - 2 <= since_day <= found


def test_low_normal_person_does_not_alarm_where_a_population_rule_would() -> None:
    """An athlete at 45 bpm: a population rule (resting HR under 50 is bradycardia) flags every
    day; against their own baseline nothing alarms over two months."""
    values = rhr_stream(7, 60, 45.0, 0.0, 60, 1)
    observations = run_person(values)
    assert sum(value < 50 for value in values) == len(values)
    assert first_alarm(observations, UP) is None and first_alarm(observations, DOWN) is None
    assert all(o.cusum is None for o in observations[:7])  # calibration: prior still dominates


def test_cusum_resets_after_an_alarm_and_needs_fresh_evidence() -> None:
    cusum = Cusum(k=0.5, h=4.0)
    states = [cusum.update(2.0, START + timedelta(days=day)) for day in range(4)]
    assert [s.alarm for s in states] == [None, None, UP, None]
    assert [s.upper for s in states] == [1.5, 3.0, 4.5, 1.5]
    assert states[2].since == START
    assert states[3].since == START + timedelta(days=3)


def test_one_sided_cusum_ignores_falls() -> None:
    cusum = Cusum(two_sided=False)
    states = [cusum.update(-5.0, START + timedelta(days=day)) for day in range(5)]
    assert all(s.alarm is None and s.lower == 0.0 for s in states)


def test_ewma_catches_a_slow_drift_and_says_since_when() -> None:
    ewma = Ewma(lam=0.2, width=3.0)
    states = [ewma.update(0.0, START + timedelta(days=day)) for day in range(10)]
    states += [ewma.update(1.5, START + timedelta(days=10 + day)) for day in range(10)]
    alarms = [day for day, state in enumerate(states) if state.alarm == UP]
    assert alarms and 10 < alarms[0] <= 15
    assert states[alarms[0]].since == START + timedelta(days=10)


def test_detectors_reject_bad_parameters() -> None:
    with pytest.raises(ValueError, match="CUSUM"):
        Cusum(h=0)
    with pytest.raises(ValueError, match="EWMA"):
        Ewma(lam=1.5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=60))
def test_detectors_never_crash_and_stay_finite(values: list[float]) -> None:
    cusum, ewma = Cusum(), Ewma()
    for day, z in enumerate(values):
        when = START + timedelta(days=day)
        for state in (cusum.update(z, when), ewma.update(z, when)):
            assert math.isfinite(state.upper) and math.isfinite(state.lower)


# ----- patterns ----------------------------------------------------------------------------


def deviation(signal: Signal, day: int, value: float, centre: float, scale: float) -> Deviation:
    return Deviation(
        signal, START + timedelta(days=day), value, centre, scale, (value - centre) / scale,
        CATALOGUE[signal].unit, 28, False,
    )  # fmt: skip


def series(signal: Signal, values: list[float], centre: float, scale: float) -> list:
    return [
        (date(2024, 3, 1) + timedelta(days=day), deviation(signal, day, value, centre, scale))
        for day, value in enumerate(values)
    ]


def test_infection_like_needs_resting_heart_rate_up_and_a_supporting_signal() -> None:
    rhr = series(Signal.RESTING_HEART_RATE, [60, 60, 60, 66, 68], 60, 2)
    hrv = series(Signal.HRV_RMSSD, [50, 50, 50, 45, 30], 50, 6)
    assert infection_like({Signal.RESTING_HEART_RATE: rhr}) is None
    finding = infection_like({Signal.RESTING_HEART_RATE: rhr, Signal.HRV_RMSSD: hrv})
    assert finding is not None and finding.pattern == INFECTION
    assert finding.since == date(2024, 3, 4)
    core, support = finding.evidence
    assert core.signal == Signal.RESTING_HEART_RATE and core.change == 8 and core.z == 4
    assert support.signal == Signal.HRV_RMSSD and support.change == -20
    one_day = series(Signal.RESTING_HEART_RATE, [60, 60, 60, 60, 68], 60, 2)
    assert infection_like({Signal.RESTING_HEART_RATE: one_day, Signal.HRV_RMSSD: hrv}) is None


def test_heart_failure_weight_gain_thresholds() -> None:
    fast = series(Signal.WEIGHT, [80.0, 80.1, 81.0, 82.2], 80, 0.5)
    finding = heart_failure_decompensation({Signal.WEIGHT: fast})
    assert finding is not None and finding.pattern == HEART_FAILURE
    assert finding.evidence[0].change == pytest.approx(2.2)
    assert finding.since == date(2024, 3, 1)
    slow_small = series(Signal.WEIGHT, [80.0, 80.5, 81.0, 81.5], 80, 0.5)
    assert heart_failure_decompensation({Signal.WEIGHT: slow_small}) is None
    week = series(Signal.WEIGHT, [80.0, 80.4, 80.8, 81.2, 81.6, 82.0, 82.3, 82.6], 80, 0.5)
    found = heart_failure_decompensation({Signal.WEIGHT: week})
    assert found is not None and found.evidence[0].change == pytest.approx(2.6)


def test_heart_failure_reports_supporting_signals() -> None:
    weight = series(Signal.WEIGHT, [80.0, 81.0, 82.5], 80, 0.5)
    steps = series(Signal.STEPS, [6000, 4000, 2000], 6000, 1000)
    finding = heart_failure_decompensation({Signal.WEIGHT: weight, Signal.STEPS: steps})
    assert finding is not None
    assert [e.signal for e in finding.evidence] == [Signal.WEIGHT, Signal.STEPS]


def test_falling_spo2_needs_a_sustained_personal_drop() -> None:
    one_day = series(Signal.SPO2, [97, 97, 97, 93], 97, 1)
    assert falling_spo2({Signal.SPO2: one_day}) is None
    sustained = series(Signal.SPO2, [97, 97, 94, 93], 97, 1)
    finding = falling_spo2({Signal.SPO2: sustained})
    assert finding is not None and finding.pattern == FALLING_SPO2
    assert finding.since == date(2024, 3, 3) and finding.evidence[0].change == -4


def test_patterns_ignore_prior_dominated_and_implausible_days() -> None:
    days = series(Signal.SPO2, [97, 93, 92], 97, 1)
    shaky = [(day, dev._replace(prior_dominated=True)) for day, dev in days]
    assert find_patterns({Signal.SPO2: shaky}) == []


# ----- per-person state --------------------------------------------------------------------


def mixed_stream(seed: int, days: int) -> list[Sample]:
    """Intraday heart rate every 20 minutes plus daily resting HR, steps, weight and SpO2."""
    rng = random.Random(seed)
    stream = []
    for day in range(days):
        for minute in range(0, 1440, 20):
            when = START + timedelta(days=day, minutes=minute)
            stream.append(Sample("p1", Signal.HEART_RATE, when, 70 + rng.gauss(0, 8), "x", "t"))
        stream.append(day_sample(Signal.RESTING_HEART_RATE, day, 58 + rng.gauss(0, 1.5)))
        stream.append(day_sample(Signal.STEPS, day, max(0.0, 8000 + rng.gauss(0, 2000))))
        stream.append(day_sample(Signal.WEIGHT, day, 80 + rng.gauss(0, 0.4)))
        stream.append(day_sample(Signal.SPO2, day, 97 + rng.gauss(0, 0.7)))
    return stream


def test_state_round_trips_through_json_with_identical_results() -> None:
    stream = mixed_stream(11, 30)
    split = len(stream) * 2 // 3
    state = PersonState("p1", utc_offset_minutes=60)
    for item in stream[:split]:
        state.observe(item)
    restored = PersonState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored.to_dict() == state.to_dict()
    rest = stream[split:]
    assert [restored.observe(s) for s in rest] == [state.observe(s) for s in rest]
    assert restored.findings() == state.findings()


def test_state_memory_estimate_is_bounded() -> None:
    state = PersonState("p1")
    empty = state.approximate_bytes()
    for item in mixed_stream(12, 60):
        state.observe(item)
    full = state.approximate_bytes()
    assert 0 < empty < full < 150_000
    # the windows are bounded: another month does not grow the state much
    for item in mixed_stream(13, 30):
        state.observe(item)
    assert state.approximate_bytes() < full * 1.2


def test_state_rejects_bad_input() -> None:
    state = PersonState("p1")
    with pytest.raises(ValueError, match="another person"):
        state.observe(day_sample(Signal.SPO2, 0, 97, person="p2"))
    saved = state.to_dict()
    saved["version"] = 99
    with pytest.raises(ValueError, match="invalid monitoring state"):
        PersonState.from_dict(saved)
    saved = state.to_dict()
    del saved["history"]
    with pytest.raises(ValueError, match="history"):
        PersonState.from_dict(saved)


def test_state_end_to_end_infection_finding() -> None:
    """Three weeks of normal, then resting HR up 8 bpm and HRV down: both the CUSUM and the
    infection-like pattern fire, with evidence in bpm and ms."""
    rng = random.Random(5)
    state = PersonState("p1")
    observations = []
    for day in range(26):
        ill = day >= 22
        rhr = 58 + (8 if ill else 0) + rng.gauss(0, 1.0)
        hrv = 55 - (20 if ill else 0) + rng.gauss(0, 3.0)
        observations.append(state.observe(day_sample(Signal.RESTING_HEART_RATE, day, rhr)))
        state.observe(day_sample(Signal.HRV_RMSSD, day, hrv))
    assert first_alarm(observations) in (22, 23)
    findings = state.findings()
    assert [f.pattern for f in findings] == [INFECTION]
    core = findings[0].evidence[0]
    assert findings[0].since == date(2024, 3, 23) and 5 < core.change < 11
