"""The PhysioNet/CinC Challenge 2019 normalized utility, from its published definition.

Reyna MA et al., "Early Prediction of Sepsis From Clinical Data: the PhysioNet/Computing in
Cardiology Challenge 2019", Crit Care Med 2020;48(2):210-217, and the challenge page
(physionet.org/content/challenge-2019). The definition, hour by hour for one stay:

- The data's SepsisLabel is already shifted: it turns 1 six hours before the clinical onset, so
  the onset is t_sepsis = (first row whose label is 1) + 6. A stay with no label 1 is not septic.
- A septic stay's hours up to t_sepsis + dt_late (3 h) are scored; later hours count nothing.
  A non-septic stay's hours are all scored.
- True positive (septic, predicted 1): rises linearly from 0 at t_sepsis + dt_early (-12 h) to
  max_u_tp (1) at t_sepsis + dt_optimal (-6 h), then falls linearly to 0 at t_sepsis + dt_late.
  Before t_sepsis - 12 the rising line is negative and is floored at u_fp (-0.05): a prediction
  that early is worth the same as a false alarm.
- False negative (septic, predicted 0): 0 up to t_sepsis - 6, then falls linearly to min_u_fn
  (-2) at t_sepsis + 3.
- False positive (not septic, predicted 1): u_fp (-0.05). True negative: u_tn (0).

Normalized utility over a set of stays = (U_model - U_inaction) / (U_optimal - U_inaction), each
U a sum over stays and hours; "inaction" predicts 0 everywhere and "optimal" predicts 1 exactly
in [t_sepsis - 12, t_sepsis + 3] (clipped to the stay) on septic stays, 0 elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UtilityParams:
    """The Challenge's constants (hours relative to onset, and utilities per hour)."""

    dt_early: float = -12
    dt_optimal: float = -6
    dt_late: float = 3
    max_u_tp: float = 1.0
    min_u_fn: float = -2.0
    u_fp: float = -0.05
    u_tn: float = 0.0


DEFAULT_PARAMS = UtilityParams()


def sepsis_onset(labels: np.ndarray, params: UtilityParams = DEFAULT_PARAMS) -> float | None:
    """t_sepsis as a row index: first label row minus dt_optimal; None for a non-septic stay."""
    positive = np.flatnonzero(np.asarray(labels) == 1)
    if positive.size == 0:
        return None
    return float(positive[0]) - params.dt_optimal


def hour_utilities(
    labels: np.ndarray, predictions: np.ndarray, params: UtilityParams = DEFAULT_PARAMS
) -> np.ndarray:
    """The utility of each hour's 0/1 prediction (0 for unscored hours past t_sepsis + dt_late)."""
    labels = np.asarray(labels)
    predicted = np.asarray(predictions).astype(bool)
    if labels.shape != predicted.shape or labels.ndim != 1:
        raise ValueError("labels and predictions must be 1-d arrays of the same length")
    onset = sepsis_onset(labels, params)
    if onset is None:
        return np.where(predicted, params.u_fp, params.u_tn).astype(float)
    relative = np.arange(labels.size, dtype=float) - onset  # hours since onset
    rising = params.max_u_tp * (relative - params.dt_early) / (params.dt_optimal - params.dt_early)
    falling = params.max_u_tp * (params.dt_late - relative) / (params.dt_late - params.dt_optimal)
    missed = params.min_u_fn * (relative - params.dt_optimal) / (params.dt_late - params.dt_optimal)
    early = relative <= params.dt_optimal
    true_positive = np.where(early, np.maximum(rising, params.u_fp), falling)
    false_negative = np.where(early, 0.0, missed)
    hourly = np.where(predicted, true_positive, false_negative)
    return np.where(relative <= params.dt_late, hourly, 0.0)


def stay_utility(
    labels: np.ndarray, predictions: np.ndarray, params: UtilityParams = DEFAULT_PARAMS
) -> float:
    """The un-normalized utility of one stay: the sum of its hours' utilities."""
    return float(hour_utilities(labels, predictions, params).sum())


def optimal_predictions(labels: np.ndarray, params: UtilityParams = DEFAULT_PARAMS) -> np.ndarray:
    """The Challenge's best predictions: 1 in [t_sepsis + dt_early, t_sepsis + dt_late]."""
    labels = np.asarray(labels)
    best = np.zeros(labels.size, dtype=int)
    onset = sepsis_onset(labels, params)
    if onset is not None:
        first = int(max(0.0, np.ceil(onset + params.dt_early)))
        last = int(min(labels.size - 1, np.floor(onset + params.dt_late)))
        best[first : last + 1] = 1
    return best


def best_and_inaction(
    labels: np.ndarray, params: UtilityParams = DEFAULT_PARAMS
) -> tuple[float, float]:
    """(U_optimal, U_inaction) for one stay."""
    labels = np.asarray(labels)
    best = stay_utility(labels, optimal_predictions(labels, params), params)
    inaction = stay_utility(labels, np.zeros(labels.size, dtype=int), params)
    return best, inaction


def normalized_utility(
    stays: Iterable[tuple[np.ndarray, np.ndarray]], params: UtilityParams = DEFAULT_PARAMS
) -> float:
    """(U_model - U_inaction) / (U_optimal - U_inaction) over stays of (labels, 0/1 predictions).

    NaN when no stay is septic: then optimal and inaction coincide and the ratio is undefined.
    """
    model = best = inaction = 0.0
    for labels, predictions in stays:
        model += stay_utility(labels, predictions, params)
        stay_best, stay_inaction = best_and_inaction(labels, params)
        best += stay_best
        inaction += stay_inaction
    if best == inaction:
        return float("nan")
    return (model - inaction) / (best - inaction)
