"""The override report: how often clinicians accept or override careloop's cards, and why.

Read by the clinical AI team to find a model, a playbook or a ward where the advice does not fit
(a high override rate is a signal, not a verdict; a card nobody answers is a different signal,
so "no feedback" is counted apart and kept out of the rates). It reads only the ledger's clear
columns (service, what the card is about, model version, unit, suggestion ids, offered and given
reason codes) and never a patient hash, a record or a comment.

Definitions, per group of cards:
- a card's outcome is that of its latest feedback (by outcomeTimestamp): a clinician who
  overrode and later accepted counts as accepted;
- override rate = overridden / cards with feedback;
- top override reasons = the reason codes of the cards whose outcome is overridden (a card
  overridden without a code is counted in `overridden` only);
- accepted suggestion rate = suggestions accepted (in any of a card's feedback) / suggestions
  offered, over the cards with feedback.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from sqlalchemy import Connection, select

from careloop.store.repository import ResourceStore
from careloop.store.schema import cds_cards, cds_feedback

DIMENSIONS = {
    "service": cds_cards.c.service_id,
    "card": cds_cards.c.card_key,
    "model": cds_cards.c.model_version,
    "unit": cds_cards.c.unit,
}
DEFAULT_BY = ("service", "card", "model", "unit")
TOP_REASONS = 3


class ReportError(ValueError):
    """A report was asked for in a way that cannot be answered (an unknown dimension)."""


@dataclass(frozen=True)
class OverrideRow:
    group: tuple[str | None, ...]  # one value per dimension of the report, in its order
    shown: int
    with_feedback: int
    accepted: int
    overridden: int
    top_reasons: tuple[tuple[str, int], ...]
    suggestions_offered: int  # on cards with feedback
    suggestions_accepted: int

    @property
    def no_feedback(self) -> int:
        return self.shown - self.with_feedback

    @property
    def override_rate(self) -> float | None:
        return self.overridden / self.with_feedback if self.with_feedback else None

    @property
    def accepted_suggestion_rate(self) -> float | None:
        if not self.suggestions_offered:
            return None
        return self.suggestions_accepted / self.suggestions_offered


@dataclass(frozen=True)
class OverrideReport:
    by: tuple[str, ...]
    since: datetime | None
    rows: tuple[OverrideRow, ...]
    total: OverrideRow

    def to_json(self) -> dict:
        return {
            "by": list(self.by),
            "since": None if self.since is None else self.since.isoformat(),
            "rows": [self.row_json(row) for row in self.rows],
            "total": _measures_json(self.total),
        }

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*self.by, *_MEASURES])
        for row in self.rows:
            writer.writerow([*(value or "" for value in row.group), *_measure_cells(row)])
        return out.getvalue()

    def table_rows(self) -> list[list[str]]:
        """Rows for a human table: '-' for no value, rates as percentages, a total last."""
        lines = [[*(value or "-" for value in row.group), *_human_cells(row)] for row in self.rows]
        if self.rows:
            lines.append(["all", *("" for _ in self.by[1:]), *_human_cells(self.total)])
        return lines

    def row_json(self, row: OverrideRow) -> dict:
        """One group as JSON: its dimension values by name, then its measures."""
        return {**dict(zip(self.by, row.group, strict=True)), **_measures_json(row)}


def _measures_json(row: OverrideRow) -> dict:
    return {
        "shown": row.shown,
        "with_feedback": row.with_feedback,
        "accepted": row.accepted,
        "overridden": row.overridden,
        "override_rate": _rounded(row.override_rate),
        "no_feedback": row.no_feedback,
        "top_override_reasons": [{"code": c, "count": n} for c, n in row.top_reasons],
        "accepted_suggestion_rate": _rounded(row.accepted_suggestion_rate),
    }


_MEASURES = (
    "shown",
    "with_feedback",
    "accepted",
    "overridden",
    "override_rate",
    "no_feedback",
    "top_override_reasons",
    "accepted_suggestion_rate",
)


def _rounded(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 4)


def _reasons_text(row: OverrideRow) -> str:
    return "; ".join(f"{code} ({count})" for code, count in row.top_reasons)


def _measure_cells(row: OverrideRow) -> list[str]:
    rates = [_rounded(row.override_rate), _rounded(row.accepted_suggestion_rate)]
    override_rate, suggestion_rate = ("" if r is None else f"{r:.4f}" for r in rates)
    return [
        str(row.shown),
        str(row.with_feedback),
        str(row.accepted),
        str(row.overridden),
        override_rate,
        str(row.no_feedback),
        _reasons_text(row),
        suggestion_rate,
    ]


def _human_cells(row: OverrideRow) -> list[str]:
    def percent(rate: float | None) -> str:
        return "-" if rate is None else f"{rate:.0%}"

    return [
        str(row.shown),
        str(row.with_feedback),
        str(row.accepted),
        str(row.overridden),
        percent(row.override_rate),
        str(row.no_feedback),
        _reasons_text(row) or "-",
        percent(row.accepted_suggestion_rate),
    ]


# -- computing -----------------------------------------------------------------------------------


@dataclass
class CardFacts:
    """One card as the report sees it."""

    group: tuple[str | None, ...]
    offered: int
    outcome: str | None = None
    outcome_at: datetime | None = None
    reason: str | None = None
    accepted: set[str] = field(default_factory=set)


def override_report(
    store: ResourceStore,
    since: datetime | None = None,
    by: Sequence[str] = DEFAULT_BY,
) -> OverrideReport:
    """Cards issued at or after `since` (all when None), grouped by the dimensions in `by`."""
    dimensions = check_dimensions(by)
    if since is not None and since.tzinfo is None:
        raise ReportError("since must be time-zone aware")
    with store.engine.connect() as connection:
        cards = _cards(connection, dimensions, since)
        _apply_feedback(connection, cards, since)
    groups: dict[tuple[str | None, ...], list[CardFacts]] = defaultdict(list)
    for facts in cards.values():
        groups[facts.group].append(facts)
    rows = tuple(outcome_row(group, groups[group]) for group in sorted(groups, key=_group_order))
    return OverrideReport(
        by=dimensions, since=since, rows=rows, total=outcome_row((), list(cards.values()))
    )


def check_dimensions(by: Sequence[str]) -> tuple[str, ...]:
    """The dimensions asked for, checked: known names, each once, at least one."""
    dimensions = tuple(by)
    unknown = [name for name in dimensions if name not in DIMENSIONS]
    if unknown:
        raise ReportError(f"unknown dimension {unknown[0]!r}; use any of: {', '.join(DIMENSIONS)}")
    if not dimensions:
        raise ReportError(f"name at least one dimension: {', '.join(DIMENSIONS)}")
    if len(set(dimensions)) != len(dimensions):
        raise ReportError("a dimension is named twice")
    return dimensions


def _cards(
    connection: Connection, dimensions: tuple[str, ...], since: datetime | None
) -> dict[str, CardFacts]:
    columns = [DIMENSIONS[name] for name in dimensions]
    query = select(cds_cards.c.card_uuid, cds_cards.c.suggestion_ids, *columns)
    if since is not None:
        query = query.where(cds_cards.c.created_at >= since)
    return {
        row[0]: CardFacts(group=tuple(row[2:]), offered=len(orjson.loads(row[1])))
        for row in connection.execute(query)
    }


def _apply_feedback(
    connection: Connection, cards: dict[str, CardFacts], since: datetime | None
) -> None:
    query = select(
        cds_feedback.c.card_uuid,
        cds_feedback.c.outcome_timestamp,
        cds_feedback.c.outcome,
        cds_feedback.c.accepted_suggestions,
        cds_feedback.c.override_reason,
    ).join(cds_cards, cds_cards.c.card_uuid == cds_feedback.c.card_uuid)
    if since is not None:
        query = query.where(cds_cards.c.created_at >= since)
    for card_uuid, at, outcome, accepted, reason in connection.execute(query):
        facts = cards[card_uuid]
        facts.accepted.update(orjson.loads(accepted))
        if facts.outcome_at is None or at > facts.outcome_at:
            facts.outcome, facts.outcome_at, facts.reason = outcome, at, reason


def outcome_row(group: tuple[str | None, ...], cards: list[CardFacts]) -> OverrideRow:
    answered = [facts for facts in cards if facts.outcome is not None]
    overridden = [facts for facts in answered if facts.outcome == "overridden"]
    reasons = Counter(facts.reason for facts in overridden if facts.reason is not None)
    top = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:TOP_REASONS]
    return OverrideRow(
        group=group,
        shown=len(cards),
        with_feedback=len(answered),
        accepted=len(answered) - len(overridden),
        overridden=len(overridden),
        top_reasons=tuple(top),
        suggestions_offered=sum(facts.offered for facts in answered),
        suggestions_accepted=sum(len(facts.accepted) for facts in answered),
    )


def _group_order(group: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    """Groups sorted by their values, a missing value (no model, no unit) after the others."""
    return tuple((value is None, value or "") for value in group)
