"""Real API clients for tests: each registers an EC P-384 key, signs a SMART Backend Services
client assertion, and trades it for a bearer token at POST /auth/token, as any EHR would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm

from careloop.access.roles import Role
from careloop.identity.clients import ClientRegistry
from careloop.store.repository import ResourceStore

BASE_URL = "https://testserver"
TOKEN_URL = f"{BASE_URL}/auth/token"
ALL_SCOPES = ("system/*.cruds",)
FORM = {"content-type": "application/x-www-form-urlencoded"}


def signing_key() -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP384R1())
    public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    public.update({"kid": uuid.uuid4().hex, "alg": "ES384", "use": "sig"})
    return key, {"keys": [public]}


def assertion(client_id: str, key: ec.EllipticCurvePrivateKey, kid: str, **claims: Any) -> str:
    now = datetime.now(UTC)
    payload = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": now + timedelta(minutes=4),
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="ES384", headers={"kid": kid})


def token_form(client_id: str, signed: str, scope: str | None = None) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": signed,
    }
    if scope is not None:
        form["scope"] = scope
    return form


def bearer_token(
    http: TestClient,
    store: ResourceStore,
    role: Role,
    *,
    scopes: tuple[str, ...] = ALL_SCOPES,
    fhir_user: str | None = None,
) -> str:
    """Register a client of `role` and obtain a token through the real token endpoint."""
    key, jwks = signing_key()
    client_id = ClientRegistry(store).register(
        f"test {role.value}", role, list(scopes), jwks, fhir_user
    )
    signed = assertion(client_id, key, jwks["keys"][0]["kid"])
    response = http.post("/auth/token", data=token_form(client_id, signed, " ".join(scopes)))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def auth(token: str, purpose: str | None = None) -> dict[str, str]:
    headers = {"authorization": f"Bearer {token}"}
    if purpose:
        headers["x-purpose-of-use"] = purpose
    return headers


def practitioner_for(role: Role) -> str | None:
    care = {Role.CLINICIAN, Role.NURSE, Role.PHARMACIST, Role.CARE_COORDINATOR}
    return f"Practitioner/test-{role.value}" if role in care else None
