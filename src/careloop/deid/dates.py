"""Dates under Safe Harbor (identifier 3): per-patient date shifting, reduction to the year, and
the 90+ age rule.

Two modes:

- "shift": every date of one patient moves by the same number of days, drawn from the keyed
  pseudonym MAC of the patient id, in [-max, +max] and never 0. Intervals (length of stay, gaps
  between observations, age at an event) are preserved, which is what model training needs; the
  calendar position is not. Precision and time zone are kept: only the calendar date part of the
  text changes, and a time with a fixed offset needs no other change when whole days move.
  A partial date moves the middle of the period it names (July 2 for a year, the 15th for a
  month) and keeps its precision, so "2011" may become "2010" or "2012".
  Strictly, Safe Harbor asks for dates reduced to the year; shifted dates are the usual
  practice for research data sets whose recipients also sign a data use agreement.
- "year": Safe Harbor strict, every date, dateTime and instant reduced to its year. An instant
  cannot hold a bare year, so the caller drops it, or uses the dateTime choice of the same
  element, or (for a required instant) writes January 1 00:00:00Z of the year.

Ages over 89 (and every date element that would reveal them) must be aggregated into "90 or
older": the caller drops birthDate and marks the age band instead; `is_ninety_or_older` decides
with the earliest birth and latest reference date a partial date allows, so a partial date
never hides a 90-year-old.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

DateMode = Literal["shift", "year"]
AGE_BAND_YEARS = 90

# The shapes of FHIR date, dateTime and instant values.
_DATE_VALUE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(.*))?)?$", re.DOTALL)


def shift_days(mac: bytes, max_days: int) -> int:
    """A shift in [-max_days, +max_days], never 0, from a keyed MAC (uniform: 64 bits mod 2*max
    leaves a bias below 2**-50)."""
    if max_days < 1:
        raise ValueError("max_shift_days must be at least 1")
    draw = int.from_bytes(mac[:8], "big") % (2 * max_days)
    return draw - max_days if draw < max_days else draw - max_days + 1


@dataclass(frozen=True, slots=True)
class DateRule:
    """How one patient's dates change; `days` is used in shift mode only."""

    mode: DateMode
    days: int = 0

    def apply(self, value: str) -> str | None:
        """The transformed value, or None when it cannot be kept (unparseable, out of range)."""
        parts = _DATE_VALUE.match(value)
        if parts is None:
            return None
        if self.mode == "year":
            return parts.group(1)
        return _shifted(parts, self.days)


def _shifted(parts: re.Match[str], days: int) -> str | None:
    year, month, day, rest = parts.groups()
    try:
        anchor = date(int(year), int(month or 7), int(day or (15 if month else 2)))
        moved = anchor + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    if month is None:
        return f"{moved.year:04d}"
    if day is None:
        return f"{moved.year:04d}-{moved.month:02d}"
    return moved.isoformat() + (rest or "")


def year_instant(value: str) -> str | None:
    """January 1 00:00:00Z of the value's year: the only year-level instant there is."""
    parts = _DATE_VALUE.match(value)
    return f"{parts.group(1)}-01-01T00:00:00Z" if parts else None


def earliest_date(value: str) -> date | None:
    """The first day a (possibly partial) FHIR date can mean."""
    parts = _DATE_VALUE.match(value)
    if parts is None:
        return None
    year, month, day, _ = parts.groups()
    try:
        return date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None


def latest_date(value: str) -> date | None:
    """The last day a (possibly partial) FHIR date can mean."""
    parts = _DATE_VALUE.match(value)
    if parts is None:
        return None
    year, month, day, _ = parts.groups()
    try:
        if day is not None:
            return date(int(year), int(month), int(day))
        if month is not None:
            first_of_next = date(int(year) + int(month) // 12, int(month) % 12 + 1, 1)
            return first_of_next - timedelta(days=1)
        return date(int(year), 12, 31)
    except (ValueError, OverflowError):
        return None


def age_in_years(birth: date, on: date) -> int:
    """Completed years of age on a date (a birthday counts from its own day; a February 29
    birthday is reached on March 1 in common years)."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def is_ninety_or_older(birth_date: str, reference: date) -> bool:
    """True when the person is, or may be (partial birth date), 90 or older on `reference`.

    An unparseable birth date is treated as possibly 90+: the caller drops it either way.
    """
    birth = earliest_date(birth_date)
    return birth is None or age_in_years(birth, reference) >= AGE_BAND_YEARS
