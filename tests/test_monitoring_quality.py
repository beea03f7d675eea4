"""Refusing impossible or future samples, spotting unit mix-ups against a person's history, and
that reading any Observation-shaped JSON fails only with SampleError."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.monitoring.fhir import SampleError, observation_to_sample
from careloop.monitoring.quality import check_sample, likely_unit_mixup
from careloop.monitoring.signals import Sample, Signal

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def at(signal: Signal, value: float, time: datetime = NOW) -> Sample:
    return Sample("p-1", signal, time, value, "s-1", "test")


@pytest.mark.parametrize(
    ("signal", "value", "word"),
    [
        (Signal.HEART_RATE, 0, "range"),
        (Signal.HEART_RATE, 400, "range"),
        (Signal.SPO2, 101, "range"),
        (Signal.SPO2, 0.97, "range"),
        (Signal.WEIGHT, 2000, "range"),
        (Signal.STEPS, -5, "range"),
        (Signal.HEART_RATE, float("nan"), "finite"),
        (Signal.GLUCOSE, float("inf"), "finite"),
    ],
)
def test_impossible_values_are_refused(signal, value, word):
    reason = check_sample(at(signal, value), NOW)
    assert reason is not None and word in reason and signal.value in reason


@pytest.mark.parametrize(
    ("signal", "value"),
    [(Signal.HEART_RATE, 25), (Signal.HEART_RATE, 250), (Signal.SPO2, 88), (Signal.STEPS, 0)],
)
def test_possible_values_pass(signal, value):
    assert check_sample(at(signal, value), NOW) is None


def test_future_beyond_clock_skew_is_refused():
    assert check_sample(at(Signal.HEART_RATE, 60, NOW + timedelta(minutes=4)), NOW) is None
    reason = check_sample(at(Signal.HEART_RATE, 60, NOW + timedelta(minutes=6)), NOW)
    assert reason is not None and "future" in reason


def test_pounds_for_kilograms():
    history = [80.1, 80.4, 79.9, 80.2]
    assert likely_unit_mixup(Signal.WEIGHT, [*history, 176.6]) is not None
    assert likely_unit_mixup(Signal.WEIGHT, [*history, 81.0]) is None
    assert likely_unit_mixup(Signal.WEIGHT, [*history, 120.0]) is None  # not a unit factor
    # history kept in pounds and a new reading in kilograms
    assert likely_unit_mixup(Signal.WEIGHT, [176.0, 177.0, 176.5, 80.0]) is not None


def test_mmol_for_mg_glucose():
    history = [95.0, 110.0, 102.0]
    assert "mmol/L" in likely_unit_mixup(Signal.GLUCOSE, [*history, 5.6])
    assert likely_unit_mixup(Signal.GLUCOSE, [*history, 60.0]) is None
    assert likely_unit_mixup(Signal.GLUCOSE, [6.2]) is not None  # no history, mmol/L range
    assert likely_unit_mixup(Signal.GLUCOSE, [112.0]) is None


def test_too_little_history_or_other_signals_say_nothing():
    assert likely_unit_mixup(Signal.WEIGHT, [80.0, 176.0]) is None
    assert likely_unit_mixup(Signal.HEART_RATE, [60, 61, 62, 132]) is None
    assert likely_unit_mixup(Signal.WEIGHT, []) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = st.fixed_dictionaries(
    {"resourceType": st.just("Observation")},
    optional={
        "id": JSON,
        "identifier": JSON | st.just([{"system": "https://careloop.dev/fhir/sid/device-sample"}]),
        "code": JSON
        | st.sampled_from(["8867-4", "29463-7", "2339-0", "55423-8"]).map(
            lambda c: {"coding": [{"system": "http://loinc.org", "code": c}]}
        ),
        "subject": JSON | st.text(max_size=10).map(lambda t: {"reference": f"Patient/{t}"}),
        "effectiveDateTime": JSON
        | st.datetimes().map(lambda d: d.isoformat() + "+02:00")
        | st.just("0001-01-01T00:30:00+02:00"),  # before year 1 in UTC
        "effectivePeriod": JSON
        | st.fixed_dictionaries({"start": st.text(max_size=30), "end": JSON}),
        "valueQuantity": JSON
        | st.fixed_dictionaries(
            {"value": JSON, "code": st.sampled_from(["kg", "/min", "[lb_av]", "mmol/L", "x"])}
        ),
        "device": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(FIELDS)
def test_reading_any_observation_raises_only_sample_error(resource):
    try:
        read = observation_to_sample(resource)
    except SampleError:
        return
    assert math.isfinite(read.value) and read.time.tzinfo is not None


@given(JSON)
def test_reading_any_json_raises_only_sample_error(value):
    with pytest.raises(SampleError):
        observation_to_sample(value)


@pytest.mark.parametrize(
    ("steps", "period", "refused"),
    [
        (30_000, 60, True),  # 500 steps a minute for an hour: no one walks that
        (15_000, 60, False),
        (30_000, 1440, False),  # a long day's walking
        (160_000, 1440, True),
        (30_000, None, False),  # no period: judged as a day
    ],
)
def test_a_summed_signals_ceiling_grows_with_its_period(
    steps: int, period: int | None, refused: bool
) -> None:
    sample = Sample(
        "p1",
        Signal.STEPS,
        datetime(2024, 3, 1, tzinfo=UTC),
        float(steps),
        f"steps-{steps}-{period}",
        "test",
        period_minutes=period,
    )
    reason = check_sample(sample, datetime(2024, 3, 2, tzinfo=UTC))
    assert (reason is not None) == refused, reason
