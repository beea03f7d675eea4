"""When the EHR sends no prefetch, careloop fetches from the request's fhirServer with its
fhirAuthorization, from a server registered for that EHR only. The FHIR server here is a real
one on loopback: a second careloop instance served by uvicorn, holding the patient's record and
answering only to a bearer token it issued. The CDS Hooks specification's own example request
is answered as the specification expects."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi.testclient import TestClient

from api_clients import BASE_URL, bearer_token
from careloop.access.roles import Role
from careloop.ingest.pipeline import IngestOptions, Ingestor
from careloop.store.crypto import MasterKey, generate_key_text
from careloop.store.repository import ResourceStore
from careloop.web import create_app
from careloop.web.app import AppSettings
from cds_support import Ehr, check_response, hook_request
from conftest import ROOT

PATIENT_VIEW = "/cds-services/careloop-patient-view"
PATIENT = "fhir-server-patient"

# The example patient-view request of the CDS Hooks 2.0 specification ("Example" under "HTTP
# Request"), as published.
SPEC_PATIENT_VIEW_EXAMPLE: dict[str, Any] = {
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "fhirServer": "http://hooks.smarthealthit.org:9080",
    "hook": "patient-view",
    "fhirAuthorization": {
        "access_token": "some-opaque-fhir-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/Patient.read user/Observation.read",
        "subject": "cds-service4",
    },
    "context": {"userId": "Practitioner/example", "patientId": "1288992", "encounterId": "89284"},
    "prefetch": {
        "patientToGreet": {
            "resourceType": "Patient",
            "gender": "male",
            "birthDate": "1925-12-23",
            "id": "1288992",
            "active": True,
        }
    },
}


def the_record(patient: str) -> list[dict]:
    vitals = []
    for hour in range(6):
        for code, value, unit in (
            ("8867-4", 96 + hour * 7, "/min"),
            ("9279-1", 20 + hour * 2, "/min"),
        ):
            vitals.append(
                {
                    "resourceType": "Observation",
                    "id": f"{patient}-{code}-{hour}",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "vital-signs",
                                }
                            ]
                        }
                    ],
                    "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                    "subject": {"reference": f"Patient/{patient}"},
                    "effectiveDateTime": f"2026-11-20T{10 + hour:02d}:00:00+00:00",
                    "valueQuantity": {
                        "value": value,
                        "unit": unit,
                        "system": "http://unitsofmeasure.org",
                        "code": unit,
                    },
                }
            )
    patient_resource = {
        "resourceType": "Patient",
        "id": patient,
        "gender": "female",
        "birthDate": "1950-02-01",
    }
    return [patient_resource, *vitals]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real careloop FHIR server on loopback holding one patient; (base URL, access token)."""
    home: Path = tmp_path_factory.mktemp("ehr-fhir")
    store = ResourceStore.open(
        f"sqlite:///{home / 'ehr.db'}", MasterKey.from_text(generate_key_text(), "test")
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in the_record(PATIENT)],
    }
    Ingestor(store, IngestOptions(workers=0)).ingest_document(orjson.dumps(bundle), "test")
    port = free_port()
    # the token audience stays https://testserver so the test clients' assertions fit
    app = create_app(store, AppSettings(public_url=BASE_URL, plain_http_allowed=True))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    with httpx.Client(base_url=base) as http:
        token = bearer_token(http, store, Role.CLINICIAN, fhir_user="Practitioner/ehr-1")  # type: ignore[arg-type]
    yield f"{base}/fhir", token
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


@pytest.fixture
def cds(store: ResourceStore, fhir_server: tuple[str, str]) -> Iterator[tuple[TestClient, Ehr]]:
    ehr = Ehr()
    ehr.register(store, fhir_servers=(fhir_server[0],))
    settings = AppSettings(public_url=BASE_URL, sepsis_model=ROOT / "models" / "sepsis")
    with TestClient(create_app(store, settings), base_url=BASE_URL) as client:
        yield client, ehr


def post(client: TestClient, ehr: Ehr, body: dict) -> httpx.Response:
    return client.post(
        PATIENT_VIEW,
        content=orjson.dumps(body),
        headers={"content-type": "application/json", **ehr.headers(PATIENT_VIEW)},
    )


def fhir_authorization(token: str) -> dict[str, Any]:
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/*.read",
        "subject": "careloop-cds",
    }


def test_without_prefetch_the_data_is_fetched_from_the_ehrs_fhir_server(
    cds: tuple[TestClient, Ehr], fhir_server: tuple[str, str], store: ResourceStore
) -> None:
    client, ehr = cds
    base, token = fhir_server
    request = hook_request("patient-view", PATIENT)
    request |= {"fhirServer": base, "fhirAuthorization": fhir_authorization(token)}
    answer = post(client, ehr, request)
    assert answer.status_code == 200, answer.text
    check_response(answer.json())
    # careloop's own store never held this patient: the decision used the EHR's data
    assert store.read("Patient", PATIENT) is None
    deterioration = [
        c
        for c in answer.json()["cards"]
        if c["source"].get("topic", {}).get("code") == "deterioration"
    ]
    assert deterioration, "the rising heart and breathing rates score on NEWS2"


def test_a_wrong_token_or_an_unregistered_server_is_a_412(
    cds: tuple[TestClient, Ehr], fhir_server: tuple[str, str]
) -> None:
    client, ehr = cds
    base, token = fhir_server
    wrong_token = hook_request("patient-view", PATIENT)
    wrong_token |= {"fhirServer": base, "fhirAuthorization": fhir_authorization("not-a-token")}
    answer = post(client, ehr, wrong_token)
    assert answer.status_code == 412
    assert "answered 401" in answer.json()["issue"][0]["diagnostics"]
    elsewhere = hook_request("patient-view", PATIENT)
    elsewhere |= {
        "fhirServer": "https://elsewhere.example.org/fhir",
        "fhirAuthorization": fhir_authorization(token),
    }
    answer = post(client, ehr, elsewhere)
    assert answer.status_code == 412
    assert "not one careloop may query" in answer.json()["issue"][0]["diagnostics"]


def test_the_specifications_example_request_is_understood(
    cds: tuple[TestClient, Ehr], fhir_server: tuple[str, str]
) -> None:
    """The spec's example names a FHIR server careloop may not query for this EHR and a prefetch
    key careloop does not declare: a 412 saying so, not a 400. Pointed at a server careloop
    may query, with a token that server issued, the same request is answered with cards."""
    client, ehr = cds
    as_published = copy.deepcopy(SPEC_PATIENT_VIEW_EXAMPLE)
    answer = post(client, ehr, as_published)
    assert answer.status_code == 412, answer.text
    base, token = fhir_server
    pointed = copy.deepcopy(SPEC_PATIENT_VIEW_EXAMPLE)
    pointed["fhirServer"] = base
    pointed["fhirAuthorization"]["access_token"] = token
    pointed["context"]["patientId"] = PATIENT
    pointed["prefetch"]["patientToGreet"]["id"] = PATIENT
    answer = post(client, ehr, pointed)
    assert answer.status_code == 200, answer.text
    check_response(answer.json())
