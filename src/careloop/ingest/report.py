"""The summary of an ingest run: what was written, what was rejected and why, how fast."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from careloop.ingest.errors import IngestProblem
from careloop.store.repository import WriteOutcome

WARNING_EXAMPLES = 20


@dataclass
class IngestReport:
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    units_loaded: int = 0
    rejected: list[IngestProblem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    warning_count: int = 0
    warnings: list[IngestProblem] = field(default_factory=list)  # the first few, as examples

    def add_warnings(self, warnings: list[IngestProblem]) -> None:
        self.warning_count += len(warnings)
        self.warnings.extend(warnings[: max(0, WARNING_EXAMPLES - len(self.warnings))])

    def count(self, resource_type: str, outcome: WriteOutcome) -> None:
        {
            WriteOutcome.CREATED: self.created,
            WriteOutcome.UPDATED: self.updated,
            WriteOutcome.UNCHANGED: self.unchanged,
        }[outcome][resource_type] += 1

    @property
    def resources(self) -> int:
        """Resources accepted, whether or not their content was new."""
        return (
            sum(self.created.values()) + sum(self.updated.values()) + sum(self.unchanged.values())
        )

    @property
    def resources_per_second(self) -> float:
        return self.resources / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.rejected

    def by_type(self) -> dict[str, dict[str, int]]:
        types = sorted(set(self.created) | set(self.updated) | set(self.unchanged))
        return {
            t: {
                "created": self.created[t],
                "updated": self.updated[t],
                "unchanged": self.unchanged[t],
            }
            for t in types
        }

    def as_dict(self) -> dict[str, object]:
        return {
            "resources": self.resources,
            "by_type": self.by_type(),
            "units_loaded": self.units_loaded,
            "units_rejected": len(self.rejected),
            "rejected": [problem.as_dict() for problem in self.rejected],
            "skipped": self.skipped,
            "warnings": self.warning_count,
            "warning_examples": [warning.as_dict() for warning in self.warnings],
            "seconds": round(self.seconds, 3),
            "resources_per_second": round(self.resources_per_second, 1),
        }
