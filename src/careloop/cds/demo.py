"""The demo's CDS Hooks tour: what an EHR would be shown opening the first demo patients' charts.

The calls go through the same engine as `POST /cds-services/...` (prefetch absent, so the data
is read from careloop's store through the access layer; cards recorded, consent-checked and
audited), as a demo EHR registered for the purpose. Only the JWT check is skipped: this runs
in-process, not over HTTP.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from careloop.cds.client_auth import CdsCaller, CdsClientRegistry
from careloop.cds.hooks import CdsRequestError
from careloop.cds.services import CdsEngine
from careloop.store.repository import ResourceStore

DEMO_EHR = "https://demo-ehr.careloop.invalid"


def demo_caller(store: ResourceStore) -> CdsCaller:
    """The demo EHR, registered once with the public half of a key whose private half is
    thrown away at once: nobody can call over HTTP as the demo EHR."""
    registry = CdsClientRegistry(store)
    client = registry.get(DEMO_EHR)
    if client is None:
        public = ECAlgorithm.to_jwk(
            ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True
        )
        public.update({"kid": "demo", "alg": "ES384"})
        client = registry.register(DEMO_EHR, "careloop demo EHR", jwks={"keys": [public]})
    return CdsCaller(
        client=client,
        subject="demo",
        jti=uuid.uuid4().hex,
        tenant=None,
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )


def patient_view_cards(engine: CdsEngine, caller: CdsCaller, patient_id: str) -> list[dict]:
    """The patient-view cards for one patient, or a one-line notice of why there are none."""
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/demo-clinician", "patientId": patient_id},
    }
    try:
        answer = engine.call("careloop-patient-view", orjson.dumps(body), caller, "demo")
    except CdsRequestError as exc:
        return [{"indicator": "info", "summary": f"no cards: {exc}"}]
    return list(answer["cards"])
