"""The one error type of ingest: what is wrong, and exactly where."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# What kind of wrong, for callers that map problems to protocol codes (HTTP status, issue type):
# syntax: not UTF-8, not JSON, not an object, a line or document over its size limit;
# structure: a Bundle or entry of the wrong shape; invalid: not valid FHIR content;
# reference: a reference that resolves to nothing (or to several); duplicate: two entries for
# one resource; unreadable: a missing path or a damaged archive or stream.
ProblemKind = Literal["syntax", "structure", "invalid", "reference", "duplicate", "unreadable"]


@dataclass(eq=False)  # not frozen: contextlib and tracebacks set attributes on exceptions
class IngestProblem(Exception):
    """A reason to reject one input unit (a bundle or an NDJSON file) as a whole.

    `entry` is the bundle entry index (0-based) or the NDJSON line number (1-based), as `unit_kind`
    says; `field` is a FHIRPath-like location such as `Observation.subject.reference`. Messages
    quote structure, never patient values, so they are safe to log.
    """

    source: str
    message: str
    entry: int | None = None
    resource_type: str | None = None
    field: str | None = None
    entry_label: str = "entry"
    kind: ProblemKind = "invalid"

    def __reduce__(self) -> tuple:
        # Exception's own pickling passes `args`, which this dataclass leaves empty; problems
        # cross process boundaries from the validation workers, so rebuild through __init__.
        fields = (self.source, self.message, self.entry, self.resource_type, self.field)
        return (IngestProblem, (*fields, self.entry_label, self.kind))

    def __str__(self) -> str:
        where = [self.source]
        if self.entry is not None:
            label = f"{self.entry_label} {self.entry}"
            if self.resource_type:
                label += f" ({self.resource_type})"
            where.append(label)
        elif self.resource_type:
            where.append(self.resource_type)
        if self.field:
            where.append(f"at {self.field}")
        return f"{', '.join(where)}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            self.entry_label: self.entry,
            "resourceType": self.resource_type,
            "field": self.field,
            "message": self.message,
            "kind": self.kind,
        }
