"""The patient timeline: the one shape that features, scores and rules read, whatever the source.

A `PatientTimeline` holds what one patient's record says happened, and when: observations as
time-stamped points, conditions, medications, allergies, encounters, procedures and the two
demographic facts features need (birth date and administrative sex; no names or identifiers,
because nothing downstream needs them). Its types are plain frozen dataclasses, so a FHIR record
(`build_timeline`) and any other source (e.g. hourly ICU CSV rows) produce the same thing, and
the code that reads it never learns where the data came from.

Conventions every reader can rely on:

* All times are timezone-aware UTC. Partial FHIR dates ("2019", "2019-04") mean the start of that
  period. A date-time without an offset (which FHIR forbids but real feeds send) is read as UTC:
  the server's local zone would make results depend on the machine that computes them.
* Time windows are half-open, ``[start, end)``: consecutive hourly windows then share no point,
  so an hour-by-hour replay never counts a measurement twice.
* "Active at" questions take ``at``: ``None`` asks about the record as it stands (its status),
  a datetime asks about that moment (its dates). Records that never happened (entered-in-error,
  cancelled, not-done) are left out at construction.
* Codes are looked up as plain codes (``"8867-4"``, any code system) or in FHIR token form
  (``"http://loinc.org|8867-4"``, that system only); every coding of a resource counts.

The module is pure: no I/O, no clock, no SQL. Lookups by code are indexed once at construction
and time windows are found by bisection, because features ask them for every hour of a stay.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Literal, TypeVar

from careloop.fhir.codes import LOINC

__all__ = [
    "AllergyEntry",
    "Coding",
    "ConditionEntry",
    "EncounterEntry",
    "MedicationEntry",
    "MedicationKind",
    "ObservationPoint",
    "PatientTimeline",
    "ProcedureEntry",
    "TimelineError",
    "build_timeline",
    "parse_fhir_date",
    "parse_fhir_datetime",
]

CodeKey = tuple[str | None, str]
MedicationKind = Literal["request", "statement", "dispense"]
Resource = Mapping[str, Any]
_T = TypeVar("_T")

# Statuses that mean "this never happened"; such records are dropped at construction.
_VOID_OBSERVATION_STATUSES = frozenset({"entered-in-error", "cancelled"})
_VOID_MEDICATION_STATUSES = frozenset({"entered-in-error", "cancelled", "declined"})
_VOID_ENCOUNTER_STATUSES = frozenset({"entered-in-error", "cancelled"})
_VOID_PROCEDURE_STATUSES = frozenset({"entered-in-error", "not-done"})
_ENTERED_IN_ERROR = "entered-in-error"

_CONDITION_ONGOING = frozenset({"active", "recurrence", "relapse"})
_CONDITION_ENDED = frozenset({"inactive", "remission", "resolved"})
_RULED_OUT = frozenset({"refuted", "entered-in-error"})
_ALLERGY_ENDED = frozenset({"inactive", "resolved"})

_MEDICATION_ONGOING = frozenset({"active"})
_MEDICATION_ENDED = frozenset({"completed", "stopped"})
_MEDICATION_HANDED_OVER = frozenset({"completed", "in-progress"})
# Proposals and plans (careloop writes its own suggestions as proposals) are not therapy.
_ORDER_INTENTS = frozenset(
    {"order", "original-order", "reflex-order", "filler-order", "instance-order"}
)
_ENCOUNTER_OPEN_STATUSES = frozenset({"arrived", "triaged", "in-progress", "onleave"})

_OBSERVATION_TIME_FIELDS = (
    "effectiveDateTime",
    "effectivePeriod.start",
    "effectiveInstant",
    "issued",
)


class TimelineError(ValueError):
    """A resource holds a value the timeline cannot read; names the resource and the field."""

    def __init__(self, resource_type: str, resource_id: str | None, field_path: str, problem: str):
        self.resource_type = resource_type
        self.resource_id = resource_id
        self.field_path = field_path
        super().__init__(f"{resource_type}/{resource_id or '?'} {field_path}: {problem}")


# --------------------------------------------------------------------------------------------
# Date and time parsing
# --------------------------------------------------------------------------------------------

_FHIR_DATETIME = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<offset>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def parse_fhir_datetime(text: str) -> datetime:
    """Parse a FHIR date, dateTime or instant into an aware UTC datetime.

    Partial dates mean the start of their period; a missing offset means UTC (see module doc).
    Raises ValueError for anything that is not one of these forms.
    """
    match = _FHIR_DATETIME.fullmatch(text)
    if match is None:
        raise ValueError(f"not a FHIR date/dateTime: {text!r}")
    parts = match.groupdict()
    # FHIR allows second 60 (leap second); Python cannot represent it.
    second = min(int(parts["second"] or 0), 59)
    moment = datetime(
        int(parts["year"]),
        int(parts["month"] or 1),
        int(parts["day"] or 1),
        int(parts["hour"] or 0),
        int(parts["minute"] or 0),
        second,
        int((parts["fraction"] or "0")[:6].ljust(6, "0")),
        tzinfo=_offset(parts["offset"]),
    )
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # e.g. year 1 with a negative offset
        raise ValueError(f"out of range: {text!r}") from exc


def parse_fhir_date(text: str) -> date:
    """Parse a FHIR date ("1970", "1970-04", "1970-04-12") into its first day."""
    if "T" in text:
        raise ValueError(f"not a FHIR date: {text!r}")
    return parse_fhir_datetime(text).date()


def _offset(text: str | None) -> timezone:
    if text is None or text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _require_aware(moment: datetime, name: str) -> None:
    # A naive datetime compared with our UTC times would raise deep inside bisect, or worse,
    # be silently read in the wrong zone by a caller: refuse it at the door.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {moment.isoformat()}")


def _as_utc_fields(entry: object, *names: str) -> None:
    for name in names:
        moment = getattr(entry, name)
        if moment is None:
            continue
        _require_aware(moment, f"{type(entry).__name__}.{name}")
        if moment.tzinfo is not UTC:
            object.__setattr__(entry, name, moment.astimezone(UTC))


# --------------------------------------------------------------------------------------------
# Timeline types (plain data any source can create)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coding:
    """One code from one code system, as the source coded it."""

    system: str | None
    code: str
    display: str | None = None


def _lookup_keys(system: str | None, code: str) -> tuple[str, str]:
    """The query strings that find a coding: its bare code and its FHIR token ``system|code``."""
    return code, f"{system or ''}|{code}"


def _matches_any(codings: Iterable[Coding], queries: frozenset[str]) -> bool:
    return any(
        key in queries for coding in codings for key in _lookup_keys(coding.system, coding.code)
    )


def _query_set(codes: str | Iterable[str]) -> frozenset[str]:
    return frozenset((codes,) if isinstance(codes, str) else codes)


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservationPoint:
    """One measured or reported value at one moment (a vital sign, a lab result, a component).

    `code`/`system` are the primary coding (LOINC when there is one); `codes` holds every
    (system, code) the point can be found by and always includes the primary one.
    """

    code: str
    time: datetime
    system: str | None = None
    value: float | None = None
    unit: str | None = None
    text_value: str | None = None
    display: str | None = None
    source_id: str | None = None
    encounter_id: str | None = None
    codes: frozenset[CodeKey] = frozenset()

    def __post_init__(self) -> None:
        # Kept lean: ICU sources create millions of points.
        if self.time.tzinfo is not UTC:
            _as_utc_fields(self, "time")
        # NaN is how CSV sources spell "not measured"; as a value it would poison every max/mean.
        if self.value is not None and math.isnan(self.value):
            raise ValueError(f"ObservationPoint {self.code} at {self.time}: value is NaN; omit it")
        primary = (self.system, self.code)
        if primary not in self.codes:
            object.__setattr__(self, "codes", self.codes | {primary})


@dataclass(frozen=True, slots=True, kw_only=True)
class ConditionEntry:
    """A problem or diagnosis, with when it began and ended as far as the record knows."""

    codings: tuple[Coding, ...]
    text: str | None = None
    onset: datetime | None = None
    abatement: datetime | None = None
    recorded: datetime | None = None
    clinical_status: str | None = None
    verification_status: str | None = None
    source_id: str | None = None

    def __post_init__(self) -> None:
        _as_utc_fields(self, "onset", "abatement", "recorded")

    @property
    def began(self) -> datetime | None:
        """Onset, or when it was recorded if the onset is unknown (it was true by then)."""
        return self.onset or self.recorded

    def is_active(self, at: datetime | None = None) -> bool:
        if self.verification_status in _RULED_OUT:
            return False
        if at is None:
            if self.clinical_status is not None:
                return self.clinical_status in _CONDITION_ONGOING
            return self.abatement is None
        _require_aware(at, "at")
        if self.began is not None and at < self.began:
            return False
        if self.abatement is not None:
            return at < self.abatement
        # Resolved with no date: we cannot place the end in time, so we trust the status.
        return self.clinical_status not in _CONDITION_ENDED


@dataclass(frozen=True, slots=True, kw_only=True)
class MedicationEntry:
    """A medication order, statement or dispense.

    `start`/`end` bound when the drug is taken (dosage bounds, effective period, or supply
    window of a dispense); `authored` is when the record was written.
    """

    kind: MedicationKind
    codings: tuple[Coding, ...]
    text: str | None = None
    medication_reference: str | None = None
    status: str | None = None
    intent: str | None = None
    authored: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    dosage_text: str | None = None
    source_id: str | None = None

    def __post_init__(self) -> None:
        _as_utc_fields(self, "authored", "start", "end")

    @property
    def began(self) -> datetime | None:
        return self.start or self.authored

    def is_active(self, at: datetime | None = None) -> bool:
        if self.kind == "request" and self.intent is not None and self.intent not in _ORDER_INTENTS:
            return False
        if self.kind == "dispense":
            return self._supplied_at(at)
        if at is None:
            return self.status in _MEDICATION_ONGOING
        if not self._within(at):
            return False
        if self.status in _MEDICATION_ONGOING:
            return True
        # Stopped or completed with no end date: the stop cannot be placed in time.
        return self.status in _MEDICATION_ENDED and self.end is not None

    def _supplied_at(self, at: datetime | None) -> bool:
        # A dispense is evidence of supply for a window, never a standing order: without a
        # moment or a known supply window it says nothing about whether the drug is taken.
        if at is None or self.end is None or self.status not in _MEDICATION_HANDED_OVER:
            return False
        return self._within(at)

    def _within(self, at: datetime) -> bool:
        _require_aware(at, "at")
        if self.began is not None and at < self.began:
            return False
        return self.end is None or at < self.end


@dataclass(frozen=True, slots=True, kw_only=True)
class AllergyEntry:
    """An allergy or intolerance; reactions are kept as text for explanations."""

    codings: tuple[Coding, ...]
    text: str | None = None
    criticality: str | None = None
    clinical_status: str | None = None
    verification_status: str | None = None
    categories: tuple[str, ...] = ()
    reactions: tuple[str, ...] = ()
    source_id: str | None = None

    def is_active(self) -> bool:
        return (
            self.clinical_status not in _ALLERGY_ENDED
            and self.verification_status not in _RULED_OUT
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EncounterEntry:
    """A visit or stay; `class_code` is the v3 ActCode (IMP, AMB, EMER, ...)."""

    class_code: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    type_codings: tuple[Coding, ...] = ()
    status: str | None = None
    source_id: str | None = None

    def __post_init__(self) -> None:
        _as_utc_fields(self, "start", "end")

    @property
    def is_open(self) -> bool:
        """Still going on: no end and a status that says the patient is (still) here."""
        return self.end is None and self.status in _ENCOUNTER_OPEN_STATUSES

    def covers(self, at: datetime) -> bool:
        _require_aware(at, "at")
        if self.start is None or at < self.start:
            return False
        return self.is_open or (self.end is not None and at < self.end)

    def overlaps(self, start: datetime | None, end: datetime | None) -> bool:
        # A finished encounter with no end is taken as an instant at its start.
        span_end = None if self.is_open else self.end or self.start
        return _span_overlaps(self.start, span_end, start, end)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcedureEntry:
    """A procedure that was performed (or is in progress)."""

    codings: tuple[Coding, ...]
    text: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    status: str | None = None
    source_id: str | None = None
    encounter_id: str | None = None

    def __post_init__(self) -> None:
        _as_utc_fields(self, "start", "end")

    def overlaps(self, start: datetime | None, end: datetime | None) -> bool:
        return _span_overlaps(self.start, self.end or self.start, start, end)


def _span_overlaps(
    span_start: datetime | None,
    span_end: datetime | None,
    window_start: datetime | None,
    window_end: datetime | None,
) -> bool:
    """Whether a span (open-ended if span_end is None) meets the half-open window.

    A span with no known start can only be listed when no window is asked for.
    """
    if span_start is None:
        return window_start is None and window_end is None
    if window_end is not None and span_start >= window_end:
        return False
    if window_start is None or span_end is None:
        return True
    # A zero-length span (an instant) belongs to the window it falls in.
    return span_end > window_start or span_start >= window_start


def _time_order(moment: datetime | None) -> tuple[bool, datetime]:
    """Sort key putting unknown times first, then chronological."""
    return (moment is not None, moment or datetime.min.replace(tzinfo=UTC))


# --------------------------------------------------------------------------------------------
# The timeline
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Series:
    """The points one lookup key finds: times for bisection, positions in the global order."""

    times: list[datetime] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)


class PatientTimeline:
    """Everything features need about one patient, indexed for per-hour queries.

    Build it from FHIR with `build_timeline`, or directly from timeline types for other sources.
    Instances are read-only after construction.
    """

    __slots__ = (
        "_allergies",
        "_birth_date",
        "_conditions",
        "_encounters",
        "_index",
        "_medications",
        "_patient_id",
        "_points",
        "_procedures",
        "_sex",
    )

    def __init__(
        self,
        *,
        patient_id: str,
        birth_date: date | None = None,
        sex: str | None = None,
        observations: Iterable[ObservationPoint] = (),
        conditions: Iterable[ConditionEntry] = (),
        medications: Iterable[MedicationEntry] = (),
        allergies: Iterable[AllergyEntry] = (),
        encounters: Iterable[EncounterEntry] = (),
        procedures: Iterable[ProcedureEntry] = (),
    ) -> None:
        self._patient_id = patient_id
        self._birth_date = birth_date
        self._sex = sex
        # Stable sort: points at the same instant keep their source order, so results are
        # deterministic for a given input.
        self._points = tuple(sorted(observations, key=lambda point: point.time))
        self._index = _index_by_code(self._points)
        self._conditions = tuple(sorted(conditions, key=lambda entry: _time_order(entry.began)))
        self._medications = tuple(sorted(medications, key=lambda entry: _time_order(entry.began)))
        self._allergies = tuple(allergies)
        self._encounters = tuple(sorted(encounters, key=lambda entry: _time_order(entry.start)))
        self._procedures = tuple(sorted(procedures, key=lambda entry: _time_order(entry.start)))

    def __repr__(self) -> str:
        return (
            f"PatientTimeline(patient_id={self._patient_id!r}, observations={len(self._points)}, "
            f"conditions={len(self._conditions)}, medications={len(self._medications)}, "
            f"encounters={len(self._encounters)})"
        )

    # -- demographics -----------------------------------------------------------------------

    @property
    def patient_id(self) -> str:
        return self._patient_id

    @property
    def birth_date(self) -> date | None:
        return self._birth_date

    @property
    def sex(self) -> str | None:
        """Administrative gender as the source states it (FHIR: male, female, other, unknown)."""
        return self._sex

    def age_at(self, at: datetime) -> float | None:
        """Age in years at `at` (whole years plus the elapsed fraction of the current one).

        Whole years are counted by calendar so that a threshold like "65 or older" flips on the
        birthday itself, which dividing days by 365.25 gets wrong. None if the birth date is
        unknown or `at` precedes it.
        """
        _require_aware(at, "at")
        if self._birth_date is None:
            return None
        today = at.astimezone(UTC).date()
        born = self._birth_date
        if today < born:
            return None
        years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        last_birthday = _anniversary(born, born.year + years)
        next_birthday = _anniversary(born, born.year + years + 1)
        fraction = (today - last_birthday).days / (next_birthday - last_birthday).days
        return years + fraction

    # -- observations -----------------------------------------------------------------------

    def observations(
        self,
        codes: str | Iterable[str],
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[ObservationPoint]:
        """Points found by any of `codes` with start <= time < end, in time order."""
        _require_aware_optional(start=start, end=end)
        series = self._series_for(_query_set(codes))
        if len(series) == 1:
            lo, hi = _window_bounds(series[0].times, start, end)
            return [self._points[position] for position in series[0].positions[lo:hi]]
        # A point carrying two of the asked codings must appear once.
        positions: set[int] = set()
        for one in series:
            lo, hi = _window_bounds(one.times, start, end)
            positions.update(one.positions[lo:hi])
        return [self._points[position] for position in sorted(positions)]

    def latest(
        self, codes: str | Iterable[str], at: datetime | None = None
    ) -> ObservationPoint | None:
        """The last point found by any of `codes` with time <= `at` (any time if `at` is None)."""
        _require_aware_optional(at=at)
        best = -1
        for one in self._series_for(_query_set(codes)):
            index = len(one.times) if at is None else bisect_right(one.times, at)
            if index:
                best = max(best, one.positions[index - 1])
        return self._points[best] if best >= 0 else None

    def codes_observed(self) -> frozenset[str]:
        """Every bare code some observation point can be found by."""
        return frozenset(key for key in self._index if "|" not in key)

    def _series_for(self, queries: frozenset[str]) -> list[_Series]:
        return [self._index[query] for query in queries if query in self._index]

    # -- conditions, medications, allergies ---------------------------------------------------

    @property
    def conditions(self) -> tuple[ConditionEntry, ...]:
        """Every condition on record, including resolved and refuted ones."""
        return self._conditions

    def active_conditions(self, at: datetime | None = None) -> list[ConditionEntry]:
        return [entry for entry in self._conditions if entry.is_active(at)]

    def has_condition(self, codes: str | Iterable[str], at: datetime | None = None) -> bool:
        queries = _query_set(codes)
        return any(_matches_any(entry.codings, queries) for entry in self.active_conditions(at))

    @property
    def medications(self) -> tuple[MedicationEntry, ...]:
        """Every medication record, including stopped orders and past dispenses."""
        return self._medications

    def active_medications(self, at: datetime | None = None) -> list[MedicationEntry]:
        return [entry for entry in self._medications if entry.is_active(at)]

    @property
    def allergies(self) -> tuple[AllergyEntry, ...]:
        return self._allergies

    def active_allergies(self) -> list[AllergyEntry]:
        return [entry for entry in self._allergies if entry.is_active()]

    # -- encounters and procedures ------------------------------------------------------------

    def encounters(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> list[EncounterEntry]:
        """Encounters that overlap [start, end), by start time."""
        _require_aware_optional(start=start, end=end)
        return [entry for entry in self._encounters if entry.overlaps(start, end)]

    def current_encounter(self, at: datetime) -> EncounterEntry | None:
        """The encounter going on at `at`; if several are, the one that began last (the most
        specific, e.g. the admission that followed an emergency visit)."""
        covering = [entry for entry in self._encounters if entry.covers(at)]
        return covering[-1] if covering else None

    def procedures(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> list[ProcedureEntry]:
        """Procedures performed during [start, end), by start time."""
        _require_aware_optional(start=start, end=end)
        return [entry for entry in self._procedures if entry.overlaps(start, end)]


def _index_by_code(points: tuple[ObservationPoint, ...]) -> dict[str, _Series]:
    index: dict[str, _Series] = {}
    for position, point in enumerate(points):
        keys = {key for system, code in point.codes for key in _lookup_keys(system, code)}
        for key in keys:
            series = index.setdefault(key, _Series())
            series.times.append(point.time)
            series.positions.append(position)
    return index


def _window_bounds(
    times: list[datetime], start: datetime | None, end: datetime | None
) -> tuple[int, int]:
    low = 0 if start is None else bisect_left(times, start)
    high = len(times) if end is None else bisect_left(times, end)
    return low, high


def _require_aware_optional(**moments: datetime | None) -> None:
    for name, moment in moments.items():
        if moment is not None:
            _require_aware(moment, name)


def _anniversary(born: date, year: int) -> date:
    # Someone born on 29 February turns a year older on 28 February in common years.
    if born.month == 2 and born.day == 29 and not _is_leap(year):
        return date(year, 2, 28)
    return born.replace(year=year)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


# --------------------------------------------------------------------------------------------
# From FHIR R4 resources
# --------------------------------------------------------------------------------------------

# "Patient/123", "https://ehr.example/fhir/Patient/123/_history/2": the type and id at the end.
_REFERENCE = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$"
)
_URN_UUID = "urn:uuid:"


def build_timeline(patient_id: str, resources: Iterable[Resource]) -> PatientTimeline:
    """Build one patient's timeline from FHIR R4 resources (JSON-shaped dicts).

    Reads Patient, Observation, Condition, MedicationRequest, MedicationStatement,
    MedicationDispense, AllergyIntolerance, Encounter and Procedure; ignores other types.
    Raises TimelineError for a value it cannot read or a resource about another patient:
    silently dropping either would make a feature wrong without anyone knowing.
    """
    parts = _TimelineParts()
    for resource in resources:
        _add_resource(parts, patient_id, resource)
    return PatientTimeline(
        patient_id=patient_id,
        birth_date=parts.birth_date,
        sex=parts.sex,
        observations=parts.observations,
        conditions=parts.conditions,
        medications=parts.medications,
        allergies=parts.allergies,
        encounters=parts.encounters,
        procedures=parts.procedures,
    )


@dataclass(slots=True)
class _TimelineParts:
    birth_date: date | None = None
    sex: str | None = None
    observations: list[ObservationPoint] = field(default_factory=list)
    conditions: list[ConditionEntry] = field(default_factory=list)
    medications: list[MedicationEntry] = field(default_factory=list)
    allergies: list[AllergyEntry] = field(default_factory=list)
    encounters: list[EncounterEntry] = field(default_factory=list)
    procedures: list[ProcedureEntry] = field(default_factory=list)


def _add_resource(parts: _TimelineParts, patient_id: str, resource: Resource) -> None:
    if not isinstance(resource, Mapping):
        raise TypeError(f"expected a FHIR resource dict, got {type(resource).__name__}")
    resource_type = resource.get("resourceType")
    if resource_type == "Bundle":
        raise TimelineError(
            "Bundle", resource.get("id"), "resourceType", "pass its entries' resources"
        )
    if resource_type not in _READERS:
        return
    _check_patient(patient_id, resource)
    _READERS[resource_type](parts, resource)


def _check_patient(patient_id: str, resource: Resource) -> None:
    if resource["resourceType"] == "Patient":
        found, where = resource.get("id"), "id"
    else:
        subject = resource.get("subject") or resource.get("patient") or {}
        found, where = _reference_id(subject.get("reference"), "Patient"), "subject"
    if found is not None and found != patient_id:
        raise _error(resource, where, f"belongs to patient {found!r}, not {patient_id!r}")


def _read_patient(parts: _TimelineParts, resource: Resource) -> None:
    birth_date = resource.get("birthDate")
    if birth_date is not None:
        parts.birth_date = _parsed(resource, "birthDate", parse_fhir_date)
    parts.sex = resource.get("gender")


def _read_observation(parts: _TimelineParts, resource: Resource) -> None:
    if resource.get("status") in _VOID_OBSERVATION_STATUSES:
        return
    time = _first_time(resource, _OBSERVATION_TIME_FIELDS)
    if time is None:
        return  # a result that cannot be placed in time cannot feed a time-windowed feature
    context = _PointContext(time, resource.get("id"), _encounter_id(resource))
    components = resource.get("component") or []
    own_value = _observed_value(resource, resource, "")
    # A panel such as blood pressure carries its values in components; it is a point of its
    # own only if it has a value of its own.
    if own_value is not None or not components:
        _append_point(parts, resource.get("code"), own_value or _EMPTY_VALUE, context)
    for position, component in enumerate(components):
        value = _observed_value(resource, component, f"component[{position}].")
        if value is not None:
            _append_point(parts, component.get("code"), value, context)


@dataclass(frozen=True, slots=True)
class _PointContext:
    time: datetime
    source_id: str | None
    encounter_id: str | None


@dataclass(frozen=True, slots=True)
class _ObservedValue:
    value: float | None = None
    unit: str | None = None
    text: str | None = None


_EMPTY_VALUE = _ObservedValue()


def _append_point(
    parts: _TimelineParts,
    concept: Mapping[str, Any] | None,
    value: _ObservedValue,
    context: _PointContext,
) -> None:
    codings = _codings(concept)
    if not codings:
        return  # text-only codes are valid FHIR but nothing can look them up by code
    primary = next((coding for coding in codings if coding.system == LOINC), codings[0])
    parts.observations.append(
        ObservationPoint(
            code=primary.code,
            system=primary.system,
            time=context.time,
            value=value.value,
            unit=value.unit,
            text_value=value.text,
            display=primary.display or (concept or {}).get("text"),
            source_id=context.source_id,
            encounter_id=context.encounter_id,
            codes=frozenset((coding.system, coding.code) for coding in codings),
        )
    )


def _observed_value(
    resource: Resource, holder: Mapping[str, Any], path: str
) -> _ObservedValue | None:
    """The value[x] of an Observation or component; None if it has none we can represent."""
    if (quantity := holder.get("valueQuantity")) is not None:
        number = _number(resource, quantity.get("value"), f"{path}valueQuantity.value")
        return _ObservedValue(value=number, unit=quantity.get("unit") or quantity.get("code"))
    if (integer := holder.get("valueInteger")) is not None:
        return _ObservedValue(value=_number(resource, integer, f"{path}valueInteger"))
    if (concept := holder.get("valueCodeableConcept")) is not None:
        return _ObservedValue(text=_concept_text(concept))
    if (boolean := holder.get("valueBoolean")) is not None:
        return _ObservedValue(text="true" if boolean else "false")
    for text_field in ("valueString", "valueDateTime", "valueTime"):
        if (text := holder.get(text_field)) is not None:
            return _ObservedValue(text=str(text))
    return None


def _number(resource: Resource, raw: object, path: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _error(resource, path, f"expected a number, got {raw!r}")
    if not math.isfinite(raw):
        raise _error(resource, path, f"expected a finite number, got {raw!r}")
    return float(raw)


def _read_condition(parts: _TimelineParts, resource: Resource) -> None:
    verification = _status_code(resource.get("verificationStatus"))
    if verification == _ENTERED_IN_ERROR:
        return
    parts.conditions.append(
        ConditionEntry(
            codings=_codings(resource.get("code")),
            text=_concept_text(resource.get("code")),
            onset=_first_time(resource, ("onsetDateTime", "onsetPeriod.start")),
            abatement=_first_time(resource, ("abatementDateTime", "abatementPeriod.start")),
            recorded=_first_time(resource, ("recordedDate",)),
            clinical_status=_status_code(resource.get("clinicalStatus")),
            verification_status=verification,
            source_id=resource.get("id"),
        )
    )


def _read_medication_request(parts: _TimelineParts, resource: Resource) -> None:
    start, end = _dosage_bounds(resource)
    _append_medication(
        parts,
        resource,
        kind="request",
        authored=_first_time(resource, ("authoredOn",)),
        start=start,
        end=end,
        dosage_field="dosageInstruction",
    )


def _dosage_bounds(resource: Resource) -> tuple[datetime | None, datetime | None]:
    for position, dosage in enumerate(resource.get("dosageInstruction") or []):
        if "boundsPeriod" in ((dosage.get("timing") or {}).get("repeat") or {}):
            bounds = f"dosageInstruction[{position}].timing.repeat.boundsPeriod"
            start = _first_time(resource, (f"{bounds}.start",))
            return start, _first_time(resource, (f"{bounds}.end",))
    return None, None


def _read_medication_statement(parts: _TimelineParts, resource: Resource) -> None:
    _append_medication(
        parts,
        resource,
        kind="statement",
        authored=_first_time(resource, ("dateAsserted",)),
        start=_first_time(resource, ("effectiveDateTime", "effectivePeriod.start")),
        end=_first_time(resource, ("effectivePeriod.end",)),
        dosage_field="dosage",
    )


def _read_medication_dispense(parts: _TimelineParts, resource: Resource) -> None:
    handed_over = _first_time(resource, ("whenHandedOver",))
    supply = _days_supply(resource)
    _append_medication(
        parts,
        resource,
        kind="dispense",
        authored=handed_over or _first_time(resource, ("whenPrepared",)),
        start=handed_over,
        end=handed_over + supply if handed_over and supply else None,
        dosage_field="dosageInstruction",
    )


_DAY_UNITS = frozenset({"d", "day", "days"})


def _days_supply(resource: Resource) -> timedelta | None:
    quantity = resource.get("daysSupply")
    if not quantity:
        return None
    days = _number(resource, quantity.get("value"), "daysSupply.value")
    unit = quantity.get("code") or quantity.get("unit") or "d"
    if unit.lower() not in _DAY_UNITS:
        raise _error(resource, "daysSupply", f"unit {unit!r} is not days")
    return timedelta(days=days) if days is not None else None


def _append_medication(
    parts: _TimelineParts,
    resource: Resource,
    *,
    kind: MedicationKind,
    authored: datetime | None,
    start: datetime | None,
    end: datetime | None,
    dosage_field: str,
) -> None:
    status = resource.get("status")
    if status in _VOID_MEDICATION_STATUSES:
        return
    concept = resource.get("medicationCodeableConcept")
    parts.medications.append(
        MedicationEntry(
            kind=kind,
            codings=_codings(concept),
            text=_concept_text(concept),
            medication_reference=(resource.get("medicationReference") or {}).get("reference"),
            status=status,
            intent=resource.get("intent"),
            authored=authored,
            start=start,
            end=end,
            dosage_text=_dosage_text(resource.get(dosage_field)),
            source_id=resource.get("id"),
        )
    )


def _dosage_text(dosages: list[Mapping[str, Any]] | None) -> str | None:
    texts = [dosage["text"] for dosage in dosages or [] if dosage.get("text")]
    return "; ".join(texts) or None


def _read_allergy(parts: _TimelineParts, resource: Resource) -> None:
    verification = _status_code(resource.get("verificationStatus"))
    if verification == _ENTERED_IN_ERROR:
        return
    parts.allergies.append(
        AllergyEntry(
            codings=_codings(resource.get("code")),
            text=_concept_text(resource.get("code")),
            criticality=resource.get("criticality"),
            clinical_status=_status_code(resource.get("clinicalStatus")),
            verification_status=verification,
            categories=tuple(resource.get("category") or ()),
            reactions=_reaction_texts(resource.get("reaction") or []),
            source_id=resource.get("id"),
        )
    )


def _reaction_texts(reactions: list[Mapping[str, Any]]) -> tuple[str, ...]:
    texts: list[str] = []
    for reaction in reactions:
        texts.extend(filter(None, map(_concept_text, reaction.get("manifestation") or [])))
        if reaction.get("description"):
            texts.append(reaction["description"])
    return tuple(texts)


def _read_encounter(parts: _TimelineParts, resource: Resource) -> None:
    if resource.get("status") in _VOID_ENCOUNTER_STATUSES:
        return
    parts.encounters.append(
        EncounterEntry(
            class_code=_encounter_class(resource.get("class")),
            start=_first_time(resource, ("period.start",)),
            end=_first_time(resource, ("period.end",)),
            type_codings=tuple(
                coding for concept in resource.get("type") or [] for coding in _codings(concept)
            ),
            status=resource.get("status"),
            source_id=resource.get("id"),
        )
    )


def _encounter_class(value: Mapping[str, Any] | None) -> str | None:
    if not value:
        return None
    # R4 has a Coding here; later versions a CodeableConcept. Accept both.
    codings = _codings(value) if "coding" in value else _codings({"coding": [value]})
    return codings[0].code if codings else None


def _read_procedure(parts: _TimelineParts, resource: Resource) -> None:
    if resource.get("status") in _VOID_PROCEDURE_STATUSES:
        return
    parts.procedures.append(
        ProcedureEntry(
            codings=_codings(resource.get("code")),
            text=_concept_text(resource.get("code")),
            start=_first_time(resource, ("performedDateTime", "performedPeriod.start")),
            end=_first_time(resource, ("performedPeriod.end",)),
            status=resource.get("status"),
            source_id=resource.get("id"),
            encounter_id=_encounter_id(resource),
        )
    )


_READERS = {
    "Patient": _read_patient,
    "Observation": _read_observation,
    "Condition": _read_condition,
    "MedicationRequest": _read_medication_request,
    "MedicationStatement": _read_medication_statement,
    "MedicationDispense": _read_medication_dispense,
    "AllergyIntolerance": _read_allergy,
    "Encounter": _read_encounter,
    "Procedure": _read_procedure,
}


# -- small FHIR readers --------------------------------------------------------------------------


def _error(resource: Resource, field_path: str, problem: str) -> TimelineError:
    return TimelineError(resource.get("resourceType", "?"), resource.get("id"), field_path, problem)


def _parsed(resource: Resource, field_path: str, parse: Callable[[str], _T]) -> _T:
    raw = _at_path(resource, field_path)
    if not isinstance(raw, str):
        raise _error(resource, field_path, f"expected a date string, got {raw!r}")
    try:
        return parse(raw)
    except ValueError as exc:
        raise _error(resource, field_path, str(exc)) from exc


def _first_time(resource: Resource, field_paths: Iterable[str]) -> datetime | None:
    """The first of `field_paths` that is present, parsed; None if none is."""
    for field_path in field_paths:
        if _at_path(resource, field_path) is not None:
            return _parsed(resource, field_path, parse_fhir_datetime)
    return None


_STEP = re.compile(r"(?P<name>[A-Za-z]+)(?:\[(?P<index>\d+)\])?")


def _at_path(resource: Resource, field_path: str) -> Any:
    """Follow a dotted path such as ``dosageInstruction[0].timing.repeat``; None if absent."""
    current: Any = resource
    for step in field_path.split("."):
        match = _STEP.fullmatch(step)
        if match is None or not isinstance(current, Mapping):
            return None
        current = current.get(match["name"])
        if match["index"] is not None:
            items = current or []
            index = int(match["index"])
            current = items[index] if index < len(items) else None
    return current


def _codings(concept: Mapping[str, Any] | None) -> tuple[Coding, ...]:
    if not concept:
        return ()
    return tuple(
        Coding(coding.get("system"), str(coding["code"]), coding.get("display"))
        for coding in concept.get("coding") or []
        if coding.get("code") is not None
    )


def _concept_text(concept: Mapping[str, Any] | None) -> str | None:
    if not concept:
        return None
    if concept.get("text"):
        return str(concept["text"])
    codings = concept.get("coding") or []
    first = codings[0] if codings else {}
    return first.get("display") or first.get("code")


def _status_code(concept: Mapping[str, Any] | None) -> str | None:
    codings = _codings(concept)
    return codings[0].code if codings else None


def _encounter_id(resource: Resource) -> str | None:
    return _reference_id((resource.get("encounter") or {}).get("reference"), "Encounter")


def _reference_id(reference: str | None, resource_type: str) -> str | None:
    """The id a reference points to, if it names `resource_type` or is a bundle-local urn:uuid."""
    if not reference:
        return None
    if reference.startswith(_URN_UUID):
        return reference[len(_URN_UUID) :]
    match = _REFERENCE.search(reference)
    if match is None or match["type"] != resource_type:
        return None
    return match["id"]
