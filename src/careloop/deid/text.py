"""Best-effort scrubbing of free text: identifiers become bracketed tags such as `[NAME]`.

Two layers:

1. Known terms: what the compartment itself says about the patient and the people around them
   (name parts, identifier values, telecom values, address lines, cities, postal codes) is
   replaced wherever it occurs, case-insensitively and on word boundaries.
2. Patterns: e-mail addresses, URLs, IP addresses, dates in common formats, SSN-like and phone
   numbers, vehicle identification numbers, labelled ids ("MRN: 12345"), street addresses and PO
   boxes, ZIP codes (ZIP+4, or after a state or a "ZIP" label), names after a title ("Dr. Smith"),
   and any run of 7 or more digits. Pattern passes repeat until nothing matches, so a
   replacement can never leave a pattern that a single pass would have missed.

This is best-effort and documented as such: a name the compartment does not know, written
without a title, is not found, nor is a license plate. That is why the export drops narrative
(`Resource.text`) entirely and only scrubs short structured free-text fields; the safest setting
for anything that must be Safe Harbor is to leave free text out of the export altogether.
Over-scrubbing ("Scores 1234567" becoming "Scores [ID]") is the accepted side of the trade.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

NAME = "NAME"
DATE = "DATE"
PHONE = "PHONE"
EMAIL = "EMAIL"
URL = "URL"
IP = "IP"
SSN = "SSN"
ID = "ID"
ZIP = "ZIP"
ADDRESS = "ADDRESS"
LOCATION = "LOCATION"
VIN = "VIN"
REDACTED = "REDACTED"

MAX_PASSES = 32  # every pass that changes text removes digits, '@', ':' or "www."; see scrub

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_ORDINAL = r"(?:st|nd|rd|th)?"
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Terrace"
    r"|Ter|Way|Circle|Cir|Highway|Hwy|Parkway|Pkwy|Square|Sq|Trail|Trl|Lodge|Crossing|Run|Path"
    r"|Pike|Alley|Row|Loop|Ridge|Heights|Plaza|Point|Manor|Mews|Gardens|Grove|Park|Walk|Close"
    r"|Crescent|Landing|Harbor|Center|Junction|Station|Village|Estates|Commons)"
)
_STATES = (
    r"(?:AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV"
    r"|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|GU|VI|AS|MP)"
)

# (tag, pattern, replacement template or None for the bare tag). Order matters within a pass:
# URLs before e-mail (user@host inside a URL), dates before phone and digit runs.
_PATTERNS: tuple[tuple[str, re.Pattern[str], str | None], ...] = (
    (URL, re.compile(r"(?:\b[A-Za-z][A-Za-z0-9+.\-]*://|\bwww\.)[^\s<>\"']*", re.I), None),
    (EMAIL, re.compile(r"[\w.%+\-]*@[\w.\-]*[\w\-]"), None),  # not a sentence's last dot
    (IP, re.compile(r"(?<!\d)(?<!\d\.)\d{1,3}(?:\.\d{1,3}){3}(?!\.?\d)"), None),
    (IP, re.compile(r"\b(?:[0-9A-Fa-f]{1,4}:){3,7}[0-9A-Fa-f]{1,4}\b"), None),
    (
        DATE,
        re.compile(
            r"(?<!\d)\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?)?"
        ),
        None,
    ),
    (DATE, re.compile(r"(?<!\d)\d{4}/\d{1,2}/\d{1,2}(?!\d)"), None),
    (DATE, re.compile(r"(?<!\d)\d{1,2}[/.\-]\d{1,2}[/.\-](?:\d{4}|\d{2})(?!\d)"), None),
    (DATE, re.compile(rf"\b{_MONTH}\s+\d{{1,2}}{_ORDINAL}(?:,?\s+\d{{4}})?\b", re.I), None),
    (
        DATE,
        re.compile(rf"\b\d{{1,2}}{_ORDINAL}\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}})?\b", re.I),
        None,
    ),
    (DATE, re.compile(rf"\b{_MONTH},?\s+\d{{4}}\b", re.I), None),
    (SSN, re.compile(r"\d{3}[\s.\-]\d{2}[\s.\-]\d{4}"), None),
    (PHONE, re.compile(r"(?:\+\d{1,3}[\s.\-]?)?\(?\d{3}\)?[\s.\-]?\d{3}[\s.\-]?\d{4}"), None),
    (PHONE, re.compile(r"\+\d[\d\s.\-()]{6,}\d"), None),
    (
        VIN,
        re.compile(
            r"\b(?=[A-HJ-NPR-Z0-9]{17}\b)(?=[A-HJ-NPR-Z0-9]*\d)(?=[A-HJ-NPR-Z0-9]*[A-HJ-NPR-Z])"
            r"[A-HJ-NPR-Z0-9]{17}\b"
        ),
        None,
    ),
    (
        ID,
        re.compile(
            r"\b((?:MRN|SSN|ID|Acct|Account|Policy|Member|Medicaid|Medicare|License|Licence|DL"
            r"|Passport|Serial|S/N|SN|Plate|Certificate|NPI)\s*(?:no\.?|number|#)?\s*[:#\-]?\s*)"
            r"(?=[A-Z0-9\-]*\d)[A-Z0-9][A-Z0-9\-]{3,}",
            re.I,
        ),
        r"\1[ID]",
    ),
    (
        ADDRESS,
        re.compile(
            rf"\b\d{{1,6}}\s+(?:[A-Z][A-Za-z]*\.?\s+){{1,4}}{_STREET_SUFFIX}\b\.?"
            r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|#)\.?\s*[A-Za-z0-9\-]+)?"
        ),
        None,
    ),
    (ADDRESS, re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d+", re.I), None),
    (ZIP, re.compile(r"\b\d{5}-\d{4}\b"), None),
    (
        ZIP,
        re.compile(rf"\b({_STATES},?\s+|(?:ZIP|postal)(?:\s*code)?\s*:?\s*)\d{{5}}\b"),
        r"\1[ZIP]",
    ),
    (ZIP, re.compile(r"\b((?:zip|postal)(?:\s*code)?\s*:?\s*)\d{5}\b", re.I), r"\1[ZIP]"),
    (
        NAME,
        re.compile(r"\b((?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof)\.?\s+)[A-Z][\w'\-]+(?:\s+[A-Z][\w'\-]+)?"),
        r"\1[NAME]",
    ),
    (ID, re.compile(r"\d(?:-?\d){6,}"), None),
)

_HAS_DIGIT = re.compile(r"\d")
_NEEDS_NO_DIGIT = {URL, EMAIL, NAME, IP}


@dataclass(frozen=True)
class Scrubbed:
    text: str
    tags: Counter[str] = field(default_factory=Counter)

    @property
    def changed(self) -> bool:
        return bool(self.tags)


@dataclass(frozen=True)
class KnownTerms:
    """Terms known to identify someone in this compartment, each with the tag that replaces it."""

    terms: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def of(pairs: Iterable[tuple[str, str]]) -> KnownTerms:
        seen: dict[str, str] = {}
        for term, tag in pairs:
            cleaned = term.strip()
            if _worth_matching(cleaned, tag) and cleaned.casefold() not in seen:
                seen[cleaned.casefold()] = tag
        # longest first, so "Kuhic Lodge" wins over "Kuhic"
        ordered = sorted(seen.items(), key=lambda item: (-len(item[0]), item[0]))
        return KnownTerms(tuple(ordered))

    @cached_property
    def _pattern(self) -> re.Pattern[str] | None:
        if not self.terms:
            return None
        alternatives = "|".join(re.escape(term) for term, _ in self.terms)
        return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    @cached_property
    def _tags(self) -> dict[str, str]:
        return dict(self.terms)

    def replace(self, text: str, tags: Counter[str]) -> str:
        pattern = self._pattern
        if pattern is None:
            return text

        def tag_for(match: re.Match[str]) -> str:
            tag = self._tags.get(match.group(0).casefold(), REDACTED)
            tags[tag] += 1
            return f"[{tag}]"

        return pattern.sub(tag_for, text)


def _worth_matching(term: str, tag: str) -> bool:
    """Skip terms too short to match safely (initials, 'Jr')."""
    minimum = {NAME: 2, ID: 4}.get(tag, 3)  # an id like "370" would scrub every "370 mg"
    return len(term) >= minimum and any(ch.isalnum() for ch in term)


def scrub(text: str, known: KnownTerms | None = None, patterns: bool = True) -> Scrubbed:
    """Replace known terms, then (if `patterns`) identifier patterns, with `[TAG]`s."""
    tags: Counter[str] = Counter()
    if patterns:  # first, so "jane.doe@example.org" becomes one [EMAIL], not "[NAME].doe@..."
        text = _scrub_patterns(text, tags)
    if known is not None:
        text = known.replace(text, tags)
    if patterns:  # again: removing a known term must not leave a pattern behind
        text = _scrub_patterns(text, tags)
    return Scrubbed(text, tags)


def _scrub_patterns(text: str, tags: Counter[str]) -> str:
    # Each pattern that matches removes at least one digit, '@', ':' or "www." (the NAME pattern
    # removes a capitalised word after a title and leaves "[", which no pattern starts on), and
    # no tag contains any of them, so the loop ends; MAX_PASSES is a guard that redacts all.
    for _ in range(MAX_PASSES):
        before = text
        for tag, pattern, template in _PATTERNS:
            if tag not in _NEEDS_NO_DIGIT and not _HAS_DIGIT.search(text):
                continue
            if tag == EMAIL and "@" not in text:
                continue
            text = _substitute(pattern, tag, template, text, tags)
        if text == before:
            return text
    tags[REDACTED] += 1
    return f"[{REDACTED}]"


def _substitute(
    pattern: re.Pattern[str], tag: str, template: str | None, text: str, tags: Counter[str]
) -> str:
    def replacement(match: re.Match[str]) -> str:
        tags[tag] += 1
        return match.expand(template) if template else f"[{tag}]"

    return pattern.sub(replacement, text)
