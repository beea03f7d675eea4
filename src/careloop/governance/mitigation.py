"""Fairness mitigations a model's owner may choose, each with its trade-off shown, never applied
silently: nothing in careloop applies either of them to a decision by itself.

Two kinds, at two moments:

- **Reweighing** (`reweighing_weights`, at training time; Kamiran and Calders). Rows are weighted
  so that group membership and outcome are independent in the weighted training data; no row's
  data change and the model never sees the group at scoring time. It helps when a group's
  outcome is under-represented in training; it cannot fix a group whose features carry less
  signal, and it may cost some overall discrimination or calibration, so the model must be
  retrained and judged again (`fairness_report`, the release gate).
- **Per-group thresholds** (`per_group_thresholds`, `mitigation_tradeoff`, post-processing). One
  alert threshold per group, chosen so that each group's true-positive rate (or false-positive
  rate) matches the whole set's at the current operating point (equal opportunity). It moves
  alerts between groups: the groups whose threshold falls get more alerts, false ones too, and
  overall PPV and alert burden change; `mitigation_tradeoff` shows all of it, before and after.
  Thresholds read outcomes, so they must be chosen on a tuning set and judged on another
  (`mitigation_tradeoff(..., thresholds=...)`); judged on the rows they were fitted on, they
  look better than they are, and the table says so.

Legal and ethical caveat: a group-specific threshold uses the protected attribute (sex, age,
race...) at decision time, so two patients with the same risk may be treated differently
because of it. That is disparate treatment, unlawful or restricted in some jurisdictions and
settings, and always a decision for the hospital's AI committee and legal counsel, documented
with its reason, never a default. Reweighing uses the attribute in training only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from careloop.governance.fairness import Tolerances, normalize_groups
from careloop.governance.scored import ScoredSet


def reweighing_weights(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Training weights that make group membership and outcome independent (Kamiran and Calders'
    reweighing): a row of group g with label y weighs P(g) P(y) / P(g, y). Groups whose outcome
    rate is under-represented count for more, without changing any row's data."""
    groups = np.asarray(groups).astype(str)
    labels = np.asarray(labels).astype(int)
    if groups.shape != labels.shape:
        raise ValueError(f"{groups.size} groups for {labels.size} labels")
    weights = np.ones(labels.size, dtype=np.float64)
    total = labels.size
    if total == 0:
        return weights
    for group in np.unique(groups):
        in_group = groups == group
        for label in (0, 1):
            cell = in_group & (labels == label)
            observed = cell.sum() / total
            if observed > 0:
                expected = in_group.mean() * (labels == label).mean()
                weights[cell] = expected / observed
    return weights


# --------------------------------------------------------------------------------------------
# Per-group thresholds (post-processing)
# --------------------------------------------------------------------------------------------

TARGETS = ("tpr", "fpr")


@dataclass(frozen=True)
class GroupThreshold:
    group: str
    threshold: float | None  # None: the group keeps the model's own alerts
    note: str | None = None


@dataclass(frozen=True)
class RateChange:
    """One group's (or the whole set's) rates at the operating point, before and after."""

    group: str
    patients: int
    threshold: float | None
    tpr_before: float | None
    tpr_after: float | None
    fpr_before: float | None
    fpr_after: float | None
    alert_rate_before: float | None
    alert_rate_after: float | None
    ppv_before: float | None = None
    ppv_after: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class MitigationTradeoff:
    model: str
    version: str
    unit: str
    attribute: str
    target: str  # "tpr" or "fpr": the rate each group was brought to
    target_value: float  # the overall rate at the model's operating point
    chosen_on_same_data: bool  # True: thresholds were fitted on the rows they are judged on
    overall: RateChange
    groups: tuple[RateChange, ...]


def _rate(hits: np.ndarray, among: np.ndarray) -> float | None:
    return float(hits[among].mean()) if among.any() else None


def _groups_of(scored: ScoredSet, attribute: str) -> np.ndarray:
    if attribute not in scored.groups:
        known = ", ".join(sorted(scored.groups)) or "none"
        raise ValueError(f"no attribute {attribute!r} in the predictions (known: {known})")
    return normalize_groups(scored.groups[attribute])


def _require_labels(scored: ScoredSet) -> np.ndarray:
    if scored.labels is None:
        raise ValueError("per-group thresholds need outcomes, and these predictions have none")
    return np.asarray(scored.labels).astype(bool)


def _closest_threshold(probs: np.ndarray, target: float) -> float:
    """The cut whose share of `probs` at or above it is closest to `target` (on a tie, the
    higher cut: fewer alerts)."""
    ordered = np.sort(probs)
    candidates = np.unique(ordered)
    shares = (ordered.size - np.searchsorted(ordered, candidates, side="left")) / ordered.size
    gaps = np.abs(shares - target)
    best = np.flatnonzero(gaps == gaps.min())[-1]
    return float(candidates[best])


def per_group_thresholds(
    scored: ScoredSet,
    attribute: str,
    *,
    target: str = "tpr",
    tolerances: Tolerances | None = None,
) -> list[GroupThreshold]:
    """A probability threshold per group of `attribute` bringing each judgeable group's TPR
    (`target="tpr"`, equal opportunity) or FPR (`target="fpr"`) to the whole set's rate at
    the model's current operating point (`scored.alerts`).

    This reads the outcomes of `scored`: choose thresholds on a tuning set and judge them with
    `mitigation_tradeoff(..., thresholds=...)` on another, or the gain is flattered. Groups too
    small to judge (see `Tolerances`) keep the model's own alerts."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    tolerances = tolerances or Tolerances()
    labels = _require_labels(scored)
    groups = _groups_of(scored, attribute)
    alerts = np.asarray(scored.alerts).astype(bool)
    probs = np.asarray(scored.probs, dtype=np.float64)
    matched = labels if target == "tpr" else ~labels
    goal = _rate(alerts, matched)
    if goal is None:
        raise ValueError(f"no {'positive' if target == 'tpr' else 'negative'} rows to match")
    patient_ids = np.asarray(scored.patient_ids).astype(str)
    chosen = []
    for group in sorted(np.unique(groups)):
        rows = groups == group
        patients = np.unique(patient_ids[rows]).size
        events = np.unique(patient_ids[rows & labels]).size
        if patients < tolerances.min_patients or events < tolerances.min_events:
            note = f"too small to judge: {patients} patients, {events} events; not adjusted"
            chosen.append(GroupThreshold(str(group), None, note))
            continue
        if not (rows & matched).any():
            chosen.append(GroupThreshold(str(group), None, f"no {target} rows; not adjusted"))
            continue
        chosen.append(GroupThreshold(str(group), _closest_threshold(probs[rows & matched], goal)))
    return chosen


def apply_thresholds(
    scored: ScoredSet, attribute: str, thresholds: Sequence[GroupThreshold]
) -> np.ndarray:
    """The alerts the thresholds would give: probability at or above the row's group cut; a
    group without a cut (or one not listed) keeps the model's own alerts. A plain cut, so for a
    model whose policy has memory (the sepsis hysteresis) it approximates what the policy would
    do with that threshold. Nothing in careloop calls this on live decisions."""
    groups = _groups_of(scored, attribute)
    after = np.asarray(scored.alerts).astype(bool).copy()
    probs = np.asarray(scored.probs, dtype=np.float64)
    for choice in thresholds:
        if choice.threshold is not None:
            rows = groups == choice.group
            after[rows] = probs[rows] >= choice.threshold
    return after


def _change(
    name: str,
    labels: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    patients: int,
    choice: GroupThreshold | None,
    with_ppv: bool,
) -> RateChange:
    positive_before = _rate(labels, before) if with_ppv else None
    positive_after = _rate(labels, after) if with_ppv else None
    return RateChange(
        group=name,
        patients=patients,
        threshold=None if choice is None else choice.threshold,
        tpr_before=_rate(before, labels),
        tpr_after=_rate(after, labels),
        fpr_before=_rate(before, ~labels),
        fpr_after=_rate(after, ~labels),
        alert_rate_before=float(before.mean()) if before.size else None,
        alert_rate_after=float(after.mean()) if after.size else None,
        ppv_before=positive_before,
        ppv_after=positive_after,
        note=None if choice is None else choice.note,
    )


def mitigation_tradeoff(
    scored: ScoredSet,
    attribute: str,
    *,
    thresholds: Sequence[GroupThreshold] | None = None,
    target: str = "tpr",
    tolerances: Tolerances | None = None,
) -> MitigationTradeoff:
    """Before and after per-group thresholds on `scored`: each group's TPR, FPR and alert rate,
    and the whole set's TPR, FPR, alert rate and PPV. With `thresholds` None they are chosen on
    `scored` itself, and the table says it is optimistic (`chosen_on_same_data`)."""
    labels = _require_labels(scored)
    same_data = thresholds is None
    if thresholds is None:
        thresholds = per_group_thresholds(scored, attribute, target=target, tolerances=tolerances)
    groups = _groups_of(scored, attribute)
    before = np.asarray(scored.alerts).astype(bool)
    after = apply_thresholds(scored, attribute, thresholds)
    patient_ids = np.asarray(scored.patient_ids).astype(str)
    by_group = {choice.group: choice for choice in thresholds}
    changes = []
    for group in sorted(np.unique(groups)):
        rows = groups == group
        changes.append(
            _change(
                str(group),
                labels[rows],
                before[rows],
                after[rows],
                int(np.unique(patient_ids[rows]).size),
                by_group.get(str(group)),
                with_ppv=True,
            )
        )
    overall = _change(
        "all", labels, before, after, int(np.unique(patient_ids).size), None, with_ppv=True
    )
    goal = overall.tpr_before if target == "tpr" else overall.fpr_before
    return MitigationTradeoff(
        model=scored.model,
        version=scored.version,
        unit=scored.unit,
        attribute=attribute,
        target=target,
        target_value=float(goal) if goal is not None else float("nan"),
        chosen_on_same_data=same_data,
        overall=overall,
        groups=tuple(changes),
    )


def _pair(before: float | None, after: float | None) -> str:
    if before is None and after is None:
        return "–"
    show = [("–" if value is None else f"{value:.3f}") for value in (before, after)]
    return f"{show[0]} → {show[1]}"


def tradeoff_markdown(tradeoff: MitigationTradeoff) -> str:
    """The before/after table a model's owner reads before deciding anything."""
    header = "| group | patients | threshold | TPR | FPR | alert rate | PPV | note |"
    lines = [
        f"Per-group thresholds on {tradeoff.attribute} for `{tradeoff.version}` (one row per "
        f"{tradeoff.unit}): each judgeable group's {tradeoff.target.upper()} brought to the "
        f"overall {tradeoff.target_value:.3f}. Before → after; not applied to any decision.",
        "",
        header,
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for change in (*tradeoff.groups, tradeoff.overall):
        threshold = "–" if change.threshold is None else f"{change.threshold:.4f}"
        name = "**all**" if change is tradeoff.overall else change.group
        cells = [
            name,
            f"{change.patients:,}",
            threshold if change is not tradeoff.overall else "",
            _pair(change.tpr_before, change.tpr_after),
            _pair(change.fpr_before, change.fpr_after),
            _pair(change.alert_rate_before, change.alert_rate_after),
            _pair(change.ppv_before, change.ppv_after),
            change.note or "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if tradeoff.chosen_on_same_data:
        lines += [
            "",
            "The thresholds were chosen on these same rows, so the 'after' figures are "
            "optimistic: choose them on a tuning set and judge them on another.",
        ]
    return "\n".join(lines) + "\n"


def split_patients(
    scored: ScoredSet, *, share: float = 0.5, seed: int = 7
) -> tuple[ScoredSet, ScoredSet]:
    """(tuning, judging): the rows of a random `share` of the patients, and the rest, so
    per-group thresholds can be chosen on one and judged on the other."""
    if not 0 < share < 1:
        raise ValueError("share must lie strictly between 0 and 1")
    patients, codes = np.unique(np.asarray(scored.patient_ids).astype(str), return_inverse=True)
    tuning_patients = np.random.default_rng(seed).random(patients.size) < share
    in_tuning = tuning_patients[codes]
    return scored.subset(in_tuning), scored.subset(~in_tuning)


def held_out_tradeoff(
    scored: ScoredSet,
    attribute: str,
    *,
    target: str = "tpr",
    tolerances: Tolerances | None = None,
    seed: int = 7,
) -> MitigationTradeoff:
    """Thresholds chosen on half of the patients, the trade-off judged on the other half."""
    tuning, judging = split_patients(scored, seed=seed)
    thresholds = per_group_thresholds(tuning, attribute, target=target, tolerances=tolerances)
    return mitigation_tradeoff(judging, attribute, thresholds=thresholds, target=target)
