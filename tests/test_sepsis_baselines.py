"""qSOFA, SIRS and NEWS2 on hand-built hourly grids: bands, thresholds, windows, no leakage."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.sepsis.baselines import (
    BASELINES,
    alert,
    carry_forward,
    news2,
    news2_components,
    news2_oxygen,
    news2_pulse,
    news2_respiration,
    news2_spo2_scale1,
    news2_systolic,
    news2_temperature,
    qsofa,
    sirs,
)
from careloop.sepsis.grid import SIGNAL_COLUMNS, HourlyGrid

START = datetime(2020, 1, 1, tzinfo=UTC)
NAN = float("nan")


def grid(hours: int, **columns: list[float]) -> HourlyGrid:
    values = np.full((hours, len(SIGNAL_COLUMNS)), np.nan)
    for name, column in columns.items():
        values[:, SIGNAL_COLUMNS[name]] = column
    return HourlyGrid(stay_id="s1", start=START, values=values)


def points(function, values: list[float]) -> list[int]:
    return [int(v) for v in function(np.array(values, dtype=float))]


def test_news2_respiration_bands() -> None:
    assert points(news2_respiration, [8, 9, 11, 12, 20, 21, 24, 25]) == [3, 1, 1, 0, 0, 2, 2, 3]


def test_news2_spo2_scale1_bands() -> None:
    assert points(news2_spo2_scale1, [91, 92, 93, 94, 95, 96, 100]) == [3, 2, 2, 1, 1, 0, 0]


def test_news2_oxygen() -> None:
    assert points(news2_oxygen, [0.21, 0.22, 0.5, NAN]) == [0, 2, 2, 0]


def test_news2_systolic_bands() -> None:
    sbp = [90, 91, 100, 101, 110, 111, 219, 220]
    assert points(news2_systolic, sbp) == [3, 2, 2, 1, 1, 0, 0, 3]


def test_news2_pulse_bands() -> None:
    hr = [40, 41, 50, 51, 90, 91, 110, 111, 130, 131]
    assert points(news2_pulse, hr) == [3, 1, 1, 0, 0, 1, 1, 2, 2, 3]


def test_news2_temperature_bands() -> None:
    temp = [35.0, 35.1, 36.0, 36.1, 38.0, 38.1, 39.0, 39.1]
    assert points(news2_temperature, temp) == [3, 1, 1, 0, 0, 1, 1, 2]


def test_news2_rounds_non_integer_values_half_up_before_banding() -> None:
    # 20.4 charts as 20 (0 points), 20.5 as 21 (2 points); 38.04 as 38.0, 38.06 as 38.1
    assert points(news2_respiration, [20.4, 20.5]) == [0, 2]
    assert points(news2_temperature, [38.04, 38.06]) == [0, 1]


def test_news2_aggregate_and_components() -> None:
    # resp 25 (3) + SpO2 93 (2) + FiO2 0.4 (2) + SBP 95 (2) + HR 115 (2) + temp 39.5 (2) = 13
    g = grid(1, resp=[25], spo2=[93], fio2=[0.4], sbp=[95], hr=[115], temp=[39.5])
    components = news2_components(g)
    assert {k: int(v[0]) for k, v in components.items()} == {
        "respiration": 3,
        "spo2": 2,
        "oxygen": 2,
        "systolic": 2,
        "pulse": 2,
        "consciousness": 0,
        "temperature": 2,
    }
    assert news2(g).tolist() == [13]


def test_news2_alert_at_five() -> None:
    # resp 21 (2) + HR 111 (2) = 4: no alert; plus temp 38.5 (1) = 5: alert
    g = grid(2, resp=[21, 21], hr=[111, 111], temp=[37, 38.5])
    assert news2(g).tolist() == [4, 5]
    assert alert("news2", g).tolist() == [False, True]


def test_qsofa_thresholds_and_max_two() -> None:
    g = grid(4, resp=[21, 22, 22, 30], sbp=[101, 101, 100, 80])
    assert qsofa(g).tolist() == [0, 1, 2, 2]
    assert alert("qsofa", g).tolist() == [False, False, True, True]


def test_sirs_thresholds() -> None:
    # hour 0: nothing abnormal at the edges; hour 1: temp 38.1, HR 91 -> 2;
    # hour 2: temp 35.9, resp 21, WBC 12.1 -> 3 (+ HR 91) = 4; hour 3: PaCO2 31.9, WBC 3.9 -> 2
    g = grid(
        4,
        temp=[38, 38.1, 35.9, 37],
        hr=[90, 91, 91, 80],
        resp=[20, 18, 21, 18],
        paco2=[32, NAN, NAN, 31.9],
        wbc=[12, NAN, 12.1, 3.9],
    )
    assert sirs(g).tolist() == [0, 2, 4, 2]
    assert alert("sirs", g).tolist() == [False, True, True, True]


def test_sirs_paco2_alone_fills_the_respiratory_criterion() -> None:
    g = grid(1, resp=[16], paco2=[30], hr=[95])
    assert sirs(g).tolist() == [2]


def test_vitals_carried_forward_four_hours_only() -> None:
    # SBP 80 at hour 0 counts on hours 0..3 and is stale from hour 4
    g = grid(6, sbp=[80, NAN, NAN, NAN, NAN, NAN])
    assert qsofa(g).tolist() == [1, 1, 1, 1, 0, 0]


def test_labs_carried_forward_twenty_four_hours() -> None:
    # WBC 15 at hour 0 with HR 100 all along: 2 criteria through hour 23, 1 from hour 24
    column = [15.0] + [NAN] * 29
    g = grid(30, wbc=column, hr=[100] * 30)
    assert sirs(g).tolist() == [2] * 24 + [1] * 6


def test_carry_forward_keeps_latest_value() -> None:
    column = np.array([1, NAN, 3, NAN, NAN, NAN, NAN])
    assert np.array_equal(carry_forward(column, 2), [1, 1, 3, 3, NAN, NAN, NAN], equal_nan=True)


def test_all_nan_scores_zero() -> None:
    g = grid(5)
    for name, (score, _threshold) in BASELINES.items():
        assert score(g).tolist() == [0] * 5, name
        assert not alert(name, g).any()


def test_empty_grid() -> None:
    g = grid(0)
    for score, _threshold in BASELINES.values():
        assert score(g).shape == (0,)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.data())
def test_no_future_leakage(hours: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    values = rng.uniform(0, 200, size=(hours, len(SIGNAL_COLUMNS)))
    values[rng.random(values.shape) < 0.6] = np.nan
    values[:, SIGNAL_COLUMNS["fio2"]] = rng.choice([0.21, 0.5, np.nan], size=hours)
    values[:, SIGNAL_COLUMNS["temp"]] = rng.uniform(34, 41, size=hours)
    k = data.draw(st.integers(0, hours - 1))
    changed = values.copy()
    changed[k:] = rng.uniform(0, 200, size=changed[k:].shape)
    for score, _threshold in BASELINES.values():
        before = score(HourlyGrid("s", START, values))
        after = score(HourlyGrid("s", START, changed))
        assert np.array_equal(before[:k], after[:k])


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_scores_are_integer_arrays(name: str) -> None:
    score, _threshold = BASELINES[name]
    g = grid(3, resp=[25, 25, 25], sbp=[85, 85, 85], hr=[120, 120, 120])
    result = score(g)
    assert result.dtype.kind == "i"
    assert result.shape == (3,)
    assert (result > 0).all()
