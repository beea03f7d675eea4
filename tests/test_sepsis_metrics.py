"""Evaluation metrics on small hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from careloop.sepsis.metrics import (
    alerts_per_100_patient_days,
    auprc,
    auroc,
    expected_calibration_error,
    lead_times_hours,
    reliability_curve,
    stay_level,
)
from careloop.stats import bootstrap_ci


def series(hours: int, ones: list[int] | range) -> np.ndarray:
    values = np.zeros(hours, dtype=int)
    values[list(ones)] = 1
    return values


def septic(hours: int, first_label: int) -> np.ndarray:
    return series(hours, range(first_label, hours))


def test_auroc_and_auprc_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    # positive-negative pairs ranked right: 0.35>0.1, 0.8>0.1, 0.8>0.4 (not 0.35>0.4): 3/4
    assert auroc(y, p) == pytest.approx(0.75)
    # ranked 0.8(+), 0.4(-), 0.35(+): AP = 0.5 x 1 + 0.5 x 2/3
    assert auprc(y, p) == pytest.approx(0.5 + 1 / 3)


def test_auroc_and_auprc_nan_with_one_class() -> None:
    assert math.isnan(auroc(np.zeros(3), np.array([0.1, 0.2, 0.3])))
    assert math.isnan(auprc(np.ones(3), np.array([0.1, 0.2, 0.3])))


# Stays of (labels, alerts). A septic stay whose label turns 1 at row r has t_sepsis = r + 6 and
# the alert window [r - 6, r + 9].
STAYS = [
    # A: label at 10 -> t_sepsis 16, window 4..19; alert at 8: caught, lead 16 - 8 = 8 h
    (septic(30, 10), series(30, [8])),
    # B: label at 20 -> window 14..29; alert at 2 only: too early -> alerted, not caught
    (septic(30, 20), series(30, [2])),
    # C: septic, never alerted
    (septic(30, 10), series(30, [])),
    # D: not septic, alerted at 5 and 6: a false alert
    (series(30, []), series(30, [5, 6])),
    # E: not septic, quiet
    (series(30, []), series(30, [])),
    # F: label at 10 -> t_sepsis + 3 = 19; alert at 25 only: too late -> neither alerted nor caught
    (septic(30, 10), series(30, [25])),
]


def test_stay_level_by_hand() -> None:
    result = stay_level(STAYS)
    assert result.septic_stays == 4  # A, B, C, F
    assert result.stays == 6
    assert result.sensitivity == pytest.approx(1 / 4)  # only A caught
    assert result.ppv == pytest.approx(1 / 3)  # alerted: A, B, D; useful: A
    assert result.alerted_share == pytest.approx(3 / 6)


def test_stay_level_window_edges() -> None:
    # label at 10: window rows 4..19; alerts at exactly 4 and exactly 19 both catch, 3 and 20 do not
    caught = [stay_level([(septic(30, 10), series(30, [row]))]).sensitivity for row in (3, 4, 19)]
    assert caught == [0.0, 1.0, 1.0]
    assert stay_level([(septic(30, 10), series(30, [20]))]).sensitivity == 0.0


def test_stay_level_empty_and_without_alerts() -> None:
    result = stay_level([(series(5, []), series(5, []))])
    assert math.isnan(result.sensitivity) and math.isnan(result.ppv)
    assert result.alerted_share == 0.0


def test_lead_times_by_hand() -> None:
    # A leads by 8 h; a stay septic from admission (label at 0 -> t_sepsis 6, window -6..9)
    # first alerted at 7 leads by 6 - 7 = -1 h (an alert after onset, still within 3 h)
    present_at_admission = (septic(12, 0), series(12, [7, 8]))
    assert lead_times_hours([*STAYS, present_at_admission]) == [8.0, -1.0]


def test_lead_time_uses_first_alert_inside_window() -> None:
    # label at 10: an alert at 2 (too early) is ignored; the first in the window is 6 -> 16 - 6
    assert lead_times_hours([(septic(30, 10), series(30, [2, 6, 12]))]) == [10.0]


def test_alerts_per_100_patient_days_by_hand() -> None:
    # 2 x 48 h = 4 patient-days; alert onsets: rows 0 and 4 of the first stay (row 1 continues
    # the first alert) -> 2 alerts / 4 days x 100 = 50
    stays = [(series(48, []), series(48, [0, 1, 4])), (series(48, []), series(48, []))]
    assert alerts_per_100_patient_days(stays) == pytest.approx(50.0)
    assert math.isnan(alerts_per_100_patient_days([]))


def test_reliability_curve_and_ece_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.15, 0.15, 0.95, 0.75])
    # bins [0.1, 0.2): 2 stays, mean 0.15, observed 0; [0.7, 0.8): 0.75 vs 1; [0.9, 1]: 0.95 vs 1
    curve = reliability_curve(y, p)
    assert [count for _, _, count in curve] == [2, 1, 1]
    assert [mean for mean, _, _ in curve] == pytest.approx([0.15, 0.75, 0.95])
    assert [observed for _, observed, _ in curve] == [0.0, 1.0, 1.0]
    # ECE = 2/4 x 0.15 + 1/4 x 0.25 + 1/4 x 0.05 = 0.075 + 0.0625 + 0.0125 = 0.15
    assert expected_calibration_error(y, p) == pytest.approx(0.15)


def test_ece_zero_when_calibrated_and_p_one_in_last_bin() -> None:
    y = np.array([1, 1, 0, 1])
    p = np.array([1.0, 1.0, 0.5, 0.5])
    assert reliability_curve(y, p) == [(0.5, 0.5, 2), (1.0, 1.0, 2)]
    assert expected_calibration_error(y, p) == pytest.approx(0.0)
    assert math.isnan(expected_calibration_error(np.array([]), np.array([])))


def test_bootstrap_ci_resamples_groups() -> None:
    groups = list(range(1, 21))

    def mean(sample: list[int]) -> float:
        return float(np.mean(sample))

    point, low, high = bootstrap_ci(mean, groups, n=200, seed=1)
    assert point == pytest.approx(10.5)
    assert low < point < high
    assert bootstrap_ci(mean, groups, n=200, seed=1) == (point, low, high)  # seeded
    assert bootstrap_ci(mean, [7, 7, 7], n=50) == (7.0, 7.0, 7.0)


def test_bootstrap_ci_skips_undefined_resamples() -> None:
    def always_nan(sample: list[int]) -> float:
        return float("nan")

    point, low, high = bootstrap_ci(always_nan, [1, 2], n=10)
    assert math.isnan(point) and math.isnan(low) and math.isnan(high)


def test_mismatched_lengths_refused() -> None:
    with pytest.raises(ValueError):
        stay_level([(series(5, []), series(4, []))])
