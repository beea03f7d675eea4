"""What the OpenAPI document says about bodies and responses the routes handle as raw bytes.

Routes read their bodies themselves (to enforce size limits and give FHIR errors), so FastAPI
cannot infer these schemas; they are declared here, loosely enough to describe every FHIR answer
and strictly enough that a schema-driven client (schemathesis) builds meaningful requests.
"""

from __future__ import annotations

from collections.abc import Sequence

from careloop.web.body import FHIR_JSON_TYPES, FORM_TYPES, NDJSON_TYPES
from careloop.web.resource_types import FHIR_ID_PATTERN, R4_RESOURCE_TYPES
from careloop.web.responses import FHIR_JSON
from careloop.web.search_params import DATE_PREFIXES, MAX_COUNT, MAX_OFFSET

OPERATION_OUTCOME = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

RESOURCE = {
    "type": "object",
    "required": ["resourceType", "id", "meta"],
    "properties": {
        "resourceType": {"type": "string"},
        "id": {"type": "string", "pattern": FHIR_ID_PATTERN},
        "meta": {
            "type": "object",
            "required": ["versionId", "lastUpdated"],
            "properties": {"versionId": {"type": "string"}, "lastUpdated": {"type": "string"}},
        },
    },
}


def bundle_schema(bundle_types: Sequence[str]) -> dict:
    return {
        "type": "object",
        "required": ["resourceType", "type"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"enum": list(bundle_types)},
            "total": {"type": "integer", "minimum": 0},
            "link": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["relation", "url"],
                    "properties": {"relation": {"type": "string"}, "url": {"type": "string"}},
                },
            },
            "entry": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        },
    }


CAPABILITY_STATEMENT = {
    "type": "object",
    "required": ["resourceType", "status", "kind", "fhirVersion", "format", "rest"],
    "properties": {
        "resourceType": {"const": "CapabilityStatement"},
        "fhirVersion": {"const": "4.0.1"},
    },
}

REQUEST_BUNDLE = {
    "type": "object",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"enum": ["transaction", "batch", "collection"]},
        "entry": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "fullUrl": {"type": "string"},
                    "resource": {
                        "type": "object",
                        "required": ["resourceType"],
                        "properties": {
                            "resourceType": {"type": "string"},
                            "id": {"type": "string", "pattern": FHIR_ID_PATTERN},
                        },
                    },
                    "request": {
                        "type": "object",
                        "required": ["method", "url"],
                        "properties": {
                            "method": {"enum": ["POST", "PUT"]},
                            "url": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}

_PATIENT = {"type": "string", "pattern": rf"^(Patient/)?{FHIR_ID_PATTERN.strip('^$')}$"}
_DATE = {
    "type": "string",
    "pattern": rf"^({'|'.join(DATE_PREFIXES)})?[0-9]{{4}}(-[0-9]{{2}}(-[0-9]{{2}})?)?$",
}
SEARCH_FIELDS: dict[str, dict] = {
    "patient": _PATIENT,
    "subject": _PATIENT,
    "code": {"type": "string", "description": "system|code,code,... (OR)"},
    "date": {"type": "array", "items": _DATE, "description": "repeat for AND"},
    "_count": {"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
    "_offset": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
}

RESOURCE_TYPE_SCHEMA = {"enum": sorted(R4_RESOURCE_TYPES)}
ID_SCHEMA = {"pattern": FHIR_ID_PATTERN}


def search_query_parameters() -> list[dict]:
    return [
        {"name": name, "in": "query", "required": False, "schema": schema}
        | ({"style": "form", "explode": True} if schema["type"] == "array" else {})
        for name, schema in SEARCH_FIELDS.items()
    ]


def json_body(schema: dict) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {media_type: {"schema": schema} for media_type in FHIR_JSON_TYPES[:2]},
        }
    }


def ndjson_body() -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {
                media_type: {"schema": {"type": "string"}} for media_type in NDJSON_TYPES[:2]
            },
        }
    }


def form_body() -> dict:
    schema = {"type": "object", "properties": SEARCH_FIELDS, "additionalProperties": False}
    return {"requestBody": {"required": False, "content": {FORM_TYPES[0]: {"schema": schema}}}}


_DESCRIPTIONS = {
    200: "OK",
    400: "Malformed request: OperationOutcome",
    401: "Not authenticated: OperationOutcome",
    403: "Not permitted (role, scope, consent or another patient's record): OperationOutcome",
    404: "Not found: OperationOutcome",
    409: "Conflict (already answered or recorded otherwise): OperationOutcome",
    412: "The data the service needs could not be had: OperationOutcome",
    413: "Body too large: OperationOutcome",
    415: "Unsupported content type: OperationOutcome",
    422: "Invalid FHIR content or dangling reference; nothing written: OperationOutcome",
    429: "Too many attempts: OperationOutcome",
    500: "Internal error: OperationOutcome without internals",
    503: "Not available (e.g. no model installed): OperationOutcome",
}


def responses(
    ok_schema: dict,
    errors: Sequence[int],
    ok_headers: Sequence[str] = (),
    ok_media_type: str = FHIR_JSON,
    ok_status: int = 200,
) -> dict[int | str, dict]:
    """The documented answers of a route: its success (FHIR JSON unless said otherwise) and an
    OperationOutcome for each error status."""
    documented: dict[int | str, dict] = {
        ok_status: {
            "description": _DESCRIPTIONS[200],
            "content": {ok_media_type: {"schema": ok_schema}},
            "headers": {
                name: {"required": True, "schema": {"type": "string"}} for name in ok_headers
            },
        }
    }
    for status in (*errors, 500):
        documented[status] = {
            "description": _DESCRIPTIONS[status],
            "content": {FHIR_JSON: {"schema": OPERATION_OUTCOME}},
        }
    return documented


JSON_OBJECT = {"type": "object"}
NDJSON_TEXT = {"type": "string"}
