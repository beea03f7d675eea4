"""What evaluation and training write for people: the readable report, its reliability plot,
and the model card that travels with a shipped model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402

SCORERS = ("model", "qsofa", "sirs", "news2")
COLUMNS = (
    ("normalized_utility", "utility", "{:.3f}"),
    ("auroc", "AUROC", "{:.3f}"),
    ("auprc", "AUPRC", "{:.3f}"),
    ("sensitivity", "sensitivity", "{:.2f}"),
    ("ppv", "PPV", "{:.2f}"),
    ("median_lead_time_hours", "median lead h", "{:.1f}"),
    ("alerts_per_100_patient_days", "alerts /100 pt-days", "{:.1f}"),
    ("share_of_stays_alerted", "stays alerted", "{:.2f}"),
    ("ece", "ECE", "{:.3f}"),
)
DATA_ATTRIBUTION = (
    "PhysioNet/CinC Challenge 2019, training set A (CC BY 4.0): Reyna MA et al. Early "
    "Prediction of Sepsis From Clinical Data: the PhysioNet/Computing in Cardiology Challenge "
    "2019. Crit Care Med 2020;48(2):210-217."
)


def metric_table(results: Mapping[str, Mapping[str, object]]) -> list[str]:
    """A markdown table, one row per scorer present, from {scorer: {metric: value}}."""
    rows = ["| scorer | " + " | ".join(label for _k, label, _f in COLUMNS) + " |"]
    rows.append("|---|" + "--:|" * len(COLUMNS))
    for scorer in SCORERS:
        if scorer not in results:
            continue
        metrics = results[scorer]
        cells = [_cell(metrics.get(key), fmt) for key, _label, fmt in COLUMNS]
        rows.append(f"| {scorer} | " + " | ".join(cells) + " |")
    return rows


def _cell(value: object, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):  # a cross-validation {mean, std}
        mean, std = value.get("mean"), value.get("std")
        return f"{fmt.format(mean)} ± {fmt.format(std)}"
    return fmt.format(value)


def write_reliability_plot(curve: list, path: Path) -> None:
    predicted = [point[0] for point in curve]
    observed = [point[1] for point in curve]
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axes.plot(predicted, observed, marker="o", label="model")
    axes.set_xlabel("predicted probability")
    axes.set_ylabel("observed frequency of the label")
    axes.set_title("Reliability (patient-hours)")
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def evaluation_report(report: Mapping[str, Mapping[str, object]], data: str, model: str) -> str:
    overall = {name: entry["overall"] for name, entry in report.items()}
    lines = [
        "# Sepsis early warning: evaluation",
        "",
        f"- **Data**: `{data}`",
        f"- **Model**: `{model}`",
        "- Baselines at their standard thresholds: qSOFA ≥ 2 (2 of 3 criteria: no GCS in the "
        "data), SIRS ≥ 2, NEWS2 ≥ 5 (no consciousness item).",
        "",
        "## Overall",
        "",
        *metric_table(overall),  # type: ignore[arg-type]
        "",
        "![reliability](reliability.png)",
        "",
        "## By subgroup",
    ]
    groups = sorted(report["model"]["subgroups"]) if "model" in report else []  # type: ignore[index]
    for group in groups:
        per = {name: entry["subgroups"][group] for name, entry in report.items()}  # type: ignore[index]
        lines += ["", f"### {group}", "", *metric_table(per)]  # type: ignore[arg-type]
    return "\n".join(lines) + "\n"


def tuning_table(tuning: list[dict[str, object]] | None) -> list[str]:
    if not tuning:
        return []
    lines = [
        "",
        "## Hyperparameters (3-fold patient-grouped cross-validation on set A, out-of-fold AUPRC)",
        "",
        "The 5-fold figures above use the chosen setting; the choice was made on the same set A "
        "(not nested), so they carry a small selection optimism.",
        "",
        "| settings | AUPRC mean ± sd |",
        "|---|--:|",
    ]
    for row in tuning:
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items())  # type: ignore[attr-defined]
        lines.append(f"| {params} | {row['auprc_mean']:.3f} ± {row['auprc_std']:.3f} |")
    return lines


def subgroup_tables(report: Mapping[str, Mapping[str, object]] | None) -> list[str]:
    """Per subgroup, model vs baselines on the pooled out-of-fold predictions."""
    if not report or "model" not in report:
        return []
    lines = [
        "",
        "## By subgroup (pooled out-of-fold predictions: each stay scored by the fold model "
        "that never saw it)",
    ]
    for group in sorted(report["model"]["subgroups"]):  # type: ignore[index]
        per = {name: entry["subgroups"][group] for name, entry in report.items()}  # type: ignore[index]
        stays = per["model"].get("stays")  # type: ignore[union-attr]
        lines += ["", f"### {group} ({stays} stays)", "", *metric_table(per)]  # type: ignore[arg-type]
    return lines


def model_card(
    meta: Mapping[str, object],
    cv: Mapping[str, object] | None,
    holdout: Mapping[str, Mapping[str, object]] | None = None,
    fairness_markdown: str | None = None,
) -> str:
    """The card; `holdout` is `evaluate_all` on the stays held out of training, and
    `fairness_markdown` the fairness section on them (`careloop.governance.model_card`)."""
    policy = meta["policy"]
    trained = meta["trained"]
    held = trained.get("holdout")  # type: ignore[union-attr]
    lines = [
        f"# Model card: {meta['version']}",
        "",
        "## Intended use",
        "",
        "Hourly risk of sepsis onset for adult ICU patients, shown to clinicians as a decision "
        "aid with its top contributing factors. It does not diagnose and never acts on its own: "
        "an alert asks a clinician to look.",
        "",
        "## Data",
        "",
        f"- Trained on {DATA_ATTRIBUTION}",
        f"- Training data fingerprint (SHA-256 of the archive): `{trained.get('fingerprint')}`",  # type: ignore[union-attr]
        f"- Stays used: {trained.get('stays')} ({trained.get('septic_stays')} septic), "  # type: ignore[union-attr]
        f"{trained.get('hours')} patient-hours; stays flagged invalid or insufficient were "  # type: ignore[union-attr]
        f"left out: {json.dumps(trained.get('unscorable'))}",  # type: ignore[union-attr]
        _holdout_line(held),
        "- Consent filter: not applicable (public de-identified research data); training from "
        "careloop's store goes through the access layer's consent filter.",
        "",
        "## Model",
        "",
        "LightGBM gradient-boosted trees on hourly features computed from each hour's past only, "
        "isotonic calibration, explanations from tree SHAP contributions. Fitted on 80% of the "
        "training stays; early stopping, calibration and the alert threshold come from the "
        "other 20%.",
        "",
        f"- LightGBM settings: `{json.dumps(trained.get('params'), sort_keys=True)}` "  # type: ignore[union-attr]
        f"({trained.get('rounds')} trees)",  # type: ignore[union-attr]
        "",
        "## Alert policy",
        "",
        f"- Alert when calibrated risk crosses {policy['threshold']:.3f} (rising edge), "  # type: ignore[index]
        f"cleared below {policy['threshold'] * policy['reset_ratio']:.3f}; "  # type: ignore[index]
        f"re-alerts suppressed for {policy['snooze_hours']} h after one is sent; threshold "  # type: ignore[index]
        f"chosen for the best normalized utility with at most "
        f"{policy['max_alerts_per_patient_day']} alerts per patient-day.",  # type: ignore[index]
    ]
    if cv is not None:
        summary = cv["summary"]
        lines += [
            "",
            f"## Patient-grouped cross-validation on set A ({len(cv['folds'])} folds, "  # type: ignore[arg-type]
            "mean ± sd)",
            "",
            *metric_table(summary),  # type: ignore[arg-type]
        ]
        lines += tuning_table(cv.get("tuning"))  # type: ignore[arg-type]
        lines += subgroup_tables(cv.get("out_of_fold"))  # type: ignore[arg-type]
    if holdout is not None:
        overall = {name: entry["overall"] for name, entry in holdout.items()}
        lines += [
            "",
            "## Held-out stays (never used in training, tuning or calibration)",
            "",
            *metric_table(overall),  # type: ignore[arg-type]
        ]
    if fairness_markdown:
        lines += ["", fairness_markdown.rstrip()]
    lines += [
        "",
        "## Limits",
        "",
        "- Trained on one hospital's ICU data; performance at another hospital is expected to be "
        "lower and must be measured there before use.",
        "- Labels follow the Challenge's Sepsis-3 based definition, shifted 6 h early; qSOFA "
        "and NEWS2 here lack consciousness (not in the data).",
        "- Not for children, not outside the ICU, not for diagnosing sepsis.",
    ]
    return "\n".join(lines) + "\n"


def _holdout_line(held: object) -> str:
    if not isinstance(held, dict):
        return "- No stays were held out: every figure below comes from cross-validation."
    return (
        f"- Held out of training: {held.get('stays')} stays, chosen by a hash of the stay id "
        f"(salt `{held.get('salt')}`, share {held.get('share')}); the held-out figures and "
        "fairness tables below, the drift reference's comparison and the release gate use them."
    )
