"""The governance part of every model card: the fairness tables on patients the model never saw,
and, for each attribute with a flagged group, the per-group threshold trade-off (shown, never
applied). Both models' training commands call it, so the section survives every retraining.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from careloop.governance.fairness import FairnessReport, fairness_markdown, fairness_report
from careloop.governance.mitigation import (
    MitigationTradeoff,
    held_out_tradeoff,
    tradeoff_markdown,
)
from careloop.governance.scored import ScoredSet

FAIRNESS_HEADING = "## Fairness by subgroup"
FAIRNESS_FILE = "fairness.json"


@dataclass(frozen=True)
class FairnessSection:
    report: FairnessReport
    tradeoffs: tuple[MitigationTradeoff, ...]
    population: str

    def markdown(self) -> str:
        lines = [FAIRNESS_HEADING, "", self.population, "", fairness_markdown(self.report).rstrip()]
        for tradeoff in self.tradeoffs:
            lines += [
                "",
                f"### Mitigation trade-off: per-group thresholds on {tradeoff.attribute} "
                "(shown, not applied)",
                "",
                "Thresholds chosen on a random half of these patients and judged on the other "
                "half. Group-specific thresholds use the protected attribute at decision time: a "
                "decision for the AI committee, never a default (see "
                "`careloop.governance.mitigation`).",
                "",
                tradeoff_markdown(tradeoff).rstrip(),
            ]
        return "\n".join([*lines, ""])

    def to_json(self) -> dict[str, object]:
        return self.report.to_json() | {
            "population": self.population,
            "mitigation_tradeoffs": [asdict(tradeoff) for tradeoff in self.tradeoffs],
        }


def fairness_section(judged: ScoredSet, population: str, resamples: int = 200) -> FairnessSection:
    """Fairness of `judged` (held-out patients) with the trade-off of every flagged attribute."""
    report = fairness_report(judged, resamples=resamples)
    flagged = sorted({group.attribute for group in report.flagged()})
    tradeoffs = tuple(held_out_tradeoff(judged, attribute) for attribute in flagged)
    return FairnessSection(report, tradeoffs, population)
