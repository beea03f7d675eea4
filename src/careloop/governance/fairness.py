"""Fairness by subgroup: how a model discriminates, calibrates and alerts for each group of
patients, each figure with a patient-grouped bootstrap interval, and the gaps a committee must
look at flagged in plain sentences.

Point estimates come from fairlearn's `MetricFrame` (the per-group bookkeeping everybody
recognises), fed one entry per (patient, group) block rather than per row: MetricFrame converts
each entry in Python, and a block expands to its rows with index arithmetic. Its own bootstrap
resamples rows, which would treat a patient's 40 hourly rows as 40 independent patients, so the
intervals come from our own bootstrap over patients.

The bootstrap is vectorized as weights: drawing n patients with replacement gives each patient a
count k (0, 1, 2, ...), and every row of that patient then weighs k, exactly as if its rows had
been copied k times. Each set of rows is reduced once to per-patient sums (rows, positives,
predicted risk, alerts, per calibration bin, per tie of equal probability), so a resample costs
a few matrix products over patients, whatever the number of rows.

Groups with fewer than `min_patients` patients or `min_events` patients with an event are "too
small to judge": their figures and (wide) intervals are shown, but they are never flagged. A
missing demographic value is the group "unknown", counted in `missing`. Without outcomes only
the alert rate can be measured.

`events` counts patients with at least one positive row: the independent positives (for hourly
sepsis rows, the septic stays), which is what decides whether a group's AUROC means anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from careloop.governance.scored import UNKNOWN, ScoredSet
from careloop.sepsis.metrics import auroc as auroc_or_nan
from careloop.sepsis.metrics import expected_calibration_error

ECE_BINS = 10
CONFIDENCE = 0.95
MIN_VALID_RESAMPLES = 10  # fewer defined resamples than this: no interval
METRICS = ("auroc", "calibration_in_large", "ece", "tpr", "fpr", "alert_rate")
OUTCOMES_UNKNOWN = "outcomes not yet known"


@dataclass(frozen=True)
class Estimate:
    """A figure and its 95% patient-grouped bootstrap interval; None where undefined."""

    value: float | None
    low: float | None
    high: float | None


NO_ESTIMATE = Estimate(None, None, None)


@dataclass(frozen=True)
class Tolerances:
    auroc_gap: float = 0.03  # a group's AUROC this far below overall is flagged
    ece: float = 0.05  # a group's ECE above this is flagged
    calibration_in_large: float = 0.03  # |mean observed - mean predicted| above this is flagged
    tpr_gap: float = 0.10  # |group - overall| above this is flagged
    fpr_gap: float = 0.10
    min_patients: int = 100  # below either: too small to judge
    min_events: int = 20


@dataclass(frozen=True)
class GroupMetrics:
    attribute: str  # "overall" for the whole set
    group: str  # "all" for the whole set
    rows: int
    patients: int
    events: int | None  # patients with a positive row; None without outcomes
    auroc: Estimate
    calibration_in_large: Estimate  # mean observed minus mean predicted
    ece: Estimate
    tpr: Estimate
    fpr: Estimate
    alert_rate: Estimate
    judgeable: bool
    note: str | None
    flags: tuple[str, ...]


@dataclass(frozen=True)
class FairnessReport:
    model: str
    version: str
    unit: str
    overall: GroupMetrics
    groups: tuple[GroupMetrics, ...]
    missing: dict[str, int]  # attribute -> rows with no value (the "unknown" group)
    tolerances: Tolerances
    resamples: int = 0
    extra: dict[str, object] = field(default_factory=dict)  # provenance a caller adds

    def flagged(self) -> list[GroupMetrics]:
        return [group for group in self.groups if group.flags]

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "unit": self.unit,
            "resamples": self.resamples,
            "confidence": CONFIDENCE,
            "tolerances": asdict(self.tolerances),
            "missing": dict(self.missing),
            "overall": asdict(self.overall),
            "groups": [asdict(group) for group in self.groups],
            **self.extra,
        }


# --------------------------------------------------------------------------------------------
# Layout: rows sorted by (patient, group) block, so a set of blocks expands to its rows at once
# --------------------------------------------------------------------------------------------


def _defined(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


@dataclass(frozen=True)
class _Blocks:
    """The rows grouped into blocks of one patient within one group of an attribute.

    fairlearn calls a metric with one entry per input row and converts every entry in Python,
    which costs minutes at 790,000 rows; given one entry per block instead (a few per patient),
    the metric expands its blocks to rows with index arithmetic and computes on whole arrays."""

    order: np.ndarray  # row numbers sorted by block
    starts: np.ndarray  # first position of each block in `order`
    sizes: np.ndarray  # rows in each block
    patient: np.ndarray  # patient code of each block
    group: np.ndarray  # group label of each block

    @classmethod
    def of(cls, codes: np.ndarray, groups: np.ndarray) -> _Blocks:
        labels, group_codes = np.unique(groups, return_inverse=True)
        key = codes.astype(np.int64) * labels.size + group_codes
        keys, block_of_row = np.unique(key, return_inverse=True)
        sizes = np.bincount(block_of_row, minlength=keys.size)
        return cls(
            order=np.argsort(block_of_row, kind="stable"),
            starts=np.cumsum(sizes) - sizes,
            sizes=sizes,
            patient=keys // labels.size,
            group=labels[keys % labels.size],
        )

    def rows(self, blocks: np.ndarray) -> np.ndarray:
        blocks = np.asarray(blocks).astype(np.int64).ravel()
        sizes = self.sizes[blocks]
        first = np.repeat(self.starts[blocks] - (np.cumsum(sizes) - sizes), sizes)
        return self.order[first + np.arange(sizes.sum())]


def _plain_metrics(
    layout: _Blocks, probs: np.ndarray, alerts: np.ndarray, labels: np.ndarray | None
) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """Metric functions for MetricFrame, called with the block numbers of one group."""

    def on_rows(compute: Callable[..., float]) -> Callable[[np.ndarray, np.ndarray], float]:
        def metric(blocks: np.ndarray, _unused: np.ndarray) -> float:
            rows = layout.rows(blocks)
            y = None if labels is None else labels[rows]
            return compute(y, probs[rows], alerts[rows])

        return metric

    metrics = {"alert_rate": on_rows(lambda y, p, a: float(a.mean()) if a.size else np.nan)}
    if labels is None:
        return metrics
    metrics["auroc"] = on_rows(lambda y, p, a: auroc_or_nan(y, p))
    metrics["calibration_in_large"] = on_rows(
        lambda y, p, a: float(y.mean() - p.mean()) if y.size else np.nan
    )
    metrics["ece"] = on_rows(lambda y, p, a: expected_calibration_error(y, p, bins=ECE_BINS))
    metrics["tpr"] = on_rows(lambda y, p, a: float(a[y == 1].mean()) if (y == 1).any() else np.nan)
    metrics["fpr"] = on_rows(lambda y, p, a: float(a[y == 0].mean()) if (y == 0).any() else np.nan)
    return metrics


def point_estimates(
    scored: ScoredSet, codes: np.ndarray, groups: np.ndarray
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(whole set, {group: metrics}) through fairlearn's MetricFrame, one entry per block."""
    layout = _Blocks.of(codes, groups)
    labels = None if scored.labels is None else np.asarray(scored.labels).astype(np.int64)
    metrics = _plain_metrics(
        layout,
        np.asarray(scored.probs, dtype=np.float64),
        np.asarray(scored.alerts).astype(np.float64),
        labels,
    )
    blocks = np.arange(layout.sizes.size)
    frame = MetricFrame(
        metrics=metrics, y_true=blocks, y_pred=blocks, sensitive_features=layout.group
    )
    overall = {name: float(value) for name, value in frame.overall.items()}
    by_group = {
        str(group): {name: float(value) for name, value in row.items()}
        for group, row in frame.by_group.iterrows()
    }
    return overall, by_group


# --------------------------------------------------------------------------------------------
# The patient-grouped bootstrap, as weights over patients
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sums:
    """One set of rows (the whole set, or a group) reduced to per-patient sums, so that any
    patient weighting gives every metric with a few matrix products.

    AUROC needs the order of the probabilities: rows are pooled by (patient, tie block of equal
    probability), which is far fewer than rows when probabilities are calibrated steps."""

    patients: np.ndarray  # global patient code of each local patient
    totals: np.ndarray  # (patients, 5): rows, positives, sum of p, alerts, alerted positives
    bin_rows: np.ndarray  # (patients, ECE_BINS)
    bin_gap: np.ndarray  # (patients, ECE_BINS): sum of (y - p) in each bin
    pair_patient: np.ndarray  # local patient of each (patient, tie) pair
    pair_tie: np.ndarray
    pair_pos: np.ndarray
    pair_neg: np.ndarray
    ties: int
    labelled: bool


def _sums(rows: np.ndarray, codes: np.ndarray, scored: ScoredSet, alerts: np.ndarray) -> _Sums:
    patients, local = np.unique(codes[rows], return_inverse=True)
    p = np.asarray(scored.probs, dtype=np.float64)[rows]
    a = alerts[rows]
    labelled = scored.labels is not None
    y = np.asarray(scored.labels)[rows].astype(np.float64) if labelled else np.zeros(rows.size)
    count = patients.size

    def per_patient(values: np.ndarray) -> np.ndarray:
        return np.bincount(local, values, minlength=count)

    totals = np.column_stack(
        [per_patient(np.ones(rows.size)), per_patient(y), per_patient(p), per_patient(a)]
        + [per_patient(y * a)]
    )
    bins = np.clip(np.floor(p * ECE_BINS).astype(np.int64), 0, ECE_BINS - 1)
    cell = local * ECE_BINS + bins
    bin_rows = np.bincount(cell, minlength=count * ECE_BINS).reshape(count, ECE_BINS)
    bin_gap = np.bincount(cell, y - p, minlength=count * ECE_BINS).reshape(count, ECE_BINS)
    tie_values, tie = np.unique(p, return_inverse=True)
    pairs, pair_of_row = np.unique(local * tie_values.size + tie, return_inverse=True)
    positives = np.bincount(pair_of_row, y, minlength=pairs.size)
    return _Sums(
        patients=patients,
        totals=totals,
        bin_rows=bin_rows.astype(np.float64),
        bin_gap=bin_gap,
        pair_patient=pairs // tie_values.size,
        pair_tie=pairs % tie_values.size,
        pair_pos=positives,
        pair_neg=np.bincount(pair_of_row, minlength=pairs.size) - positives,
        ties=tie_values.size,
        labelled=labelled,
    )


def _weighted_metrics(part: _Sums, w: np.ndarray) -> dict[str, float]:
    """Every metric of the rows with patient weights `w` (a patient drawn k times weighs k)."""
    rows, positives, predicted, alerted, hits = w @ part.totals
    result = {"alert_rate": _ratio(alerted, rows)}
    if not part.labelled:
        return result
    negatives = rows - positives
    pair_w = w[part.pair_patient]
    pos_ties = np.bincount(part.pair_tie, pair_w * part.pair_pos, minlength=part.ties)
    neg_ties = np.bincount(part.pair_tie, pair_w * part.pair_neg, minlength=part.ties)
    below = np.cumsum(neg_ties) - neg_ties  # negatives scored strictly lower
    wins = float(pos_ties @ (below + 0.5 * neg_ties))
    result["auroc"] = _ratio(wins, positives * negatives) if positives and negatives else np.nan
    result["calibration_in_large"] = _ratio(positives - predicted, rows)
    result["ece"] = _ratio(float(np.abs(w @ part.bin_gap).sum()), float((w @ part.bin_rows).sum()))
    result["tpr"] = _ratio(hits, positives)
    result["fpr"] = _ratio(alerted - hits, negatives)
    return result


def bootstrap_intervals(
    parts: Mapping[tuple[str, str], _Sums], patients: int, resamples: int, seed: int
) -> dict[tuple[str, str], dict[str, tuple[float | None, float | None]]]:
    """{slice: {metric: (low, high)}}: percentiles over `resamples` draws of whole patients.
    Every slice sees the same draws, so a patient drawn twice counts twice in all of them."""
    rng = np.random.default_rng(seed)
    draws: dict[tuple[str, str], dict[str, list[float]]] = {key: {} for key in parts}
    for _ in range(resamples):
        counts = np.bincount(rng.integers(0, patients, patients), minlength=patients)
        counts = counts.astype(np.float64)
        for key, part in parts.items():
            for name, value in _weighted_metrics(part, counts[part.patients]).items():
                draws[key].setdefault(name, []).append(value)
    tail = (1 - CONFIDENCE) / 2 * 100
    intervals: dict[tuple[str, str], dict[str, tuple[float | None, float | None]]] = {}
    for key, by_metric in draws.items():
        intervals[key] = {}
        for name, values in by_metric.items():
            finite = np.asarray(values)[np.isfinite(values)]
            if finite.size < MIN_VALID_RESAMPLES:
                intervals[key][name] = (None, None)
            else:
                low, high = np.percentile(finite, [tail, 100 - tail])
                intervals[key][name] = (float(low), float(high))
    return intervals


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def normalize_groups(values: np.ndarray) -> np.ndarray:
    """Group labels as strings, every missing value (None, NaN, "") as UNKNOWN."""
    series = pd.Series(np.asarray(values, dtype=object))
    text = series.astype(str).str.strip()
    missing = series.isna() | text.str.lower().isin(["", "nan", "none"])
    return np.where(missing.to_numpy(), UNKNOWN, text.to_numpy()).astype(str)


def fairness_report(
    scored: ScoredSet,
    *,
    tolerances: Tolerances = Tolerances(),
    resamples: int = 200,
    seed: int = 7,
) -> FairnessReport:
    """Every group of every attribute in `scored.groups`, against the whole set."""
    if scored.rows == 0:
        raise ValueError(f"{scored.model} {scored.version}: no predictions to judge")
    if resamples < 0:
        raise ValueError("resamples must not be negative")
    _check_values(scored)
    _, codes = np.unique(np.asarray(scored.patient_ids).astype(str), return_inverse=True)
    alerts = np.asarray(scored.alerts).astype(np.float64)
    attributes = {name: normalize_groups(values) for name, values in scored.groups.items()}
    slices = {("overall", "all"): np.arange(scored.rows)}
    for name, values in attributes.items():
        for group in np.unique(values):
            slices[(name, str(group))] = np.flatnonzero(values == group)
    parts = {key: _sums(rows, codes, scored, alerts) for key, rows in slices.items()}
    intervals = bootstrap_intervals(parts, int(codes.max()) + 1, resamples, seed)
    overall_points, _ = point_estimates(scored, codes, np.full(scored.rows, "all"))
    overall = _group_metrics(
        scored, parts[("overall", "all")], ("overall", "all"), overall_points, intervals, tolerances
    )
    groups = []
    for name, values in attributes.items():
        _, by_group = point_estimates(scored, codes, values)
        for group in sorted(by_group, key=lambda g: (g == UNKNOWN, g)):
            key = (name, group)
            metrics = _group_metrics(
                scored, parts[key], key, by_group[group], intervals, tolerances
            )
            groups.append(_with_flags(metrics, overall, tolerances))
    missing = {name: int(np.sum(values == UNKNOWN)) for name, values in attributes.items()}
    return FairnessReport(
        model=scored.model,
        version=scored.version,
        unit=scored.unit,
        overall=overall,
        groups=tuple(groups),
        missing=missing,
        tolerances=tolerances,
        resamples=resamples,
    )


def _check_values(scored: ScoredSet) -> None:
    probs = np.asarray(scored.probs, dtype=np.float64)
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"{scored.model} {scored.version}: probabilities must lie in [0, 1]")
    if scored.labels is not None and not np.isin(np.asarray(scored.labels), (0, 1)).all():
        raise ValueError(f"{scored.model} {scored.version}: labels must be 0 or 1")


def _group_metrics(
    scored: ScoredSet,
    part: _Sums,
    key: tuple[str, str],
    points: Mapping[str, float],
    intervals: Mapping[tuple[str, str], Mapping[str, tuple[float | None, float | None]]],
    tolerances: Tolerances,
) -> GroupMetrics:
    patients = int(part.patients.size)
    bounds = intervals[key]
    estimates = {
        name: Estimate(_defined(points[name]), *bounds.get(name, (None, None)))
        if name in points
        else NO_ESTIMATE
        for name in METRICS
    }
    events: int | None = None
    notes = []
    if scored.labels is None:
        judgeable = patients >= tolerances.min_patients
        if not judgeable:
            notes.append(f"too small to judge: {patients} patients")
        notes.append(OUTCOMES_UNKNOWN)
    else:
        events = int(np.count_nonzero(part.totals[:, 1]))
        judgeable = patients >= tolerances.min_patients and events >= tolerances.min_events
        if not judgeable:
            notes.append(f"too small to judge: {patients} patients, {events} events")
    return GroupMetrics(
        attribute=key[0],
        group=key[1],
        rows=int(part.totals[:, 0].sum()),
        patients=patients,
        events=events,
        judgeable=judgeable,
        note="; ".join(notes) or None,
        flags=(),
        **estimates,
    )


def _with_flags(group: GroupMetrics, overall: GroupMetrics, tol: Tolerances) -> GroupMetrics:
    if not group.judgeable:
        return group
    flags = []
    mine, whole = group.auroc.value, overall.auroc.value
    if mine is not None and whole is not None and whole - mine > tol.auroc_gap:
        flags.append(f"AUROC {whole - mine:.3f} below overall ({mine:.3f} vs {whole:.3f})")
    cal = group.calibration_in_large.value
    if cal is not None and abs(cal) > tol.calibration_in_large:
        side = "under" if cal > 0 else "over"
        flags.append(
            f"calibration in the large {cal:+.3f}: risk {side}estimated "
            f"(tolerance ±{tol.calibration_in_large:g})"
        )
    ece = group.ece.value
    if ece is not None and ece > tol.ece:
        flags.append(f"ECE {ece:.3f} above {tol.ece:g}")
    for name, label, gap in (("tpr", "TPR", tol.tpr_gap), ("fpr", "FPR", tol.fpr_gap)):
        mine, whole = getattr(group, name).value, getattr(overall, name).value
        if mine is not None and whole is not None and abs(mine - whole) > gap:
            side = "above" if mine > whole else "below"
            flags.append(
                f"{label} {abs(mine - whole):.3f} {side} overall ({mine:.3f} vs {whole:.3f})"
            )
    return replace(group, flags=tuple(flags))


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------

TABLE_HEADER = (
    "| group | patients | events | AUROC [CI] | cal.-in-large [CI] | ECE [CI] | TPR [CI] | "
    "FPR [CI] | alert rate [CI] | flags / notes |"
)
TABLE_RULE = "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"


def estimate_text(estimate: Estimate, signed: bool = False) -> str:
    """ "0.666 [0.652, 0.682]", or "–" when there is no estimate."""
    if estimate.value is None:
        return "–"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    text = fmt.format(estimate.value)
    if estimate.low is not None and estimate.high is not None:
        text += f" [{fmt.format(estimate.low)}, {fmt.format(estimate.high)}]"
    return text


def _row(metrics: GroupMetrics) -> str:
    remarks = list(metrics.flags) + ([metrics.note] if metrics.note else [])
    events = "–" if metrics.events is None else str(metrics.events)
    label = f"**{metrics.group}**" if metrics.flags else metrics.group
    cells = [
        label,
        f"{metrics.patients:,}",
        events,
        estimate_text(metrics.auroc),
        estimate_text(metrics.calibration_in_large, signed=True),
        estimate_text(metrics.ece),
        estimate_text(metrics.tpr),
        estimate_text(metrics.fpr),
        estimate_text(metrics.alert_rate),
        "; ".join(remarks) or "",
    ]
    return "| " + " | ".join(cells) + " |"


def fairness_markdown(report: FairnessReport) -> str:
    """One table per attribute (the whole set as its first row), then the tolerances used."""
    tol = report.tolerances
    lines = [
        f"Model `{report.version}`, one row per {report.unit}; 95% intervals from "
        f"{report.resamples} bootstrap resamples of whole patients. Events are patients with a "
        "positive outcome; TPR, FPR and alert rate are per "
        f"{report.unit} at the model's operating point; calibration in the large is mean "
        "observed minus mean predicted.",
    ]
    attributes = dict.fromkeys(group.attribute for group in report.groups)
    for attribute in attributes:
        lines += ["", f"**{attribute}**", "", TABLE_HEADER, TABLE_RULE, _row(report.overall)]
        lines += [_row(g) for g in report.groups if g.attribute == attribute]
        if report.missing.get(attribute):
            lines += ["", f"{report.missing[attribute]:,} rows have no {attribute} ('unknown')."]
    flagged = report.flagged()
    lines += [
        "",
        f"Flagged groups: {len(flagged)}"
        + (": " + ", ".join(f"{g.attribute}={g.group}" for g in flagged) if flagged else "."),
        "",
        "Tolerances: a judgeable group is flagged when its AUROC is more than "
        f"{tol.auroc_gap:g} below overall, |calibration in the large| exceeds "
        f"{tol.calibration_in_large:g}, ECE exceeds {tol.ece:g} ({ECE_BINS} equal-width bins), "
        f"or its TPR or FPR differs from overall by more than {tol.tpr_gap:g} / "
        f"{tol.fpr_gap:g}. Groups with fewer than {tol.min_patients} patients or "
        f"{tol.min_events} events are too small to judge: shown with their intervals, "
        "never flagged.",
        "",
        "ECE is never negative, so noise only adds to it: a resample's ECE sits above the "
        "data's, and a point estimate below its interval means the calibration error is within "
        "what noise alone produces.",
    ]
    return "\n".join(lines) + "\n"
