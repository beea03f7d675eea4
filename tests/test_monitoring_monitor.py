"""The live monitoring path one sample at a time: bad input refused and counted (never an
alert), days closed with their totals and derived resting heart rate, and a checkpoint that
carries on exactly where it stopped."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.monitoring.fhir import SampleError, observation_to_sample, sample_to_observation
from careloop.monitoring.monitor import Monitor
from careloop.monitoring.signals import Sample, Signal
from monitoring_streams import EPISODE, day_start, person_stream

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def _monitor() -> Monitor:
    return Monitor(clock=lambda: NOW)


def _feed(monitor: Monitor, samples: list[Sample]) -> list:
    outcomes = []
    for sample in samples:
        outcomes.extend(monitor.accept(sample))
    return outcomes


def _reading(signal: Signal, when: datetime, value: float, sid: str, period: int | None = None):
    return Sample("p1", signal, when, value, sid, "test", period)


def test_a_flooding_device_is_capped_per_minute() -> None:
    monitor = _monitor()
    start = day_start(0) + timedelta(hours=9)
    burst = [
        _reading(Signal.HEART_RATE, start + timedelta(milliseconds=100 * i), 70.0, f"hr{i}")
        for i in range(600)  # ten a second for a minute: no optical sensor does this
    ]
    _feed(monitor, burst)
    assert monitor.counters.refused == {"flooding heart-rate": 600 - 120}


def test_unit_mixups_are_refused_not_scored() -> None:
    monitor = _monitor()
    weights = [_reading(Signal.WEIGHT, day_start(d), 80.0 + 0.1 * d, f"w{d}") for d in range(5)]
    pounds = _reading(Signal.WEIGHT, day_start(5), 176.6, "w5")  # 80.1 kg typed as lb
    fahrenheit = _reading(Signal.BODY_TEMPERATURE, day_start(5), 98.6, "t5")
    outcomes = _feed(monitor, [*weights, pounds, fahrenheit])
    outcomes += monitor.finish()

    assert monitor.counters.refused == {
        "unit mix-up weight": 1,
        "unit mix-up body-temperature": 1,
    }
    assert not any(outcome.alert for outcome in outcomes)
    weight = monitor.persons["p1"].state.baselines[Signal.WEIGHT]
    assert weight.baseline(day_start(6))[0] < 82  # the pounds never reached the baseline


def test_fahrenheit_sent_as_such_is_converted() -> None:
    observation = sample_to_observation(_reading(Signal.BODY_TEMPERATURE, day_start(0), 37.0, "t0"))
    observation["valueQuantity"] = {"value": 98.6, "system": "http://unitsofmeasure.org",
                                     "code": "[degF]", "unit": "degF"}  # fmt: skip
    assert observation_to_sample(observation).value == pytest.approx(37.0)
    observation["valueQuantity"]["code"] = "K"
    with pytest.raises(SampleError, match="unit not understood"):
        observation_to_sample(observation)


def test_future_dated_and_impossible_samples_are_refused() -> None:
    monitor = _monitor()
    _feed(
        monitor,
        [
            _reading(Signal.RESTING_HEART_RATE, NOW + timedelta(days=2), 60.0, "future"),
            _reading(Signal.SPO2, day_start(0), 130.0, "impossible"),
            _reading(Signal.STEPS, day_start(0), 50_000.0, "too-many", 60),  # in one hour
        ],
    )
    assert monitor.counters.refused == {
        "future-dated resting-heart-rate": 1,
        "implausible spo2": 1,
        "implausible steps": 1,
    }
    assert monitor.finish() == []  # nothing usable arrived: no day to judge


def test_a_day_closes_with_its_totals_and_a_derived_resting_heart_rate() -> None:
    monitor = _monitor()
    samples = []
    for minute in range(0, 24 * 60, 2):  # every other minute, one day
        when = day_start(0) + timedelta(minutes=minute)
        active = 9 * 60 <= minute < 17 * 60
        samples.append(_reading(Signal.HEART_RATE, when, 95.0 if active else 58.0, f"h{minute}"))
        if active:
            samples.append(_reading(Signal.STEPS, when, 40.0, f"s{minute}", 1))
    assert _feed(monitor, samples) == []  # nothing closes within the day
    (outcome,) = _feed(monitor, [_reading(Signal.HEART_RATE, day_start(1), 60.0, "next")])

    summaries = {s.signal: s.value for s in outcome.summaries}
    assert summaries[Signal.STEPS] == 40.0 * 240
    assert summaries[Signal.RESTING_HEART_RATE] == pytest.approx(58.0)  # the step-free minutes
    assert outcome.quality.wear_hours == 24


def test_sleep_counts_for_the_day_it_ends_and_late_totals_are_refused() -> None:
    monitor = _monitor()
    night = _reading(Signal.SLEEP_MINUTES, day_start(0) + timedelta(hours=23), 480.0, "n0", 480)
    (first,) = _feed(
        monitor, [_reading(Signal.RESTING_HEART_RATE, day_start(0), 60.0, "r0"), night]
    )
    assert first.day == day_start(0).date()
    assert Signal.SLEEP_MINUTES not in {s.signal for s in first.summaries}
    late = _reading(Signal.STEPS, day_start(0) + timedelta(hours=20), 500.0, "late", 60)
    _feed(monitor, [late])
    (second,) = monitor.finish()
    assert {s.signal: s.value for s in second.summaries} == {Signal.SLEEP_MINUTES: 480.0}
    assert monitor.counters.refused == {"late steps": 1}


def test_a_quiet_day_is_closed_after_the_grace_period() -> None:
    monitor = _monitor()
    _feed(monitor, [_reading(Signal.RESTING_HEART_RATE, day_start(0), 60.0, "r0")])
    midnight = day_start(1)
    assert monitor.close_due(midnight + timedelta(hours=5)) == []
    (closed,) = monitor.close_due(midnight + timedelta(hours=6))
    assert closed.day == day_start(0).date()


def test_a_restored_checkpoint_carries_on_identically() -> None:
    stream = person_stream(episode=True, days=EPISODE[-1] + 3)
    straight = _monitor()
    expected = [(o.day, o.score, o.alert) for o in _feed(straight, stream)]

    first = _monitor()
    head = [(o.day, o.score, o.alert) for o in _feed(first, stream[:50])]
    saved = json.loads(json.dumps(first.to_dict()))  # as it is stored
    resumed = _monitor()
    resumed.restore(saved)
    tail = [(o.day, o.score, o.alert) for o in _feed(resumed, stream[50:])]

    assert head + tail == expected
    assert any(alert for _day, _score, alert in expected)


def test_a_corrupt_checkpoint_is_refused_and_changes_nothing() -> None:
    monitor = _monitor()
    _feed(monitor, person_stream(episode=False, days=3))
    before = monitor.to_dict()
    broken = json.loads(json.dumps(before))
    broken["persons"]["p1"]["state"]["baselines"] = "nonsense"
    with pytest.raises(ValueError, match="invalid monitor state"):
        monitor.restore(broken)
    assert monitor.to_dict() == before


_readings = st.builds(
    Sample,
    person_id=st.sampled_from(["p1", "p2"]),
    signal=st.sampled_from(list(Signal)),
    time=st.datetimes(
        min_value=datetime(2024, 1, 1), max_value=datetime(2024, 8, 1), timezones=st.just(UTC)
    ),
    value=st.floats(allow_nan=True, allow_infinity=True, width=64),
    sample_id=st.uuids().map(str),
    source=st.just("fuzz"),
    period_minutes=st.one_of(st.none(), st.integers(min_value=1, max_value=1440)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_readings, max_size=60))
def test_any_stream_is_judged_without_crashing_and_every_refusal_is_counted(
    samples: list[Sample],
) -> None:
    monitor = _monitor()
    outcomes = _feed(monitor, sorted(samples, key=lambda s: s.time))
    outcomes += monitor.finish()
    refused = sum(monitor.counters.refused.values())
    assert monitor.counters.samples == len(samples)
    assert refused <= len(samples)
    for outcome in outcomes:
        assert math.isfinite(outcome.score) and outcome.score >= 0
    for person in monitor.persons.values():  # nothing impossible reached a baseline
        for baseline in person.state.baselines.values():
            centre, scale, _days = baseline.baseline(NOW)
            assert math.isfinite(centre) and math.isfinite(scale)


def test_memory_per_person_counts_the_open_day() -> None:
    monitor = _monitor()
    minutes = [
        _reading(Signal.HEART_RATE, day_start(0) + timedelta(minutes=m), 60.0, f"h{m}")
        for m in range(600)
    ]
    _feed(monitor, minutes)
    with_day = monitor.person_bytes("p1")
    assert with_day > monitor.persons["p1"].state.approximate_bytes()
    monitor.finish()
    assert monitor.person_bytes("p1") < with_day  # the minutes go once the day is judged
