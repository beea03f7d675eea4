"""An EHR for tests: it registers with careloop, signs CDS Hooks JWTs as the specification says
(ES384, kid, iss, sub, aud = the URL called, iat, exp, jti), and builds hook requests; and the
CDS Hooks 2.0 response structures as JSON Schema, written from the specification, to check
careloop's answers against."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from api_clients import BASE_URL
from careloop.cds.client_auth import CdsClientRegistry
from careloop.store.repository import ResourceStore

ISSUER = "https://ehr.example.org"


@dataclass
class Ehr:
    issuer: str = ISSUER
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )
    kid: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def jwks(self) -> dict[str, Any]:
        public = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        public.update({"kid": self.kid, "alg": "ES384", "use": "sig"})
        return {"keys": [public]}

    def register(self, store: ResourceStore, fhir_servers: tuple[str, ...] = ()) -> None:
        CdsClientRegistry(store).register(
            self.issuer, "Test EHR", jwks=self.jwks, fhir_servers=fhir_servers
        )

    def token(self, path: str, base: str = BASE_URL, **claims: Any) -> str:
        now = datetime.now(UTC)
        payload = {
            "iss": self.issuer,
            "sub": "test-ehr-client",
            "aud": base + path,
            "iat": now,
            "exp": now + timedelta(minutes=4),
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm="ES384", headers={"kid": self.kid})

    def headers(self, path: str, base: str = BASE_URL) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(path, base)}"}


def hook_request(
    hook: str,
    patient_id: str,
    *,
    prefetch: dict[str, Any] | None = None,
    user: str = "Practitioner/prac-1",
    **context: Any,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": user, "patientId": patient_id, **context},
    }
    if prefetch is not None:
        request["prefetch"] = prefetch
    return request


def searchset(resources: list[dict]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": resource} for resource in resources],
    }


def draft_orders(resources: list[dict]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def medication_request(
    identifier: str, patient_id: str, code: str, display: str, status: str = "active"
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": identifier,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code, "display": display}],
            "text": display,
        },
    }


# -- the CDS Hooks 2.0 response structures (https://cds-hooks.hl7.org/2.0/) -----------------

CODING = {
    "type": "object",
    "required": ["code", "system"],
    "properties": {
        "code": {"type": "string", "minLength": 1},
        "system": {"type": "string", "minLength": 1},
        "display": {"type": "string"},
    },
}
ACTION = {
    "type": "object",
    "required": ["type", "description"],
    "properties": {
        "type": {"enum": ["create", "update", "delete"]},
        "description": {"type": "string", "minLength": 1},
        "resource": {"type": "object", "required": ["resourceType"]},
        "resourceId": {"type": "string", "pattern": "^[A-Za-z]+/[A-Za-z0-9\\-.]{1,64}$"},
    },
    "allOf": [
        {
            "if": {"properties": {"type": {"enum": ["create", "update"]}}},
            "then": {"required": ["resource"]},
        },
        {"if": {"properties": {"type": {"const": "delete"}}}, "then": {"required": ["resourceId"]}},
    ],
}
SUGGESTION = {
    "type": "object",
    "required": ["label"],
    "properties": {
        "label": {"type": "string", "minLength": 1},
        "uuid": {"type": "string", "format": "uuid"},
        "isRecommended": {"type": "boolean"},
        "actions": {"type": "array", "items": ACTION, "minItems": 1},
    },
}
LINK = {
    "type": "object",
    "required": ["label", "url", "type"],
    "properties": {
        "label": {"type": "string"},
        "url": {"type": "string", "pattern": "^https?://"},
        "type": {"enum": ["absolute", "smart"]},
        "appContext": {"type": "string"},
    },
}
CARD = {
    "type": "object",
    "required": ["summary", "indicator", "source"],
    "properties": {
        "uuid": {"type": "string"},
        "summary": {"type": "string", "minLength": 1, "maxLength": 139},
        "detail": {"type": "string"},
        "indicator": {"enum": ["info", "warning", "critical"]},
        "source": {
            "type": "object",
            "required": ["label"],
            "properties": {
                "label": {"type": "string", "minLength": 1},
                "url": {"type": "string", "pattern": "^https?://"},
                "icon": {"type": "string"},
                "topic": CODING,
            },
        },
        "suggestions": {"type": "array", "items": SUGGESTION},
        "selectionBehavior": {"enum": ["at-most-one", "any"]},
        "overrideReasons": {"type": "array", "items": CODING},
        "links": {"type": "array", "items": LINK},
    },
    "dependentRequired": {"suggestions": ["selectionBehavior"]},
}
RESPONSE = {
    "type": "object",
    "required": ["cards"],
    "properties": {"cards": {"type": "array", "items": CARD}, "systemActions": {"type": "array"}},
}
DISCOVERY = {
    "type": "object",
    "required": ["services"],
    "properties": {
        "services": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["hook", "description", "id"],
                "properties": {
                    "hook": {"type": "string"},
                    "title": {"type": "string"},
                    "description": {"type": "string"},
                    "id": {"type": "string", "pattern": "^[A-Za-z0-9\\-]+$"},
                    "prefetch": {"type": "object", "additionalProperties": {"type": "string"}},
                    "usageRequirements": {"type": "string"},
                },
            },
        }
    },
}


def check_response(document: Any) -> None:
    jsonschema.validate(document, RESPONSE, cls=jsonschema.Draft202012Validator)


def check_discovery(document: Any) -> None:
    jsonschema.validate(document, DISCOVERY, cls=jsonschema.Draft202012Validator)
