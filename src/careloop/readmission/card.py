"""The readmission model card (MODEL_CARD.md), written from the artifact's metadata, its
cross-validation and its held-out figures, so the card never disagrees with the model it ships with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careloop.readmission.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES

FAIRNESS_HEADING = "## Fairness by subgroup"
NOT_COMPUTED = "not yet computed"


def model_card(
    meta: Mapping[str, Any],
    cv: Mapping[str, Any] | None,
    fairness_markdown: str | None = None,
) -> str:
    """The card as markdown; `fairness_markdown` fills the fairness section when computed."""
    trained = meta.get("trained", {})
    lines = [
        f"# Model card: {meta['version']}",
        "",
        "## Intended use",
        "Estimates, at hospital discharge of an adult with diabetes, the probability of an "
        "unplanned readmission within 30 days, to decide who gets a transitional-care follow-up "
        "(a call, an early clinic visit, a medication review). It supports that decision and "
        "never makes it; it is not validated for other populations, for deciding discharge "
        "itself, or for denying care.",
        "",
        "## Data",
        f"- Source: `{trained.get('data')}`, SHA-256 `{trained.get('fingerprint')}`",
        f"- Citation: {trained.get('citation')}",
        f"- Consent filter: {trained.get('consent_filter')}",
        f"- Encounters read: {trained.get('encounters_read', 0):,}; discharged dead and left out "
        "of training and evaluation (cannot be readmitted): "
        f"{trained.get('expired_excluded', 0):,}",
        f"- Training: {trained.get('training_encounters', 0):,} encounters of "
        f"{trained.get('training_patients', 0):,} patients "
        f"({trained.get('training_events', 0):,} readmitted within 30 days)",
        f"- Held out (never trained on, where the figures below are measured): "
        f"{trained.get('holdout_encounters', 0):,} encounters of "
        f"{trained.get('holdout_patients', 0):,} patients, rule {meta.get('holdout')}",
        "",
        "## Features",
        "Known at discharge: the stay (length, labs, procedures, medications, diagnoses as ICD-9 "
        "chapters and the primary code, Charlson index from the three coded diagnoses, admission "
        "type and source, discharge disposition, HbA1c and glucose results, diabetes medication "
        "changes), visits in the prior year, and the patient's earlier encounters in the same "
        "data (ordered by encounter id; counts only, never earlier outcomes, whose timing the "
        "data does not give).",
        "",
        f"- Numeric: {', '.join(NUMERIC_FEATURES)}",
        f"- Categorical: {', '.join(CATEGORICAL_FEATURES)}",
        "",
        "Not used as inputs:",
    ]
    lines += [f"- `{name}`: {why}" for name, why in meta.get("inputs_excluded", {}).items()]
    lines += [
        "- age and sex: adding them changed the cross-validated AUROC by less than 0.001, so "
        "the model does without them; like race they are reported on below.",
        "",
        "## Model",
        f"LightGBM ({trained.get('rounds')} trees, early-stopped), Platt calibration; fitted on "
        f"{trained.get('fit_patients', 0):,} patients, with {trained.get('tune_patients', 0):,} "
        "other training patients for early stopping, calibration and the threshold. Every split "
        "is by patient.",
        f"Mitigation: {_mitigation(meta.get('mitigation', {}))}",
        "",
        "## Alert policy",
        f"Threshold {meta['policy']['threshold']:.4f}: {meta['policy']['rule']}. On the tuning "
        f"patients it flagged {meta['policy']['tune_alert_rate']:.1%} of discharges and caught "
        f"{meta['policy']['tune_sensitivity']:.1%} of readmissions (PPV "
        f"{meta['policy']['tune_ppv']:.1%}).",
        "",
        *cv_section(cv),
        *holdout_section(meta.get("metrics", {})),
        *(
            [fairness_markdown.strip()]
            if fairness_markdown
            else [FAIRNESS_HEADING, "", NOT_COMPUTED]
        ),
        "",
        "## Known limits",
        "- One US hospital network, 1999-2008, diabetic inpatients only: practice and coding have "
        "changed, so recalibrate and re-check on local data before use.",
        "- Readmission is to hospitals in the same data; readmissions elsewhere are missed.",
        "- Only three diagnoses are coded per encounter; comorbidity is undercounted.",
        "- History features count the encounters present in the file scored; a partial extract "
        "sees less history than the full record.",
        "- The data has no dates: earlier outcomes are not used and prior-year counts are as "
        "the source recorded them.",
        "- LACE is approximated (see `careloop.readmission.lace`).",
        "",
    ]
    return "\n".join(lines)


def _mitigation(mitigation: Mapping[str, Any]) -> str:
    attribute = mitigation.get("reweigh")
    if not attribute:
        return "none (reweighing is available with `--reweigh ATTRIBUTE`, off by default)."
    return f"training rows reweighed by {attribute} and outcome (Kamiran and Calders)."


def _figure(value: Any, interval: Any = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    if interval and interval[0] is not None:
        text += f" ({interval[0]:.3f}-{interval[1]:.3f})"
    return text


def cv_section(cv: Mapping[str, Any] | None) -> list[str]:
    if not cv:
        return ["## Cross-validation", "", "not run", ""]
    lines = [
        "## Cross-validation",
        "",
        f"{cv['folds']}-fold, grouped by patient, over the training patients only (each fold "
        "repeats the whole procedure: fit, early stopping, calibration, threshold).",
        "",
        "| fold | encounters | readmitted | AUROC | AUPRC | LACE AUROC |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['fold']} | {r['rows']:,} | {r['events']:,} | {_figure(r['auroc'])} | "
        f"{_figure(r['auprc'])} | {_figure(r['lace_auroc'])} |"
        for r in cv["results"]
    ]
    lines += [
        f"| mean ± sd | | | {cv['auroc_mean']:.3f} ± {cv['auroc_std']:.3f} | "
        f"{cv['auprc_mean']:.3f} ± {cv['auprc_std']:.3f} | "
        f"{cv['lace_auroc_mean']:.3f} ± {cv['lace_auroc_std']:.3f} |",
        "",
    ]
    return lines


def comparison_table(metrics: Mapping[str, Any]) -> list[str]:
    """Model and LACE side by side (AUROC with its patient-bootstrap 95% interval)."""
    model, lace = metrics["model"], metrics["lace"]
    rows = [
        ("AUROC (95% CI)", lambda m: _figure(m["auroc"], m["auroc_ci"])),
        ("AUPRC", lambda m: _figure(m["auprc"])),
        ("Brier", lambda m: _figure(m["brier"])),
        ("ECE", lambda m: _figure(m["ece"])),
        (
            "calibration in the large (observed - predicted)",
            lambda m: _figure(m["calibration_in_large"]),
        ),
        ("alert rate", lambda m: _figure(m["operating_point"]["alert_rate"])),
        (
            "sensitivity",
            lambda m: _figure(
                m["operating_point"]["sensitivity"], m["operating_point"]["sensitivity_ci"]
            ),
        ),
        ("PPV", lambda m: _figure(m["operating_point"]["ppv"], m["operating_point"]["ppv_ci"])),
    ]
    lines = [
        f"{model['rows']:,} encounters of {model['patients']:,} patients, "
        f"{model['events']:,} readmitted within 30 days. LACE alerts at score >= "
        f"{lace.get('threshold')} (the cut-off nearest the model's alert budget); its "
        "probabilities are the training readmission rate per score.",
        "",
        "| | model | LACE |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {show(model)} | {show(lace)} |" for name, show in rows]
    return lines + [""]


def subgroup_table(metrics: Mapping[str, Any]) -> list[str]:
    lines = [
        "AUROC by group (a quick look; the judged fairness figures are in the next section).",
        "",
        "| attribute | group | encounters | readmitted | model AUROC | LACE AUROC |",
        "|---|---|---|---|---|---|",
    ]
    model_groups = metrics["subgroups"]["model"]
    lace_groups = metrics["subgroups"]["lace"]
    for attribute, rows in model_groups.items():
        lace_by_group = {r["group"]: r for r in lace_groups[attribute]}
        for row in rows:
            lace_row = lace_by_group[row["group"]]
            lines.append(
                f"| {attribute} | {row['group']} | {row['rows']:,} | {row['events']:,} | "
                f"{_figure(row['auroc'])} | {_figure(lace_row['auroc'])} |"
            )
    return lines + [""]


def holdout_section(metrics: Mapping[str, Any]) -> list[str]:
    if not metrics or "model" not in metrics:
        return ["## Held-out patients", "", "no held-out patients in the training data", ""]
    return [
        "## Held-out patients: model vs LACE",
        "",
        *comparison_table(metrics),
        *subgroup_table(metrics),
    ]


def evaluation_report(metrics: Mapping[str, Any], data: str, version: str, population: str) -> str:
    """report.md of `careloop evaluate readmission`."""
    return "\n".join(
        [
            f"# Readmission evaluation: {version}",
            "",
            f"Data: `{data}`; judged on: {population}.",
            "",
            *comparison_table(metrics),
            *subgroup_table(metrics),
        ]
    )
