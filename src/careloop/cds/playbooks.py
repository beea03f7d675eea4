"""Next-best-action playbooks: reviewed YAML files, their validation, and the engine that runs them.

What careloop suggests is clinical content, so it lives in data a clinical informaticist writes
and reviews (one YAML file per playbook), not in code. `careloop playbooks check` validates them
all before they can reach a live card: the schema (unknown fields, bad durations, malformed codes),
every resource template filled with sample facts and validated as FHIR R4, summaries that fit a
card, unique ids. Every error names the file, the path inside it and its line.

A playbook has a trigger (the sepsis model's alert, a NEWS2 score, or an overdue follow-up for a
recorded condition), exclusions that stop it as a whole (comfort-focused care, an age range),
and actions: FHIR resource templates that are dropped when the patient already has the order or
result (`skip_if_done`), shown only when facts hold (`only_if`), and personalized by facts
(`variants`, the first whose `when` holds; else the action's own `resource`).

Only `active` playbooks run. The engine is pure: facts and signals in, plans out.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from careloop.cds.evidence import Citation
from careloop.cds.facts import PatientFacts
from careloop.fhir.terminology import code_format_problem, coding_errors
from careloop.ingest.validation import structural_errors

BUILTIN_DIR = Path(__file__).with_name("playbooks")
SUMMARY_LIMIT = 140  # CDS Hooks: a card's summary is under 140 characters
LABEL_LIMIT = 80
PLAYBOOK_SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 512 * 1024

# -- small typed values -----------------------------------------------------------------------

_DURATION = re.compile(r"^([1-9]\d{0,4})(m|h|d|w)$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
_URL = re.compile(r"^https?://[^\s]+$")
_SYSTEM = re.compile(r"^(https?://[^\s|]+|urn:(oid|uuid):[^\s|]+)$")


def parse_duration(value: object) -> timedelta:
    """ "30m", "1h", "7d", "2w" -> timedelta; anything else is an error that says the format."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(
            f"bad duration {value!r}: write a whole number and m, h, d or w (e.g. 30m, 1h, 7d)"
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _check_code(value: str) -> str:
    system, sep, code = value.rpartition("|")
    if not sep or not system or not code:
        raise ValueError(f"bad code {value!r}: write system|code, e.g. http://loinc.org|2524-7")
    if not _SYSTEM.match(system):
        raise ValueError(f"bad code {value!r}: the system must be a URL or urn:oid")
    problem = code_format_problem(system, code)
    if problem:
        raise ValueError(f"bad code {value!r}: {problem}")
    return value


def _check_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError("ids are lower-case letters, digits and hyphens (at most 63)")
    return value


def _listify(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _lower_names(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(value.strip().lower() for value in values)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
CodeKey = Annotated[str, AfterValidator(_check_code)]
Identifier = Annotated[str, AfterValidator(_check_id)]
Text = Annotated[str, Field(min_length=1, max_length=2000)]
Names = Annotated[tuple[str, ...], BeforeValidator(_listify), AfterValidator(_lower_names)]
GoalName = Literal["comfort-care", "hospice", "palliative", "dnr"]
Priority = Literal["routine", "urgent", "asap", "stat"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- the format -------------------------------------------------------------------------------


class Review(_Strict):
    reviewed_by: Text
    reviewed_on: date
    next_review: date

    @model_validator(mode="after")
    def _ordered(self) -> Review:
        if self.next_review <= self.reviewed_on:
            raise ValueError("next_review must come after reviewed_on")
        return self


class ObservationTest(_Strict):
    """The latest result of any of `codes`, taken within `within`, compared with a threshold."""

    codes: tuple[CodeKey, ...] = Field(min_length=1)
    within: Duration
    label: Annotated[str, Field(min_length=1, max_length=60)] | None = None  # "lactate"
    at_least: float | None = None
    below: float | None = None
    unit: str | None = None  # UCUM; a result in another unit does not count

    @model_validator(mode="after")
    def _threshold(self) -> ObservationTest:
        if self.at_least is None and self.below is None:
            raise ValueError("give at_least or below (or both)")
        return self


class When(_Strict):
    """Facts that must all hold; `any_of` holds when at least one of its entries does.

    A fact the record does not have never holds: with no eGFR on record neither `egfr_below`
    nor `egfr_at_least` is true, so the default resource is used. The negative facts hold when
    nothing says otherwise: `pregnant: false` means no pregnancy on record, and `not_taking`
    means none of the ingredients among the active medications.
    """

    allergy_class: Names = ()  # any of these allergy classes or ingredients is recorded
    severe_allergy_class: Names = ()  # ... with high criticality, a severe reaction or anaphylaxis
    egfr_below: float | None = None
    egfr_at_least: float | None = None
    pregnant: bool | None = None
    age_at_least: int | None = Field(default=None, ge=0, le=150)
    age_below: int | None = Field(default=None, ge=0, le=150)
    sex: Literal["female", "male", "other", "unknown"] | None = None
    goals_of_care: tuple[GoalName, ...] = ()  # any of these goals of care is recorded
    conditions: tuple[CodeKey, ...] = ()  # any of these conditions is active
    taking: Names = ()  # any of these ingredients is an active medication
    not_taking: Names = ()  # none of these ingredients is an active medication
    weight_known: bool | None = None
    observation: ObservationTest | None = None
    any_of: tuple[When, ...] = ()

    @model_validator(mode="after")
    def _not_empty(self) -> When:
        if not any(getattr(self, name) not in (None, ()) for name in type(self).model_fields):
            raise ValueError("an empty condition always holds; name at least one fact")
        return self


class DueItem(_Strict):
    label: Annotated[str, Field(min_length=1, max_length=60)]  # "HbA1c"
    codes: tuple[CodeKey, ...] = Field(min_length=1)  # any of them counts as done
    every: Duration


class Trigger(_Strict):
    kind: Literal["sepsis-alert", "news2", "overdue"]
    at_least: int | None = Field(default=None, ge=0, le=20)  # news2
    below: int | None = Field(default=None, ge=1, le=21)  # news2, optional upper bound
    conditions: tuple[CodeKey, ...] = ()  # overdue: any of these conditions is active
    due: tuple[DueItem, ...] = ()  # overdue: any item not done within its `every`

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Trigger:
        news2 = self.at_least is not None or self.below is not None
        overdue = bool(self.conditions or self.due)
        if self.kind == "news2" and (self.at_least is None or overdue):
            raise ValueError("a news2 trigger takes at_least (and optionally below), nothing else")
        if self.kind == "overdue" and (not self.conditions or not self.due or news2):
            raise ValueError("an overdue trigger takes conditions and due, nothing else")
        if self.kind == "sepsis-alert" and (news2 or overdue):
            raise ValueError("a sepsis-alert trigger takes no other field")
        if self.below is not None and self.at_least is not None and self.below <= self.at_least:
            raise ValueError("below must be greater than at_least")
        return self


class CardText(_Strict):
    summary: Annotated[str, Field(min_length=1, max_length=400)]  # a template; checked filled
    indicator: Literal["info", "warning", "critical"]
    detail: Text | None = None


class Reference(_Strict):
    title: Text
    url: Annotated[str, Field(pattern=_URL.pattern, max_length=500)]


class OverrideReason(_Strict):
    code: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
    display: Annotated[str, Field(min_length=1, max_length=120)]


class Exclusion(_Strict):
    when: When
    reason: Text


class SkipIfDone(_Strict):
    within: Duration
    codes: tuple[CodeKey, ...] = ()  # ordered, resulted or done
    ingredients: Names = ()  # a medication with any of them ordered or given
    note: Text | None = None  # added to the reason, e.g. when to repeat

    @model_validator(mode="after")
    def _something(self) -> SkipIfDone:
        if not self.codes and not self.ingredients:
            raise ValueError("give codes or ingredients to look for")
        return self


class Variant(_Strict):
    when: When
    resource: dict[str, Any]
    note: Text


class Action(_Strict):
    id: Identifier
    label: Annotated[str, Field(min_length=1, max_length=400)]  # checked < 80 once filled
    priority: Priority = "routine"
    due_within: Duration | None = None
    resource: dict[str, Any]  # the default when no variant applies
    default_note: Text | None = None  # says why the default was chosen, when there are variants
    variants: tuple[Variant, ...] = ()
    only_if: When | None = None
    skip_if_done: SkipIfDone | None = None


class Playbook(_Strict):
    id: Identifier
    version: Annotated[str, Field(pattern=_SEMVER.pattern)]
    title: Annotated[str, Field(min_length=1, max_length=120)]
    status: Literal["draft", "active", "retired"]
    review: Review
    trigger: Trigger
    card: CardText
    evidence: tuple[Reference, ...] = Field(min_length=1)
    alternatives: tuple[Text, ...] = ()
    override_reasons: tuple[OverrideReason, ...] = Field(min_length=1)
    selection_behavior: Literal["any", "at-most-one"]
    exclusions: tuple[Exclusion, ...] = ()
    actions: tuple[Action, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Playbook:
        for what, values in (
            ("action id", [action.id for action in self.actions]),
            ("override reason code", [reason.code for reason in self.override_reasons]),
        ):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"duplicate {what}: {', '.join(repeated)}")
        return self

    @property
    def citations(self) -> tuple[Citation, ...]:
        return tuple(Citation(ref.title, ref.url) for ref in self.evidence)


# -- reading and checking files ---------------------------------------------------------------


@dataclass(frozen=True)
class FileCheck:
    """What `check` found in one file."""

    path: Path
    playbook: Playbook | None  # None when it did not validate
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class CheckReport:
    files: tuple[FileCheck, ...]

    @property
    def errors(self) -> list[str]:
        return [error for file in self.files for error in file.errors]

    @property
    def warnings(self) -> list[str]:
        return [warning for file in self.files for warning in file.warnings]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def playbooks(self) -> list[Playbook]:
        return [file.playbook for file in self.files if file.playbook is not None]


def playbook_files(paths: Iterable[Path]) -> list[Path]:
    """Files to read: each file named, and the *.yaml / *.yml directly in each directory."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix in PLAYBOOK_SUFFIXES)
        else:
            found.append(path)
    return found


def check_playbooks(paths: Sequence[Path], today: date | None = None) -> CheckReport:
    """Validate playbook files (and directories of them); every problem, file by file."""
    today = today or datetime.now(UTC).date()
    checks: list[FileCheck] = []
    seen: dict[str, Path] = {}
    for path in playbook_files(paths):
        check = _check_file(path, today)
        if check.playbook is not None:
            first = seen.setdefault(check.playbook.id, path)
            if first != path:
                error = f"{path.name}: id: duplicate playbook id {check.playbook.id!r}"
                error += f" (also in {first})"
                check = FileCheck(path, None, (*check.errors, error), check.warnings)
        checks.append(check)
    return CheckReport(tuple(checks))


def _check_file(path: Path, today: date) -> FileCheck:
    name = path.name
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return FileCheck(path, None, (f"{name}: larger than {MAX_FILE_BYTES} bytes",), ())
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        return FileCheck(path, None, (f"{name}: cannot read: {reason}",), ())
    return dataclasses.replace(check_text(text, name, today), path=path)


def check_text(text: str, name: str, today: date) -> FileCheck:
    """Validate one playbook's YAML text; `name` is what messages call the file."""
    path = Path(name)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        problems = _structure_problems(root)
        data = yaml.safe_load(text) if not problems else None
    except yaml.YAMLError as exc:
        return FileCheck(path, None, (f"{name}: {_yaml_problem(exc)}",), ())
    except RecursionError:
        return FileCheck(path, None, (f"{name}: nested too deeply to be a playbook",), ())
    errors = [f"{name}: {where}: {problem}" for where, problem in problems]
    if not isinstance(data, dict):
        errors = errors or [f"{name}: a playbook is a YAML mapping of fields"]
        return FileCheck(path, None, tuple(errors), ())
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        errors += [_located(name, root, loc, message) for loc, message in _pydantic_errors(exc)]
        return FileCheck(path, None, tuple(errors), ())
    errors += [_located(name, root, loc, message) for loc, message in content_errors(playbook)]
    warnings = [f"{name}: {warning}" for warning in _warnings(playbook, today)]
    return FileCheck(path, None if errors else playbook, tuple(errors), tuple(warnings))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "not valid YAML"
    if mark is not None:
        return f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"YAML syntax error: {problem}"


MAX_DEPTH = 40
MAX_NODES = 50_000


def _structure_problems(root: yaml.Node | None) -> list[tuple[str, str]]:
    """Repeated keys, and shapes no playbook has (aliases that multiply, runaway nesting).

    YAML lets a repeated key silently win; in a reviewed file that hides an edit. Aliases are
    allowed (the shipped playbooks share a route or a code list), but a handful of nested aliases
    can stand for billions of nodes, so the walk stops at a budget.
    """
    found: list[tuple[str, str]] = []
    stack: list[tuple[yaml.Node, str, int]] = [(root, "", 0)] if root is not None else []
    visited = 0
    while stack:
        node, path, depth = stack.pop()
        visited += 1
        if visited > MAX_NODES or depth > MAX_DEPTH:
            return [(path or "(top level)", "too large or too deeply nested to be a playbook")]
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                label = key.value if isinstance(key, yaml.ScalarNode) else "(complex key)"
                here = f"{path}.{label}" if path else str(label)
                if label in seen:
                    found.append((here, f"duplicate key (line {key.start_mark.line + 1})"))
                seen.add(label)
                stack.append((value, here, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node.value))
    return sorted(found)


Loc = tuple[str | int, ...]


def _pydantic_errors(exc: ValidationError) -> list[tuple[Loc, str]]:
    found = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field missing"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        found.append((loc, message))
    return found


def path_text(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _located(name: str, root: yaml.Node | None, loc: Loc, message: str) -> str:
    line = _line_of(root, loc)
    suffix = f" (line {line})" if line else ""
    return f"{name}: {path_text(loc)}: {message}{suffix}"


def _line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """The line of the deepest YAML node the location reaches (the key itself for a field)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _warnings(playbook: Playbook, today: date) -> list[str]:
    warnings = []
    if playbook.review.next_review < today:
        warnings.append(
            f"review.next_review: review overdue since {playbook.review.next_review.isoformat()}"
        )
    if playbook.status == "draft":
        warnings.append("status: draft; it will not run until it is active")
    return warnings


# -- content checks: templates filled and validated as FHIR, card text filled -----------------

RESOURCE_TYPES = ("ServiceRequest", "MedicationRequest", "Task")
# Set by the engine; a template that sets them would be overwritten, so it is a mistake.
ENGINE_FIELDS = {
    "ServiceRequest": (
        "id",
        "subject",
        "authoredOn",
        "priority",
        "occurrenceDateTime",
        "occurrencePeriod",
        "occurrenceTiming",
    ),
    "MedicationRequest": ("id", "subject", "authoredOn", "priority"),
    "Task": ("id", "for", "authoredOn", "priority", "restriction"),
}
_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)(?:\s*\*\s*(\d+(?:\.\d+)?))?\}")
# What a resource, label or note may say about the patient, with the sample used by `check`.
PLACEHOLDER_SAMPLES = {"weight_kg": 70.0, "egfr": 45.0, "age": 60}
PLACEHOLDER_NAMES = {"weight_kg": "a body weight", "egfr": "an eGFR", "age": "a birth date"}
SUMMARY_FIELDS = {
    "sepsis-alert": ("age",),
    "news2": ("news2", "age"),
    "overdue": ("overdue", "age"),
}
_SUMMARY_SAMPLES = {"news2": 20, "age": 100}
_SAMPLE_NOW = datetime(2026, 1, 1, tzinfo=UTC)


def content_errors(playbook: Playbook) -> list[tuple[Loc, str]]:
    """What the schema cannot see: summaries and labels once filled, and FHIR validity."""
    errors = _summary_errors(playbook)
    for index, action in enumerate(playbook.actions):
        base: Loc = ("actions", index)
        label = _fill_text(action.label, PLACEHOLDER_SAMPLES)
        if label is None:
            errors.append(((*base, "label"), _unknown_placeholder(action.label)))
        elif len(label) >= LABEL_LIMIT:
            errors.append(((*base, "label"), f"{len(label)} characters; keep it under 80"))
        errors += _template_errors(action, action.resource, (*base, "resource"))
        for number, variant in enumerate(action.variants):
            where: Loc = (*base, "variants", number)
            errors += _template_errors(action, variant.resource, (*where, "resource"))
            if _fill_text(variant.note, PLACEHOLDER_SAMPLES) is None:
                errors.append(((*where, "note"), _unknown_placeholder(variant.note)))
    return errors


def _summary_errors(playbook: Playbook) -> list[tuple[Loc, str]]:
    allowed = SUMMARY_FIELDS[playbook.trigger.kind]
    offered = ", ".join(f"{{{name}}}" for name in allowed)
    try:
        parts = list(string.Formatter().parse(playbook.card.summary))
    except ValueError as exc:
        return [(("card", "summary"), f"bad placeholder ({exc}); this trigger offers {offered}")]
    for _, name, spec, conversion in parts:
        if name is not None and (name not in allowed or spec or conversion):
            return [(("card", "summary"), f"unknown placeholder {{{name}}}; offered: {offered}")]
    filled = fill_summary(playbook, _summary_sample(playbook))
    if len(filled) >= SUMMARY_LIMIT:
        return [
            (
                ("card", "summary"),
                f"{len(filled)} characters once filled with the longest values; keep it under 140",
            )
        ]
    return []


def _summary_sample(playbook: Playbook) -> dict[str, object]:
    sample: dict[str, object] = dict(_SUMMARY_SAMPLES)
    sample["overdue"] = "; ".join(
        f"{item.label}, last 9999 days ago" for item in playbook.trigger.due
    )
    return sample


def _unknown_placeholder(text: str) -> str:
    names = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(PLACEHOLDER_SAMPLES))
    offered = ", ".join("${" + name + "}" for name in PLACEHOLDER_SAMPLES)
    return f"unknown placeholder ${{{', '.join(names)}}}; offered: {offered}"


def _template_errors(action: Action, template: dict, where: Loc) -> list[tuple[Loc, str]]:
    kind = template.get("resourceType")
    if kind not in RESOURCE_TYPES:
        return [((*where, "resourceType"), f"must be one of {', '.join(RESOURCE_TYPES)}")]
    errors: list[tuple[Loc, str]] = []
    if template.get("status") != "draft":
        errors.append(((*where, "status"), "a suggestion is a draft: status must be 'draft'"))
    if template.get("intent") not in ("proposal", "order"):
        errors.append(((*where, "intent"), "intent must be 'proposal' or 'order'"))
    errors += [
        ((*where, name), "set by the engine; leave it out of the template")
        for name in ENGINE_FIELDS[kind]
        if name in template
    ]
    if action.due_within is not None and kind == "MedicationRequest":
        errors.append(
            (
                (*where[:-1], "due_within"),
                "a MedicationRequest has no due time; say the timing in its dosage",
            )
        )
    names = _placeholders(template)
    if names - set(PLACEHOLDER_SAMPLES):
        offered = ", ".join("${" + name + "}" for name in PLACEHOLDER_SAMPLES)
        unknown = ", ".join(sorted(names - set(PLACEHOLDER_SAMPLES)))
        return [*errors, (where, f"unknown placeholder ${{{unknown}}}; offered: {offered}")]
    filled = fill_resource(template, PLACEHOLDER_SAMPLES) or {}  # every placeholder has a sample
    resource = finish_resource(filled, action, "sample-patient", _SAMPLE_NOW)
    problems = structural_errors(resource, "library") + coding_errors(resource)
    for fhir_path, message in problems:
        if message.startswith("Invalid JSON"):
            # fhir.resources tries to parse text given for a complex element as JSON
            message = "expected a FHIR element (a mapping of fields) here, not text"
        elif message == "Extra inputs are not permitted":
            message = f"not an element of a FHIR R4 {kind}"
        errors.append(((*where, *_fhir_loc(fhir_path, kind)), message))
    return errors


def _fhir_loc(fhir_path: str, resource_type: str) -> Loc:
    """`ServiceRequest.code.coding[0].code` -> ("code", "coding", 0, "code")."""
    text = fhir_path.removeprefix(resource_type).lstrip(".")
    loc: list[str | int] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", text):
        loc.append(int(part[1:-1]) if part.startswith("[") else part)
    return tuple(loc)


def _placeholders(node: object) -> set[str]:
    if isinstance(node, str):
        return {match.group(1) for match in _PLACEHOLDER.finditer(node)}
    if isinstance(node, dict):
        return set().union(*(_placeholders(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_placeholders(v) for v in node)) if node else set()
    return set()


# -- filling templates ------------------------------------------------------------------------


def _number(value: float) -> int | float:
    rounded = round(value, 1)
    return int(rounded) if rounded == int(rounded) else rounded


class _Missing(Exception):
    """A placeholder whose value the record does not have (or that does not exist)."""


def _value(match: re.Match[str], values: Mapping[str, float | int | None]) -> int | float:
    value = values.get(match.group(1))
    if value is None:
        raise _Missing(match.group(1))
    factor = float(match.group(2)) if match.group(2) else 1.0
    return _number(value * factor)


def _fill_text(text: str, values: Mapping[str, float | int | None]) -> str | None:
    """The text with its placeholders filled; None when a value is missing or unknown."""
    try:
        return _PLACEHOLDER.sub(lambda match: f"{_value(match, values):g}", text)
    except _Missing:
        return None


def fill_resource(template: dict, values: Mapping[str, float | int | None]) -> dict | None:
    """A deep copy with placeholders filled: a string that is only a placeholder becomes a number.

    None when a value the template needs is missing (e.g. no weight on record).
    """
    try:
        return _filled(template, values)
    except _Missing:
        return None


def _filled(node: Any, values: Mapping[str, float | int | None]) -> Any:
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:
            return _value(whole, values)
        return _PLACEHOLDER.sub(lambda match: f"{_value(match, values):g}", node)
    if isinstance(node, dict):
        return {key: _filled(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_filled(item, values) for item in node]
    return copy.deepcopy(node)


def finish_resource(resource: dict, action: Action, patient_id: str, now: datetime) -> dict:
    """Add what the engine owns: the patient, the time, the priority and the due time."""
    reference = {"reference": f"Patient/{patient_id}"}
    stamp = fhir_instant(now)
    resource["authoredOn"] = stamp
    resource["priority"] = action.priority
    if resource["resourceType"] == "Task":
        resource["for"] = reference
        if action.due_within is not None:
            resource["restriction"] = {"period": {"end": fhir_instant(now + action.due_within)}}
    else:
        resource["subject"] = reference
        if action.due_within is not None and resource["resourceType"] == "ServiceRequest":
            resource["occurrencePeriod"] = {
                "start": stamp,
                "end": fhir_instant(now + action.due_within),
            }
    return resource


def fhir_instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""  # `check` allows only the trigger's own fields, which the engine always gives


def fill_summary(playbook: Playbook, values: Mapping[str, object]) -> str:
    return playbook.card.summary.format_map(_Blank(values))


# -- the engine -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedAction:
    id: str
    label: str
    resource: dict
    personalization: str | None  # why this variant, in words


@dataclass(frozen=True)
class SkippedAction:
    id: str
    label: str
    reason: str


@dataclass(frozen=True)
class PlaybookPlan:
    playbook: Playbook
    summary: str
    indicator: str
    actions: tuple[PlannedAction, ...]
    skipped: tuple[SkippedAction, ...]
    alternatives: tuple[str, ...]
    evidence: tuple[Citation, ...]
    override_reasons: tuple[tuple[str, str], ...]
    selection_behavior: str
    excluded: str | None  # why the whole playbook does not apply (e.g. comfort care), else None


@dataclass(frozen=True)
class TriggerSignals:
    sepsis_alert: bool = False
    news2: int | None = None


class PlaybookLibrary:
    """The loaded playbooks; `plans` runs the active ones whose trigger holds."""

    def __init__(self, playbooks: Sequence[Playbook]) -> None:
        self._playbooks = list(playbooks)

    @classmethod
    def load(cls, extra_dirs: Sequence[Path] = ()) -> PlaybookLibrary:
        """The built-in playbooks and those in `extra_dirs`; ValueError listing every problem."""
        missing = [str(d) for d in extra_dirs if not Path(d).is_dir()]
        if missing:
            raise ValueError(f"playbook directory not found: {', '.join(missing)}")
        report = check_playbooks([BUILTIN_DIR, *extra_dirs])
        if not report.ok:
            raise ValueError("playbooks failed their check:\n" + "\n".join(report.errors))
        return cls(report.playbooks)

    def playbooks(self) -> list[Playbook]:
        return list(self._playbooks)

    def plans(
        self, signals: TriggerSignals, facts: PatientFacts, now: datetime
    ) -> list[PlaybookPlan]:
        """A plan for every active playbook whose trigger holds; none for a deceased patient.

        Excluded playbooks come back with `excluded` set and no actions, so the card can say
        why nothing is suggested.
        """
        if facts.deceased:
            return []
        plans = []
        for playbook in self._playbooks:
            if playbook.status != "active":
                continue
            fired = _trigger_values(playbook.trigger, signals, facts, now)
            if fired is not None:
                plans.append(plan_for(playbook, fired, facts, now))
        return plans


def plan_for(
    playbook: Playbook, summary_values: Mapping[str, object], facts: PatientFacts, now: datetime
) -> PlaybookPlan:
    """The plan of one triggered playbook for one patient."""
    excluded = _exclusion(playbook, facts)
    actions: list[PlannedAction] = []
    skipped: list[SkippedAction] = []
    if excluded is None:
        for action in playbook.actions:
            outcome = _plan_action(action, facts, now)
            if isinstance(outcome, PlannedAction):
                actions.append(outcome)
            elif isinstance(outcome, SkippedAction):
                skipped.append(outcome)
    summary = fill_summary(playbook, summary_values)
    if len(summary) >= SUMMARY_LIMIT:  # `check` makes this unreachable for checked playbooks
        summary = summary[: SUMMARY_LIMIT - 2].rstrip() + "…"
    return PlaybookPlan(
        playbook=playbook,
        summary=summary,
        indicator=playbook.card.indicator,
        actions=tuple(actions),
        skipped=tuple(skipped),
        alternatives=playbook.alternatives,
        evidence=playbook.citations,
        override_reasons=tuple((r.code, r.display) for r in playbook.override_reasons),
        selection_behavior=playbook.selection_behavior,
        excluded=excluded,
    )


def _trigger_values(
    trigger: Trigger, signals: TriggerSignals, facts: PatientFacts, now: datetime
) -> dict[str, object] | None:
    """The summary's values when the trigger holds, else None."""
    values: dict[str, object] = {"age": facts.age if facts.age is not None else "unknown age"}
    if trigger.kind == "sepsis-alert":
        return values if signals.sepsis_alert else None
    if trigger.kind == "news2":
        score = signals.news2
        at_least = trigger.at_least if trigger.at_least is not None else 0
        if score is None or score < at_least:
            return None
        if trigger.below is not None and score >= trigger.below:
            return None
        return {**values, "news2": score}
    if not facts.condition_codes.intersection(trigger.conditions):
        return None
    overdue = [text for item in trigger.due if (text := _overdue_text(item, facts, now))]
    return {**values, "overdue": "; ".join(overdue)} if overdue else None


def _overdue_text(item: DueItem, facts: PatientFacts, now: datetime) -> str | None:
    last = facts.last_done(item.codes)
    if last is None:
        return f"{item.label}, none on record"
    if now - last.at <= item.every:
        return None
    return f"{item.label}, last {(now - last.at).days} days ago"


def _exclusion(playbook: Playbook, facts: PatientFacts) -> str | None:
    for exclusion in playbook.exclusions:
        because = explain(exclusion.when, facts)
        if because is not None:
            return f"{exclusion.reason} ({'; '.join(because)})" if because else exclusion.reason
    return None


def _plan_action(
    action: Action, facts: PatientFacts, now: datetime
) -> PlannedAction | SkippedAction | None:
    applies = explain(action.only_if, facts) if action.only_if is not None else []
    if applies is None:
        return None  # not for this patient at all
    values = {
        "weight_kg": facts.weight.value if facts.weight else None,
        "egfr": facts.egfr.value if facts.egfr else None,
        "age": facts.age,
    }
    label = _fill_text(action.label, values)
    if action.skip_if_done is not None:
        reason = _already_done(action.skip_if_done, facts, now)
        if reason is not None:
            return SkippedAction(action.id, label or action.id, reason)
    template, note = _choose(action, facts, values)
    filled = fill_resource(template, values)
    if filled is None or label is None:
        needed = sorted(_placeholders(template) | _placeholders(action.label))
        missing = [PLACEHOLDER_NAMES[name] for name in needed if values.get(name) is None]
        return SkippedAction(
            action.id, label or action.id, f"needs {' and '.join(missing)}, not on record"
        )
    if applies:
        note = "; ".join(filter(None, [note, f"suggested because {'; '.join(applies)}"]))
    resource = finish_resource(filled, action, facts.patient_id, now)
    return PlannedAction(action.id, label, resource, note or None)


def _choose(
    action: Action, facts: PatientFacts, values: Mapping[str, float | int | None]
) -> tuple[dict, str | None]:
    """The first variant whose `when` holds, with the reason in words; else the default."""
    for variant in action.variants:
        because = explain(variant.when, facts)
        if because is not None:
            note = _fill_text(variant.note, values) or variant.note
            return variant.resource, f"{note} ({'; '.join(because)})" if because else note
    return action.resource, action.default_note


def _already_done(skip: SkipIfDone, facts: PatientFacts, now: datetime) -> str | None:
    since = now - skip.within
    event = facts.last_done(skip.codes)
    if event is not None and event.at >= since:
        reason = f"already {event.verb} {_ago(now - event.at)} ago ({event.reference})"
        return f"{reason}; {skip.note}" if skip.note else reason
    given = facts.last_medication(skip.ingredients) if skip.ingredients else None
    if given is not None and given.at >= since:
        names = ", ".join(sorted(given.ingredients & set(skip.ingredients)))
        reason = f"{names} already {given.verb} {_ago(now - given.at)} ago ({given.reference})"
        return f"{reason}; {skip.note}" if skip.note else reason
    return None


def _ago(elapsed: timedelta) -> str:
    minutes = max(0, int(elapsed.total_seconds() // 60))
    if minutes < 120:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} days"


# -- conditions on facts ----------------------------------------------------------------------


def explain(when: When, facts: PatientFacts) -> list[str] | None:
    """The facts that make `when` hold, in words; None when it does not hold."""
    reasons: list[str] = []
    for name, test in _TESTS:
        wanted = getattr(when, name)
        if wanted in (None, ()):
            continue
        found = test(wanted, facts)
        if found is None:
            return None
        reasons.append(found)
    return reasons


def _any_allergy(wanted: tuple[str, ...], facts: PatientFacts) -> str | None:
    hits = sorted(set(wanted) & facts.allergy_classes)
    return f"allergy recorded: {', '.join(hits)}" if hits else None


def _severe_allergy(wanted: tuple[str, ...], facts: PatientFacts) -> str | None:
    hits = sorted(set(wanted) & facts.severe_allergy_classes)
    return f"severe allergy recorded: {', '.join(hits)}" if hits else None


def _egfr_text(facts: PatientFacts) -> str:
    reading = facts.egfr
    assert reading is not None
    source = "computed from creatinine (CKD-EPI 2021)" if reading.computed else "reported"
    where = f", {reading.reference}" if reading.reference else ""
    value = f"{reading.comparator or ''}{reading.value:.0f}"
    taken = reading.effective.date().isoformat()
    return f"eGFR {value} mL/min/1.73m² {source} on {taken}{where}"


def _egfr_below(threshold: float, facts: PatientFacts) -> str | None:
    if facts.egfr is None or facts.egfr.value >= threshold:
        return None
    return f"{_egfr_text(facts)}, below {threshold:g}"


def _egfr_at_least(threshold: float, facts: PatientFacts) -> str | None:
    if facts.egfr is None or facts.egfr.value < threshold:
        return None
    return f"{_egfr_text(facts)}, at least {threshold:g}"


def _pregnant(wanted: bool, facts: PatientFacts) -> str | None:
    if facts.pregnant != wanted:
        return None
    return f"pregnant ({facts.pregnancy_evidence})" if wanted else "not pregnant on record"


def _age_at_least(years: int, facts: PatientFacts) -> str | None:
    return f"age {facts.age}" if facts.age is not None and facts.age >= years else None


def _age_below(years: int, facts: PatientFacts) -> str | None:
    return f"age {facts.age}" if facts.age is not None and facts.age < years else None


def _sex(wanted: str, facts: PatientFacts) -> str | None:
    return f"sex {facts.sex}" if facts.sex == wanted else None


def _goals(wanted: tuple[str, ...], facts: PatientFacts) -> str | None:
    hits = [
        f"{goal} ({facts.goals_of_care[goal]})" for goal in wanted if goal in facts.goals_of_care
    ]
    return f"goals of care: {', '.join(hits)}" if hits else None


def _conditions(wanted: tuple[str, ...], facts: PatientFacts) -> str | None:
    hits = sorted(set(wanted) & facts.condition_codes)
    return f"condition on record: {', '.join(hits)}" if hits else None


def _taking(wanted: tuple[str, ...], facts: PatientFacts) -> str | None:
    hits = sorted(set(wanted) & facts.medication_ingredients)
    return f"taking {', '.join(hits)}" if hits else None


def _not_taking(wanted: tuple[str, ...], facts: PatientFacts) -> str | None:
    return None if set(wanted) & facts.medication_ingredients else "none of them taken now"


def _weight_known(wanted: bool, facts: PatientFacts) -> str | None:
    if (facts.weight is not None) != wanted:
        return None
    if facts.weight is None:
        return "no weight on record"
    weighed = facts.weight.at.date().isoformat()
    return f"weight {facts.weight.value:g} kg on {weighed}, {facts.weight.reference}"


def _observation(test: ObservationTest, facts: PatientFacts) -> str | None:
    found = facts.latest_value(test.codes)
    if found is None or facts.now - found.at > test.within:
        return None
    if test.unit is not None and found.unit != test.unit:
        return None
    if test.at_least is not None and found.value < test.at_least:
        return None
    if test.below is not None and found.value >= test.below:
        return None
    unit = f" {found.unit}" if found.unit else ""
    name = test.label or "result"
    return f"{name} {found.value:g}{unit} {_ago(facts.now - found.at)} ago, {found.reference}"


def _any_of(options: tuple[When, ...], facts: PatientFacts) -> str | None:
    for option in options:
        because = explain(option, facts)
        if because is not None:
            return "; ".join(because)
    return None


_TESTS: tuple[tuple[str, Callable[[Any, PatientFacts], str | None]], ...] = (
    ("allergy_class", _any_allergy),
    ("severe_allergy_class", _severe_allergy),
    ("egfr_below", _egfr_below),
    ("egfr_at_least", _egfr_at_least),
    ("pregnant", _pregnant),
    ("age_at_least", _age_at_least),
    ("age_below", _age_below),
    ("sex", _sex),
    ("goals_of_care", _goals),
    ("conditions", _conditions),
    ("taking", _taking),
    ("not_taking", _not_taking),
    ("weight_known", _weight_known),
    ("observation", _observation),
    ("any_of", _any_of),
)
