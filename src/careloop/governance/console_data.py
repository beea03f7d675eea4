"""What the governance console shows, computed from the registry, the artifacts, the drift
history, the CDS ledger and the audit log: plain data for the templates, and nothing else.

Aggregates only. No figure here is about one patient: the model pages read the registry, the
artifact's card and `fairness.json` and the drift history (all aggregate by construction); the
alert pages count the CDS ledger's clear columns (service, indicator, card kind, unit, outcome,
reason code) and use the ledger's patient hash only to count distinct patient-days, never to
show it. Card keys that embed a per-patient alert id (`monitoring:alert-...`) are folded into one
kind. Comments given with an override are never read.

Small counts. A count of fewer than 5 that belongs to a subgroup (a fairness group: its patients
and its patients with the outcome) or to a unit (cards and feedback per ward) is shown as "fewer
than 5" (`count_text`), so a rare group or a quiet ward does not point at a person. Totals over
everyone are shown as counted.

The audit review (`audit_review` and `refused_pages`) is the auditor's page, not the committee's:
like `careloop.audit.review` it names agents and patient ids (the auditor's entitlement: who
accessed whose record) and the stated break-glass reason, and never clinical content.

The model card is rendered from its Markdown by `markdown_html`, which escapes every character of
the card first and only then adds the few tags it supports (headings, paragraphs, lists, pipe
tables, code, bold, italics), so no HTML in a card ever reaches the page as markup.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import orjson
from markupsafe import Markup, escape
from sqlalchemy import select

from careloop.audit.log import AuditLog
from careloop.cds.overrides import CardFacts, OverrideRow, outcome_row
from careloop.governance.drift import DriftHistory, DriftResult, DriftThresholds
from careloop.governance.fairness import Estimate, estimate_text
from careloop.governance.model_card import FAIRNESS_FILE
from careloop.governance.registry import (
    MODEL_CARD,
    ArtifactTampered,
    ModelRegistry,
    RegisteredModel,
    StateChange,
    headline_auroc,
)
from careloop.store.repository import ResourceStore
from careloop.store.schema import cds_cards, cds_feedback, cds_hook_calls

SMALL_COUNT = 5  # counts below this, per subgroup or per unit, are shown as "fewer than 5"
FEWER_THAN_SMALL = f"fewer than {SMALL_COUNT}"
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # the registry's rule
MAX_PERIOD_DAYS = 400  # a console period longer than this is refused (it reads every row)
DEFAULT_PERIOD_DAYS = 30
MAX_TEXT = 300  # characters of an operator's reason shown
MAX_CARD_BYTES = 512 * 1024  # a model card larger than this is not rendered
NOT_JUDGED = "too small to judge"
WITHHELD = "not shown (too few)"


def count_text(count: int | None) -> str:
    """A per-subgroup or per-unit count: "fewer than 5" below 5, else the number."""
    if count is None:
        return "–"
    if count < SMALL_COUNT:
        return FEWER_THAN_SMALL
    return f"{count:,}"


def number_text(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def percent_text(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.0%}"


def short_text(text: str | None, limit: int = MAX_TEXT) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def moment_text(moment: datetime | None) -> str:
    if moment is None:
        return "–"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def valid_version(text: str) -> bool:
    """Whether `text` can be a registered version (letters, digits, '.', '_', '-')."""
    return bool(VERSION_PATTERN.fullmatch(text)) and text not in {".", ".."}


# -- Markdown, safely --------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d{1,9}[.)]\s+(.*)$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])[*_](?![\s*_])(.+?)(?<![\s*_])[*_](?![\w*])")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str) -> str:
    """One line of Markdown as HTML: escaped first, then code, bold and italics as tags.
    A link is shown as its text followed by its address in brackets, never as a link."""
    parts = _CODE_SPAN.split(text)
    out = []
    for index, part in enumerate(parts):
        safe = str(escape(part))
        if index % 2:
            out.append(f"<code>{safe}</code>")
            continue
        safe = _LINK.sub(r"\1 (\2)", safe)
        safe = _BOLD.sub(r"<strong>\1</strong>", safe)
        safe = _ITALIC.sub(r"<em>\1</em>", safe)
        out.append(safe)
    return "".join(out)


def _cells(line: str) -> list[str]:
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    cells = re.split(r"(?<!\\)\|", body)
    return [cell.strip().replace("\\|", "|") for cell in cells]


class _MarkdownRenderer:
    def __init__(self, heading_base: int) -> None:
        self.heading_base = heading_base
        self.out: list[str] = []
        self.paragraph: list[str] = []
        self.list_kind: str | None = None
        self.items: list[str] = []
        self.heading = ""
        self.tables = 0

    def flush(self) -> None:
        if self.paragraph:
            self.out.append("<p>" + " ".join(_inline(p) for p in self.paragraph) + "</p>")
            self.paragraph = []
        if self.list_kind:
            items = "".join(f"<li>{_inline(item)}</li>" for item in self.items)
            self.out.append(f"<{self.list_kind}>{items}</{self.list_kind}>")
            self.list_kind, self.items = None, []

    def render(self, text: str) -> str:
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        index = 0
        while index < len(lines):
            line = lines[index]
            if _FENCE.match(line):
                self.flush()
                fence = _FENCE.match(line).group(1)  # type: ignore[union-attr]
                code = []
                index += 1
                while index < len(lines) and not lines[index].strip().startswith(fence):
                    code.append(lines[index])
                    index += 1
                self.out.append(f"<pre><code>{escape(chr(10).join(code))}</code></pre>")
                index += 1
                continue
            if not line.strip():
                self.flush()
                index += 1
                continue
            heading = _HEADING.match(line)
            if heading:
                self.flush()
                level = min(6, len(heading.group(1)) + self.heading_base - 1)
                self.heading = heading.group(2)
                self.out.append(f"<h{level}>{_inline(self.heading)}</h{level}>")
                index += 1
                continue
            if (
                "|" in line
                and index + 1 < len(lines)
                and _TABLE_RULE.match(lines[index + 1])
                and "-" in lines[index + 1]
            ):
                self.flush()
                rows = []
                header = _cells(line)
                index += 2
                while index < len(lines) and "|" in lines[index] and lines[index].strip():
                    rows.append(_cells(lines[index]))
                    index += 1
                self.out.append(self._table(header, rows))
                continue
            bullet, numbered = _BULLET.match(line), _NUMBERED.match(line)
            if bullet or numbered:
                kind = "ul" if bullet else "ol"
                if self.paragraph or (self.list_kind and self.list_kind != kind):
                    self.flush()
                self.list_kind = kind
                self.items.append((bullet or numbered).group(1))  # type: ignore[union-attr]
                index += 1
                continue
            if self.list_kind and line.startswith((" ", "\t")):
                self.items[-1] += " " + line.strip()  # an item continued on the next line
                index += 1
                continue
            if self.list_kind:
                self.flush()
            self.paragraph.append(line.strip())
            index += 1
        self.flush()
        return "\n".join(self.out)

    def _table(self, header: list[str], rows: list[list[str]]) -> str:
        self.tables += 1
        caption = f"Table {self.tables} of the card" + (
            f", under “{self.heading}”" if self.heading else ""
        )
        width = len(header)
        head = "".join(f'<th scope="col">{_inline(cell)}</th>' for cell in header)
        body = []
        for row in rows:
            cells = (row + [""] * width)[:width]
            body.append("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in cells) + "</tr>")
        label = escape(caption)
        return (
            f'<div class="table-wrap" role="region" aria-label="{label}" tabindex="0">'
            f"<table><caption>{_inline(caption)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )


def markdown_html(text: str, heading_base: int = 3) -> Markup:
    """Markdown as safe HTML: every character of `text` is escaped before the renderer adds
    its own tags, so raw HTML in the source is shown as text, never run. Supports headings
    (`#` becomes <h{heading_base}>), paragraphs, bulleted and numbered lists, pipe tables
    (with a caption and column headers), fenced code, `code`, **bold** and _italics_; links
    are shown as text with their address."""
    return Markup(_MarkdownRenderer(heading_base).render(text))


# -- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryLine:
    when: str
    change: str  # "registered as candidate", "candidate → active"
    actor: str
    reason: str


@dataclass(frozen=True)
class VersionSummary:
    version: str
    name: str
    state: str
    registered_at: str
    registered_by: str
    state_changed_at: str
    fingerprint: str  # short
    auroc: str
    policy: tuple[tuple[str, str], ...]
    history: tuple[HistoryLine, ...]


@dataclass(frozen=True)
class ModelGroup:
    name: str
    active: str | None
    versions: tuple[VersionSummary, ...]


def short_fingerprint(value: str | None) -> str:
    return "not recorded" if not value else value[:12]


def policy_lines(policy: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The alert policy as (setting, value) lines, numbers rounded, nested values as JSON."""
    lines = []
    for key in sorted(policy):
        value = policy[key]
        if isinstance(value, bool) or value is None:
            text = str(value).lower()
        elif isinstance(value, int | float):
            text = f"{value:.4g}"
        elif isinstance(value, str):
            text = short_text(value)
        else:
            text = short_text(json.dumps(value, sort_keys=True))
        lines.append((key.replace("_", " "), text))
    return tuple(lines)


def _history_line(change: StateChange) -> HistoryLine:
    moved = (
        f"registered as {change.to_state}"
        if change.from_state is None
        else f"{change.from_state} → {change.to_state}"
    )
    return HistoryLine(
        when=moment_text(change.changed_at),
        change=moved,
        actor=short_text(change.actor, 128),
        reason=short_text(change.reason) or "–",
    )


def version_summary(model: RegisteredModel, history: Iterable[StateChange]) -> VersionSummary:
    auroc = headline_auroc(model.metrics)
    return VersionSummary(
        version=model.version,
        name=model.name,
        state=model.state.value,
        registered_at=moment_text(model.registered_at),
        registered_by=model.registered_by,
        state_changed_at=moment_text(model.state_changed_at),
        fingerprint=short_fingerprint(model.data_fingerprint),
        auroc=number_text(auroc),
        policy=policy_lines(model.policy),
        history=tuple(_history_line(c) for c in history if c.version == model.version),
    )


def registry_overview(registry: ModelRegistry) -> list[ModelGroup]:
    """Every registered model with its versions (newest first) and their state history."""
    history = registry.history()
    by_name: dict[str, list[RegisteredModel]] = defaultdict(list)
    for model in registry.list():
        by_name[model.name].append(model)
    groups = []
    for name in sorted(by_name):
        versions = sorted(by_name[name], key=lambda m: m.registered_at, reverse=True)
        active = next((m.version for m in versions if m.state.value == "active"), None)
        groups.append(
            ModelGroup(name, active, tuple(version_summary(m, history) for m in versions))
        )
    return groups


# -- metrics -------------------------------------------------------------------------------------

_METRIC_NAMES = {
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "ece": "ECE",
    "ppv": "PPV",
    "tpr": "TPR",
    "fpr": "FPR",
    "brier": "Brier score",
    "lace": "LACE",
    "qsofa": "qSOFA",
    "sirs": "SIRS",
    "news2": "NEWS2",
}
_SKIPPED_METRICS = frozenset({"subgroups", "reliability", "folds"})


@dataclass(frozen=True)
class MetricRow:
    name: str
    value: str
    interval: str  # "[low, high]", "± sd over folds", or ""


def _metric_name(path: Sequence[str]) -> str:
    return " · ".join(_METRIC_NAMES.get(part, part.replace("_", " ")) for part in path)


def metric_rows(metrics: dict[str, Any], limit: int = 120) -> list[MetricRow]:
    """The registry's recorded metrics, flattened: a number with its `_ci` interval when the
    artifact kept one, a cross-validation {mean, std} as mean ± sd; per-group tables and
    reliability bins are left to the fairness section (they hold small counts)."""
    rows: list[MetricRow] = []

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for key in sorted(node, key=lambda name: (name != "model", name)):
            if len(rows) >= limit or key in _SKIPPED_METRICS or key.endswith("_ci"):
                continue
            value = node[key]
            here = (*path, key)
            if isinstance(value, dict) and "mean" in value:
                mean, std = value.get("mean"), value.get("std")
                spread = ""
                if isinstance(std, int | float):
                    spread = f"± {_metric_value(std)} sd over folds"
                rows.append(MetricRow(_metric_name(here), _metric_value(mean), spread))
            elif isinstance(value, dict) and len(here) < 4:
                walk(value, here)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                ci = node.get(f"{key}_ci")
                interval = ""
                if isinstance(ci, list) and len(ci) == 2:
                    interval = f"[{number_text(ci[0])}, {number_text(ci[1])}]"
                rows.append(MetricRow(_metric_name(here), _metric_value(value), interval))

    walk(metrics, ())
    return rows


def _metric_value(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "–"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 100):
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return number_text(float(value))


# -- fairness ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FairnessRow:
    attribute: str
    group: str
    patients: str
    events: str
    auroc: str
    calibration: str
    ece: str
    tpr: str
    fpr: str
    alert_rate: str
    status: str  # "flagged" | "not judged" | "within tolerance"
    words: str  # the assessment in words


@dataclass(frozen=True)
class FairnessAttribute:
    attribute: str
    rows: tuple[FairnessRow, ...]
    missing: str  # rows with the attribute missing, in words


@dataclass(frozen=True)
class FairnessView:
    population: str
    unit: str
    resamples: int
    confidence: str
    overall: FairnessRow
    attributes: tuple[FairnessAttribute, ...]
    flagged: tuple[str, ...]  # "age_band=[80-90)", ...
    too_small: tuple[str, ...]
    rule: str  # the flagging rule in words


def _estimate(node: object, signed: bool = False) -> str:
    if not isinstance(node, dict):
        return "–"
    value, low, high = (_float(node.get(key)) for key in ("value", "low", "high"))
    estimate = Estimate(value, low, high)
    return estimate_text(estimate, signed)


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _fairness_row(node: dict[str, Any], tolerances: dict[str, Any], overall: bool) -> FairnessRow:
    patients, events = _int(node.get("patients")), _int(node.get("events"))
    flags = [short_text(str(flag)) for flag in node.get("flags") or []]
    count = (lambda n: "–" if n is None else f"{n:,}") if overall else count_text
    if flags:
        status, words = "flagged", "flagged: " + "; ".join(flags)
    elif not node.get("judgeable", False):
        status = "not judged"
        words = (
            f"{NOT_JUDGED}: {count(patients)} patients, {count(events)} with the outcome "
            f"(a group needs at least {tolerances.get('min_patients', '?')} patients and "
            f"{tolerances.get('min_events', '?')} with the outcome)"
        )
    else:
        status, words = "within tolerance", "within tolerance"
    figures = {
        name: _estimate(node.get(name), signed=name == "calibration_in_large")
        for name in ("auroc", "calibration_in_large", "ece", "tpr", "fpr", "alert_rate")
    }
    if not overall:
        # a rate over a handful of people tells about each of them: fewer than 5 patients,
        # no figure; fewer than 5 with the outcome, no figure that is computed over them
        if patients is not None and patients < SMALL_COUNT:
            figures = dict.fromkeys(figures, WITHHELD)
        elif events is not None and events < SMALL_COUNT:
            figures.update(auroc=WITHHELD, tpr=WITHHELD)
    return FairnessRow(
        attribute=str(node.get("attribute", "")),
        group=short_text(str(node.get("group", "")), 80),
        patients=count(patients),
        events=count(events),
        auroc=figures["auroc"],
        calibration=figures["calibration_in_large"],
        ece=figures["ece"],
        tpr=figures["tpr"],
        fpr=figures["fpr"],
        alert_rate=figures["alert_rate"],
        status=status,
        words=words,
    )


def fairness_view(data: dict[str, Any]) -> FairnessView:
    """The artifact's `fairness.json` as the dashboard shows it. Raises ValueError when the
    file is not a fairness report."""
    if not isinstance(data, dict) or not isinstance(data.get("overall"), dict):
        raise ValueError("it holds no overall figures")
    tolerances = data.get("tolerances") if isinstance(data.get("tolerances"), dict) else {}
    assert isinstance(tolerances, dict)
    groups = [g for g in data.get("groups") or [] if isinstance(g, dict)]
    missing = data.get("missing") if isinstance(data.get("missing"), dict) else {}
    assert isinstance(missing, dict)
    by_attribute: dict[str, list[FairnessRow]] = defaultdict(list)
    for group in groups:
        row = _fairness_row(group, tolerances, overall=False)
        by_attribute[row.attribute].append(row)
    attributes = []
    for attribute, rows in by_attribute.items():
        absent = _int(missing.get(attribute))
        attributes.append(
            FairnessAttribute(
                attribute,
                tuple(rows),
                "none missing" if not absent else f"{count_text(absent)} rows with it missing",
            )
        )
    flagged = tuple(
        f"{r.attribute}={r.group}" for a in attributes for r in a.rows if r.status == "flagged"
    )
    small = tuple(
        f"{r.attribute}={r.group}" for a in attributes for r in a.rows if r.status == "not judged"
    )
    rule = (
        f"A group large enough to judge (at least {tolerances.get('min_patients', '?')} patients "
        f"and {tolerances.get('min_events', '?')} with the outcome) is flagged when its AUROC is "
        f"more than {tolerances.get('auroc_gap', '?')} below overall, its calibration in the "
        f"large is off by more than {tolerances.get('calibration_in_large', '?')}, its ECE "
        f"exceeds {tolerances.get('ece', '?')}, or its TPR or FPR differs from overall by more "
        f"than {tolerances.get('tpr_gap', '?')} / {tolerances.get('fpr_gap', '?')}. Smaller "
        "groups are shown with their intervals and never flagged; a rate over fewer than 5 "
        "people is not shown."
    )
    confidence = _float(data.get("confidence"))
    return FairnessView(
        population=short_text(str(data.get("population") or ""), 600),
        unit=str(data.get("unit") or "row"),
        resamples=_int(data.get("resamples")) or 0,
        confidence=f"{confidence:.0%}" if confidence else "95%",
        overall=_fairness_row(data["overall"], tolerances, overall=True),
        attributes=tuple(attributes),
        flagged=flagged,
        too_small=small,
        rule=rule,
    )


# -- drift ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftRow:
    run_at: str
    window: str
    status: str  # ok | warn | alert
    rows: str
    top_inputs: str  # "number_inpatient 0.31; num_medications 0.04"
    risk_psi: str
    alert_rate: str  # "0.224 (reference 0.200, +12%)"
    auroc: str
    breaches: str


@dataclass(frozen=True)
class DriftView:
    rows: tuple[DriftRow, ...]
    chart: Markup | None
    latest_status: str | None
    command: str


def _top_inputs(feature_psi: dict[str, float], count: int = 3) -> str:
    ranked = sorted(feature_psi.items(), key=lambda kv: (-kv[1], kv[0]))[:count]
    return "; ".join(f"{name} {value:.3f}" for name, value in ranked) or "–"


def _drift_row(run: DriftResult) -> DriftRow:
    change = run.alert_rate_change
    if run.outcomes == "pending" or run.auroc is None:
        auroc = "outcomes not yet known" if run.outcomes == "pending" else "–"
    else:
        auroc = f"{run.auroc:.3f}" + (
            f" (reference {run.reference_auroc:.3f})" if run.reference_auroc is not None else ""
        )
        if run.outcomes == "partial":
            auroc += ", outcomes partial"
    return DriftRow(
        run_at=moment_text(run.run_at),
        window=short_text(run.window, 64),
        status=run.status,
        rows=count_text(run.rows) + ("" if run.judged else " (too few to judge)"),
        top_inputs=_top_inputs(run.feature_psi),
        risk_psi=number_text(run.risk_psi),
        alert_rate=(
            f"{number_text(run.alert_rate)} "
            f"(reference {number_text(run.reference_alert_rate)}"
            + ("" if change is None else f", {change:+.0%}")
            + ")"
        ),
        auroc=auroc,
        breaches="; ".join(short_text(b, 200) for b in run.breaches) or "none",
    )


def drift_view(runs: Sequence[DriftResult], version: str) -> DriftView:
    ordered = sorted(runs, key=lambda run: (run.run_at, run.id or 0))
    return DriftView(
        rows=tuple(_drift_row(run) for run in ordered),
        chart=drift_chart(ordered) if ordered else None,
        latest_status=ordered[-1].status if ordered else None,
        command=f"careloop drift run --model {version} --data PATH",
    )


def _svg_text(value: object) -> str:
    return str(escape(str(value)))


def drift_chart(runs: Sequence[DriftResult], thresholds: DriftThresholds | None = None) -> Markup:
    """Predicted-risk PSI (circles, solid) and the largest input PSI (squares, dashed) per
    drift check, with the warn and alert lines; every text escaped; the numbers are in the
    title too, so a screen reader hears them."""
    limits = thresholds or DriftThresholds()
    risk = [max(0.0, run.risk_psi) for run in runs]
    top = [max(run.feature_psi.values(), default=0.0) for run in runs]
    width, height, left, right, top_pad, bottom = 640, 240, 48, 16, 16, 40
    ceiling = max(limits.psi_alert * 1.2, *risk, *top) * 1.05
    plot_w, plot_h = width - left - right, height - top_pad - bottom

    def x(index: int) -> float:
        return left + (plot_w / 2 if len(runs) == 1 else plot_w * index / (len(runs) - 1))

    def y(value: float) -> float:
        return top_pad + plot_h * (1 - min(value, ceiling) / ceiling)

    words = "; ".join(
        f"check {i + 1} ({moment_text(run.run_at)}, {run.window}): status {run.status}, "
        f"predicted-risk PSI {risk[i]:.3f}, largest input PSI {top[i]:.3f}"
        for i, run in enumerate(runs)
    )
    title = (
        f"Drift over {len(runs)} check(s), against the warn line at PSI {limits.psi_warn:g} and "
        f"the alert line at {limits.psi_alert:g}: {words}."
    )
    parts = [
        f'<svg class="chart console-chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="drift-chart-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="drift-chart-title">{_svg_text(title)}</title>',
        f'<line class="axis" x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" '
        f'y2="{top_pad + plot_h}"/>',
        f'<line class="axis" x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}"/>',
    ]
    for value, name, dash in (
        (limits.psi_warn, "warn", "4 4"),
        (limits.psi_alert, "alert", "8 3"),
    ):
        parts.append(
            f'<line x1="{left}" y1="{y(value):.1f}" x2="{left + plot_w}" y2="{y(value):.1f}" '
            f'stroke="#7a4b00" stroke-width="1" stroke-dasharray="{dash}"/>'
            f'<text x="{left + 4}" y="{y(value) - 3:.1f}">{_svg_text(name)} {value:g}</text>'
        )
    for label in (0.0, ceiling / 2, ceiling):
        parts.append(
            f'<text x="{left - 4}" y="{y(label) + 4:.1f}" text-anchor="end">{label:.2f}</text>'
        )
    for series, dash in ((risk, ""), (top, ' stroke-dasharray="6 4"')):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(series))
        if len(series) > 1:
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="#0b4f8a" stroke-width="2"{dash}/>'
            )
    for i, value in enumerate(risk):
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="4" fill="#0b4f8a"/>')
    for i, value in enumerate(top):
        parts.append(
            f'<rect x="{x(i) - 4:.1f}" y="{y(value) - 4:.1f}" width="8" height="8" '
            'fill="#ffffff" stroke="#0b4f8a" stroke-width="2"/>'
        )
    for i, run in enumerate(runs):
        if len(runs) <= 6 or i in (0, len(runs) - 1):
            anchor = "start" if i == 0 else "end" if i == len(runs) - 1 else "middle"
            if len(runs) == 1:
                anchor = "middle"
            label = f"{run.run_at.strftime('%m-%d')} {run.window.split(' ')[0]}"
            parts.append(
                f'<text x="{x(i):.1f}" y="{top_pad + plot_h + 16}" text-anchor="{anchor}">'
                f"{_svg_text(label)}</text>"
            )
    parts.append(
        f'<text x="{left}" y="{height - 6}">● predicted-risk PSI   □ largest input PSI (dashed)'
        "</text>"
    )
    parts.append("</svg>")
    return Markup("".join(parts))


# -- one version ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionDetail:
    summary: VersionSummary
    consent_filter: str
    artifact_sha256: str
    features: int
    integrity: str  # "intact" or what is wrong
    intact: bool
    metrics: tuple[MetricRow, ...]
    card: Markup | None
    card_problem: str | None
    fairness: FairnessView | None
    fairness_problem: str | None
    drift: DriftView


def version_detail(
    registry: ModelRegistry, store: ResourceStore, version: str
) -> VersionDetail | None:
    """Everything the page of one version shows; None when it is not registered. The card and
    the fairness file are read only from a verified artifact (checksum as registered)."""
    model = registry.get(version)
    if model is None:
        return None
    artifact: Path | None = None
    try:
        artifact = registry.lookup_artifact(version)
        intact, integrity = True, "intact (files match the checksum recorded at registration)"
    except ArtifactTampered as exc:
        intact, integrity = False, f"NOT intact: {exc}"
    card, card_problem = _card(artifact)
    fairness, fairness_problem = _fairness(artifact)
    return VersionDetail(
        summary=version_summary(model, registry.history(version)),
        consent_filter=short_text(model.consent_filter),
        artifact_sha256=model.artifact_sha256,
        features=len(model.features),
        integrity=integrity,
        intact=intact,
        metrics=tuple(metric_rows(model.metrics)),
        card=card,
        card_problem=card_problem,
        fairness=fairness,
        fairness_problem=fairness_problem,
        drift=drift_view(DriftHistory(store).runs(version), version),
    )


def _card(artifact: Path | None) -> tuple[Markup | None, str | None]:
    if artifact is None:
        return None, "The artifact failed its integrity check, so its card is not shown."
    path = artifact / MODEL_CARD
    if not path.is_file():
        return None, f"The artifact holds no {MODEL_CARD}."
    if path.stat().st_size > MAX_CARD_BYTES:
        return None, f"{MODEL_CARD} is over {MAX_CARD_BYTES // 1024} KiB and is not shown here."
    return markdown_html(path.read_text(encoding="utf-8", errors="replace")), None


def _fairness(artifact: Path | None) -> tuple[FairnessView | None, str | None]:
    if artifact is None:
        return None, "The artifact failed its integrity check, so its fairness file is not shown."
    path = artifact / FAIRNESS_FILE
    if not path.is_file():
        return None, (
            f"The artifact holds no {FAIRNESS_FILE}: no fairness evaluation was kept with it "
            "(`careloop report model` computes one from labelled data)."
        )
    try:
        return fairness_view(json.loads(path.read_text(encoding="utf-8"))), None
    except (ValueError, OSError) as exc:
        return None, f"{FAIRNESS_FILE} cannot be read: {short_text(str(exc), 200)}"


# -- periods -------------------------------------------------------------------------------------


class PeriodError(ValueError):
    """A since/until field that is not a usable date; `field` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class Period:
    since: date
    until: date  # inclusive

    @property
    def start(self) -> datetime:
        return datetime.combine(self.since, time.min, UTC)

    @property
    def end(self) -> datetime:
        """Exclusive: the start of the day after `until`."""
        return datetime.combine(self.until + timedelta(days=1), time.min, UTC)

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1


def _day(text: str, field_name: str) -> date:
    value = text.strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise PeriodError(field_name, f"'{field_name}' must be a date written YYYY-MM-DD.")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PeriodError(field_name, f"'{field_name}' is not a real calendar date.") from None


def parse_period(
    since: str | None, until: str | None, *, today: date | None = None, default_days: int = 30
) -> Period:
    """The period of a GET form's since/until (YYYY-MM-DD, both days included); an empty field
    takes its default (the last `default_days` days up to today, UTC)."""
    today = today or datetime.now(UTC).date()
    end = _day(until, "until") if until and until.strip() else today
    start = end - timedelta(days=default_days - 1)
    if since and since.strip():
        start = _day(since, "since")
    if start > end:
        raise PeriodError("since", "'since' must not be after 'until'.")
    if (end - start).days + 1 > MAX_PERIOD_DAYS:
        raise PeriodError("since", f"The period may be at most {MAX_PERIOD_DAYS} days long.")
    return Period(start, end)


# -- alert burden and overrides ------------------------------------------------------------------


@dataclass(frozen=True)
class BurdenRow:
    service: str
    indicator: str
    cards: int
    patient_days: int  # patient-days on which this service was called
    per_day: str
    per_patient_day: str


@dataclass(frozen=True)
class OutcomeLine:
    label: str
    shown: str
    with_feedback: str
    accepted: str
    overridden: str
    no_feedback: str
    override_rate: str
    accepted_suggestions: str
    reasons: str


@dataclass(frozen=True)
class DayCount:
    day: date
    cards: int


@dataclass(frozen=True)
class AlertBurden:
    period: Period
    cards: int
    calls: int
    patient_days: int
    interruptive: int
    # cards the alert budget demoted to info, by the indicator they had before (recorded from
    # migration 0006 on; older cards count as not demoted)
    demoted: tuple[tuple[str, int], ...]
    burden: tuple[BurdenRow, ...]
    kinds: tuple[OutcomeLine, ...]
    models: tuple[OutcomeLine, ...]  # by the model version that made the card
    units: tuple[OutcomeLine, ...]
    reasons: tuple[tuple[str, int], ...]  # every override reason code, with its count
    total: OutcomeLine
    daily: tuple[DayCount, ...]
    chart: Markup | None


NO_UNIT = "unit not recorded"
NO_MODEL = "no model (rules and playbooks)"


def card_kind(key: str) -> str:
    """What a card is about, without anything that points at one patient: the monitoring
    cards' keys carry a per-person alert id, so they are one kind."""
    if key.startswith("monitoring:"):
        return "monitoring alert"
    return key


def _outcome_line(label: str, row: OverrideRow, small: bool) -> OutcomeLine:
    count = count_text if small else (lambda n: f"{n:,}")
    reasons = "; ".join(f"{code} ({count(n)})" for code, n in row.top_reasons) or "–"
    override_rate = percent_text(row.override_rate)
    accepted_suggestions = percent_text(row.accepted_suggestion_rate)
    if small and 0 < row.with_feedback < SMALL_COUNT:  # a rate would give the hidden counts
        override_rate = accepted_suggestions = WITHHELD
    return OutcomeLine(
        label=label,
        shown=count(row.shown),
        with_feedback=count(row.with_feedback),
        accepted=count(row.accepted),
        overridden=count(row.overridden),
        no_feedback=count(row.no_feedback),
        override_rate=override_rate,
        accepted_suggestions=accepted_suggestions,
        reasons=reasons,
    )


def alert_burden(store: ResourceStore, period: Period) -> AlertBurden:
    """Cards issued in the period, from the ledger's clear columns: volume per service and
    indicator (per day and per patient-day on which an EHR called careloop), and what
    clinicians did with them by card kind and by unit (the override report's definitions:
    `careloop.cds.overrides`, with the period's end as well as its start)."""
    start, end = period.start, period.end
    with store.engine.connect() as connection:
        cards = connection.execute(
            select(
                cds_cards.c.card_uuid,
                cds_cards.c.service_id,
                cds_cards.c.indicator,
                cds_cards.c.card_key,
                cds_cards.c.unit,
                cds_cards.c.model_version,
                cds_cards.c.patient_hash,
                cds_cards.c.created_at,
                cds_cards.c.suggestion_ids,
                cds_cards.c.demoted_from,
            ).where(cds_cards.c.created_at >= start, cds_cards.c.created_at < end)
        ).all()
        calls = connection.execute(
            select(
                cds_hook_calls.c.service_id,
                cds_hook_calls.c.patient_hash,
                cds_hook_calls.c.received_at,
            ).where(cds_hook_calls.c.received_at >= start, cds_hook_calls.c.received_at < end)
        ).all()
        feedback = connection.execute(
            select(
                cds_feedback.c.card_uuid,
                cds_feedback.c.outcome_timestamp,
                cds_feedback.c.outcome,
                cds_feedback.c.accepted_suggestions,
                cds_feedback.c.override_reason,
            )
            .join(cds_cards, cds_cards.c.card_uuid == cds_feedback.c.card_uuid)
            .where(cds_cards.c.created_at >= start, cds_cards.c.created_at < end)
        ).all()

    def day_of(moment: datetime) -> date:
        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return aware.astimezone(UTC).date()

    service_days: dict[str, set[tuple[str, date]]] = defaultdict(set)
    all_days: set[tuple[str, date]] = set()
    for service, patient_hash, received in calls:
        if patient_hash:
            key = (patient_hash, day_of(received))
            service_days[service].add(key)
            all_days.add(key)
    volume: Counter[tuple[str, str]] = Counter()
    daily: Counter[date] = Counter()
    facts: dict[str, CardFacts] = {}
    groups: dict[str, tuple[str, str, str]] = {}
    demoted: Counter[str] = Counter()
    for uuid, service, indicator, key, unit, model, _patient, created, suggestions, was in cards:
        volume[(service, indicator)] += 1
        if was:
            demoted[was] += 1
        daily[day_of(created)] += 1
        facts[uuid] = CardFacts(group=(), offered=len(orjson.loads(suggestions)))
        groups[uuid] = (card_kind(key), unit or NO_UNIT, model or NO_MODEL)
    for uuid, at, outcome, accepted, reason in feedback:
        card = facts[uuid]
        card.accepted.update(orjson.loads(accepted))
        if card.outcome_at is None or at > card.outcome_at:
            card.outcome, card.outcome_at, card.reason = outcome, at, reason
    reasons = Counter(
        f.reason for f in facts.values() if f.outcome == "overridden" and f.reason is not None
    )
    burden = []
    for (service, indicator), count in sorted(volume.items()):
        patient_days = len(service_days.get(service, ()))
        burden.append(
            BurdenRow(
                service=service,
                indicator=indicator,
                cards=count,
                patient_days=patient_days,
                per_day=f"{count / period.days:.2f}",
                per_patient_day=f"{count / patient_days:.2f}" if patient_days else "–",
            )
        )
    by_kind: dict[str, list[CardFacts]] = defaultdict(list)
    by_unit: dict[str, list[CardFacts]] = defaultdict(list)
    by_model: dict[str, list[CardFacts]] = defaultdict(list)
    for uuid, card in facts.items():
        kind, unit, model = groups[uuid]
        by_kind[kind].append(card)
        by_unit[unit].append(card)
        by_model[model].append(card)
    days = tuple(
        DayCount(period.since + timedelta(days=i), daily.get(period.since + timedelta(days=i), 0))
        for i in range(period.days)
    )
    return AlertBurden(
        period=period,
        cards=len(cards),
        calls=len(calls),
        patient_days=len(all_days),
        interruptive=sum(n for (_s, ind), n in volume.items() if ind in {"warning", "critical"}),
        demoted=tuple(sorted(demoted.items())),
        burden=tuple(burden),
        kinds=tuple(
            _outcome_line(kind, outcome_row((kind,), by_kind[kind]), small=False)
            for kind in sorted(by_kind)
        ),
        models=tuple(
            _outcome_line(model, outcome_row((model,), by_model[model]), small=False)
            for model in sorted(by_model, key=lambda m: (m == NO_MODEL, m))
        ),
        units=tuple(
            _outcome_line(unit, outcome_row((unit,), by_unit[unit]), small=True)
            for unit in sorted(by_unit, key=lambda u: (u == NO_UNIT, u))
        ),
        reasons=tuple(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
        total=_outcome_line("all cards", outcome_row((), list(facts.values())), small=False),
        daily=days,
        chart=daily_chart(days) if cards else None,
    )


def daily_chart(days: Sequence[DayCount]) -> Markup:
    """Cards per day as bars (one per day of the period), the numbers in the title."""
    width, height, left, bottom, top_pad = 640, 180, 40, 28, 12
    plot_w, plot_h = width - left - 8, height - top_pad - bottom
    peak = max((d.cards for d in days), default=0) or 1
    bar = plot_w / max(1, len(days))
    busy = [d for d in days if d.cards]
    words = "; ".join(f"{d.day.isoformat()}: {d.cards}" for d in busy[:60])
    if len(busy) > 60:
        words += f"; and {len(busy) - 60} more days with cards"
    title = (
        f"Cards per day from {days[0].day.isoformat()} to {days[-1].day.isoformat()}, "
        f"at most {peak} on a day. Days with cards: {words or 'none'}."
    )
    parts = [
        f'<svg class="chart console-chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="daily-chart-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="daily-chart-title">{_svg_text(title)}</title>',
        f'<line class="axis" x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" '
        f'y2="{top_pad + plot_h}"/>',
        f'<text x="{left - 4}" y="{top_pad + 8}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end">0</text>',
    ]
    for i, d in enumerate(days):
        if d.cards:
            h = plot_h * d.cards / peak
            parts.append(
                f'<rect x="{left + i * bar + bar * 0.1:.1f}" y="{top_pad + plot_h - h:.1f}" '
                f'width="{max(1.0, bar * 0.8):.1f}" height="{h:.1f}" fill="#0b4f8a"/>'
            )
    parts.append(
        f'<text x="{left}" y="{height - 6}">{_svg_text(days[0].day.isoformat())}</text>'
        f'<text x="{left + plot_w}" y="{height - 6}" text-anchor="end">'
        f"{_svg_text(days[-1].day.isoformat())}</text></svg>"
    )
    return Markup("".join(parts))


# -- the audit review ------------------------------------------------------------------------------

REFUSAL_FLAGS = {
    "expired-session": "a page asked for with an expired or unknown session",
    "csrf": "a form without this session's token (a possible cross-site request)",
    "other-patient": "a patient reaching for another patient's record",
    "rejected-input": "input refused as malformed or too large",
}


@dataclass(frozen=True)
class RefusalLine:
    flag: str
    words: str
    events: int
    agents: tuple[str, ...]
    first: str
    last: str


@dataclass
class _Refusals:
    events: int = 0
    agents: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None


def refused_pages(log: AuditLog, period: Period) -> list[RefusalLine]:
    """Refused requests in the period, per flag: how many, by whom, first and last."""
    tally = {flag: _Refusals() for flag in REFUSAL_FLAGS}
    for event in log.events(since=period.start, until=period.end):
        for flag in event.flags & REFUSAL_FLAGS.keys():
            entry = tally[flag]
            entry.events += 1
            entry.agents.add(event.agent)
            moment = event.recorded
            entry.first = moment if entry.first is None else min(entry.first, moment)
            entry.last = moment if entry.last is None else max(entry.last, moment)
    return [
        RefusalLine(
            flag=flag,
            words=REFUSAL_FLAGS[flag],
            events=entry.events,
            agents=tuple(sorted(entry.agents)),
            first=moment_text(entry.first),
            last=moment_text(entry.last),
        )
        for flag, entry in tally.items()
    ]
