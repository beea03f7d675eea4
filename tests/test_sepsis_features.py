"""Per-hour sepsis features: hand-checked values, and no hour may see the hours after it."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.sepsis.features import FEATURE_NAMES, describe_feature, stay_features
from careloop.sepsis.grid import SIGNAL_COLUMNS, HourlyGrid
from careloop.sepsis.signals import SIGNALS

NAN = np.nan
START = datetime(2100, 1, 1, tzinfo=UTC)


def make_grid(hours: int, columns: dict[str, list[float]], **context: object) -> HourlyGrid:
    values = np.full((hours, len(SIGNALS)), np.nan)
    for name, column in columns.items():
        values[: len(column), SIGNAL_COLUMNS[name]] = column
    return HourlyGrid(stay_id="s", start=START, values=values, **context)  # type: ignore[arg-type]


def feature(grid: HourlyGrid, name: str) -> np.ndarray:
    return stay_features(grid)[:, FEATURE_NAMES.index(name)].astype(float)


def test_names_are_unique_and_match_the_columns() -> None:
    grid = make_grid(3, {"hr": [80, 81, 82]})
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert stay_features(grid).shape == (3, len(FEATURE_NAMES))
    assert stay_features(grid).dtype == np.float32


def test_every_name_is_described() -> None:
    for name in FEATURE_NAMES:
        assert describe_feature(name).display
    info = describe_feature("resp__dev_baseline")
    assert (info.signal, info.kind) == ("resp", "deviation from baseline")
    assert describe_feature("hr__std_12h").window_hours == 12
    with pytest.raises(KeyError):
        describe_feature("hr__nonsense")


def test_last_value_is_carried_forward_without_limit() -> None:
    grid = make_grid(30, {"lactate": [NAN, 2.0, NAN, 4.5]})
    np.testing.assert_array_equal(feature(grid, "lactate__last")[:5], [NAN, 2.0, 2.0, 4.5, 4.5])
    assert feature(grid, "lactate__last")[29] == 4.5
    np.testing.assert_array_equal(feature(grid, "lactate__hours_since")[:5], [NAN, 0, 1, 0, 1])
    assert feature(grid, "lactate__hours_since")[29] == 26
    np.testing.assert_array_equal(feature(grid, "lactate__count")[:5], [0, 1, 1, 2, 2])
    np.testing.assert_array_equal(feature(grid, "lactate__missing")[:5], [1, 0, 1, 0, 1])


def test_recent_count_forgets_old_measurements() -> None:
    grid = make_grid(30, {"hr": [70.0] * 3})
    counts = feature(grid, "hr__count_24h")
    assert counts[2] == 3 and counts[23] == 3
    assert counts[24] == 2 and counts[26] == 0


def test_rolling_statistics_use_observed_values_in_the_window() -> None:
    hr = [100, NAN, 90, NAN, NAN, NAN, NAN, 80, 60]
    grid = make_grid(9, {"hr": hr})
    # hour 6 looks at rows 1..6: only 90; hour 8 looks at rows 3..8: 80 and 60
    np.testing.assert_allclose(feature(grid, "hr__mean_6h")[[0, 2, 6, 8]], [100, 95, 90, 70])
    np.testing.assert_array_equal(feature(grid, "hr__min_6h")[[2, 8]], [90, 60])
    np.testing.assert_array_equal(feature(grid, "hr__max_6h")[[2, 8]], [100, 80])
    std = feature(grid, "hr__std_6h")
    assert np.isnan(std[0]) and np.isnan(std[6])  # fewer than two values
    np.testing.assert_allclose(std[[2, 8]], [5.0, 10.0], rtol=1e-5)
    np.testing.assert_allclose(feature(grid, "hr__mean_12h")[8], np.mean([100, 90, 80, 60]))
    # nothing measured in the last 6 h: undefined, not zero
    assert np.isnan(feature(make_grid(8, {"hr": [70]}), "hr__mean_6h")[7])


def test_slope_is_least_squares_over_the_last_six_hours() -> None:
    grid = make_grid(10, {"resp": [NAN, 12, NAN, 16, 18, NAN, NAN, NAN, NAN, NAN]})
    slope = feature(grid, "resp__slope_6h")
    assert np.isnan(slope[1])  # one point
    np.testing.assert_allclose(slope[3], 2.0, rtol=1e-6)
    np.testing.assert_allclose(slope[4], 2.0, rtol=1e-6)  # (1,12),(3,16),(4,18) lie on a line
    np.testing.assert_allclose(slope[8], 2.0, rtol=1e-6)  # rows 3..8 still hold two points
    assert np.isnan(slope[9])  # only row 4 left in rows 4..9
    # a non-collinear set: points (0,10),(1,14),(2,12) -> slope 1
    bent = make_grid(3, {"resp": [10, 14, 12]})
    np.testing.assert_allclose(feature(bent, "resp__slope_6h")[2], 1.0, rtol=1e-6)


def test_delta_compares_with_the_value_six_hours_earlier() -> None:
    grid = make_grid(9, {"temp": [37.0, NAN, 37.5, NAN, NAN, NAN, NAN, NAN, 39.0]})
    delta = feature(grid, "temp__delta_6h")
    assert np.all(np.isnan(delta[:6]))
    # 6 and 7 compare 37.5 with the 37.0 carried at hours 0 and 1; 8 compares 39.0 with 37.5
    np.testing.assert_allclose(delta[[6, 7, 8]], [0.5, 0.5, 1.5], atol=1e-5)


def test_baseline_is_the_median_of_the_first_six_hours() -> None:
    hr = [80, 90, NAN, 100, 70, 85, 120, 200]
    grid = make_grid(8, {"hr": hr})
    baseline = feature(grid, "hr__baseline")
    np.testing.assert_allclose(baseline[[0, 1, 2, 3]], [80, 85, 85, 90])
    np.testing.assert_allclose(baseline[5:], 85)  # fixed once the first six hours are over
    np.testing.assert_allclose(feature(grid, "hr__dev_baseline")[6], 35)
    # MAD of {80,90,100,70,85} around 85 is 5 -> robust SD 7.413
    np.testing.assert_allclose(feature(grid, "hr__dev_baseline_z")[6], 35 / (1.4826 * 5), 1e-5)


def test_baseline_spread_has_a_floor() -> None:
    grid = make_grid(8, {"hr": [80, 80, 80, 80, 80, 80, 95]})
    np.testing.assert_allclose(feature(grid, "hr__dev_baseline_z")[6], 15 / 5.0)  # 5/min floor


def test_composites_use_the_last_values() -> None:
    grid = make_grid(
        2,
        {
            "hr": [120, NAN],
            "sbp": [100, 80],
            "dbp": [60, NAN],
            "spo2": [94, NAN],
            "fio2": [NAN, 0.5],
            "bun": [40, NAN],
            "creatinine": [2.0, NAN],
        },
    )
    np.testing.assert_allclose(feature(grid, "shock_index"), [1.2, 1.5])
    np.testing.assert_allclose(feature(grid, "pulse_pressure"), [40, 20])
    np.testing.assert_allclose(feature(grid, "spo2_fio2"), [NAN, 188])
    np.testing.assert_allclose(feature(grid, "bun_creatinine"), [20, 20])


FOUR_STEPS = [0, 1, 1, 2, 2, 3, 3, 4]


@pytest.mark.parametrize(
    ("signal", "name", "values", "points"),
    [
        ("platelets", "sofa_coag", [150, 149.9, 100, 99, 50, 49, 20, 19.9], FOUR_STEPS),
        ("bili_total", "sofa_liver", [1.19, 1.2, 1.99, 2.0, 5.9, 6.0, 11.9, 12.0], FOUR_STEPS),
        ("creatinine", "sofa_renal", [1.1, 1.2, 1.9, 2.0, 3.4, 3.5, 4.9, 5.0], FOUR_STEPS),
        ("map", "sofa_cardio", [70, 69.9, 120], [0, 1, 0]),
    ],
)
def test_sofa_points_at_the_cut_offs(
    signal: str, name: str, values: list[float], points: list[float]
) -> None:
    grid = make_grid(len(values), {signal: values})
    np.testing.assert_array_equal(feature(grid, name), points)


def test_sofa_respiratory_proxy_and_total() -> None:
    # SpO2/FiO2: 400 -> 0 points; 396/1.0 = 396 -> 1; 94/0.4 = 235 -> 2; 92/1.0 = 92 -> 4
    grid = make_grid(
        5,
        {"spo2": [NAN, 100, 99, 94, 92], "fio2": [NAN, 0.25, 0.25, 0.4, 1.0], "map": [65]},
    )
    np.testing.assert_array_equal(feature(grid, "sofa_resp"), [NAN, 0, 1, 2, 4])
    np.testing.assert_array_equal(feature(grid, "sofa_partial"), [1, 1, 2, 3, 5])
    np.testing.assert_array_equal(feature(grid, "sofa_partial__rise_24h"), [0, 0, 1, 2, 4])
    assert np.isnan(feature(make_grid(2, {}), "sofa_partial")).all()


def test_news2_points_come_with_their_look_back() -> None:
    grid = make_grid(6, {"resp": [25], "hr": [NAN, 135], "fio2": [0.4]})
    np.testing.assert_array_equal(feature(grid, "news2_respiration"), [3, 3, 3, 3, 0, 0])
    np.testing.assert_array_equal(feature(grid, "news2_pulse"), [0, 3, 3, 3, 3, 0])
    np.testing.assert_array_equal(feature(grid, "news2_oxygen"), [2] * 6)
    np.testing.assert_array_equal(feature(grid, "news2_total"), [5, 8, 8, 8, 5, 2])
    assert describe_feature("news2_pulse").signal == "hr"


def test_lab_previous_value_and_change() -> None:
    grid = make_grid(6, {"wbc": [NAN, 8.0, NAN, 14.0, NAN, 11.0]})
    np.testing.assert_array_equal(feature(grid, "wbc__prev"), [NAN, NAN, NAN, 8, 8, 14])
    np.testing.assert_allclose(feature(grid, "wbc__change"), [NAN, NAN, NAN, 6, 6, -3])


def test_context_features() -> None:
    grid = make_grid(3, {}, age=71.0, sex="male", unit="SICU")
    np.testing.assert_array_equal(feature(grid, "age"), [71, 71, 71])
    np.testing.assert_array_equal(feature(grid, "sex_male"), [1, 1, 1])
    np.testing.assert_array_equal(feature(grid, "unit_micu"), [0, 0, 0])
    np.testing.assert_array_equal(feature(grid, "unit_sicu"), [1, 1, 1])
    np.testing.assert_array_equal(feature(grid, "hour"), [0, 1, 2])
    unknown = make_grid(1, {}, sex="unknown")
    assert np.isnan(feature(unknown, "sex_male")[0]) and np.isnan(feature(unknown, "age")[0])
    assert feature(make_grid(1, {}, sex="female"), "sex_male")[0] == 0


def test_empty_and_all_missing_grids() -> None:
    assert stay_features(make_grid(0, {})).shape == (0, len(FEATURE_NAMES))
    matrix = stay_features(make_grid(40, {}))
    assert matrix.shape == (40, len(FEATURE_NAMES))
    assert not np.isinf(matrix).any()
    assert np.isnan(matrix[:, FEATURE_NAMES.index("hr__last")]).all()
    np.testing.assert_array_equal(matrix[:, FEATURE_NAMES.index("hr__missing")], 1)


@st.composite
def grids_and_cut(draw: st.DrawFn) -> tuple[HourlyGrid, int]:
    hours = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.floats(0.0, 1.0))
    rng = np.random.default_rng(seed)
    low = np.array([signal.low for signal in SIGNALS])
    high = np.array([signal.high for signal in SIGNALS])
    values = low + rng.random((hours, len(SIGNALS))) * (high - low)
    values[rng.random(values.shape) > density] = np.nan
    grid = HourlyGrid(stay_id="s", start=START, values=values, age=60.0, sex="female")
    return grid, draw(st.integers(0, hours - 1))


@settings(max_examples=60, deadline=None)
@given(grids_and_cut())
def test_no_hour_sees_the_future(case: tuple[HourlyGrid, int]) -> None:
    grid, k = case
    truncated = HourlyGrid(
        stay_id="s", start=START, values=grid.values[: k + 1].copy(), age=60.0, sex="female"
    )
    np.testing.assert_array_equal(stay_features(grid)[: k + 1], stay_features(truncated))


def test_future_changes_do_not_move_the_past() -> None:
    grid = make_grid(30, {"hr": [80.0 + i for i in range(30)], "lactate": [1.0] * 30})
    changed = grid.values.copy()
    changed[10:] = 1.0  # wildly different future
    future = HourlyGrid(stay_id="s", start=START, values=changed)
    np.testing.assert_array_equal(stay_features(grid)[:10], stay_features(future)[:10])
