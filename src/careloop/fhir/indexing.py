"""What the store indexes about a resource: its patient, the time it is about, and its codes.

Pure functions over resource dicts. Only what search and access control need is extracted;
everything else stays inside the encrypted body.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from careloop.fhir.timeutil import parse_fhir_instant_range

# Elements that place a resource in a patient's compartment, in order of preference.
PATIENT_LINK_ELEMENTS = ("subject", "patient", "beneficiary", "for", "individual")

# The element holding the clinical time of each resource type, for `date=` search.
DATE_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Observation": ("effective", "issued"),
    "Condition": ("onset", "recordedDate"),
    "Encounter": ("period",),
    "MedicationRequest": ("authoredOn",),
    "MedicationStatement": ("effective", "dateAsserted"),
    "MedicationDispense": ("whenHandedOver", "whenPrepared"),
    "MedicationAdministration": ("effective",),
    "Procedure": ("performed",),
    "AllergyIntolerance": ("recordedDate", "onset"),
    "DiagnosticReport": ("effective", "issued"),
    "Immunization": ("occurrence",),
    "CarePlan": ("period",),
    "Claim": ("billablePeriod", "created"),
    "ExplanationOfBenefit": ("billablePeriod", "created"),
    "ImagingStudy": ("started",),
    "RiskAssessment": ("occurrence",),
    "Flag": ("period",),
    "Task": ("authoredOn",),
    "DetectedIssue": ("identified",),
    "Consent": ("dateTime",),
    "Goal": ("startDate",),
}

# The element holding the code of each resource type, for `code=` search.
CODE_ELEMENTS: dict[str, str] = {
    "Observation": "code",
    "Condition": "code",
    "Procedure": "code",
    "AllergyIntolerance": "code",
    "MedicationRequest": "medicationCodeableConcept",
    "MedicationStatement": "medicationCodeableConcept",
    "MedicationDispense": "medicationCodeableConcept",
    "MedicationAdministration": "medicationCodeableConcept",
    "Medication": "code",
    "DiagnosticReport": "code",
    "Immunization": "vaccineCode",
    "Encounter": "type",
    "RiskAssessment": "code",
    "DetectedIssue": "code",
    "Flag": "code",
    "Task": "code",
    "ServiceRequest": "code",
}


@dataclass(frozen=True, slots=True)
class IndexTerms:
    patient_id: str | None
    date_start: datetime | None
    date_end: datetime | None
    # (param, value) pairs, hashed by the store; a coding yields `system|code` and bare `code`.
    # Only what search and conditional references use: `code` and `identifier`.
    tokens: list[tuple[str, str]] = field(default_factory=list)


def patient_id_of(resource: dict) -> str | None:
    """The id of the patient whose compartment holds this resource, if any."""
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    for element in PATIENT_LINK_ELEMENTS:
        link = resource.get(element)
        if isinstance(link, dict):
            reference = link.get("reference")
            if isinstance(reference, str) and reference.startswith("Patient/"):
                return reference.removeprefix("Patient/")
    return None


def clinical_period(resource: dict) -> tuple[datetime | None, datetime | None]:
    """The [start, end] time a resource is about, from the first date element it has."""
    for element in DATE_ELEMENTS.get(resource.get("resourceType", ""), ()):
        for key, value in _choice_values(resource, element):
            if isinstance(value, str):
                return parse_fhir_instant_range(value)
            if isinstance(value, dict) and key.endswith(("Period", "period", "billablePeriod")):
                return _period_range(value)
    return None, None


def index_terms(resource: dict) -> IndexTerms:
    date_start, date_end = clinical_period(resource)
    return IndexTerms(
        patient_id=patient_id_of(resource),
        date_start=date_start,
        date_end=date_end,
        tokens=list(_tokens(resource)),
    )


def _choice_values(resource: dict, element: str) -> Iterator[tuple[str, object]]:
    """Yield the element itself or its choice-type variants (effectiveDateTime, effectivePeriod)."""
    if element in resource:
        yield element, resource[element]
        return
    for key, value in resource.items():
        if key.startswith(element) and key[len(element) : len(element) + 1].isupper():
            yield key, value


def _period_range(period: dict) -> tuple[datetime | None, datetime | None]:
    start = parse_fhir_instant_range(period["start"])[0] if "start" in period else None
    end = parse_fhir_instant_range(period["end"])[1] if "end" in period else None
    if start is None and end is None:
        return None, None
    return start or datetime.min.replace(tzinfo=UTC), end or datetime.max.replace(tzinfo=UTC)


def _tokens(resource: dict) -> Iterator[tuple[str, str]]:
    code_element = CODE_ELEMENTS.get(resource.get("resourceType", ""))
    if code_element:
        for concept in _as_list(resource.get(code_element)):
            yield from _coding_tokens("code", concept)
    for identifier in _as_list(resource.get("identifier")):
        if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            system = identifier.get("system") or ""
            yield "identifier", f"{system}|{identifier['value']}"
            yield "identifier", identifier["value"]


def _coding_tokens(param: str, concept: object) -> Iterator[tuple[str, str]]:
    if not isinstance(concept, dict):
        return
    for coding in _as_list(concept.get("coding")):
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            yield param, f"{coding.get('system') or ''}|{coding['code']}"
            yield param, coding["code"]


def _as_list(value: object) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
