"""Structural validation of each resource against FHIR R4 (fhir.resources' R4B models).

R4B differs from R4 only in a handful of resources careloop does not ingest, and fhir.resources
ships no R4 package of its pydantic v2 generation; see docs/architecture.md.

Validation modes: "fast" first tries `careloop.fhir.structure.conforms`, a strict check compiled
from the same models that accepts only what is certainly valid, and asks fhir.resources about
everything else (so verdicts and messages stay fhir.resources'); "library" asks fhir.resources
about every resource; "off" checks only the resourceType, for measuring what validation costs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationError

from careloop.fhir.structure import conforms, model_class
from careloop.fhir.terminology import binding_errors, coding_errors
from careloop.fhir.walk import FoundElements, path_text

Validation = Literal["fast", "library", "off"]

MAX_ERRORS_PER_RESOURCE = 5


def structural_errors(resource: object, validation: Validation = "fast") -> list[tuple[str, str]]:
    """(field path, message) pairs; empty when the resource is valid.

    What the store itself needs (parseable dates) is checked when the record is made, whatever
    the mode.
    """
    if not isinstance(resource, dict):
        return [("", f"expected a JSON object, got {type(resource).__name__}")]
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        return [("resourceType", "missing resourceType")]
    model = model_class(resource_type)
    if model is None or resource_type == "Bundle":
        return [
            ("resourceType", f"{resource_type!r} is not a FHIR R4 resource type careloop stores")
        ]
    if validation == "off":
        return []
    errors: list[tuple[str, str]] = []
    if validation == "library" or not conforms(resource):
        try:
            model.model_validate(resource)
        except ValidationError as exc:
            errors.extend(_describe(resource_type, exc))
        except (TypeError, ValueError) as exc:  # fhir.resources raises plain errors for some shapes
            errors.append((resource_type, _first_line(str(exc))))
    if not errors:
        errors.extend(binding_errors(resource))
    return errors


def terminology_warnings(
    resource: dict, found: FoundElements | None = None
) -> list[tuple[str, str]]:
    """Malformed LOINC, SNOMED CT, ICD-10 or RxNorm codes: reported, not rejected.

    Real feeds carry such codings (Synthea files a LOINC code under SNOMED CT); the resource is
    still structurally valid, so it is kept as coded and the report says where the code is wrong.
    """
    return coding_errors(resource, found.codings if found else None)


def _describe(resource_type: str, exc: ValidationError) -> list[tuple[str, str]]:
    described = []
    for error in exc.errors(include_url=False, include_input=False)[:MAX_ERRORS_PER_RESOURCE]:
        described.append(
            (
                path_text(resource_type, [p for p in error["loc"] if p != "__root__"]),
                _first_line(error["msg"]),
            )
        )
    return described


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:300] if message.strip() else "invalid"
