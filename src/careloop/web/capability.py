"""The CapabilityStatement of `GET /fhir/metadata`: exactly what this API does, nothing more."""

from __future__ import annotations

from datetime import UTC, datetime

from careloop import __version__
from careloop.web.bundles import instant
from careloop.web.resource_types import STORED_RESOURCE_TYPES
from careloop.web.search_params import DEFAULT_COUNT, MAX_COUNT, supported_params

_PARAM_DOCS = {
    "patient": ("reference", "Patient/{id} or {id}: resources in that patient's compartment"),
    "subject": ("reference", "Same as patient; only Patient subjects are indexed"),
    "code": (
        "token",
        "Comma-separated system|code, |code or code tokens (OR); the element searched is the "
        "type's main code (Encounter.type, MedicationRequest.medicationCodeableConcept, ...)",
    ),
    "date": (
        "date",
        "Clinical time of the resource; repeat for AND; prefixes eq ne lt le gt ge sa eb ap; "
        "partial dates (2024, 2024-03) stand for their whole period",
    ),
}

_BATCH_DOC = (
    "careloop applies a batch atomically, like a transaction: one invalid entry or dangling "
    "reference rejects the whole Bundle and nothing is written. Entries are upserts keyed by the "
    "resource id, the urn:uuid of fullUrl or the PUT url; identical content is not versioned again."
)

_REST_DOC = (
    "FHIR R4 JSON only. Writes arrive as transaction or batch Bundles on POST [base] (a collection "
    "Bundle is accepted too) or as Bulk Data NDJSON on POST [base]/$ingest-ndjson (application/"
    f"fhir+ndjson, one atomic unit). Search is strict: an unknown parameter is an error. _count "
    f"defaults to {DEFAULT_COUNT} and may be at most {MAX_COUNT}; _offset pages."
)


def capability_statement(base_url: str, published: datetime | None = None) -> dict:
    return {
        "resourceType": "CapabilityStatement",
        "id": "careloop",
        "name": "CareloopFhirApi",
        "title": "careloop FHIR R4 API",
        "status": "active",
        "experimental": False,
        "date": instant(published or datetime.now(UTC)),
        "publisher": "careloop",
        "kind": "instance",
        "software": {"name": "careloop", "version": __version__},
        "implementation": {"description": "careloop FHIR R4 API", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": _REST_DOC,
                "resource": [_resource(t) for t in STORED_RESOURCE_TYPES],
                "interaction": [
                    {"code": "transaction", "documentation": "All entries or none are written."},
                    {"code": "batch", "documentation": _BATCH_DOC},
                ],
                "searchParam": [
                    {"name": "_count", "type": "number", "documentation": "Page size"},
                    {"name": "_offset", "type": "number", "documentation": "Results to skip"},
                ],
            }
        ],
    }


def _resource(resource_type: str) -> dict:
    return {
        "type": resource_type,
        "interaction": [
            {"code": code} for code in ("read", "vread", "history-instance", "search-type")
        ],
        "versioning": "versioned",
        "readHistory": True,
        "updateCreate": True,
        "searchParam": [
            {"name": name, "type": _PARAM_DOCS[name][0], "documentation": _PARAM_DOCS[name][1]}
            for name in supported_params(resource_type)
        ],
    }
