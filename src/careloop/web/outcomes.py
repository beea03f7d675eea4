"""OperationOutcome: the body of every FHIR error, and of the bulk-ingest summary.

Diagnostics are written here or come from `IngestProblem`, whose messages quote structure, never
values; request values are never echoed back, so an error cannot leak patient data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from careloop.ingest.errors import IngestProblem
from careloop.web.responses import FhirJSONResponse


@dataclass(frozen=True)
class Issue:
    severity: str  # fatal | error | warning | information
    code: str  # an IssueType code: structure, invalid, not-found, too-long, processing, ...
    diagnostics: str
    expression: tuple[str, ...] = ()

    def as_fhir(self) -> dict[str, object]:
        issue: dict[str, object] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


@dataclass(eq=False)  # compared by identity, like any exception
class FhirError(Exception):
    """An HTTP error to answer with an OperationOutcome; raised anywhere inside a route."""

    status: int
    issues: list[Issue]
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, status: int, code: str, diagnostics: str, expression: str | None = None
    ) -> FhirError:
        issue = Issue("error", code, diagnostics, (expression,) if expression else ())
        return cls(status, [issue])

    def response(self) -> FhirJSONResponse:
        return outcome_response(self.status, self.issues, self.headers)


def operation_outcome(issues: Sequence[Issue]) -> dict[str, object]:
    return {"resourceType": "OperationOutcome", "issue": [issue.as_fhir() for issue in issues]}


def outcome_response(
    status: int, issues: Sequence[Issue], headers: Mapping[str, str] | None = None
) -> FhirJSONResponse:
    return FhirJSONResponse(
        operation_outcome(issues), status_code=status, headers=dict(headers or {})
    )


def is_syntax_problem(problem: IngestProblem) -> bool:
    """True for input that is not well-formed: not UTF-8, not JSON, not an object, too long."""
    return problem.kind == "syntax"


def issue_of_problem(
    problem: IngestProblem, code: str | None = None, severity: str = "error"
) -> Issue:
    """An issue naming the entry (or line) and the field path the problem is at."""
    return Issue(
        severity,
        code or _content_issue_code(problem),
        str(problem),
        (problem.field,) if problem.field else (),
    )


_ISSUE_CODE_OF_KIND = {
    "syntax": "structure",
    "structure": "structure",
    "invalid": "invalid",
    "reference": "not-found",
    "duplicate": "duplicate",
    "unreadable": "processing",
}


def _content_issue_code(problem: IngestProblem) -> str:
    return _ISSUE_CODE_OF_KIND.get(problem.kind, "invalid")
