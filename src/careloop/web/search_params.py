"""FHIR search parameters of `GET /fhir/{type}` turned into `ResourceStore.search` arguments.

Pure functions: no HTTP, no store. Handling is strict (an unknown or unsupported parameter is an
error, never silently ignored) because a search that quietly drops a filter returns other
patients' data as if it matched. Empty values are ignored, as FHIR asks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from careloop.fhir.indexing import CODE_ELEMENTS, DATE_ELEMENTS
from careloop.fhir.timeutil import FhirDateError, parse_fhir_instant_range
from careloop.store.repository import DateBound

DEFAULT_COUNT = 50
MAX_COUNT = 1000
MAX_OFFSET = 2**31 - 1  # beyond any real result set, and inside every backend's integer range
DATE_PREFIXES = ("eq", "ne", "lt", "le", "gt", "ge", "sa", "eb", "ap")
JSON_FORMATS = ("json", "application/json", "application/fhir+json")
PAGING_PARAMS = ("_count", "_offset")

_ID = r"[A-Za-z0-9\-.]{1,64}"
_PATIENT_REFERENCE = re.compile(rf"^(?:Patient/)?({_ID})$")
_INTEGER = re.compile(r"^[0-9]{1,10}$")
_SHOWN_NAME = re.compile(r"[^A-Za-z0-9_:\-.]")


class SearchParamError(ValueError):
    """A search parameter careloop cannot honour; the message names it, never its value."""

    def __init__(self, param: str, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.param = param
        self.code = code  # the OperationOutcome issue type


@dataclass(frozen=True)
class SearchQuery:
    patient_id: str | None = None
    codes: tuple[str, ...] = ()
    dates: tuple[DateBound, ...] = ()
    count: int = DEFAULT_COUNT
    offset: int = 0
    matches_nothing: bool = False  # patient and subject name two different patients
    # the filtering parameters as given (without paging), to repeat in self/next/previous links
    filters: tuple[tuple[str, str], ...] = ()


def supported_params(resource_type: str) -> tuple[str, ...]:
    """The search parameters careloop indexes for a type (the store indexes nothing else)."""
    params = ["patient", "subject"]
    if resource_type in CODE_ELEMENTS:
        params.append("code")
    if resource_type in DATE_ELEMENTS:
        params.append("date")
    return tuple(params)


def parse_search(resource_type: str, params: Sequence[tuple[str, str]]) -> SearchQuery:
    """Check every parameter and build the query; raise SearchParamError on the first problem."""
    allowed = supported_params(resource_type)
    given: dict[str, list[str]] = {}
    for name, value in params:
        if name == "_format":
            _check_format(value)
            continue
        if name not in allowed and name not in PAGING_PARAMS:
            raise _unknown(name, resource_type, allowed)
        if value.strip():
            given.setdefault(name, []).append(value.strip())
    patients = {
        _patient_id(name, v) for name in ("patient", "subject") for v in given.get(name, [])
    }
    return SearchQuery(
        patient_id=min(patients) if patients else None,
        codes=_codes(_single(given, "code")),
        dates=tuple(_date_bound(value, n) for n, value in enumerate(given.get("date", []), 1)),
        count=_integer(given, "_count", DEFAULT_COUNT, MAX_COUNT),
        offset=_integer(given, "_offset", 0, MAX_OFFSET),
        matches_nothing=len(patients) > 1,
        filters=tuple(
            (name, value)
            for name, values in given.items()
            if name not in PAGING_PARAMS
            for value in values
        ),
    )


def _unknown(name: str, resource_type: str, allowed: Sequence[str]) -> SearchParamError:
    shown = _SHOWN_NAME.sub("?", name[:64])
    supported = ", ".join((*allowed, *PAGING_PARAMS))
    return SearchParamError(
        shown,
        f"unknown or unsupported search parameter {shown!r} for {resource_type}; "
        f"careloop supports {supported}",
        code="not-supported",
    )


def _check_format(value: str) -> None:
    if value.strip() not in JSON_FORMATS:
        raise SearchParamError(
            "_format", "_format: careloop answers in FHIR JSON only", code="not-supported"
        )


def _patient_id(name: str, value: str) -> str:
    match = _PATIENT_REFERENCE.match(value)
    if not match:
        raise SearchParamError(
            name, f"{name} must be Patient/{{id}} or a bare patient id (letters, digits, - and .)"
        )
    return match.group(1)


def _single(given: dict[str, list[str]], name: str) -> str | None:
    values = given.get(name, [])
    if len(values) > 1:
        hint = "; give alternatives as a comma-separated list" if name == "code" else ""
        raise SearchParamError(name, f"{name} may appear only once{hint}")
    return values[0] if values else None


def _codes(value: str | None) -> tuple[str, ...]:
    """`system|code`, `|code` (no system) or bare `code` tokens, OR-ed."""
    if value is None:
        return ()
    tokens = [token.strip() for token in value.split(",")]
    for token in tokens:
        system, bar, code = token.rpartition("|")
        if not code or (bar and "|" in system):
            raise SearchParamError(
                "code",
                "code takes comma-separated tokens system|code or code; a token without a code "
                "(system| or empty) is not supported",
            )
    return tuple(dict.fromkeys(tokens))


def _date_bound(value: str, position: int) -> DateBound:
    # A '+' of a zone offset arrives as a space when the client did not percent-encode it.
    value = value.replace(" ", "+")
    prefix = value[:2] if value[:2] in DATE_PREFIXES else "eq"
    moment = value[2:] if value[:2] in DATE_PREFIXES else value
    try:
        start, end = parse_fhir_instant_range(moment)
    except (FhirDateError, ValueError, OverflowError):
        raise SearchParamError(
            "date",
            f"date #{position} is not a FHIR date or dateTime with an optional prefix "
            f"({', '.join(DATE_PREFIXES)}), e.g. ge2024-03 or lt2024-03-01T12:00:00Z",
        ) from None
    return DateBound(prefix, start, end)


def _integer(given: dict[str, list[str]], name: str, default: int, maximum: int) -> int:
    value = _single(given, name)
    if value is None:
        return default
    if not _INTEGER.match(value) or int(value) > maximum:
        raise SearchParamError(name, f"{name} must be a whole number from 0 to {maximum}")
    return int(value)
