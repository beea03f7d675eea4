"""Every route, for every role, against the one authorization table.

The expected answer comes from `careloop.access.roles.AUTHORIZATION` and the permission each
route declares; the actual answer from a real request with a real bearer token of that role.
A route that forgets to declare its permission fails here, as does any route that lets a role in
that the table keeps out (or the reverse).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from api_clients import BASE_URL, auth, bearer_token, practitioner_for
from careloop.access.roles import AUTHORIZATION, Permission, Role, allows
from careloop.store.repository import ResourceStore
from careloop.web import create_app
from careloop.web.app import AppSettings
from careloop.web.auth import PERMISSION_KEY
from samples import heart_rate_of, put_transaction

OWN_PATIENT = "walk-patient-1"
OTHER_PATIENT = "walk-patient-2"  # the one an administrator erases
OBSERVATION = "walk-obs-1"


def seed_bundle() -> dict[str, Any]:
    return put_transaction(
        [
            {"resourceType": "Patient", "id": OWN_PATIENT, "gender": "female"},
            {"resourceType": "Patient", "id": OTHER_PATIENT, "gender": "male"},
            heart_rate_of(OBSERVATION, OWN_PATIENT),
            heart_rate_of("walk-obs-2", OTHER_PATIENT),
        ]
    )


def training_opt_out() -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "id": "walk-consent-1",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{OWN_PATIENT}"},
        "dateTime": "2024-01-01T00:00:00Z",
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}
            ]
        },
        "provision": {"type": "permit"},
    }


# A request that would succeed for a role holding the permission: (query, body, content type)
REQUESTS: dict[tuple[str, str], tuple[dict[str, Any], bytes | None, str | None]] = {
    ("POST", "/fhir"): (
        {},
        orjson.dumps(put_transaction([heart_rate_of("walk-obs-3", OWN_PATIENT)])),
        "application/fhir+json",
    ),
    ("POST", "/fhir/$ingest-ndjson"): (
        {},
        orjson.dumps(heart_rate_of("walk-obs-4", OWN_PATIENT)) + b"\n",
        "application/fhir+ndjson",
    ),
    ("POST", "/fhir/{resource_type}/_search"): ({}, b"", None),
    ("POST", "/rights/Patient/{patient_id}/amendment"): (
        {},
        orjson.dumps(
            {
                "target": f"Observation/{OBSERVATION}",
                "change": "the heart rate was taken after exercise",
            }
        ),
        "application/json",
    ),
    ("POST", "/rights/Patient/{patient_id}/consent"): (
        {},
        orjson.dumps(training_opt_out()),
        "application/fhir+json",
    ),
    ("POST", "/access/break-glass"): (
        {},
        orjson.dumps(
            {"patient": OWN_PATIENT, "reason": "unresponsive in the emergency room", "minutes": 30}
        ),
        "application/json",
    ),
    ("POST", "/admin/care-relationships"): (
        {},
        orjson.dumps({"practitioner": "Practitioner/p9", "patient": OWN_PATIENT}),
        "application/json",
    ),
    ("GET", "/audit/review"): ({"since": "2020-01-01", "until": "2030-01-01"}, None, None),
    ("GET", "/deid/export"): ({"limit": "1"}, None, None),
    ("POST", "/auth/token"): (
        {},
        b"grant_type=client_credentials",
        "application/x-www-form-urlencoded",
    ),
    ("POST", "/auth/login"): (
        {},
        b"username=nobody&password=x&code=000000",
        "application/x-www-form-urlencoded",
    ),
}
PATH_VALUES = {
    "resource_type": "Observation",
    "resource_id": OBSERVATION,
    "version_id": "1",
    "patient_id": OWN_PATIENT,
}


def routes(app: Any) -> list[tuple[str, str, Permission]]:
    """Every operation the app serves, from its OpenAPI document (which FastAPI builds from the
    routes themselves, included routers too), with the permission it declares."""
    found = []
    for path, path_item in app.openapi()["paths"].items():
        for method, operation in path_item.items():
            permission = operation.get(PERMISSION_KEY)
            assert permission is not None, f"{method.upper()} {path} declares no permission"
            found.append((method.upper(), path, Permission(permission)))
    return found


def test_the_walk_sees_every_route(walk: tuple[TestClient, dict[Role, dict[str, str]]]) -> None:
    client, _tokens = walk
    documented = {(method, path) for method, path, _ in routes(client.app)}
    assert len(documented) >= 20
    assert {
        ("GET", "/fhir/{resource_type}/{resource_id}"),
        ("POST", "/auth/token"),
        ("GET", "/audit/review"),
        ("POST", "/rights/Patient/{patient_id}/erase"),
        ("GET", "/deid/export"),
        ("POST", "/access/break-glass"),
    } <= documented


def concrete_path(method: str, path: str) -> str:
    values = dict(PATH_VALUES)
    if path.endswith("/erase"):
        values["patient_id"] = OTHER_PATIENT
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


@pytest.fixture
def walk(store: ResourceStore) -> Iterator[tuple[TestClient, dict[Role, dict[str, str]]]]:
    app = create_app(store, AppSettings(public_url=BASE_URL, token_burst=1000))
    with TestClient(app, base_url=BASE_URL) as client:
        writer = bearer_token(client, store, Role.INTEGRATION)
        seeded = client.post(
            "/fhir",
            content=orjson.dumps(seed_bundle()),
            headers={"content-type": "application/fhir+json", **auth(writer)},
        )
        assert seeded.status_code == 200, seeded.text
        tokens = {
            role: auth(
                bearer_token(
                    client,
                    store,
                    role,
                    fhir_user=f"Patient/{OWN_PATIENT}"
                    if role is Role.PATIENT
                    else practitioner_for(role),
                )
            )
            for role in Role
        }
        yield client, tokens


def test_every_route_for_every_role_matches_the_table(
    walk: tuple[TestClient, dict[Role, dict[str, str]]],
) -> None:
    client, tokens = walk
    checked = []
    mismatches = []
    for method, path, permission in routes(client.app):
        query, body, content_type = REQUESTS.get((method, path), ({}, None, None))
        for role in Role:
            headers = dict(tokens[role])
            if content_type:
                headers["content-type"] = content_type
            response = client.request(
                method, concrete_path(method, path), params=query, content=body, headers=headers
            )
            allowed = allows(role, permission)
            # a sign-in route answers bad credentials with 401: only 403 is an authorization refusal
            refusals = (403,) if permission is Permission.PUBLIC else (401, 403)
            refused = response.status_code in refusals
            checked.append((method, path, role))
            if allowed == refused:
                mismatches.append(
                    f"{method} {path} as {role.value}: {response.status_code} "
                    f"(table says {'allow' if allowed else 'deny'}) {response.text[:160]}"
                )
    assert not mismatches, "\n".join(mismatches)
    assert len(checked) == len(routes(client.app)) * len(Role)


def test_every_route_refuses_an_anonymous_caller_unless_public(
    walk: tuple[TestClient, dict[Role, dict[str, str]]],
) -> None:
    client, _tokens = walk
    for method, path, permission in routes(client.app):
        if permission is Permission.PUBLIC:
            continue
        response = client.request(method, concrete_path(method, path))
        assert response.status_code == 401, f"{method} {path}: {response.status_code}"
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_table_keeps_duties_apart() -> None:
    clinical = {Permission.PATIENT_READ, Permission.PATIENT_WRITE, Permission.RECORD_EXPORT}
    assert not clinical & AUTHORIZATION[Role.AUDITOR]
    assert not clinical & AUTHORIZATION[Role.ADMIN]
    assert not clinical & AUTHORIZATION[Role.DATA_SCIENTIST]
    assert AUTHORIZATION[Role.DATA_SCIENTIST] - {Permission.SESSION} == {
        Permission.DEIDENTIFIED_EXPORT,
        Permission.MODEL_GOVERNANCE,
    }
    # the AI committee sees models and aggregates, never a record or the trail
    assert AUTHORIZATION[Role.AI_COMMITTEE] == {Permission.MODEL_GOVERNANCE, Permission.SESSION}
    assert Permission.AUDIT_READ in AUTHORIZATION[Role.AUDITOR]
    assert all(Permission.AUDIT_READ not in AUTHORIZATION[r] for r in Role if r is not Role.AUDITOR)
    assert Permission.PATIENT_READ not in AUTHORIZATION[Role.INTEGRATION]
