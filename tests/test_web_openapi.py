"""Schema-driven fuzzing of the HTTP API: schemathesis builds requests from the app's own OpenAPI.

In-process (ASGI), on a SQLite store seeded with a small bundle, bounded so it runs in seconds:
no request may crash the server, and every answer must be what the schema documents. Every
operation is fuzzed as each role, with a real bearer token, so the guarded paths past the
authorization check are exercised too; the number of requests and of 5xx answers is written to
bench/out/schemathesis-summary.json for docs/security.md.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api_clients import BASE_URL, auth, bearer_token, practitioner_for
from careloop.access.roles import Role
from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore
from careloop.web import create_app
from careloop.web.app import AppSettings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
PATIENT_ID = "p-openapi-1"
OBSERVATION_ID = "o-openapi-1"


@schemathesis.serializer("application/fhir+ndjson", "application/x-ndjson")
def _ndjson(_context: schemathesis.SerializationContext, value: Any) -> bytes:
    """The NDJSON body is declared as a string; anything else is sent as one JSON line."""
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value).encode("utf-8") + b"\n"  # json, not orjson: integers past 64 bits


def _seed_bundle() -> dict[str, Any]:
    patient = {"resourceType": "Patient", "id": PATIENT_ID, "gender": "unknown"}
    observation = {
        "resourceType": "Observation",
        "id": OBSERVATION_ID,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": "2024-03-01T08:00:00Z",
        "valueQuantity": {"value": 91, "unit": "/min"},
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in (patient, observation)
        ],
    }


# Built at import: `schemathesis.pytest.from_fixture` (4.32) reads `request.node._nodeid`, which
# pytest 9 no longer has, so the schema cannot come from a fixture.
_STORE_DIR = tempfile.TemporaryDirectory(prefix="careloop-openapi-")
_STORE = ResourceStore.open(
    f"sqlite:///{Path(_STORE_DIR.name) / 'store.db'}", MasterKey.from_bytes(os.urandom(32))
)
APP = create_app(
    _STORE,
    AppSettings(
        public_url=BASE_URL,
        max_body_bytes=256 * 1024,
        max_ndjson_bytes=256 * 1024,
        token_burst=100_000,
        login_burst=100_000,
        sepsis_model=Path(__file__).resolve().parents[1] / "models" / "sepsis",
    ),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
ROLES = list(Role)
TOKENS: dict[Role, dict[str, str]] = {}
TALLY = {"requests": 0, "server_errors": 0}
SUMMARY = Path(__file__).resolve().parents[1] / "bench" / "out" / "schemathesis-summary.json"


@pytest.fixture(scope="module", autouse=True)
def _seeded_store() -> Iterator[None]:
    with TestClient(APP, base_url=BASE_URL) as client:
        for role in ROLES:
            fhir_user = f"Patient/{PATIENT_ID}" if role is Role.PATIENT else practitioner_for(role)
            TOKENS[role] = auth(bearer_token(client, _STORE, role, fhir_user=fhir_user))
        seeded = client.post(
            "/fhir",
            content=orjson.dumps(_seed_bundle()),
            headers={"content-type": "application/fhir+json", **TOKENS[Role.INTEGRATION]},
        )
        assert seeded.status_code == 200, seeded.text
    yield
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(orjson.dumps({**TALLY, "roles": len(ROLES)}).decode())
    _STORE.close()
    _STORE_DIR.cleanup()


def call(case: schemathesis.Case, role: Role = Role.CLINICIAN) -> Any:
    """One request as `role`, counted; then every check."""
    response = case.call(base_url=BASE_URL, headers=TOKENS[role])
    TALLY["requests"] += 1
    TALLY["server_errors"] += response.status_code >= 500
    case.validate_response(response, checks=CHECKS)
    return response


@pytest.mark.parametrize("role", ROLES, ids=[role.value for role in ROLES])
@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_conforms_to_its_schema(case: schemathesis.Case, role: Role) -> None:
    call(case, role)


@pytest.mark.parametrize(
    ("path", "parameters"),
    [
        ("/fhir/{resource_type}/{resource_id}", {"resource_type": "Patient"}),
        ("/fhir/{resource_type}/{resource_id}/_history", {"resource_type": "Observation"}),
        (
            "/fhir/{resource_type}/{resource_id}/_history/{version_id}",
            {"resource_type": "Observation", "version_id": "1"},
        ),
    ],
)
def test_reads_of_seeded_resources_conform(path: str, parameters: dict[str, str]) -> None:
    """Random ids almost never exist, so the 200 answers are checked on known ones too."""
    resource_id = PATIENT_ID if parameters["resource_type"] == "Patient" else OBSERVATION_ID
    operation = schema[path]["GET"]
    case = operation.Case(path_parameters={**parameters, "resource_id": resource_id})
    response = call(case)
    assert response.status_code == 200


def test_a_search_with_hits_conforms() -> None:
    operation = schema["/fhir/{resource_type}"]["GET"]
    case = operation.Case(
        path_parameters={"resource_type": "Observation"},
        query={"patient": PATIENT_ID, "code": "8867-4", "date": ["ge2024-03"], "_count": 1},
    )
    response = call(case)
    assert response.json()["total"] == 1


def test_the_schema_declares_every_body_and_no_framework_validation_error() -> None:
    document = APP.openapi()
    transaction = document["paths"]["/fhir"]["post"]
    assert set(transaction["requestBody"]["content"]) == {
        "application/fhir+json",
        "application/json",
    }
    ndjson = document["paths"]["/fhir/$ingest-ndjson"]["post"]["requestBody"]["content"]
    assert ndjson["application/fhir+ndjson"]["schema"] == {"type": "string"}
    for path_item in document["paths"].values():
        for operation in path_item.values():
            assert "HTTPValidationError" not in orjson.dumps(operation).decode()
