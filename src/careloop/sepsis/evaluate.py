"""Loading PhysioNet stays for the model, patient-grouped cross-validation, and the evaluation
of the model and the three baselines side by side, overall and by subgroup.

Every metric is computed on stays the model was not fitted on: cross-validation folds are whole
stays, and `evaluate` is meant for data the shipped model never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from careloop.sepsis.baselines import BASELINES
from careloop.sepsis.features import stay_features
from careloop.sepsis.grid import HourlyGrid, grid_from_timeline
from careloop.sepsis.metrics import (
    auprc,
    auroc,
    expected_calibration_error,
    lead_times_hours,
    reliability_curve,
    stay_level,
)
from careloop.sepsis.model import SepsisModel, StayData, train
from careloop.sepsis.policy import notifications
from careloop.sepsis.utility import normalized_utility
from careloop.sources.physionet import read_physionet

BASELINE_SNOOZE_HOURS = 6


@dataclass
class EvalStay:
    """A stay with what evaluation needs besides the features: subgroup and baseline scores."""

    data: StayData
    sex: str
    age_band: str
    unit: str
    baseline_scores: dict[str, np.ndarray]


@dataclass
class LoadSummary:
    stays_read: int = 0
    stays_scored: int = 0
    hours_scored: int = 0
    unscorable: dict[str, int] = field(default_factory=dict)  # problem kind -> stays


def age_band(age: float | None) -> str:
    if age is None:
        return "unknown"
    for upper, band in ((45, "18-44"), (65, "45-64"), (80, "65-79")):
        if age < upper:
            return band
    return "80+"


def load_stays(
    path: Path,
    *,
    limit: int | None = None,
    keep_grids: bool = False,
    keep: Callable[[str], bool] | None = None,
) -> tuple[list[EvalStay], LoadSummary]:
    """Read PhysioNet stays through the reader and the timeline, skipping (and counting) stays
    flagged invalid or insufficient: they are never scored as if they were fine. `keep`, when
    given, picks the stays wanted by id (the rest are passed over before any work)."""
    summary = LoadSummary()
    stays: list[EvalStay] = []
    for stay in read_physionet(path, limit=limit):
        if keep is not None and not keep(stay.stay_id):
            continue
        summary.stays_read += 1
        if not stay.scorable:
            for kind in {p.kind for p in stay.problems if p.kind in ("invalid", "insufficient")}:
                summary.unscorable[kind] = summary.unscorable.get(kind, 0) + 1
            continue
        grid = grid_from_timeline(
            stay.timeline, stay.start, stay.hours, stay_id=stay.stay_id, unit=stay.unit
        )
        stays.append(eval_stay(grid, stay.labels, keep_grids))
        summary.stays_scored += 1
        summary.hours_scored += grid.hours
    return stays, summary


def eval_stay(grid: HourlyGrid, labels: np.ndarray | None, keep_grid: bool) -> EvalStay:
    scores = {name: score(grid) for name, (score, _threshold) in BASELINES.items()}
    return EvalStay(
        data=StayData(grid.stay_id, stay_features(grid), labels, grid if keep_grid else None),
        sex=grid.sex or "unknown",
        age_band=age_band(grid.age),
        unit=grid.unit or "unknown",
        baseline_scores=scores,
    )


@dataclass
class Scored:
    """One scorer's output on a set of stays: ranking scores, alert states, notifications."""

    labels: list[np.ndarray]
    scores: list[np.ndarray]
    states: list[np.ndarray]
    sent: list[np.ndarray]
    calibrated: bool


def score_model(model: SepsisModel, stays: Sequence[EvalStay]) -> Scored:
    probs = [model.probabilities(s.data.features) for s in stays]
    return Scored(
        labels=[s.data.labels for s in stays],  # type: ignore[misc]
        scores=probs,
        states=[model.policy.states(p) for p in probs],
        sent=[model.policy.notifications(p) for p in probs],
        calibrated=True,
    )


def score_baseline(name: str, stays: Sequence[EvalStay]) -> Scored:
    threshold = BASELINES[name][1]
    scores = [s.baseline_scores[name].astype(np.float64) for s in stays]
    states = [(score >= threshold).astype(np.int8) for score in scores]
    return Scored(
        labels=[s.data.labels for s in stays],  # type: ignore[misc]
        scores=scores,
        states=states,
        sent=[notifications(state, BASELINE_SNOOZE_HOURS) for state in states],
        calibrated=False,
    )


def metrics_of(scored: Scored) -> dict[str, float | int | None]:
    y = np.concatenate(scored.labels)
    p = np.concatenate(scored.scores)
    pairs = list(zip(scored.labels, scored.states, strict=True))
    level = stay_level(pairs)
    leads = lead_times_hours(pairs)
    hours = int(y.size)
    sent = int(sum(int(s.sum()) for s in scored.sent))
    result: dict[str, float | int | None] = {
        "stays": len(scored.labels),
        "septic_stays": int(sum(int(labels.any()) for labels in scored.labels)),
        "patient_hours": hours,
        "normalized_utility": _finite(normalized_utility(pairs)),
        "auroc": _finite(auroc(y, p)),
        "auprc": _finite(auprc(y, p)),
        "sensitivity": _finite(level.sensitivity),
        "ppv": _finite(level.ppv),
        "share_of_stays_alerted": _finite(level.alerted_share),
        "median_lead_time_hours": float(np.median(leads)) if leads else None,
        "alerts_per_100_patient_days": 100 * sent / (hours / 24) if hours else None,
    }
    if scored.calibrated:
        result["ece"] = _finite(expected_calibration_error(y, p))
    return result


def _finite(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def evaluate_all(
    stays: Sequence[EvalStay], model_scores: Scored | None
) -> dict[str, dict[str, object]]:
    """Metrics for the model (if given) and each baseline, overall and by subgroup."""
    scorers: dict[str, Callable[[Sequence[int]], Scored]] = {}
    if model_scores is not None:
        scorers["model"] = lambda idx: _subset(model_scores, idx)
    for name in BASELINES:
        full = score_baseline(name, stays)
        scorers[name] = lambda idx, full=full: _subset(full, idx)
    groups = subgroups(stays)
    report: dict[str, dict[str, object]] = {}
    for name, pick in scorers.items():
        everything = list(range(len(stays)))
        entry: dict[str, object] = {"overall": metrics_of(pick(everything))}
        entry["subgroups"] = {
            f"{kind}={value}": metrics_of(pick(indices)) for (kind, value), indices in groups
        }
        report[name] = entry
    if model_scores is not None:
        y = np.concatenate(model_scores.labels)
        p = np.concatenate(model_scores.scores)
        report["model"]["reliability"] = reliability_curve(y, p)
    return report


def subgroups(stays: Sequence[EvalStay]) -> list[tuple[tuple[str, str], list[int]]]:
    found: dict[tuple[str, str], list[int]] = {}
    for index, stay in enumerate(stays):
        for kind, value in (("sex", stay.sex), ("age", stay.age_band), ("unit", stay.unit)):
            found.setdefault((kind, value), []).append(index)
    return sorted(found.items())


def _subset(scored: Scored, indices: Iterable[int]) -> Scored:
    chosen = list(indices)
    return Scored(
        [scored.labels[i] for i in chosen],
        [scored.scores[i] for i in chosen],
        [scored.states[i] for i in chosen],
        [scored.sent[i] for i in chosen],
        scored.calibrated,
    )


def fold_assignment(stays: Sequence[EvalStay], folds: int, seed: int) -> np.ndarray:
    """Each stay's fold, stratified on whether the stay is septic (whole stays, never rows)."""
    rng = np.random.default_rng(seed)
    septic = [i for i, s in enumerate(stays) if s.data.labels is not None and s.data.labels.any()]
    septic_set = set(septic)
    other = [i for i in range(len(stays)) if i not in septic_set]
    assignment = np.empty(len(stays), dtype=int)
    for group in (septic, other):
        order = rng.permutation(group)
        assignment[order] = np.arange(len(order)) % folds
    return assignment


def tune_hyperparameters(
    stays: Sequence[EvalStay],
    candidates: Sequence[dict[str, object]],
    *,
    folds: int = 3,
    seed: int = 11,
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """Choose LightGBM settings by patient-grouped cross-validation: the candidate with the best
    mean out-of-fold AUPRC (threshold-free, so it judges the ranking, not the policy)."""
    assignment = fold_assignment(stays, folds, seed)
    table: list[dict[str, object]] = []
    for candidate in candidates:
        scores = []
        for fold in range(folds):
            fit = [stays[i].data for i in range(len(stays)) if assignment[i] != fold]
            test = [stays[i] for i in range(len(stays)) if assignment[i] == fold]
            model, _facts = train(fit, seed=seed + fold, params=candidate)
            scores.append(metrics_of(score_model(model, test))["auprc"] or 0.0)
        table.append(
            {
                "params": candidate,
                "auprc_mean": float(np.mean(scores)),
                "auprc_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
            }
        )
    best = max(table, key=lambda row: row["auprc_mean"])  # type: ignore[arg-type, return-value]
    return dict(best["params"]), table  # type: ignore[call-overload]


def cross_validate(
    stays: Sequence[EvalStay],
    *,
    folds: int = 5,
    seed: int = 7,
    params: dict[str, object] | None = None,
) -> dict[str, object]:
    """Patient-grouped K-fold: each fold's stays are scored by a model trained (and calibrated,
    and its threshold chosen) on the other folds only; baselines are scored on the same fold."""
    assignment = fold_assignment(stays, folds, seed)
    per_fold: list[dict[str, object]] = []
    out_of_fold: list[Scored | None] = [None] * len(stays)
    for fold in range(folds):
        test = [i for i in range(len(stays)) if assignment[i] == fold]
        fit = [stays[i].data for i in range(len(stays)) if assignment[i] != fold]
        model, facts = train(fit, seed=seed + fold, params=params)
        test_stays = [stays[i] for i in test]
        scored = score_model(model, test_stays)
        for position, index in enumerate(test):
            out_of_fold[index] = _subset(scored, [position])
        scores = {"model": metrics_of(scored)}
        for name in BASELINES:
            scores[name] = metrics_of(score_baseline(name, test_stays))
        per_fold.append(
            {"fold": fold, "training": facts, "threshold": model.policy.threshold, **scores}
        )
    # Subgroups are small within one fold, so they are measured on the pooled out-of-fold
    # predictions: every stay scored by the one model that never saw it.
    pooled = _concatenate([scored for scored in out_of_fold if scored is not None])
    return {
        "folds": per_fold,
        "summary": summarize_folds(per_fold),
        "out_of_fold": evaluate_all(stays, pooled),
    }


def _concatenate(parts: Sequence[Scored]) -> Scored:
    return Scored(
        [y for part in parts for y in part.labels],
        [p for part in parts for p in part.scores],
        [s for part in parts for s in part.states],
        [n for part in parts for n in part.sent],
        calibrated=True,
    )


def summarize_folds(per_fold: Sequence[dict[str, object]]) -> dict[str, dict[str, object]]:
    """Mean and standard deviation over folds of every metric, per scorer."""
    summary: dict[str, dict[str, object]] = {}
    for scorer in ["model", *BASELINES]:
        metrics = [fold[scorer] for fold in per_fold]
        keys = [k for k, v in metrics[0].items() if isinstance(v, float | int)]  # type: ignore[union-attr]
        summary[scorer] = {}
        for key in keys:
            values = [m[key] for m in metrics if m.get(key) is not None]  # type: ignore[union-attr]
            if values:
                summary[scorer][key] = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                }
    return summary
