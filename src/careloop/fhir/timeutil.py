"""FHIR date and dateTime values as UTC ranges.

A FHIR date may be partial ("2024", "2024-03"); it stands for the whole period, so it becomes the
range [first instant, last instant] of that period. Values without a zone are read as UTC, since
FHIR requires a zone on any dateTime that has a time and a bare date has no time to shift.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta

_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_ONE_MICROSECOND = timedelta(microseconds=1)


class FhirDateError(ValueError):
    """A value that is not a FHIR date, dateTime or instant."""


def parse_fhir_instant_range(value: str) -> tuple[datetime, datetime]:
    """The UTC [start, end] instants a FHIR date/dateTime/instant covers."""
    partial = _PARTIAL.match(value)
    if partial:
        return _partial_range(*partial.groups())
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FhirDateError(f"{value!r} is not a FHIR date or dateTime") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment, moment


def _partial_range(year: str, month: str | None, day: str | None) -> tuple[datetime, datetime]:
    y = int(year)
    try:
        if month is None:
            start = datetime(y, 1, 1, tzinfo=UTC)
            return start, datetime(y + 1, 1, 1, tzinfo=UTC) - _ONE_MICROSECOND
        m = int(month)
        if day is None:
            start = datetime(y, m, 1, tzinfo=UTC)
            last_day = calendar.monthrange(y, m)[1]
            return start, datetime(y, m, last_day, tzinfo=UTC) + timedelta(
                days=1
            ) - _ONE_MICROSECOND
        start = datetime(y, m, int(day), tzinfo=UTC)
    except ValueError as exc:
        raise FhirDateError(f"{year}-{month}-{day} is not a calendar date") from exc
    return start, start + timedelta(days=1) - _ONE_MICROSECOND
