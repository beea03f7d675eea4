"""Evaluation metrics for hourly sepsis risk and alerts: discrimination, stay-level alerting,
lead time, alert burden, calibration, and a patient-level bootstrap.

Definitions (shared with the Challenge utility, `careloop.sepsis.utility`): a stay is septic
when its (6 h early-shifted) SepsisLabel is ever 1; its onset t_sepsis is the first label row
+ 6. The clinically useful alert window is [t_sepsis - 12, t_sepsis + 3] hours, the span the
Challenge rewards (or, for its last 9 hours, still credits over a miss).

- caught: a septic stay with an alert in some hour of that window.
- alerted stay: an alert in some scored hour: any hour of a non-septic stay; hours up to
  t_sepsis + 3 of a septic stay (later alerts come after the diagnosis and help no one).
- sensitivity = caught septic stays / septic stays.
- PPV = caught septic stays / alerted stays: a septic stay alerted only too early (before
  t_sepsis - 12) is an alerted stay that was not a useful true alert.
- lead time of a caught stay = t_sepsis - first alert hour in the window (12 down to -3 h).
- alert burden = alerts (rising edges of the hourly 0/1 alert series, a series starting on
  counting once) per 100 patient-days (all hours of all stays / 24).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

WINDOW_BEFORE_ONSET = 12  # hours: the Challenge's dt_early
WINDOW_AFTER_ONSET = 3  # hours: the Challenge's dt_late
LABEL_SHIFT = 6  # hours the data's SepsisLabel leads the onset by

Stay = tuple[np.ndarray, np.ndarray]  # (hourly 0/1 labels, hourly 0/1 alerts)


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve; NaN when `y` holds one class only."""
    y = np.asarray(y)
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def auprc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision); NaN with one class only."""
    y = np.asarray(y)
    if np.unique(y).size < 2:
        return float("nan")
    return float(average_precision_score(y, p))


def onset_row(labels: np.ndarray) -> int | None:
    """t_sepsis as a row index, or None for a non-septic stay."""
    positive = np.flatnonzero(np.asarray(labels) == 1)
    return None if positive.size == 0 else int(positive[0]) + LABEL_SHIFT


def _first_alert_in_window(labels: np.ndarray, alerts: np.ndarray) -> int | None:
    onset = onset_row(labels)
    if onset is None:
        return None
    fired = np.flatnonzero(np.asarray(alerts).astype(bool))
    in_window = fired[
        (fired >= onset - WINDOW_BEFORE_ONSET) & (fired <= onset + WINDOW_AFTER_ONSET)
    ]
    return int(in_window[0]) if in_window.size else None


def _alerted(labels: np.ndarray, alerts: np.ndarray) -> bool:
    fired = np.flatnonzero(np.asarray(alerts).astype(bool))
    onset = onset_row(labels)
    if onset is not None:
        fired = fired[fired <= onset + WINDOW_AFTER_ONSET]
    return bool(fired.size)


@dataclass(frozen=True)
class StayLevel:
    sensitivity: float  # caught septic stays / septic stays (NaN with none)
    ppv: float  # caught septic stays / alerted stays (NaN with none alerted)
    alerted_share: float  # alerted stays / stays
    septic_stays: int
    stays: int


def stay_level(stays: Sequence[Stay]) -> StayLevel:
    """Stay-level sensitivity, PPV and share of stays alerted (definitions in the module doc)."""
    septic = caught = alerted = 0
    for labels, alerts in stays:
        _check(labels, alerts)
        if onset_row(labels) is not None:
            septic += 1
            caught += _first_alert_in_window(labels, alerts) is not None
        alerted += _alerted(labels, alerts)
    return StayLevel(
        sensitivity=caught / septic if septic else float("nan"),
        ppv=caught / alerted if alerted else float("nan"),
        alerted_share=alerted / len(stays) if stays else float("nan"),
        septic_stays=septic,
        stays=len(stays),
    )


def lead_times_hours(stays: Sequence[Stay]) -> list[float]:
    """For each caught septic stay: t_sepsis - first alert hour in the window."""
    leads = []
    for labels, alerts in stays:
        _check(labels, alerts)
        first = _first_alert_in_window(labels, alerts)
        if first is not None:
            leads.append(float(onset_row(labels) - first))  # type: ignore[operator]
    return leads


def alerts_per_100_patient_days(stays: Sequence[Stay]) -> float:
    """Alert onsets (0 -> 1 edges, a stay starting alerted counts once) per 100 patient-days."""
    onsets = hours = 0
    for labels, alerts in stays:
        _check(labels, alerts)
        on = np.asarray(alerts).astype(int)
        onsets += int(np.sum(np.diff(on, prepend=0) == 1))
        hours += on.size
    if hours == 0:
        return float("nan")
    return onsets / (hours / 24) * 100


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    # equal-width bins on [0, 1]; p == 1 falls in the last bin
    return np.clip(np.floor(p * bins).astype(int), 0, bins - 1)


def reliability_curve(
    y: np.ndarray, p: np.ndarray, bins: int = 10
) -> list[tuple[float, float, int]]:
    """(mean predicted, observed frequency, count) for each non-empty equal-width bin."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    index = _bin_index(p, bins)
    curve = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        if count:
            curve.append((float(p[members].mean()), float(y[members].mean()), count))
    return curve


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Sum over bins of (bin share) x |observed frequency - mean predicted|; NaN when empty."""
    curve = reliability_curve(y, p, bins)
    total = sum(count for _, _, count in curve)
    if total == 0:
        return float("nan")
    return sum(count / total * abs(observed - mean) for mean, observed, count in curve)


def _check(labels: np.ndarray, alerts: np.ndarray) -> None:
    if np.shape(labels) != np.shape(alerts):
        raise ValueError("labels and alerts must have the same length")
