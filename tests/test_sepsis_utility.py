"""The Challenge 2019 utility on hand-worked stays, and its properties on generated ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.sepsis.utility import (
    UtilityParams,
    best_and_inaction,
    hour_utilities,
    normalized_utility,
    optimal_predictions,
    sepsis_onset,
    stay_utility,
)

# A 20-hour septic stay whose label turns 1 at row 10: the label is shifted 6 h early, so the
# onset t_sepsis is row 16; the rewarding window [t-12, t+3] is rows 4..19 (the last row).
SEPTIC = np.array([0] * 10 + [1] * 10)
QUIET = np.zeros(20, dtype=int)


def predict(rows: range, hours: int = 20) -> np.ndarray:
    predictions = np.zeros(hours, dtype=int)
    predictions[list(rows)] = 1
    return predictions


def test_onset_is_first_label_row_plus_six() -> None:
    assert sepsis_onset(SEPTIC) == 16
    assert sepsis_onset(QUIET) is None


def test_non_septic_stay_scores_zero_when_quiet_and_minus_005_per_false_alarm() -> None:
    assert stay_utility(QUIET, QUIET) == 0.0
    assert stay_utility(QUIET, predict(range(7, 8))) == pytest.approx(-0.05)
    # three false alarms: 3 x -0.05
    assert stay_utility(QUIET, predict(range(0, 3))) == pytest.approx(-0.15)


def test_missed_septic_stay_pays_the_false_negative_ramp() -> None:
    # FN is 0 up to t-6 (row 10), then -2 * (hours past t-6) / 9 on rows 11..19:
    # -2/9 * (1 + 2 + ... + 9) = -2/9 * 45 = -10.
    assert stay_utility(SEPTIC, QUIET) == pytest.approx(-10.0)


def test_prediction_from_t_minus_6_onward_earns_the_maximum_at_t_minus_6() -> None:
    hourly = hour_utilities(SEPTIC, predict(range(10, 20)))
    assert hourly[10] == pytest.approx(1.0)  # t - 6: max_u_tp
    # rows 11..19 are t-5..t+3 on the falling line (3 - r)/9: 8/9 + 7/9 + ... + 0/9 = 36/9 = 4
    assert hourly[11] == pytest.approx(8 / 9)
    assert hourly[19] == pytest.approx(0.0)
    assert stay_utility(SEPTIC, predict(range(10, 20))) == pytest.approx(5.0)


def test_rising_reward_between_t_minus_12_and_t_minus_6() -> None:
    hourly = hour_utilities(SEPTIC, predict(range(4, 11)))
    # rows 4..10 are t-12..t-6: 0, 1/6, 2/6, ..., 6/6
    assert hourly[4:11] == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1])


def test_too_early_predictions_cost_like_false_alarms() -> None:
    # rows 0..3 are before t-12: each floored at u_fp = -0.05 (-0.2 in all),
    # and the stay is then missed: -10 from the false-negative ramp.
    assert stay_utility(SEPTIC, predict(range(0, 4))) == pytest.approx(-10.2)


def test_hours_after_t_plus_3_are_not_scored() -> None:
    # 25 hours, label from row 10: t_sepsis = 16, rows 20..24 are past t+3 = 19
    labels = np.array([0] * 10 + [1] * 15)
    late = predict(range(20, 25), hours=25)
    assert stay_utility(labels, late) == stay_utility(labels, np.zeros(25, dtype=int))


def test_challenge_documented_example() -> None:
    # labels 0,0,0,0,1,1 -> t_sepsis = 4 + 6 = 10; predictions on rows 2..5 are r = t-8..t-5:
    # rising (r + 12)/6: r=-8 -> 4/6, r=-7 -> 5/6, r=-6 -> 1; falling (3 - r)/9: r=-5 -> 8/9
    labels = np.array([0, 0, 0, 0, 1, 1])
    predictions = np.array([0, 0, 1, 1, 1, 1])
    assert stay_utility(labels, predictions) == pytest.approx(4 / 6 + 5 / 6 + 1 + 8 / 9)


def test_best_and_inaction_by_hand() -> None:
    # best: rising rows 4..10 sum to 21/6 = 3.5, falling rows 11..19 sum to 4 -> 7.5
    best, inaction = best_and_inaction(SEPTIC)
    assert best == pytest.approx(7.5)
    assert inaction == pytest.approx(-10.0)
    assert list(np.flatnonzero(optimal_predictions(SEPTIC))) == list(range(4, 20))
    assert best_and_inaction(QUIET) == (0.0, 0.0)


def test_window_clipped_when_sepsis_is_present_at_admission() -> None:
    # label 1 from row 0: t_sepsis = 6, window [-6, 9] clipped to rows 0..3 (t-6..t-3):
    # 1 + 8/9 + 7/9 + 6/9 = 10/3
    labels = np.ones(4, dtype=int)
    assert best_and_inaction(labels)[0] == pytest.approx(10 / 3)


def test_normalized_utility_of_optimal_is_one_and_of_inaction_zero() -> None:
    stays = [SEPTIC, QUIET, np.array([0] * 30 + [1] * 5)]
    assert normalized_utility((s, optimal_predictions(s)) for s in stays) == pytest.approx(1.0)
    assert normalized_utility((s, np.zeros_like(s)) for s in stays) == pytest.approx(0.0)


def test_normalized_utility_by_hand() -> None:
    # model: 5.0 on SEPTIC + one false alarm (-0.05) on QUIET = 4.95; inaction -10; best 7.5
    # (4.95 + 10) / (7.5 + 10) = 14.95 / 17.5
    stays = [(SEPTIC, predict(range(10, 20))), (QUIET, predict(range(3, 4)))]
    assert normalized_utility(stays) == pytest.approx(14.95 / 17.5)


def test_normalized_utility_without_septic_stays_is_nan() -> None:
    assert math.isnan(normalized_utility([(QUIET, QUIET)]))


def test_custom_params_change_the_false_alarm_cost() -> None:
    assert stay_utility(QUIET, predict(range(0, 2)), UtilityParams(u_fp=-0.1)) == pytest.approx(
        -0.2
    )


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        stay_utility(SEPTIC, np.zeros(5, dtype=int))


@st.composite
def stays(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    hours = draw(st.integers(1, 60))
    onset = draw(st.one_of(st.none(), st.integers(0, hours - 1)))
    labels = np.zeros(hours, dtype=int)
    if onset is not None:
        labels[onset:] = 1
    predictions = np.array(draw(st.lists(st.integers(0, 1), min_size=hours, max_size=hours)))
    return labels, predictions


@settings(max_examples=200, deadline=None)
@given(stays())
def test_optimal_is_at_least_any_prediction(stay: tuple[np.ndarray, np.ndarray]) -> None:
    labels, predictions = stay
    best, inaction = best_and_inaction(labels)
    assert best >= stay_utility(labels, predictions) - 1e-12
    assert best >= inaction


@settings(max_examples=200, deadline=None)
@given(stays(), st.data())
def test_utility_is_a_sum_over_hours(stay: tuple[np.ndarray, np.ndarray], data: st.DataObject):
    labels, predictions = stay
    hour = data.draw(st.integers(0, labels.size - 1))
    flipped = predictions.copy()
    flipped[hour] = 1 - flipped[hour]
    before, after = hour_utilities(labels, predictions), hour_utilities(labels, flipped)
    # flipping one hour changes only that hour's term, and the stay total by exactly that much
    others = np.arange(labels.size) != hour
    assert np.array_equal(before[others], after[others])
    assert stay_utility(labels, flipped) - stay_utility(labels, predictions) == pytest.approx(
        after[hour] - before[hour]
    )
