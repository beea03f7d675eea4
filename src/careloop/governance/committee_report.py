"""The AI committee's report on one model: one self-contained HTML file.

    careloop report model --model V --data PATH --out report.html [--baseline V]

What the committee reads, in order: the model's facts (version, training data fingerprint,
consent filter, alert policy), its overall performance with 95% intervals, ROC and calibration
curves per group (one plot per attribute, a line per group large enough to judge), the fairness
table with every flag written out in words (colour only repeats it), the alert burden per group,
drift over time from the recorded drift runs, the model card, and, with --baseline, the release
gate's comparison.

The file carries its plots as inline PNG (base64), its style inline, and no script or external
reference, so it can be mailed, archived and opened offline. Every text taken from data or
metadata is escaped. Performance is judged on the patients the model was not trained on, by the
same rule as the release gate (`careloop.governance.gate.judged_scores`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from careloop.governance.fairness import (
    Estimate,
    FairnessReport,
    GroupMetrics,
    estimate_text,
    fairness_report,
)
from careloop.governance.gate import (
    SEPSIS,
    GateReport,
    GateTolerances,
    auprc,
    compare,
    judged_scores,
    measure_latency,
    sepsis_utility,
)
from careloop.governance.scored import GovernedModel, ScoredSet

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from careloop.store.repository import ResourceStore

CALIBRATION_BINS = 10
DRIFT_COMMAND = "careloop drift run --model {version} --data PATH"
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.flagged td { background: #fde2e1; } tr.small td { color: #666; background: #f4f4f4; }
tr.failed td { background: #fde2e1; }
.verdict-pass { color: #05640d; font-weight: bold; }
.verdict-fail { color: #a00; font-weight: bold; }
pre { background: #f6f6f6; padding: 1em; white-space: pre-wrap; font-size: .85em; }
img { max-width: 100%; height: auto; } figure { margin: 1em 0; }
figcaption { font-size: .9em; color: #444; } nav li { display: inline; margin-right: 1em; }
"""
SECTIONS = (
    ("facts", "Model facts"),
    ("performance", "Overall performance"),
    ("roc", "ROC curves by group"),
    ("calibration", "Calibration by group"),
    ("fairness", "Fairness table"),
    ("alert-burden", "Alert burden by group"),
    ("drift", "Drift over time"),
    ("model-card", "Model card"),
    ("gate", "Release gate"),
)


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


# -- the command ---------------------------------------------------------------------------------


@click.command("model")
@click.option("--model", "model_ref", required=True, help="Model directory or version.")
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path, exists=True),
    help="Labelled data the model scores (its own layout).",
)
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The HTML file to write.",
)
@click.option("--baseline", "baseline_ref", help="Also show the release gate against this model.")
@click.option("--limit", type=click.IntRange(1), help="Score only the first N units (testing).")
@click.option(
    "--resamples",
    default=200,
    show_default=True,
    type=click.IntRange(0),
    help="Bootstrap resamples of patients for the intervals.",
)
@click.option(
    "--latency-samples",
    default=50,
    show_default=True,
    type=click.IntRange(0),
    help="With --baseline: single-unit timings per model for the gate's latency check.",
)
def model_report_command(
    model_ref: str,
    data: Path,
    out_file: Path,
    baseline_ref: str | None,
    limit: int | None,
    resamples: int,
    latency_samples: int,
) -> None:
    """Write the AI committee's HTML report on one model to OUT."""
    from careloop.cli_helpers import fail, out
    from careloop.governance.gate_cli import (
        configured_store,
        load_model,
        registry_lookup,
        write_atomically,
    )

    lookup, closing = registry_lookup()
    try:
        model = load_model(model_ref, lookup)
        baseline = load_model(baseline_ref, lookup) if baseline_ref else None
        inputs = ReportInputs.gather(
            model,
            data,
            baseline=baseline,
            limit=limit,
            resamples=resamples,
            latency_samples=latency_samples,
        )
    except ValueError as exc:  # GateRefused: unknown model, unscorable or training data
        fail(f"cannot report on {model_ref}: {exc}")
    finally:
        closing()
    store = configured_store()
    try:
        inputs.drift_runs = drift_runs(store, model.version)
    finally:
        if store is not None:
            store.close()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out_file, committee_html(inputs))
    out().print(f"wrote {out_file}", highlight=False)


def drift_runs(store: ResourceStore | None, version: str) -> list[Any] | None:
    """The recorded drift runs of `version`; None when no store is configured (or the drift
    module is absent), [] when a store holds none."""
    if store is None:
        return None
    try:
        from careloop.governance.drift import DriftHistory
    except ImportError:
        return None
    return DriftHistory(store).runs(version)


# -- what the report shows -----------------------------------------------------------------------


@dataclass
class ReportInputs:
    """Everything the page is drawn from, computed once."""

    meta: dict[str, Any]
    artifact: Path
    data_name: str
    scored: ScoredSet
    fairness: FairnessReport
    judged_on: str
    gate: GateReport | None = None
    drift_runs: list[Any] | None = None
    generated_at: datetime | None = None

    @classmethod
    def gather(
        cls,
        model: GovernedModel,
        data: Path,
        *,
        baseline: GovernedModel | None = None,
        limit: int | None = None,
        resamples: int = 200,
        latency_samples: int = 50,
    ) -> ReportInputs:
        """Score `data` on the patients the model (and the baseline) never trained on."""
        from careloop.governance.adapters import model_meta
        from careloop.governance.gate import check_families

        models = [model] if baseline is None else [model, baseline]
        if baseline is not None:
            check_families(model, baseline)
        judged = judged_scores(models, data, limit=limit)
        scored = judged.scored[0]
        if scored.labels is None:
            raise ValueError(f"{data.name} holds no outcomes: the report needs labelled data")
        gate = None
        if baseline is not None:
            timings = measure_latency(model, baseline, data, latency_samples)
            gate = compare(
                scored, judged.scored[1], *timings, GateTolerances(), judged_on=judged.basis
            )
        return cls(
            meta=model_meta(model.artifact),
            artifact=model.artifact,
            data_name=data.name,
            scored=scored,
            fairness=fairness_report(scored, resamples=resamples),
            judged_on=judged.basis,
            gate=gate,
            generated_at=datetime.now(UTC),
        )


def committee_html(inputs: ReportInputs) -> str:
    """The whole page."""
    version = str(inputs.meta.get("version", inputs.scored.version))
    generated = (inputs.generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>AI committee report: {esc(version)}</h1>",
        f"<p>Generated {esc(generated)} from {esc(inputs.data_name)}; judged on "
        f"{esc(inputs.judged_on)}.</p>",
        _contents(),
        _section("facts", _facts(inputs)),
        _section("performance", _performance(inputs)),
        _section("roc", _curves(inputs, roc_figure, "ROC curve")),
        _section("calibration", _curves(inputs, calibration_figure, "Calibration curve")),
        _section("fairness", fairness_html(inputs.fairness)),
        _section("alert-burden", alert_burden_html(inputs.scored, inputs.fairness)),
        _section("drift", drift_html(inputs.drift_runs, version)),
        _section("model-card", _model_card(inputs.artifact)),
        _section("gate", gate_html(inputs.gate) if inputs.gate else _no_gate(version)),
    ]
    return _page(f"AI committee report: {version}", body)


def _page(title: str, body: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _contents() -> str:
    items = "".join(f'<li><a href="#{key}">{esc(title)}</a></li>' for key, title in SECTIONS)
    return f"<nav><ul>{items}</ul></nav>"


def _section(key: str, content: str) -> str:
    title = dict(SECTIONS)[key]
    return f'<section id="{key}">\n<h2>{esc(title)}</h2>\n{content}\n</section>'


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()
) -> str:
    """A table of already-escaped cells; a cell starting with '#' is a right-aligned number."""
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    lines = [f"<table><thead><tr>{head}</tr></thead><tbody>"]
    for index, row in enumerate(rows):
        css = classes[index] if index < len(classes) and classes[index] else ""
        cells = "".join(
            f'<td class="num">{cell[1:]}</td>' if cell.startswith("#") else f"<td>{cell}</td>"
            for cell in row
        )
        lines.append(f'<tr class="{css}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "#–"
    return f"#{value:.{digits}f}"


def _estimate(estimate: Estimate, signed: bool = False) -> str:
    return "#" + esc(estimate_text(estimate, signed))


# -- facts and overall performance ---------------------------------------------------------------


def _facts(inputs: ReportInputs) -> str:
    meta = inputs.meta
    trained = meta.get("trained") if isinstance(meta.get("trained"), dict) else {}
    consent = trained.get("consent_filter") or meta.get("consent_filter") or "not recorded"
    features = meta.get("features")
    rows = [
        ("Version", meta.get("version")),
        ("Model", meta.get("name") or inputs.scored.model),
        ("Artifact", inputs.artifact.name),
        ("Training data", trained.get("data", "not recorded")),
        ("Training data fingerprint (SHA-256)", trained.get("fingerprint", "not recorded")),
        ("Consent filter at training", consent),
        ("Inputs", f"{len(features)} features" if isinstance(features, list) else "not recorded"),
        ("Holdout rule", json.dumps(meta.get("holdout")) if meta.get("holdout") else "none"),
        ("Alert policy", json.dumps(meta.get("policy", {}), sort_keys=True)),
        ("Judged on", inputs.judged_on),
    ]
    return _table(("fact", "value"), [(esc(name), esc(value)) for name, value in rows])


def _performance(inputs: ReportInputs) -> str:
    scored, overall = inputs.scored, inputs.fairness.overall
    rows = [
        ("AUROC", _estimate(overall.auroc)),
        ("AUPRC (average precision)", _number(auprc(scored))),
        (
            "Calibration in the large (observed − predicted)",
            _estimate(overall.calibration_in_large, True),
        ),
        ("ECE (10 equal-width bins)", _estimate(overall.ece)),
        ("True-positive rate at the operating point", _estimate(overall.tpr)),
        ("False-positive rate at the operating point", _estimate(overall.fpr)),
        (f"Alert rate (per {scored.unit})", _estimate(overall.alert_rate)),
    ]
    if scored.model == SEPSIS:
        rows.append(("Normalized utility (PhysioNet 2019)", _number(sepsis_utility(scored))))
    events = "unknown" if overall.events is None else f"{overall.events:,}"
    intro = (
        f"<p>{scored.rows:,} {esc(scored.unit)} rows from {overall.patients:,} patients, "
        f"{events} of them with the outcome. Intervals are 95% bootstrap intervals over "
        f"{inputs.fairness.resamples} resamples of whole patients.</p>"
    )
    return intro + _table(("measure", "value [95% CI]"), [(esc(n), v) for n, v in rows])


# -- plots ---------------------------------------------------------------------------------------


def _figure() -> tuple[Figure, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2, 4.4), dpi=100)
    return figure, figure.add_subplot(1, 1, 1)


def plain_label(text: str) -> str:
    """A data value as a plot label: matplotlib would read $...$ as mathematics."""
    return text.replace("$", r"\$")


def png_img(figure: Figure, alt: str) -> str:
    """The figure as an inline <img>: base64 PNG, no file, no external reference."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{encoded}">'


def judgeable_groups(report: FairnessReport, attribute: str) -> tuple[list[str], list[str]]:
    """(groups drawn, groups too small to judge) of one attribute."""
    groups = [g for g in report.groups if g.attribute == attribute]
    return [g.group for g in groups if g.judgeable], [g.group for g in groups if not g.judgeable]


def roc_figure(scored: ScoredSet, attribute: str, groups: Sequence[str]) -> Figure:
    from sklearn.metrics import roc_curve

    figure, axes = _figure()
    labels = np.asarray(scored.labels).astype(int)
    values = np.asarray(scored.groups[attribute]).astype(str)
    false_pos, true_pos, _ = roc_curve(labels, scored.probs)
    axes.plot(false_pos, true_pos, color="black", linestyle="--", label="all patients")
    for group in groups:
        rows = values == group
        if np.unique(labels[rows]).size < 2:
            continue
        false_pos, true_pos, _ = roc_curve(labels[rows], scored.probs[rows])
        axes.plot(false_pos, true_pos, label=plain_label(group))
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.5)
    axes.set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"ROC by {attribute}")
    axes.legend(fontsize="small", loc="lower right")
    return figure


def calibration_points(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean predicted, observed rate) in up to 10 bins of equal size by predicted risk: equal-
    width bins would put nearly every row of a rare outcome in the first bin."""
    order = np.argsort(probs, kind="stable")
    bins = [part for part in np.array_split(order, CALIBRATION_BINS) if part.size]
    predicted = np.array([probs[part].mean() for part in bins])
    observed = np.array([labels[part].mean() for part in bins])
    return predicted, observed


def calibration_figure(scored: ScoredSet, attribute: str, groups: Sequence[str]) -> Figure:
    figure, axes = _figure()
    labels = np.asarray(scored.labels).astype(float)
    probs = np.asarray(scored.probs, dtype=float)
    values = np.asarray(scored.groups[attribute]).astype(str)
    predicted, observed = calibration_points(labels, probs)
    axes.plot(predicted, observed, "k--o", markersize=3, label="all patients")
    top = max(predicted.max(), observed.max())
    for group in groups:
        rows = values == group
        predicted, observed = calibration_points(labels[rows], probs[rows])
        axes.plot(predicted, observed, "-o", markersize=3, label=plain_label(group))
        top = max(top, predicted.max(), observed.max())
    top = min(1.0, top * 1.05) or 1.0
    axes.plot([0, top], [0, top], color="grey", linewidth=0.5)
    axes.set(
        xlim=(0, top),
        ylim=(0, top),
        xlabel="mean predicted risk (deciles of risk)",
        ylabel="observed rate",
        title=f"Calibration by {attribute}",
    )
    axes.legend(fontsize="small", loc="upper left")
    return figure


def _curves(inputs: ReportInputs, draw: Any, kind: str) -> str:
    parts = []
    for attribute in sorted(inputs.scored.groups):
        drawn, small = judgeable_groups(inputs.fairness, attribute)
        image = png_img(draw(inputs.scored, attribute, drawn), f"{kind} by {attribute}")
        caption = f"{kind} by {attribute}: a line per group large enough to judge"
        if small:
            caption += f"; not drawn, too small to judge: {', '.join(small)}"
        parts.append(f"<figure>{image}<figcaption>{esc(caption)}.</figcaption></figure>")
    if not parts:
        return "<p>The data carries no demographic groups.</p>"
    return "\n".join(parts)


# -- fairness and alert burden -------------------------------------------------------------------

FAIRNESS_HEADER = (
    "attribute",
    "group",
    "patients",
    "events",
    "AUROC [CI]",
    "calibration in the large [CI]",
    "ECE [CI]",
    "TPR [CI]",
    "FPR [CI]",
    "alert rate [CI]",
    "assessment",
)


def _assessment(group: GroupMetrics) -> tuple[str, str]:
    """(words, row class): flags are said in words; colour only repeats them."""
    if group.flags:
        return "FLAGGED: " + "; ".join(group.flags), "flagged"
    if not group.judgeable:
        return "NOT JUDGED: " + (group.note or "too small to judge"), "small"
    return "within tolerance" + (f" ({group.note})" if group.note else ""), ""


def fairness_html(report: FairnessReport) -> str:
    rows, classes = [], []
    for group in (report.overall, *report.groups):
        words, css = _assessment(group)
        events = "#–" if group.events is None else f"#{group.events:,}"
        rows.append(
            (
                esc(group.attribute),
                f"<strong>{esc(group.group)}</strong>" if group.flags else esc(group.group),
                f"#{group.patients:,}",
                events,
                _estimate(group.auroc),
                _estimate(group.calibration_in_large, True),
                _estimate(group.ece),
                _estimate(group.tpr),
                _estimate(group.fpr),
                _estimate(group.alert_rate),
                esc(words),
            )
        )
        classes.append(css)
    flagged = report.flagged()
    summary = (
        f"<p><strong>{len(flagged)} group(s) flagged</strong>"
        + (": " + esc(", ".join(f"{g.attribute}={g.group}" for g in flagged)) if flagged else "")
        + ".</p>"
    )
    tol = report.tolerances
    missing = ", ".join(
        f"{name}: {count:,} rows" for name, count in report.missing.items() if count
    )
    notes = (
        f"<p>A group large enough to judge (at least {tol.min_patients} patients and "
        f"{tol.min_events} with the outcome) is flagged when its AUROC is more than "
        f"{tol.auroc_gap:g} below overall, its calibration in the large is off by more than "
        f"{tol.calibration_in_large:g}, its ECE exceeds {tol.ece:g}, or its TPR or FPR differs "
        f"from overall by more than {tol.tpr_gap:g} / {tol.fpr_gap:g}. Smaller groups are shown "
        "with their intervals and never flagged.</p>"
    )
    if missing:
        notes += (
            f"<p>Rows with the demographic field missing (group 'unknown'): {esc(missing)}.</p>"
        )
    return summary + _table(FAIRNESS_HEADER, rows, classes) + notes


@dataclass(frozen=True)
class GroupBurden:
    attribute: str
    group: str
    rows: int
    patients: int
    alerts: int
    with_outcome: float | None  # share of the group's alerts on a row with the outcome
    judgeable: bool

    @property
    def rate(self) -> float:
        return self.alerts / self.rows if self.rows else 0.0


def group_burdens(scored: ScoredSet, report: FairnessReport) -> list[GroupBurden]:
    labels = None if scored.labels is None else np.asarray(scored.labels).astype(int)
    alerts = np.asarray(scored.alerts).astype(bool)
    patient_ids = np.asarray(scored.patient_ids).astype(str)
    judgeable = {(g.attribute, g.group): g.judgeable for g in report.groups}
    burdens = []
    for attribute in sorted(scored.groups):
        values = np.asarray(scored.groups[attribute]).astype(str)
        for group in sorted(np.unique(values)):
            members = values == group
            count = int(alerts[members].sum())
            precision = None
            if labels is not None and count:
                precision = float(labels[members & alerts].mean())
            burdens.append(
                GroupBurden(
                    attribute=attribute,
                    group=str(group),
                    rows=int(members.sum()),
                    patients=int(np.unique(patient_ids[members]).size),
                    alerts=count,
                    with_outcome=precision,
                    judgeable=judgeable.get((attribute, str(group)), False),
                )
            )
    return burdens


def alert_burden_html(scored: ScoredSet, report: FairnessReport) -> str:
    """Alerts per group: how many, per row and per patient, and how many found an event."""
    burdens = group_burdens(scored, report)
    rows = [
        (
            esc(b.attribute),
            esc(b.group),
            f"#{b.rows:,}",
            f"#{b.patients:,}",
            f"#{b.alerts:,}",
            _number(b.rate if b.rows else None),
            _number(b.alerts / b.patients if b.patients else None, 2),
            _number(b.with_outcome),
            "yes" if b.judgeable else "no: too small to judge",
        )
        for b in burdens
    ]
    header = (
        "attribute",
        "group",
        f"{scored.unit} rows",
        "patients",
        "alerts",
        f"alerts per {scored.unit}",
        "alerts per patient",
        "share of alerts with the outcome",
        "large enough to judge",
    )
    overall_rate = report.overall.alert_rate.value or 0.0
    chart = png_img(_burden_figure(burdens, overall_rate), "Alert rate by group")
    caption = (
        "Alert rate by group (patients in brackets); grey bars are groups too small to judge; "
        "the dashed line is the rate over all patients."
    )
    return f"<figure>{chart}<figcaption>{esc(caption)}</figcaption></figure>" + _table(header, rows)


def _burden_figure(burdens: Sequence[GroupBurden], overall: float) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, max(2.5, 0.28 * len(burdens) + 1)), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(burdens))
    colours = ["#4c72b0" if b.judgeable else "#b0b0b0" for b in burdens]
    axes.barh(positions, [b.rate for b in burdens], color=colours)
    labels = [plain_label(f"{b.attribute}={b.group} ({b.patients:,})") for b in burdens]
    axes.set_yticks(positions, labels=labels, fontsize="small")
    axes.invert_yaxis()
    axes.axvline(overall, color="black", linestyle="--", linewidth=1)
    axes.set(xlabel="alert rate", title="Alert burden by group")
    return figure


# -- drift ---------------------------------------------------------------------------------------


def drift_html(runs: list[Any] | None, version: str) -> str:
    command = esc(DRIFT_COMMAND.format(version=version))
    if not runs:
        where = "no store is configured" if runs is None else "the store holds none"
        return (
            f"<p>No drift runs yet for this version ({where}). Run <code>{command}</code> on "
            "recent data (scheduled, it keeps the history this section plots).</p>"
        )
    runs = sorted(runs, key=lambda run: run.run_at)
    rows = [
        (
            esc(run.run_at.strftime("%Y-%m-%d %H:%M")),
            esc(run.window),
            esc(run.status.upper() if run.status != "ok" else "ok"),
            _number(run.risk_psi),
            _number(run.alert_rate),
            _number(run.reference_alert_rate),
            _number(run.auroc),
            _number(run.override_rate),
            esc("; ".join(run.breaches) or "none"),
        )
        for run in runs
    ]
    header = (
        "run at",
        "window",
        "status",
        "risk PSI",
        "alert rate",
        "reference alert rate",
        "AUROC",
        "override rate",
        "breaches",
    )
    classes = ["flagged" if run.status != "ok" else "" for run in runs]
    chart = png_img(drift_figure(runs), "Drift over time")
    return (
        f"<figure>{chart}<figcaption>Predicted-risk PSI, alert rate and AUROC (once outcomes "
        "arrived) per drift run.</figcaption></figure>" + _table(header, rows, classes)
    )


def drift_figure(runs: Sequence[Any]) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.0), dpi=100)
    left, right = figure.subplots(1, 2)
    when = [run.run_at for run in runs]
    left.plot(when, [run.risk_psi for run in runs], "-o", label="predicted-risk PSI")
    top_feature = [max(run.feature_psi.values(), default=0.0) for run in runs]
    left.plot(when, top_feature, "-s", label="largest feature PSI")
    left.set(title="Input and risk drift", ylabel="PSI")
    left.legend(fontsize="small")
    right.plot(when, [run.alert_rate for run in runs], "-o", label="alert rate")
    right.plot(when, [run.reference_alert_rate for run in runs], "k--", label="reference")
    aurocs = [np.nan if run.auroc is None else run.auroc for run in runs]
    if not all(np.isnan(aurocs)):
        twin = right.twinx()
        twin.plot(when, aurocs, "g-^", label="AUROC")
        twin.set_ylabel("AUROC")
    right.set(title="Alert rate and performance", ylabel="alert rate")
    right.legend(fontsize="small")
    figure.autofmt_xdate()
    return figure


# -- the card and the gate -----------------------------------------------------------------------


def _model_card(artifact: Path) -> str:
    card = artifact / "MODEL_CARD.md"
    if not card.is_file():
        return "<p>The artifact holds no MODEL_CARD.md.</p>"
    return f"<pre>{esc(card.read_text(encoding='utf-8', errors='replace'))}</pre>"


def _no_gate(version: str) -> str:
    command = esc(f"careloop report model --model {version} --data PATH --baseline V --out FILE")
    return (
        "<p>No baseline was given. To compare with the model it would replace: "
        f"<code>{command}</code>.</p>"
    )


def gate_html(report: GateReport) -> str:
    verdict = "verdict-pass" if report.passed else "verdict-fail"
    parts = [f'<p class="{verdict}">{esc(report.headline())}</p>']
    failed = report.failures()
    if failed:
        items = "".join(f"<li>{esc(check.describe())}</li>" for check in failed)
        parts.append(f"<p>Regressions beyond tolerance:</p><ul>{items}</ul>")
    parts.extend(f"<p>{esc(line)}</p>" for line in report.summary_lines())
    rows, classes = [], []
    for check in report.checks:
        bound = "≥ " if check.higher_is_better else "≤ "
        limit = "#" if check.limit is None else "#" + esc(bound + _plain(check.limit))
        rows.append(
            (
                esc(check.name),
                esc(check.scope),
                _number(check.baseline_value),
                _number(check.candidate_value),
                limit,
                esc(check.verdict),
                esc(check.note or ""),
            )
        )
        classes.append(
            "failed" if check.passed is False else "small" if check.passed is None else ""
        )
    header = ("check", "scope", "baseline", "candidate", "limit", "result", "note")
    parts.append(_table(header, rows, classes))
    tolerances = json.dumps(report.tolerances.as_dict())
    parts.append(f"<p>Tolerances: <code>{esc(tolerances)}</code></p>")
    return "\n".join(parts)


def _plain(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def gate_page(report: GateReport) -> str:
    """The gate's report as its own page (gate.html)."""
    title = f"Release gate: {report.candidate_version} vs {report.baseline_version}"
    return _page(title, [f"<h1>{esc(title)}</h1>", gate_html(report)])
