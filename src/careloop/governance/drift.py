"""Drift monitoring: does a model still see the data, and behave, as it did when it was trained?

A model's *reference profile* (`reference.json` in its artifact) summarises the data it was trained
on: per input feature, bin edges and the share of rows in each bin; the same for its predicted
risk; its alert rate; and, when labels were present, the outcome rate, AUROC and ECE. A batch of
new predictions (a `ScoredSet`) is then compared with that profile by `check_drift`:

* input drift per feature: the population stability index (PSI) over the reference bins, and for
  continuous features the Kolmogorov-Smirnov statistic evaluated at the reference's percentiles;
* drift in predicted risk (PSI over risk bins) and in the alert rate (relative change);
* performance once outcomes arrive (AUROC, ECE, observed vs predicted rate); "outcomes pending"
  when they have not, which is never an error;
* the override rate clinicians gave the model's CDS cards, when the caller passes it.

Thresholds (`DriftThresholds`) turn figures into a status, ok / warn / alert, with one readable
sentence per breach. PSI 0.1 (warn) and 0.25 (alert) is the convention of credit-risk model
monitoring (Siddiqi, *Credit Risk Scorecards*, 2006; Yurdakul, *Statistical properties of the
population stability index*, 2018): below 0.1 no meaningful shift, 0.1-0.25 a moderate shift worth
a look, above 0.25 a major shift. The others are careloop's defaults for a hospital AI team; each
is a field with its reason below.

PSI = sum over bins of (current - reference) * ln(current / reference), over shares that sum to
one, with missing values (NaN) as a bin of their own. An empty bin would make the log infinite, so
both shares are floored at `PSI_EPSILON` (1e-4, i.e. 0.01 % of rows) first: an empty bin then
contributes a bounded amount proportional to the share on the other side.

`DriftHistory` keeps every check in `model_drift_runs`; `run_drift_job` is what the scheduled job
(`careloop drift run`, see `governance/drift_cli.py` for the cron and systemd lines) does: split a
batch into time windows, check each, notify the AI team's webhook when something is beyond a
threshold (a JSON summary, never patient data), audit that the alert was raised, record the runs.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from sqlalchemy import insert, select

from careloop.governance.overrides import load_overrides
from careloop.governance.scored import ScoredSet
from careloop.store.repository import ResourceStore
from careloop.store.schema import model_drift_runs

REFERENCE_FILE = "reference.json"
REFERENCE_FORMAT = 1
PSI_EPSILON = 1e-4  # share floor for empty bins (see the module docstring)
MIN_REFERENCE_ROWS = 50  # fewer rows cannot give ten meaningful quantile bins
KS_PERCENTILES = tuple(range(1, 100))  # where the reference CDF is kept; never the extremes
ECE_BINS = 10
STATUSES = ("ok", "warn", "alert")
NOTIFY_TIMEOUT_SECONDS = 5.0


class DriftInputError(ValueError):
    """A drift check cannot be made as asked (another feature set, an empty batch ...)."""


@dataclass(frozen=True)
class DriftThresholds:
    """Where a figure stops being ok. Relative changes are |current / reference - 1|."""

    psi_warn: float = 0.1  # convention (module docstring): a moderate population shift
    psi_alert: float = 0.25  # convention: a major shift, the model's inputs are not its training's
    # the share of alerting predictions changing by half means half again (or half fewer) alerts
    # for the clinicians: alert burden is what they feel first
    alert_rate_warn: float = 0.25
    alert_rate_change: float = 0.5
    # an AUROC 0.05 below the reference is the gap usually treated as clinically meaningful
    # (and larger than the holdout's bootstrap half-width on the shipped models)
    auroc_drop: float = 0.05
    ece_rise: float = 0.03  # calibration worse than at training by 3 points of probability
    # |observed - predicted| outcome rate: the fairness tolerance for calibration in the large
    calibration_in_large: float = 0.03
    # clinicians overriding most of the model's cards: the model no longer earns their trust
    override_rate: float = 0.5
    min_rows: int = 200  # fewer rows than this in a window: too noisy to judge
    min_events: int = 20  # fewer outcome events: AUROC and ECE too noisy to judge

    @classmethod
    def load(cls, path: Path) -> DriftThresholds:
        """Defaults overridden by a YAML or JSON mapping of the same names."""
        return load_overrides(cls, path, "threshold")


# -- the reference profile -------------------------------------------------------------------------


def _as_float(values: np.ndarray) -> np.ndarray | None:
    """The column as floats (NaN missing), or None when it holds text."""
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return None


def _as_text(values: np.ndarray) -> np.ndarray:
    """Text categories; None / NaN / "" become NaN (missing)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        missing = value is None or value == "" or (isinstance(value, float) and math.isnan(value))
        out[i] = math.nan if missing else str(value)
    return out


def _category_key(value: float | str) -> str:
    """A category as JSON keeps it: 3.0 and 3 are the same category "3"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def column_profile(values: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Bins of one column and the share of rows in each, missing (NaN) its own bin.

    A column with at most `bins` distinct values (or holding text) is categorical: one bin per
    value. Otherwise its inner edges are the quantiles 1/bins .. (bins-1)/bins, ties merged, and
    bin k holds edge[k-1] < x <= edge[k]. Continuous columns also keep the reference CDF at the
    1st..99th percentiles for the KS statistic.
    """
    numeric = _as_float(values)
    rows = len(values)
    if rows == 0:
        raise DriftInputError("cannot profile an empty column")
    if numeric is None:
        return _categorical_profile(values, rows)
    present = numeric[~np.isnan(numeric)]
    distinct = np.unique(present)
    if len(distinct) <= bins:
        return _categorical_profile(numeric, rows)
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    shares = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
    points = np.unique(np.percentile(present, KS_PERCENTILES))
    return {
        "kind": "continuous",
        "edges": [float(e) for e in edges],
        "shares": [float(s) for s in shares / rows],
        "missing": float((rows - len(present)) / rows),
        "ks_points": [float(p) for p in points],
        "ks_cdf": [float(c) for c in _cdf(present, points)],
    }


def _value_counts(values: np.ndarray) -> tuple[dict[str, int], int]:
    """Rows per category key, and the rows missing; counted over distinct values, not rows."""
    numeric = _as_float(values)
    if numeric is not None:
        missing = np.isnan(numeric)
        distinct, counts = np.unique(numeric[~missing], return_counts=True)
    else:
        text = _as_text(values)
        missing = np.array([_is_missing(v) for v in text], dtype=bool)
        distinct, counts = np.unique(text[~missing].astype(str), return_counts=True)
    by_key: dict[str, int] = {}
    for value, count in zip(distinct, counts, strict=True):
        key = _category_key(value.item() if hasattr(value, "item") else value)
        by_key[key] = by_key.get(key, 0) + int(count)
    return by_key, int(missing.sum())


def _categorical_profile(values: np.ndarray, rows: int) -> dict[str, Any]:
    counts, missing = _value_counts(values)
    ordered = sorted(counts)
    return {
        "kind": "categorical",
        "values": ordered,
        "shares": [counts[v] / rows for v in ordered],
        "missing": missing / rows,
    }


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cdf(present: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Share of `present` at or below each point."""
    if len(present) == 0:
        return np.zeros(len(points))
    return np.searchsorted(np.sort(present), points, side="right") / len(present)


def current_shares(profile: dict[str, Any], values: np.ndarray) -> np.ndarray:
    """Shares of `values` in the profile's bins, missing last (and for categorical columns a
    bin for values the reference never saw, before the missing one)."""
    rows = len(values)
    if profile["kind"] == "continuous":
        numeric = _as_float(values)
        if numeric is None:
            raise DriftInputError("a column the reference saw as numbers now holds text")
        present = numeric[~np.isnan(numeric)]
        edges = np.asarray(profile["edges"], dtype=float)
        counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
        return np.append(counts, rows - len(present)) / rows
    counts, missing = _value_counts(values)
    known = [counts.get(value, 0) for value in profile["values"]]
    unseen = sum(counts.values()) - sum(known)
    return np.asarray([*known, unseen, missing], dtype=float) / rows


def reference_shares(profile: dict[str, Any]) -> np.ndarray:
    """The profile's shares laid out as `current_shares` lays out a batch's."""
    shares = list(profile["shares"])
    if profile["kind"] == "categorical":
        shares.append(0.0)  # values unseen at training: none by construction
    return np.asarray([*shares, profile["missing"]], dtype=float)


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two share vectors over the same bins (module docstring)."""
    ref = np.maximum(np.asarray(reference, dtype=float), epsilon)
    cur = np.maximum(np.asarray(current, dtype=float), epsilon)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_at_percentiles(profile: dict[str, Any], values: np.ndarray) -> float | None:
    """The largest gap between the reference and current CDFs at the reference's percentiles:
    the two-sample KS statistic evaluated on a 99-point grid (a lower bound of the exact one,
    which would need the training rows themselves)."""
    if profile["kind"] != "continuous":
        return None
    numeric = _as_float(values)
    if numeric is None:
        return None
    present = numeric[~np.isnan(numeric)]
    if len(present) == 0:
        return None
    points = np.asarray(profile["ks_points"], dtype=float)
    gaps = np.abs(_cdf(present, points) - np.asarray(profile["ks_cdf"], dtype=float))
    return float(gaps.max()) if len(gaps) else 0.0


def _label_mask(labels: np.ndarray | None) -> np.ndarray | None:
    """Rows whose outcome is known, or None when no outcome is."""
    if labels is None or len(labels) == 0:
        return None
    numeric = _as_float(labels)
    if numeric is None:
        known = np.array([not _is_missing(v) for v in labels], dtype=bool)
    else:
        known = ~np.isnan(numeric)
    return known if known.any() else None


def _auroc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    if len(np.unique(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probs))


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray) -> float:
    """ECE over ten equal-width probability bins, weighted by the rows in each."""
    which = np.minimum((probs * ECE_BINS).astype(int), ECE_BINS - 1)
    total = 0.0
    for b in np.unique(which):
        in_bin = which == b
        total += in_bin.sum() * abs(labels[in_bin].mean() - probs[in_bin].mean())
    return float(total / len(probs))


@dataclass(frozen=True)
class Performance:
    outcomes: str  # "pending", "partial" (some rows labelled) or "complete"
    labelled_rows: int
    events: int
    outcome_rate: float | None
    predicted_rate: float | None  # mean predicted risk over the labelled rows
    auroc: float | None
    ece: float | None


def performance(scored: ScoredSet) -> Performance:
    """Discrimination and calibration on the rows whose outcome has arrived."""
    known = _label_mask(scored.labels)
    if known is None or scored.labels is None:
        return Performance("pending", 0, 0, None, None, None, None)
    labels = np.asarray(scored.labels[known], dtype=float)
    probs = np.asarray(scored.probs[known], dtype=float)
    return Performance(
        outcomes="complete" if known.all() else "partial",
        labelled_rows=int(known.sum()),
        events=int(labels.sum()),
        outcome_rate=float(labels.mean()),
        predicted_rate=float(probs.mean()),
        auroc=_auroc(labels, probs),
        ece=expected_calibration_error(labels, probs),
    )


def reference_profile(
    scored: ScoredSet, bins: int = 10, judged: ScoredSet | None = None
) -> dict[str, Any]:
    """The profile of the data a model was trained on (module docstring); no row-level data.

    Inputs, risk and alert rate describe `scored`, the training rows. Performance comes from
    `judged`, patients the model never saw, when given: on its own training rows a model scores
    better than it ever will again, and every later window would read as a drop."""
    if scored.rows < MIN_REFERENCE_ROWS:
        raise DriftInputError(
            f"a reference needs at least {MIN_REFERENCE_ROWS} rows, the data gave {scored.rows}"
        )
    if bins < 2:
        raise DriftInputError(f"a profile needs at least 2 bins, not {bins}")
    features: dict[str, dict[str, Any]] = {}
    if scored.features is not None:
        for i, name in enumerate(scored.feature_names):
            features[name] = column_profile(scored.features[:, i], bins)
    perf = performance(judged if judged is not None else scored)
    basis = "held-out patients" if judged is not None else "training rows (flatters the model)"
    return {
        "format": REFERENCE_FORMAT,
        "model": scored.model,
        "version": scored.version,
        "unit": scored.unit,
        "created_at": datetime.now(UTC).isoformat(),
        "rows": scored.rows,
        "patients": len(np.unique(scored.patient_ids.astype(str))),
        "bins": bins,
        "feature_names": list(scored.feature_names),
        "features": features,
        "risk": column_profile(np.asarray(scored.probs, dtype=float), bins),
        "alert_rate": float(np.mean(scored.alerts)),
        "performance": asdict(perf),
        "performance_basis": basis,
    }


def write_reference(artifact: Path, profile: dict[str, Any]) -> Path:
    """Write the profile as `reference.json` in the artifact directory, atomically."""
    target = Path(artifact) / REFERENCE_FILE
    fd, temp = tempfile.mkstemp(prefix=".reference-", suffix=".json", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(profile, handle, indent=1, sort_keys=True)
            handle.write("\n")
        os.chmod(temp, 0o644)  # mkstemp makes it private; the artifact is read by other tools
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def load_reference(artifact: Path) -> dict[str, Any]:
    """The artifact's reference profile, with a readable error when it has none."""
    path = Path(artifact) / REFERENCE_FILE
    try:
        profile = json.loads(path.read_text())
    except FileNotFoundError:
        raise DriftInputError(
            f"{artifact} has no {REFERENCE_FILE}: create it with `careloop drift reference`"
        ) from None
    except (OSError, ValueError) as exc:
        raise DriftInputError(f"{path} cannot be read as a drift reference: {exc}") from None
    if not isinstance(profile, dict) or profile.get("format") != REFERENCE_FORMAT:
        raise DriftInputError(f"{path} is not a format-{REFERENCE_FORMAT} drift reference")
    return profile


# -- the check -------------------------------------------------------------------------------------


@dataclass
class DriftResult:
    """One drift check of one window of predictions against the model's reference."""

    version: str
    model: str
    window: str
    run_at: datetime
    status: str  # ok | warn | alert
    rows: int
    patients: int
    judged: bool  # False: too few rows, figures shown but thresholds not applied
    feature_psi: dict[str, float]
    feature_ks: dict[str, float]
    risk_psi: float
    alert_rate: float
    reference_alert_rate: float
    alert_rate_change: float | None  # relative; None when the reference never alerted
    outcomes: str  # pending | partial | complete
    labelled_rows: int
    events: int
    auroc: float | None
    reference_auroc: float | None
    ece: float | None
    observed_rate: float | None
    predicted_rate: float | None
    override_rate: float | None
    breaches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    notified: bool = False
    id: int | None = None  # the history row, once recorded

    def metrics_json(self) -> dict[str, Any]:
        """Everything but the identity, status, breaches and notification: the metrics column."""
        skip = {"version", "model", "window", "run_at", "status", "breaches", "notified", "id"}
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def summary_json(self) -> dict[str, Any]:
        """What may leave careloop (the webhook): aggregate figures only, no row-level data."""
        return {
            "model": self.model,
            "version": self.version,
            "window": self.window,
            "run_at": self.run_at.isoformat(),
            "status": self.status,
            "rows": self.rows,
            "breaches": list(self.breaches),
            "notes": list(self.notes),
            "risk_psi": _round(self.risk_psi),
            "alert_rate": _round(self.alert_rate),
            "reference_alert_rate": _round(self.reference_alert_rate),
            "auroc": _round(self.auroc),
            "reference_auroc": _round(self.reference_auroc),
            "outcomes": self.outcomes,
            "override_rate": _round(self.override_rate),
            "top_feature_psi": dict(sorted(self.feature_psi.items(), key=lambda kv: -kv[1])[:5]),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def check_features(reference: dict[str, Any], scored: ScoredSet) -> None:
    """Refuse a batch whose model inputs are not the reference's, naming the difference."""
    expected = list(reference.get("feature_names", []))
    given = list(scored.feature_names)
    if scored.features is None and expected:
        raise DriftInputError("the predictions carry no model inputs: input drift cannot be judged")
    if expected == given:
        return
    missing = [name for name in expected if name not in given]
    extra = [name for name in given if name not in expected]
    parts = []
    if missing:
        parts.append(f"missing from the data: {', '.join(missing)}")
    if extra:
        parts.append(f"not in the reference: {', '.join(extra)}")
    if not parts:
        parts.append("the same features in another order")
    raise DriftInputError(
        f"the reference was made for another feature set ({'; '.join(parts)}): "
        "recompute it with `careloop drift reference` for this model"
    )


def _check_identity(reference: dict[str, Any], scored: ScoredSet) -> None:
    if scored.rows == 0:
        raise DriftInputError("the batch holds no predictions: nothing to judge")
    if reference.get("model") != scored.model or reference.get("version") != scored.version:
        raise DriftInputError(
            f"the reference describes {reference.get('model')} {reference.get('version')}, "
            f"the predictions come from {scored.model} {scored.version}"
        )
    check_features(reference, scored)


def _psi_breach(what: str, value: float, t: DriftThresholds) -> tuple[str, str] | None:
    if value > t.psi_alert:
        return "alert", f"{what} PSI {_psi_text(value, t.psi_alert)} (alert above {t.psi_alert:g})"
    if value > t.psi_warn:
        return "warn", f"{what} PSI {_psi_text(value, t.psi_warn)} (warn above {t.psi_warn:g})"
    return None


def _psi_text(value: float, threshold: float) -> str:
    """Two decimals, or three when two would print the threshold itself ("0.10 above 0.1")."""
    return f"{value:.3f}" if round(value, 2) == round(threshold, 2) else f"{value:.2f}"


def _alert_rate_breach(result: DriftResult, t: DriftThresholds) -> tuple[str, str] | None:
    change = result.alert_rate_change
    if change is None:
        return None
    sentence = (
        f"alert rate {result.alert_rate:.1%} vs {result.reference_alert_rate:.1%} at training "
        f"({change:+.0%}"
    )
    if abs(change) > t.alert_rate_change:
        return "alert", f"{sentence}; alert beyond ±{t.alert_rate_change:.0%})"
    if abs(change) > t.alert_rate_warn:
        return "warn", f"{sentence}; warn beyond ±{t.alert_rate_warn:.0%})"
    return None


def _performance_breaches(
    result: DriftResult, reference: dict[str, Any], t: DriftThresholds
) -> list[tuple[str, str]]:
    if result.outcomes == "pending":
        return []
    if result.events < t.min_events:
        result.notes.append(
            f"outcomes: {result.events} events among {result.labelled_rows} labelled rows, "
            f"too few to judge performance (needs {t.min_events})"
        )
        return []
    found: list[tuple[str, str]] = []
    if result.auroc is not None and result.reference_auroc is not None:
        drop = result.reference_auroc - result.auroc
        if drop > t.auroc_drop:
            found.append(
                (
                    "alert",
                    f"AUROC {result.auroc:.3f} vs {result.reference_auroc:.3f} at training "
                    f"(alert when {t.auroc_drop:g} below)",
                )
            )
    reference_ece = reference.get("performance", {}).get("ece")
    if (
        result.ece is not None
        and reference_ece is not None
        and result.ece - reference_ece > t.ece_rise
    ):
        found.append(
            (
                "warn",
                f"ECE {result.ece:.3f} vs {reference_ece:.3f} at training "
                f"(warn when {t.ece_rise:g} worse)",
            )
        )
    if result.observed_rate is not None and result.predicted_rate is not None:
        gap = result.observed_rate - result.predicted_rate
        if abs(gap) > t.calibration_in_large:
            found.append(
                (
                    "warn",
                    f"observed outcome rate {result.observed_rate:.1%} vs predicted "
                    f"{result.predicted_rate:.1%} (warn beyond ±{t.calibration_in_large:.0%})",
                )
            )
    return found


def _status(levels: Sequence[str]) -> str:
    if "alert" in levels:
        return "alert"
    return "warn" if "warn" in levels else "ok"


def check_drift(
    reference: dict[str, Any],
    scored: ScoredSet,
    *,
    thresholds: DriftThresholds = DriftThresholds(),
    override_rate: float | None = None,
    window: str = "all",
    run_at: datetime | None = None,
) -> DriftResult:
    """Compare one batch of predictions with the model's reference profile (module docstring)."""
    _check_identity(reference, scored)
    feature_psi: dict[str, float] = {}
    feature_ks: dict[str, float] = {}
    for i, name in enumerate(scored.feature_names):
        profile = reference["features"][name]
        column = scored.features[:, i]  # type: ignore[index]
        feature_psi[name] = psi(reference_shares(profile), current_shares(profile, column))
        ks = ks_at_percentiles(profile, column)
        if ks is not None:
            feature_ks[name] = ks
    probs = np.asarray(scored.probs, dtype=float)
    risk_psi = psi(reference_shares(reference["risk"]), current_shares(reference["risk"], probs))
    alert_rate = float(np.mean(scored.alerts))
    reference_alert_rate = float(reference["alert_rate"])
    perf = performance(scored)
    result = DriftResult(
        version=scored.version,
        model=scored.model,
        window=window,
        run_at=run_at or datetime.now(UTC),
        status="ok",
        rows=scored.rows,
        patients=len(np.unique(scored.patient_ids.astype(str))),
        judged=scored.rows >= thresholds.min_rows,
        feature_psi=feature_psi,
        feature_ks=feature_ks,
        risk_psi=risk_psi,
        alert_rate=alert_rate,
        reference_alert_rate=reference_alert_rate,
        alert_rate_change=(
            alert_rate / reference_alert_rate - 1.0 if reference_alert_rate > 0 else None
        ),
        outcomes=perf.outcomes,
        labelled_rows=perf.labelled_rows,
        events=perf.events,
        auroc=perf.auroc,
        reference_auroc=reference.get("performance", {}).get("auroc"),
        ece=perf.ece,
        observed_rate=perf.outcome_rate,
        predicted_rate=perf.predicted_rate,
        override_rate=override_rate,
    )
    _judge(result, reference, thresholds)
    return result


def _judge(result: DriftResult, reference: dict[str, Any], t: DriftThresholds) -> None:
    """Set the status, breaches and notes of a freshly computed result."""
    if result.outcomes == "pending":
        result.notes.append("outcomes pending: performance not judged yet")
    elif result.outcomes == "partial":
        result.notes.append(f"outcomes known for {result.labelled_rows} of {result.rows} rows")
    if result.alert_rate_change is None:
        result.notes.append("the model never alerted at training: alert-rate change not judged")
    if not result.judged:
        result.notes.append(
            f"only {result.rows} rows: too few to judge drift (needs {t.min_rows}); "
            "figures shown, thresholds not applied"
        )
        return
    found: list[tuple[str, str] | None] = []
    for name, value in sorted(result.feature_psi.items(), key=lambda kv: -kv[1]):
        found.append(_psi_breach(f"input {name!r}", value, t))
    found.append(_psi_breach("predicted risk", result.risk_psi, t))
    found.append(_alert_rate_breach(result, t))
    found.extend(_performance_breaches(result, reference, t))
    if result.override_rate is not None and result.override_rate > t.override_rate:
        found.append(
            (
                "warn",
                f"clinicians overrode {result.override_rate:.0%} of the model's cards "
                f"(warn above {t.override_rate:.0%})",
            )
        )
    kept = [item for item in found if item is not None]
    result.status = _status([level for level, _ in kept])
    result.breaches = [sentence for _, sentence in kept]


# -- the history -----------------------------------------------------------------------------------


class DriftHistory:
    """Every drift check, kept in `model_drift_runs`."""

    def __init__(self, store: ResourceStore) -> None:
        self._engine = store.engine

    def record(self, result: DriftResult) -> int:
        """Store one result; returns (and sets) its row id."""
        row = {
            "version": result.version,
            "model": result.model,
            "window": result.window[:64],
            "run_at": result.run_at,
            "status": result.status,
            "metrics": json.dumps(result.metrics_json(), sort_keys=True),
            "breaches": json.dumps(result.breaches),
            "notified": result.notified,
        }
        with self._engine.begin() as connection:
            inserted = connection.execute(insert(model_drift_runs).values(**row))
            result.id = int(inserted.inserted_primary_key[0])
        return result.id

    def runs(self, version: str | None = None) -> list[DriftResult]:
        """The recorded checks, of one version or all, newest last."""
        query = select(model_drift_runs).order_by(model_drift_runs.c.run_at, model_drift_runs.c.id)
        if version is not None:
            query = query.where(model_drift_runs.c.version == version)
        with self._engine.connect() as connection:
            return [_from_row(row) for row in connection.execute(query)]


def _from_row(row: Any) -> DriftResult:
    metrics = json.loads(row.metrics)
    known = set(DriftResult.__dataclass_fields__)
    return DriftResult(
        version=row.version,
        model=row.model,
        window=row.window,
        run_at=row.run_at,
        status=row.status,
        breaches=list(json.loads(row.breaches)),
        notified=bool(row.notified),
        id=row.id,
        **{k: v for k, v in metrics.items() if k in known},
    )


# -- the scheduled job -----------------------------------------------------------------------------


def time_order(scored: ScoredSet) -> np.ndarray:
    """Row positions in time order: by row id when every id is a number (encounter ids rise
    with time), else the data's own order."""
    if scored.row_ids is None:
        return np.arange(scored.rows)
    try:
        keys = np.asarray([int(str(r)) for r in scored.row_ids])
    except ValueError:
        return np.arange(scored.rows)
    return np.argsort(keys, kind="stable")


def split_windows(scored: ScoredSet, count: int) -> list[ScoredSet]:
    """`count` consecutive windows of the batch in time order, as equal in size as can be."""
    if count < 1:
        raise DriftInputError(f"--windows must be at least 1, not {count}")
    if scored.rows == 0:
        raise DriftInputError("the batch holds no predictions: nothing to judge")
    if count > scored.rows:
        raise DriftInputError(f"{count} windows asked of a batch of {scored.rows} rows")
    order = time_order(scored)
    windows = []
    for positions in np.array_split(order, count):
        mask = np.zeros(scored.rows, dtype=bool)
        mask[positions] = True
        # subset keeps the data's order; within a window the order does not matter
        windows.append(scored.subset(mask))
    return windows


def redacted_url(url: str) -> str:
    """Scheme and host only: webhook paths and queries often carry the token (Slack, Teams)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


@dataclass(frozen=True)
class Notification:
    attempted: bool
    sent: bool
    detail: str  # readable, without the URL's credentials, path or query


def notify(results: Sequence[DriftResult], url: str | None) -> Notification:
    """POST a JSON summary of the windows beyond a threshold to the AI team's webhook."""
    flagged = [r for r in results if r.status != "ok"]
    if not flagged:
        return Notification(False, False, "nothing beyond a threshold: no notification")
    if not url:
        return Notification(False, False, "no webhook configured: the AI team was not notified")
    payload = {
        "event": "careloop.model-drift",
        "status": _status([r.status for r in flagged]),
        "model": flagged[0].model,
        "version": flagged[0].version,
        "windows": [r.summary_json() for r in flagged],
    }
    where = redacted_url(url)
    try:
        import httpx

        response = httpx.post(url, json=payload, timeout=NOTIFY_TIMEOUT_SECONDS)
    except Exception as exc:  # the message may quote the URL: only the kind is shown
        return Notification(True, False, f"notification to {where} failed: {type(exc).__name__}")
    if response.status_code >= 300:
        return Notification(
            True, False, f"notification to {where} failed: HTTP {response.status_code}"
        )
    return Notification(True, True, f"notified {where} (HTTP {response.status_code})")


def audit_drift_alert(
    store: ResourceStore, results: Sequence[DriftResult], note: Notification, agent: str
) -> str:
    """Audit that a drift alert was raised (an admin event about no patient); says how it went.
    A log that refuses the event (its head was tampered with) is reported, not raised: the
    drift runs are already recorded and the alert must still reach the operator."""
    from careloop.access.principal import Purpose
    from careloop.access.roles import Role
    from careloop.audit.events import AuditAction, AuditOutcome, AuditRecord
    from careloop.audit.log import AuditLog, AuditLogError

    flagged = [r for r in results if r.status != "ok"]
    status = _status([r.status for r in flagged])
    told = "AI team notified" if note.sent else "AI team NOT notified"
    record = AuditRecord(
        action=AuditAction.ADMIN,
        outcome=AuditOutcome.SUCCESS if note.sent else AuditOutcome.MINOR_FAILURE,
        agent=agent,
        role=Role.ADMIN.value,
        agent_kind="local",
        fhir_user=None,
        purpose=Purpose.OPERATIONS.value,
        patient_id=None,
        source_address="cli",
        detail=(
            f"model drift {status} raised for {flagged[0].version}: "
            f"{len(flagged)} of {len(results)} windows beyond thresholds; {told}"
        )[:256],
    )
    try:
        AuditLog(store).append(record)
    except AuditLogError as exc:
        return f"the drift alert was NOT audited: {exc}"
    return "drift alert audited"


@dataclass(frozen=True)
class DriftJob:
    results: list[DriftResult]
    notification: Notification
    audit: str | None = None  # how auditing the alert went; None when there was nothing to audit

    @property
    def status(self) -> str:
        return _status([r.status for r in self.results])


def run_drift_job(
    store: ResourceStore,
    reference: dict[str, Any],
    scored: ScoredSet,
    *,
    windows: int = 1,
    label: str = "batch",
    thresholds: DriftThresholds = DriftThresholds(),
    override_rate: float | None = None,
    notify_url: str | None = None,
    agent: str = "careloop-drift",
) -> DriftJob:
    """Check each time window of `scored`, notify and audit when one is beyond a threshold, and
    record every window in the history (also when the notification failed)."""
    _check_identity(reference, scored)
    run_at = datetime.now(UTC)
    results = [
        check_drift(
            reference,
            part,
            thresholds=thresholds,
            override_rate=override_rate,
            window=f"{i}/{windows} {label}"[:64],
            run_at=run_at,
        )
        for i, part in enumerate(split_windows(scored, windows), start=1)
    ]
    note = notify(results, notify_url)
    for result in results:
        result.notified = note.sent and result.status != "ok"
    history = DriftHistory(store)
    for result in results:
        history.record(result)
    audited = None
    if any(r.status != "ok" for r in results):
        audited = audit_drift_alert(store, results, note, agent)
    return DriftJob(results, note, audited)
