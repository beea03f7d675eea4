"""The release gate: may a candidate model replace the baseline it would succeed?

Both models score the same data, and the candidate is blocked when it is worse than the baseline
beyond a tolerance on any criterion the AI committee cares about: discrimination (AUROC, AUPRC,
and for sepsis the Challenge's normalized utility), calibration (ECE), alert burden (alert rate),
fairness (AUROC in every judgeable subgroup and the worst subgroup's gap to overall), and the p95
time to score one unit. A subgroup too small to judge is reported with its interval, never gated:
a confident verdict on 30 patients would be noise.

Comparisons are paired: the same rows, the same outcomes, so a point difference is the models'
difference and not the sample's. The gate judges only patients neither model was trained on: the
held-out patients of a model's recorded holdout rule, and it refuses data whose fingerprint is a
model's training data when no rule says which patients were kept out.

This module does no I/O beyond what the models do to score data; `gate_cli` is the command.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

from careloop.governance.fairness import FairnessReport, GroupMetrics, Tolerances, fairness_report
from careloop.governance.holdout import HoldoutRule
from careloop.governance.overrides import load_overrides
from careloop.governance.scored import GovernedModel, ScoredSet

SEPSIS = "sepsis"
_SLACK = 1e-12  # a candidate exactly at the limit passes despite float rounding


class GateRefused(ValueError):
    """The gate cannot judge these models on this data; the message says why, in words."""


@dataclass(frozen=True)
class GateTolerances:
    """How much worse than the baseline a candidate may be before the gate blocks it.

    Drops and rises are absolute unless named relative. Override any of them from a YAML or JSON
    file of the same names (`GateTolerances.load`).
    """

    auroc_drop: float = 0.01  # overall AUROC may fall at most this much
    subgroup_auroc_drop: float = 0.02  # AUROC in any judgeable subgroup
    auprc_drop: float = 0.02  # overall AUPRC (average precision)
    utility_drop: float = 0.02  # sepsis: the Challenge's normalized utility
    ece_rise: float = 0.02  # expected calibration error, overall and per judgeable subgroup
    alert_rate_rise: float = 0.10  # relative: 0.10 lets a 5.0% alert rate become 5.5%
    # absolute slack on the alert rate, so a near-zero rate does not trip on one extra alert
    alert_rate_floor: float = 0.002
    subgroup_gap_widen: float = 0.02  # worst (overall - subgroup) AUROC gap, per attribute
    latency_p95_rise_ms: float = 30.0  # the issue's own figure
    min_patients: int = 100  # fewer patients in a subgroup: too small to judge
    min_events: int = 20  # fewer outcome events in a subgroup: too small to judge

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"tolerance {item.name} must be a number >= 0, not {value!r}")

    @classmethod
    def load(cls, path: Path) -> GateTolerances:
        """Defaults overridden by a YAML or JSON mapping of the same names."""
        return load_overrides(cls, path, "tolerance")

    def fairness(self) -> Tolerances:
        """The judgeability limits handed to the fairness table."""
        return Tolerances(min_patients=int(self.min_patients), min_events=int(self.min_events))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Check:
    """One criterion in one scope ("overall", "sex=Female", or an attribute for a gap).

    `limit` is the worst candidate value allowed: a floor when higher is better, else a ceiling.
    `passed` is None when the criterion is reported but not gated (too small to judge, not
    measured), and `note` says why.
    """

    name: str
    scope: str
    baseline_value: float | None
    candidate_value: float | None
    limit: float | None
    passed: bool | None
    note: str | None = None
    higher_is_better: bool = True

    def describe(self) -> str:
        """'AUROC, sex=Female: 0.741 -> 0.702 (must stay >= 0.721)'."""
        bound = ">=" if self.higher_is_better else "<="
        limit = "" if self.limit is None else f" (must stay {bound} {_fmt(self.limit)})"
        note = f"; {self.note}" if self.note else ""
        return (
            f"{self.name}, {self.scope}: {_fmt(self.baseline_value)} -> "
            f"{_fmt(self.candidate_value)}{limit}{note}"
        )

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "FAIL", None: "not gated"}[self.passed]


@dataclass(frozen=True)
class GateReport:
    """The gate's verdict: every check, what the comparison was judged on, and the differences
    in inputs between the two models."""

    model: str
    unit: str
    candidate_version: str
    baseline_version: str
    rows: int
    patients: int
    events: int  # patients with the outcome
    judged_on: str
    checks: tuple[Check, ...]
    tolerances: GateTolerances
    features_added: tuple[str, ...] = ()
    features_removed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures()

    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.passed is False]

    def headline(self) -> str:
        failed = self.failures()
        if not failed:
            return (
                f"GATE PASSED: candidate {self.candidate_version} may replace "
                f"{self.baseline_version} ({len(self.checks)} checks, none regressed)"
            )
        return (
            f"GATE BLOCKED: candidate {self.candidate_version} regresses against "
            f"{self.baseline_version} on {len(failed)} of {len(self.checks)} checks"
        )

    def summary_lines(self) -> list[str]:
        lines = [
            f"Model {self.model}; judged on {self.judged_on}: {self.rows:,} {self.unit} rows, "
            f"{self.patients:,} patients, {self.events:,} with the outcome."
        ]
        if self.features_added or self.features_removed:
            lines.append(
                f"The candidate's inputs differ from the baseline's: added "
                f"{_names(self.features_added)}; removed {_names(self.features_removed)}."
            )
        lines.extend(self.notes)
        return lines

    def text(self) -> str:
        """What failed first, then every check as a table."""
        lines = [self.headline(), ""]
        failed = self.failures()
        if failed:
            lines.append("Regressions beyond tolerance:")
            lines.extend(f"  - {check.describe()}" for check in failed)
            lines.append("")
        lines.extend(self.summary_lines())
        lines.append("")
        rows = [_row(check) for check in self.checks]
        header = ("check", "scope", "baseline", "candidate", "limit", "result", "note")
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
        for row in [header, *rows]:
            cells = [str(row[i]).ljust(widths[i]) for i in range(len(widths))]
            lines.append("  ".join(cells) + ("  " + row[-1] if row[-1] else ""))
        return "\n".join(line.rstrip() for line in lines) + "\n"

    def markdown(self) -> str:
        lines = [f"# Release gate: {self.candidate_version} vs {self.baseline_version}", ""]
        lines += [f"**{self.headline()}**", ""]
        failed = self.failures()
        if failed:
            lines += ["## Regressions beyond tolerance", ""]
            lines += [f"- {_md(check.describe())}" for check in failed]
            lines.append("")
        lines += [_md(line) for line in self.summary_lines()]
        lines += ["", "## Checks", ""]
        lines += [
            "| check | scope | baseline | candidate | limit | result | note |",
            "|---|---|--:|--:|--:|---|---|",
        ]
        lines += ["| " + " | ".join(_md(str(cell)) for cell in _row(c)) + " |" for c in self.checks]
        lines += ["", "Tolerances: `" + json.dumps(self.tolerances.as_dict()) + "`", ""]
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "headline": self.headline(),
            "model": self.model,
            "unit": self.unit,
            "candidate": self.candidate_version,
            "baseline": self.baseline_version,
            "rows": self.rows,
            "patients": self.patients,
            "events": self.events,
            "judged_on": self.judged_on,
            "features_added": list(self.features_added),
            "features_removed": list(self.features_removed),
            "notes": list(self.notes),
            "failed": [f"{check.name} ({check.scope})" for check in self.failures()],
            "checks": [_finite_dict(asdict(check)) for check in self.checks],
            "tolerances": self.tolerances.as_dict(),
        }


def _row(check: Check) -> tuple[str, ...]:
    bound = ">= " if check.higher_is_better else "<= "
    limit = "" if check.limit is None else bound + _fmt(check.limit)
    return (
        check.name,
        check.scope,
        _fmt(check.baseline_value),
        _fmt(check.candidate_value),
        limit,
        check.verdict,
        check.note or "",
    )


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _names(names: Sequence[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _finite_dict(values: dict[str, object]) -> dict[str, object]:
    """JSON has no NaN: undefined figures become null."""
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in values.items()
    }


# -- the comparison ------------------------------------------------------------------------------


def compare(
    candidate: ScoredSet,
    baseline: ScoredSet,
    candidate_latency: Sequence[float],
    baseline_latency: Sequence[float],
    tolerances: GateTolerances | None = None,
    *,
    judged_on: str = "every row of the data",
    resamples: int = 50,
    notes: Iterable[str] = (),
) -> GateReport:
    """Judge `candidate` against `baseline`, both scored on the same rows with outcomes.
    Latencies are seconds per scored unit, measured in the same run."""
    tolerances = tolerances or GateTolerances()
    _require_comparable(candidate, baseline)
    candidate, baseline, alignment = align_rows(candidate, baseline)
    fairness_limits = tolerances.fairness()
    reports = {
        "candidate": fairness_report(candidate, tolerances=fairness_limits, resamples=resamples),
        "baseline": fairness_report(baseline, tolerances=fairness_limits, resamples=resamples),
    }
    checks = [
        *_overall_checks(
            candidate, baseline, reports["candidate"], reports["baseline"], tolerances
        ),
        *_subgroup_checks(reports["candidate"], reports["baseline"], tolerances),
        *_gap_checks(reports["candidate"], reports["baseline"], tolerances),
        _latency_check(candidate_latency, baseline_latency, tolerances),
    ]
    base_features, cand_features = set(baseline.feature_names), set(candidate.feature_names)
    return GateReport(
        model=baseline.model,
        unit=baseline.unit,
        candidate_version=candidate.version,
        baseline_version=baseline.version,
        rows=baseline.rows,
        patients=reports["baseline"].overall.patients,
        events=reports["baseline"].overall.events or 0,  # patients with the outcome
        judged_on=judged_on,
        checks=tuple(checks),
        tolerances=tolerances,
        features_added=tuple(sorted(cand_features - base_features)),
        features_removed=tuple(sorted(base_features - cand_features)),
        notes=tuple([*notes, *([alignment] if alignment else [])]),
    )


def _require_comparable(candidate: ScoredSet, baseline: ScoredSet) -> None:
    if candidate.model != baseline.model:
        raise GateRefused(
            f"the candidate is a {candidate.model!r} model and the baseline a {baseline.model!r} "
            "model: the gate compares versions of the same model only"
        )
    if candidate.unit != baseline.unit:
        raise GateRefused(
            f"the candidate scores {candidate.unit!r} rows and the baseline {baseline.unit!r} rows"
        )
    for role, scored in (("candidate", candidate), ("baseline", baseline)):
        if scored.labels is None:
            raise GateRefused(
                f"the data has no outcomes for the {role} to be judged on: the gate needs labelled "
                "data (outcomes that have not arrived yet cannot show a regression)"
            )
        if scored.rows == 0:
            raise GateRefused(f"the {role} scored no rows of the data")


def align_rows(candidate: ScoredSet, baseline: ScoredSet) -> tuple[ScoredSet, ScoredSet, str]:
    """The two sets on their common rows (by row id), with a sentence when rows were dropped.
    Refuses sets that cannot be paired: the comparison must be on the same rows and outcomes."""
    same = candidate.rows == baseline.rows and np.array_equal(
        candidate.patient_ids.astype(str), baseline.patient_ids.astype(str)
    )
    if same and (candidate.row_ids is None or baseline.row_ids is None):
        return candidate, baseline, _check_outcomes(candidate, baseline, "")
    if candidate.row_ids is None or baseline.row_ids is None:
        raise GateRefused(
            f"the candidate scored {candidate.rows:,} rows and the baseline {baseline.rows:,}, "
            "and without row ids they cannot be paired"
        )
    cand_ids, base_ids = candidate.row_ids.astype(str), baseline.row_ids.astype(str)
    if np.array_equal(cand_ids, base_ids):
        return candidate, baseline, _check_outcomes(candidate, baseline, "")
    common = np.intersect1d(cand_ids, base_ids)
    paired_candidate = candidate.subset(np.isin(cand_ids, common))
    paired_baseline = baseline.subset(np.isin(base_ids, common))
    if not np.array_equal(
        paired_candidate.row_ids.astype(str),  # type: ignore[union-attr]
        paired_baseline.row_ids.astype(str),  # type: ignore[union-attr]
    ):
        raise GateRefused("the two models scored the data's rows in different orders")
    if common.size == 0:
        raise GateRefused("the candidate and the baseline scored no row in common")
    note = (
        f"Only the {common.size:,} rows both models could score are compared "
        f"(candidate scored {candidate.rows:,}, baseline {baseline.rows:,})."
    )
    return (
        paired_candidate,
        paired_baseline,
        _check_outcomes(paired_candidate, paired_baseline, note),
    )


def _check_outcomes(candidate: ScoredSet, baseline: ScoredSet, note: str) -> str:
    if candidate.labels is None or baseline.labels is None:
        return note
    if not np.array_equal(candidate.labels.astype(int), baseline.labels.astype(int)):
        raise GateRefused("the two models read different outcomes from the same rows")
    return note


def _higher_better(
    name: str, scope: str, baseline: float | None, candidate: float | None, drop: float
) -> Check:
    if baseline is None or not math.isfinite(baseline):
        return Check(name, scope, baseline, candidate, None, None, "undefined for the baseline")
    limit = baseline - drop
    if candidate is None or not math.isfinite(candidate):
        return Check(name, scope, baseline, candidate, limit, False, "undefined for the candidate")
    return Check(name, scope, baseline, candidate, limit, candidate >= limit - _SLACK)


def _lower_better(
    name: str, scope: str, baseline: float | None, candidate: float | None, limit_of: float | None
) -> Check:
    if baseline is None or not math.isfinite(baseline) or limit_of is None:
        return Check(
            name, scope, baseline, candidate, None, None, "undefined for the baseline", False
        )
    if candidate is None or not math.isfinite(candidate):
        return Check(
            name, scope, baseline, candidate, limit_of, False, "undefined for the candidate", False
        )
    return Check(
        name, scope, baseline, candidate, limit_of, candidate <= limit_of + _SLACK, None, False
    )


def _alert_limit(baseline_rate: float | None, tolerances: GateTolerances) -> float | None:
    if baseline_rate is None or not math.isfinite(baseline_rate):
        return None
    return max(
        baseline_rate * (1 + tolerances.alert_rate_rise),
        baseline_rate + tolerances.alert_rate_floor,
    )


def _overall_checks(
    candidate: ScoredSet,
    baseline: ScoredSet,
    cand_report: FairnessReport,
    base_report: FairnessReport,
    tolerances: GateTolerances,
) -> list[Check]:
    cand, base = cand_report.overall, base_report.overall
    checks = [
        _higher_better(
            "AUROC", "overall", base.auroc.value, cand.auroc.value, tolerances.auroc_drop
        ),
        _higher_better(
            "AUPRC", "overall", auprc(baseline), auprc(candidate), tolerances.auprc_drop
        ),
    ]
    if baseline.model == SEPSIS:
        checks.append(
            _higher_better(
                "normalized utility",
                "overall",
                sepsis_utility(baseline),
                sepsis_utility(candidate),
                tolerances.utility_drop,
            )
        )
    checks += _calibration_and_burden("overall", cand, base, tolerances)
    return checks


def _calibration_and_burden(
    scope: str, cand: GroupMetrics, base: GroupMetrics, tolerances: GateTolerances
) -> list[Check]:
    base_ece = base.ece.value
    ece_limit = None if base_ece is None else base_ece + tolerances.ece_rise
    base_alerts = base.alert_rate.value
    return [
        _lower_better("ECE", scope, base_ece, cand.ece.value, ece_limit),
        _lower_better(
            "alert rate",
            scope,
            base_alerts,
            cand.alert_rate.value,
            _alert_limit(base_alerts, tolerances),
        ),
    ]


def _subgroup_checks(
    cand_report: FairnessReport, base_report: FairnessReport, tolerances: GateTolerances
) -> list[Check]:
    candidate_groups = {(g.attribute, g.group): g for g in cand_report.groups}
    checks: list[Check] = []
    for base in base_report.groups:
        cand = candidate_groups.get((base.attribute, base.group))
        scope = f"{base.attribute}={base.group}"
        if cand is None:
            continue
        if not (base.judgeable and cand.judgeable):
            checks.append(_not_judged(scope, base, cand))
            continue
        checks.append(
            _higher_better(
                "AUROC", scope, base.auroc.value, cand.auroc.value, tolerances.subgroup_auroc_drop
            )
        )
        checks += _calibration_and_burden(scope, cand, base, tolerances)
    return checks


def _not_judged(scope: str, base: GroupMetrics, cand: GroupMetrics) -> Check:
    events = "unknown" if base.events is None else f"{base.events:,}"
    why = (
        base.note or cand.note or f"too small to judge: {base.patients:,} patients, {events} events"
    )
    interval = ""
    if cand.auroc.low is not None and cand.auroc.high is not None:
        interval = f"; candidate AUROC 95% CI {cand.auroc.low:.2f}-{cand.auroc.high:.2f}"
    return Check(
        "AUROC",
        scope,
        base.auroc.value,
        cand.auroc.value,
        None,
        None,
        f"not gated, {why}{interval}",
    )


def _gap_checks(
    cand_report: FairnessReport, base_report: FairnessReport, tolerances: GateTolerances
) -> list[Check]:
    """Per attribute: the worst judgeable group's AUROC shortfall against overall may widen by
    at most `subgroup_gap_widen` (a model can hold its overall AUROC while one group pays)."""
    candidate_groups = {(g.attribute, g.group): g for g in cand_report.groups}
    attributes = sorted({g.attribute for g in base_report.groups})
    checks = []
    for attribute in attributes:
        pairs = [
            (base, candidate_groups[(base.attribute, base.group)])
            for base in base_report.groups
            if base.attribute == attribute
            and (base.attribute, base.group) in candidate_groups
            and base.judgeable
            and candidate_groups[(base.attribute, base.group)].judgeable
        ]
        base_gap, base_worst = _worst_gap(base_report.overall, [b for b, _ in pairs])
        cand_gap, cand_worst = _worst_gap(cand_report.overall, [c for _, c in pairs])
        if base_gap is None or cand_gap is None:
            continue
        check = _lower_better(
            "worst subgroup AUROC gap",
            attribute,
            base_gap,
            cand_gap,
            base_gap + tolerances.subgroup_gap_widen,
        )
        checks.append(replace(check, note=f"worst group: {base_worst} -> {cand_worst}"))
    return checks


def _worst_gap(
    overall: GroupMetrics, groups: Sequence[GroupMetrics]
) -> tuple[float | None, str | None]:
    if overall.auroc.value is None or not math.isfinite(overall.auroc.value):
        return None, None
    gaps = [
        (overall.auroc.value - g.auroc.value, g.group)
        for g in groups
        if g.auroc.value is not None and math.isfinite(g.auroc.value)
    ]
    if not gaps:
        return None, None
    gap, group = max(gaps)
    return max(gap, 0.0), group


def _latency_check(
    candidate_latency: Sequence[float],
    baseline_latency: Sequence[float],
    tolerances: GateTolerances,
) -> Check:
    name, scope = "p95 latency (ms)", "overall"
    if len(candidate_latency) == 0 or len(baseline_latency) == 0:
        return Check(name, scope, None, None, None, None, "not measured", False)
    base = p95_ms(baseline_latency)
    cand = p95_ms(candidate_latency)
    check = _lower_better(name, scope, base, cand, base + tolerances.latency_p95_rise_ms)
    return replace(
        check,
        note=f"{len(candidate_latency)} and {len(baseline_latency)} timings, interleaved",
    )


def p95_ms(seconds: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(seconds, dtype=float), 95) * 1000.0)


def auprc(scored: ScoredSet) -> float | None:
    if scored.labels is None:
        return None
    labels = np.asarray(scored.labels).astype(int)
    if np.unique(labels).size < 2:
        return float("nan")
    return float(average_precision_score(labels, scored.probs))


def stays_in_order(patient_ids: np.ndarray) -> list[slice]:
    """The runs of consecutive rows of one patient (a sepsis stay's hours come in order)."""
    ids = np.asarray(patient_ids).astype(str)
    if ids.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], ids.size]
    return [slice(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def sepsis_utility(scored: ScoredSet) -> float | None:
    """The Challenge's normalized utility of the alerts, stay by stay."""
    from careloop.sepsis.utility import normalized_utility

    if scored.labels is None:
        return None
    labels = np.asarray(scored.labels).astype(int)
    alerts = np.asarray(scored.alerts).astype(int)
    return normalized_utility(
        (labels[run], alerts[run]) for run in stays_in_order(scored.patient_ids)
    )


# -- from models and data to the comparison -----------------------------------------------------


@dataclass(frozen=True)
class JudgedData:
    """Models' predictions restricted to the patients it is fair to judge them on."""

    scored: tuple[ScoredSet, ...]
    basis: str  # in words, for the report
    notes: tuple[str, ...] = field(default_factory=tuple)


def training_fingerprint(model: GovernedModel) -> str | None:
    from careloop.governance.adapters import model_meta

    trained = model_meta(model.artifact).get("trained")
    if isinstance(trained, dict) and isinstance(trained.get("fingerprint"), str):
        return str(trained["fingerprint"])
    return None


def data_fingerprints(data: Path) -> set[str]:
    """The data's SHA-256 as a plain file digest and as careloop's training fingerprint (which
    also hashes file names, and walks a directory), whichever a model recorded."""
    named = hashlib.sha256()
    files = [data] if data.is_file() else sorted(p for p in data.rglob("*") if p.is_file())
    plain = hashlib.sha256() if data.is_file() else None
    for file in files:
        named.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                named.update(block)
                if plain is not None:
                    plain.update(block)
    return {named.hexdigest(), *([plain.hexdigest()] if plain is not None else [])}


def holdout_rule(models: Sequence[GovernedModel], data: Path) -> tuple[HoldoutRule | None, str]:
    """The patients the models may be judged on: a recorded holdout rule (the models must agree
    on it), every patient when the data is not a model's training data, else refuse."""
    rules = {model.version: model.training_holdout() for model in models}
    recorded = {version: HoldoutRule.from_dict(rule) for version, rule in rules.items() if rule}
    if len(set(recorded.values())) > 1:
        described = "; ".join(f"{v}: {r.as_dict()}" for v, r in recorded.items())
        raise GateRefused(
            f"the models kept different patients out of training ({described}): no patient set "
            "is unseen by both, so they cannot be judged fairly side by side"
        )
    unruled = [model for model in models if not rules[model.version]]
    fingerprints = data_fingerprints(data) if unruled else set()
    for model in unruled:
        if training_fingerprint(model) in fingerprints:
            raise GateRefused(
                f"{data.name} is the data {model.version} was trained on, and it records no "
                "holdout rule: metrics on training data would flatter it. Give data it never saw."
            )
    if recorded:
        rule = next(iter(recorded.values()))
        basis = (
            f"held-out patients only (holdout rule: {rule.share:.0%} of patients, "
            f"salt {rule.salt!r})"
        )
        return rule, basis
    return None, "every patient of the data (no model was trained on it)"


def judged_scores(
    models: Sequence[GovernedModel], data: Path, *, limit: int | None = None
) -> JudgedData:
    """Each model's predictions on `data`, restricted by `holdout_rule`. Raises GateRefused when
    a model cannot score the data."""
    rule, basis = holdout_rule(models, data)
    scored = []
    for model in models:
        try:
            result = model.score_data(
                data, limit=limit, patients=None if rule is None else rule.held_out
            )
        except GateRefused:
            raise
        except Exception as exc:  # any failure to read the data is the input's fault here
            raise GateRefused(
                f"{model.version} cannot score {data.name}: {type(exc).__name__}: {exc}"
            ) from exc
        if rule is not None:
            result = result.subset(rule.mask(result.patient_ids))
        if result.rows == 0:
            raise GateRefused(
                f"no rows of {data.name} are left to judge {model.version} on ({basis})"
            )
        scored.append(result)
    return JudgedData(tuple(scored), basis)


def measure_latency(
    candidate: GovernedModel,
    baseline: GovernedModel,
    data: Path,
    samples: int,
    *,
    rounds: int = 6,
) -> tuple[list[float], list[float]]:
    """Per-unit scoring seconds of both models, measured in alternating rounds (candidate,
    baseline, candidate, ...) so that a busy machine slows both alike. Rounds hold at least 5
    units each: a model may reread the data at every call."""
    candidate_times: list[float] = []
    baseline_times: list[float] = []
    if samples <= 0:
        return candidate_times, baseline_times
    rounds = max(1, min(rounds, samples // 5))
    per_round = [samples // rounds + (1 if i < samples % rounds else 0) for i in range(rounds)]
    for count in per_round:
        candidate_times.extend(candidate.timed_predictions(data, count))
        baseline_times.extend(baseline.timed_predictions(data, count))
    return candidate_times, baseline_times


def check_families(candidate: GovernedModel, baseline: GovernedModel) -> None:
    if candidate.name != baseline.name:
        raise GateRefused(
            f"the candidate {candidate.version} is a {candidate.name!r} model and the baseline "
            f"{baseline.version} a {baseline.name!r} model: the gate compares versions of the "
            "same model only"
        )


def run_gate(
    candidate: GovernedModel,
    baseline: GovernedModel,
    data: Path,
    tolerances: GateTolerances | None = None,
    *,
    limit: int | None = None,
    latency_samples: int = 200,
) -> GateReport:
    """Score `data` with both models on the patients neither was trained on, time them side by
    side, and compare."""
    check_families(candidate, baseline)
    judged = judged_scores([candidate, baseline], data, limit=limit)
    candidate_scored, baseline_scored = judged.scored
    candidate_latency, baseline_latency = measure_latency(
        candidate, baseline, data, latency_samples
    )
    notes = [*judged.notes]
    if latency_samples <= 0:
        notes.append("Scoring latency was not measured (--latency-samples 0).")
    return compare(
        candidate_scored,
        baseline_scored,
        candidate_latency,
        baseline_latency,
        tolerances,
        judged_on=judged.basis,
        notes=notes,
    )
