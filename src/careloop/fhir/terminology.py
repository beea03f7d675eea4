"""Checks fhir.resources does not make: required value-set bindings and the shape of codes.

fhir.resources validates structure and datatypes, but a `code` element only has to match the FHIR
code pattern, so `Observation.status = "done-ish"` passes. Required bindings below are from the R4
specification for the elements careloop reads. Codes from LOINC, SNOMED CT, ICD-10 and RxNorm are
checked for their published format and, for LOINC and SNOMED CT, their check digit, which catches
typos and truncation; whether a code exists in its code system needs the terminology itself.
"""

from __future__ import annotations

import re

from careloop.fhir import codes
from careloop.fhir.walk import Location, path_text, scan

# (resourceType, element) -> the codes its required binding allows (FHIR R4).
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("Observation", "status"): frozenset(
        "registered preliminary final amended corrected cancelled entered-in-error unknown".split()
    ),
    ("Encounter", "status"): frozenset(
        "planned arrived triaged in-progress onleave finished cancelled entered-in-error "
        "unknown".split()
    ),
    ("MedicationRequest", "status"): frozenset(
        "active on-hold cancelled completed entered-in-error stopped draft unknown".split()
    ),
    ("MedicationRequest", "intent"): frozenset(
        "proposal plan order original-order reflex-order filler-order instance-order option".split()
    ),
    ("MedicationStatement", "status"): frozenset(
        "active completed entered-in-error intended stopped on-hold unknown not-taken".split()
    ),
    ("AllergyIntolerance", "type"): frozenset({"allergy", "intolerance"}),
    ("AllergyIntolerance", "criticality"): frozenset({"low", "high", "unable-to-assess"}),
    ("Procedure", "status"): frozenset(
        "preparation in-progress not-done on-hold stopped completed entered-in-error "
        "unknown".split()
    ),
    ("DiagnosticReport", "status"): frozenset(
        "registered partial preliminary final amended corrected appended cancelled "
        "entered-in-error unknown".split()
    ),
    ("Immunization", "status"): frozenset({"completed", "entered-in-error", "not-done"}),
    ("CarePlan", "status"): frozenset(
        "draft active on-hold revoked completed entered-in-error unknown".split()
    ),
    ("Flag", "status"): frozenset({"active", "inactive", "entered-in-error"}),
    ("Device", "status"): frozenset({"active", "inactive", "entered-in-error", "unknown"}),
    ("Task", "status"): frozenset(
        "draft requested received accepted rejected ready cancelled in-progress on-hold failed "
        "completed entered-in-error".split()
    ),
}

# Required bindings on CodeableConcepts: the codes allowed in the named HL7 code system.
REQUIRED_CONCEPT_CODES: dict[tuple[str, str], tuple[str, frozenset[str]]] = {
    ("Condition", "clinicalStatus"): (
        codes.CONDITION_CLINICAL,
        frozenset("active recurrence relapse inactive remission resolved".split()),
    ),
    ("Condition", "verificationStatus"): (
        "http://terminology.hl7.org/CodeSystem/condition-ver-status",
        frozenset(
            "unconfirmed provisional differential confirmed refuted entered-in-error".split()
        ),
    ),
    ("AllergyIntolerance", "clinicalStatus"): (
        codes.ALLERGY_CLINICAL,
        frozenset({"active", "inactive", "resolved"}),
    ),
    ("AllergyIntolerance", "verificationStatus"): (
        "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
        frozenset({"unconfirmed", "confirmed", "refuted", "entered-in-error"}),
    ),
}

_LOINC = re.compile(r"^(\d{1,7})-(\d)$")
_SNOMED = re.compile(r"^[1-9]\d{5,17}$")
_ICD10 = re.compile(r"^[A-Z]\d[0-9A-Z](\.?[0-9A-Z]{1,4})?$")
_RXNORM = re.compile(r"^\d{1,9}$")


def binding_errors(resource: dict) -> list[tuple[str, str]]:
    """(path, message) for each required binding the resource breaks."""
    resource_type = resource["resourceType"]
    errors = []
    for (bound_type, element), allowed in REQUIRED_CODES.items():
        value = resource.get(element) if bound_type == resource_type else None
        if isinstance(value, str) and value not in allowed:
            errors.append((f"{resource_type}.{element}", _not_in(allowed)))
    for (bound_type, element), (system, allowed) in REQUIRED_CONCEPT_CODES.items():
        concept = resource.get(element) if bound_type == resource_type else None
        if not isinstance(concept, dict):
            continue
        for index, coding in enumerate(concept.get("coding") or []):
            code = coding.get("code") if isinstance(coding, dict) else None
            if coding.get("system") == system and isinstance(code, str) and code not in allowed:
                errors.append((f"{resource_type}.{element}.coding[{index}].code", _not_in(allowed)))
    return errors


def coding_errors(
    resource: dict, codings: list[tuple[dict, Location]] | None = None
) -> list[tuple[str, str]]:
    """(path, message) for each LOINC, SNOMED CT, ICD-10 or RxNorm code that is malformed.

    `codings` may hold the resource's codings, when the caller already scanned it.
    """
    errors = []
    for coding, location in scan(resource).codings if codings is None else codings:
        problem = code_format_problem(coding.get("system"), coding.get("code"))
        if problem:
            errors.append((path_text(resource["resourceType"], location, "code"), problem))
    return errors


def code_format_problem(system: object, code: object) -> str | None:
    if not isinstance(code, str):
        return None
    if system == codes.LOINC:
        match = _LOINC.match(code)
        if not match or loinc_check_digit(match.group(1)) != int(match.group(2)):
            return "not a valid LOINC code (format NNNNN-C with its mod-10 check digit)"
    elif system == codes.SNOMED:
        if not _SNOMED.match(code) or not verhoeff_valid(code):
            return "not a valid SNOMED CT identifier (6-18 digits with a Verhoeff check digit)"
    elif system in (codes.ICD10_CM, codes.ICD10):
        if not _ICD10.match(code):
            return "not a valid ICD-10 code (letter, two characters, optional extension)"
    elif system == codes.RXNORM and not _RXNORM.match(code):
        return "not a valid RxNorm concept id (digits only)"
    return None


def loinc_check_digit(number: str) -> int:
    """LOINC's mod-10 check digit: double every other digit from the right, add all digits."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            digit = digit // 10 + digit % 10
        total += digit
    return (10 - total % 10) % 10


_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def verhoeff_valid(number: str) -> bool:
    """SNOMED CT identifiers end in a Verhoeff check digit over the whole number."""
    check = 0
    for position, char in enumerate(reversed(number)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][int(char)]]
    return check == 0


def _not_in(allowed: frozenset[str]) -> str:
    # the submitted value is not repeated: a free-text slip in a code field may be patient data
    return f"code is not in the required value set ({', '.join(sorted(allowed))})"
