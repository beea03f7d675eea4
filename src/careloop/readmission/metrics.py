"""Figures a readmission evaluation reports, with intervals from a bootstrap over patients
(vectorized: every resample is a vector of per-row weights, so thousands of rows stay fast)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from careloop.stats import wilson


def auroc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    if labels.size == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, probs))


def auprc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    if labels.size == 0 or labels.max() == 0:
        return None
    return float(average_precision_score(labels, probs))


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Row-weighted mean |observed - predicted| over `bins` equal-width probability bins."""
    index = np.minimum((probs * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(index):
        in_bin = index == b
        total += in_bin.sum() * abs(labels[in_bin].mean() - probs[in_bin].mean())
    return float(total / max(labels.size, 1))


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    index = np.minimum((probs * bins).astype(int), bins - 1)
    return [
        {
            "predicted": float(probs[index == b].mean()),
            "observed": float(labels[index == b].mean()),
            "rows": int((index == b).sum()),
        }
        for b in np.unique(index)
    ]


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of each row of `weights` (resamples x rows), ties counting one half."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    positive = labels[order].astype(bool)
    w = weights[:, order]
    pos = np.add.reduceat(np.where(positive, w, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(positive, 0.0, w), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def patient_bootstrap_auroc(
    labels: np.ndarray,
    probs: np.ndarray,
    patient_ids: np.ndarray,
    *,
    resamples: int = 500,
    seed: int = 7,
) -> tuple[float | None, float | None]:
    """95% percentile interval of AUROC, resampling patients with replacement."""
    if auroc(labels, probs) is None:
        return None, None
    _, patient_index = np.unique(patient_ids, return_inverse=True)
    patients = int(patient_index.max()) + 1
    rng = np.random.default_rng(seed)
    values: list[np.ndarray] = []
    for start in range(0, resamples, 50):  # 50 resamples at a time bounds memory
        batch = min(50, resamples - start)
        draws = rng.integers(0, patients, size=(batch, patients))
        counts = np.stack([np.bincount(row, minlength=patients) for row in draws])
        values.append(weighted_auroc(labels, probs, counts[:, patient_index].astype(float)))
    finite = np.concatenate(values)
    finite = finite[np.isfinite(finite)]
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def operating_point(labels: np.ndarray, alerts: np.ndarray) -> dict[str, object]:
    """Sensitivity, PPV and alert rate of the alerts, each with a Wilson interval."""
    events = int(labels.sum())
    flagged = int(alerts.sum())
    caught = int((labels.astype(bool) & alerts.astype(bool)).sum())
    sensitivity = caught / events if events else None
    ppv = caught / flagged if flagged else None
    alert_rate = flagged / labels.size if labels.size else None
    return {
        "sensitivity": sensitivity,
        "sensitivity_ci": list(wilson(sensitivity, events)) if sensitivity is not None else None,
        "ppv": ppv,
        "ppv_ci": list(wilson(ppv, flagged)) if ppv is not None else None,
        "alert_rate": alert_rate,
        "alerts": flagged,
    }


def score_summary(
    labels: np.ndarray,
    probs: np.ndarray,
    alerts: np.ndarray,
    patient_ids: np.ndarray,
    *,
    resamples: int = 500,
) -> dict[str, object]:
    """Every figure the report shows for one scorer on one set of rows."""
    low, high = patient_bootstrap_auroc(labels, probs, patient_ids, resamples=resamples)
    return {
        "rows": int(labels.size),
        "patients": int(np.unique(patient_ids).size),
        "events": int(labels.sum()),
        "auroc": auroc(labels, probs),
        "auroc_ci": [low, high] if low is not None else None,
        "auprc": auprc(labels, probs),
        "brier": float(brier_score_loss(labels, probs)) if labels.size else None,
        "ece": expected_calibration_error(labels, probs),
        "calibration_in_large": float(labels.mean() - probs.mean()) if labels.size else None,
        "operating_point": operating_point(labels, alerts),
        "reliability": reliability(labels, probs),
    }


def subgroup_auroc(
    labels: np.ndarray, probs: np.ndarray, groups: dict[str, np.ndarray]
) -> dict[str, list[dict[str, object]]]:
    """AUROC per group of each attribute, with rows and events (no interval: a quick look; the
    fairness tables give the judged figures)."""
    table: dict[str, list[dict[str, object]]] = {}
    for attribute, values in groups.items():
        rows = []
        for group in sorted(set(values.tolist())):
            mask = values == group
            rows.append(
                {
                    "group": group,
                    "rows": int(mask.sum()),
                    "events": int(labels[mask].sum()),
                    "auroc": auroc(labels[mask], probs[mask]),
                }
            )
        table[attribute] = rows
    return table
