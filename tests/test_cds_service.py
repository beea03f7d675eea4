"""The CDS Hooks service end to end: a registered EHR with real signed JWTs calls discovery,
patient-view, order-select, order-sign and feedback on the real app, over a real store (SQLite
and PostgreSQL), with real PhysioNet stays, the shipped sepsis model, the shipped playbooks and
the ONC interaction lists. Answers are checked against the specification's structures; what was
recorded (cards, FHIR records, Provenance, audit) is checked in the store."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api_clients import BASE_URL
from careloop.audit.log import AuditLog
from careloop.cds.medications import drug_classes, medication_ingredients
from careloop.cds.prefetch import prefetch_for
from careloop.cds.risk import CalibrationBins, assess
from careloop.cds.services import PATIENT_VIEW_KEYS
from careloop.fhir.structure import model_class
from careloop.sepsis.model import SepsisModel
from careloop.sources.physionet import read_physionet, stay_to_fhir
from careloop.store.repository import ResourceStore
from careloop.store.schema import cds_cards, cds_feedback, cds_hook_calls
from careloop.timeline import build_timeline
from careloop.web import create_app
from careloop.web.app import AppSettings
from cds_support import (
    Ehr,
    check_discovery,
    check_response,
    draft_orders,
    hook_request,
    medication_request,
    searchset,
)
from conftest import ROOT, SHARED_DATA, shared_data

MODEL_DIR = ROOT / "models" / "sepsis"
PATIENT_VIEW = "/cds-services/careloop-patient-view"
ORDER_SIGN = "/cds-services/careloop-order-sign"
ORDER_SELECT = "/cds-services/careloop-order-select"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


# -- real patients ---------------------------------------------------------------------------


def _until(resources: list[dict], end_iso: str) -> list[dict]:
    """A stay's resources as they stood at `end_iso` (observations after it removed)."""
    return [
        r
        for r in resources
        if r["resourceType"] != "Observation" or r["effectiveDateTime"] <= end_iso
    ]


def as_if_now(resources: list[dict]) -> list[dict]:
    """A stay moved in time so its latest observation was 20 minutes ago (PhysioNet stays are
    anchored in 2100): the EHR's data is current, and so are the playbooks' time windows."""
    latest = max(
        datetime.fromisoformat(r["effectiveDateTime"])
        for r in resources
        if r["resourceType"] == "Observation"
    )
    shift = datetime.now(UTC) - timedelta(minutes=20) - latest
    moved = copy.deepcopy(resources)
    for resource in moved:
        if "effectiveDateTime" in resource:
            moment = datetime.fromisoformat(resource["effectiveDateTime"]) + shift
            resource["effectiveDateTime"] = moment.isoformat()
        for name in ("start", "end"):
            if name in resource.get("period", {}):
                moment = datetime.fromisoformat(resource["period"][name]) + shift
                resource["period"][name] = moment.isoformat()
        if "birthDate" in resource:
            born = date.fromisoformat(resource["birthDate"]) + timedelta(days=shift.days)
            resource["birthDate"] = born.isoformat()
    return moved


@pytest.fixture(scope="module")
def alerting_stay() -> list[dict]:
    """A real PhysioNet stay, cut at an hour where the shipped model's alert policy fires."""
    model = SepsisModel.load(MODEL_DIR)
    bins = CalibrationBins.load(MODEL_DIR)
    for stay in read_physionet(shared_data("physionet2019/training_setA.tar.gz"), limit=300):
        if not stay.scorable or stay.labels is None or not stay.labels.any():
            continue
        resources = stay_to_fhir(stay)
        for hour in range(8, stay.hours):
            end = (stay.start + timedelta(hours=hour)).isoformat()
            cut = _until(resources, end)
            picture = assess(build_timeline(stay.stay_id, cut), model, bins)
            if picture.sepsis_alert:
                return as_if_now(cut)
    pytest.fail("no stay in the first 300 alerts: the shipped model or policy changed")


@pytest.fixture(scope="module")
def quiet_stay() -> list[dict]:
    """A real stay, without sepsis, at an hour where the model does not alert."""
    model = SepsisModel.load(MODEL_DIR)
    bins = CalibrationBins.load(MODEL_DIR)
    for stay in read_physionet(shared_data("physionet2019/training_setA.tar.gz"), limit=100):
        if not stay.scorable or stay.labels is None or stay.labels.any() or stay.hours < 12:
            continue
        resources = stay_to_fhir(stay)
        picture = assess(build_timeline(stay.stay_id, resources), model, bins)
        if not picture.sepsis_alert and (picture.news2 or 0) < 5:
            return as_if_now(resources)
    pytest.fail("no quiet stay found")


def patient_id(resources: list[dict]) -> str:
    return next(r["id"] for r in resources if r["resourceType"] == "Patient")


def prefetch_of(resources: list[dict], **extra: list[dict]) -> dict[str, Any]:
    """The patient-view prefetch an EHR would send for these resources (and `extra` ones)."""
    added = [resource for more in extra.values() for resource in more]
    return prefetch_for(PATIENT_VIEW_KEYS, [*resources, *added])


def penicillin_allergy(patient: str) -> dict:
    return {
        "resourceType": "AllergyIntolerance",
        "id": f"allergy-{uuid.uuid4().hex[:8]}",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {
            "coding": [{"system": SNOMED, "code": "91936005", "display": "Allergy to penicillin"}]
        },
        "patient": {"reference": f"Patient/{patient}"},
    }


# -- the app ---------------------------------------------------------------------------------


@pytest.fixture
def ehr() -> Ehr:
    return Ehr()


@pytest.fixture
def cds(store: ResourceStore, ehr: Ehr) -> Iterator[TestClient]:
    ehr.register(store)
    ddi = SHARED_DATA / "ddi"
    settings = AppSettings(
        public_url=BASE_URL,
        sepsis_model=MODEL_DIR,
        ddi_dir=ddi if ddi.is_dir() else None,
    )
    with TestClient(create_app(store, settings), base_url=BASE_URL) as client:
        yield client


def call(client: TestClient, ehr: Ehr, path: str, body: Any) -> Any:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(
        path, content=content, headers={"content-type": "application/json", **ehr.headers(path)}
    )


def ledger_counts(store: ResourceStore) -> tuple[int, int, int]:
    with store.engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (cds_hook_calls, cds_cards, cds_feedback)
        )


# -- discovery and authentication -----------------------------------------------------------


def test_discovery_lists_the_services_with_their_prefetch(cds: TestClient, ehr: Ehr) -> None:
    answer = cds.get("/cds-services", headers=ehr.headers("/cds-services"))
    assert answer.status_code == 200, answer.text
    document = answer.json()
    check_discovery(document)
    hooks = {service["hook"]: service for service in document["services"]}
    assert set(hooks) == {"patient-view", "order-select", "order-sign"}
    assert hooks["patient-view"]["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert (
        "AllergyIntolerance?patient={{context.patientId}}"
        in (hooks["order-sign"]["prefetch"]["allergies"])
    )


@pytest.mark.parametrize(
    "problem",
    ["none", "unsigned", "hmac", "expired", "wrong-audience", "replayed", "unregistered"],
)
def test_discovery_refuses_a_call_without_a_valid_jwt(
    cds: TestClient, ehr: Ehr, problem: str
) -> None:
    import jwt as pyjwt

    path = "/cds-services"
    headers: dict[str, str] = {}
    if problem == "unsigned":
        token = pyjwt.encode(
            {"iss": ehr.issuer, "aud": BASE_URL + path, "jti": "x"}, None, algorithm="none"
        )
        headers = {"Authorization": f"Bearer {token}"}
    elif problem == "hmac":
        token = pyjwt.encode(
            {"iss": ehr.issuer, "aud": BASE_URL + path, "jti": "y"}, "secret" * 6, "HS256"
        )
        headers = {"Authorization": f"Bearer {token}"}
    elif problem == "expired":
        past = datetime.now(UTC) - timedelta(minutes=10)
        token = ehr.token(path, iat=past, exp=past + timedelta(minutes=2))
        headers = {"Authorization": f"Bearer {token}"}
    elif problem == "wrong-audience":
        headers = {"Authorization": f"Bearer {ehr.token('/cds-services/other')}"}
    elif problem == "replayed":
        headers = ehr.headers(path)
        assert cds.get(path, headers=headers).status_code == 200
    elif problem == "unregistered":
        headers = Ehr(issuer="https://stranger.example.org").headers(path)
    answer = cds.get(path, headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "authentication failed" in answer.json()["issue"][0]["diagnostics"]


def test_cors_preflight_and_responses_allow_browser_ehrs(cds: TestClient, ehr: Ehr) -> None:
    preflight = cds.options(
        PATIENT_VIEW,
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    answer = cds.get(
        "/cds-services",
        headers={"Origin": "https://sandbox.cds-hooks.org", **ehr.headers("/cds-services")},
    )
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in answer.headers


# -- patient-view ----------------------------------------------------------------------------


@pytest.mark.shared_data
def test_patient_view_answers_an_alerting_patient_with_a_card_that_supports_the_decision(
    cds: TestClient, ehr: Ehr, store: ResourceStore, alerting_stay: list[dict]
) -> None:
    patient = patient_id(alerting_stay)
    request = hook_request("patient-view", patient, prefetch=prefetch_of(alerting_stay))
    answer = call(cds, ehr, PATIENT_VIEW, request)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    check_response(document)
    sepsis = [c for c in document["cards"] if c["source"].get("topic", {}).get("code") == "sepsis"]
    assert len(sepsis) == 1
    card = sepsis[0]
    assert card["indicator"] in ("warning", "critical")
    assert len(card["summary"]) < 140
    model_version = SepsisModel.load(MODEL_DIR).version
    assert model_version in card["source"]["label"]
    assert card["source"]["url"] == f"{BASE_URL}/models/sepsis/card"
    detail = card["detail"]
    for part in ("Sepsis risk", "95% CI", "Why", "NEWS2", "Alternatives", "Evidence"):
        assert part in detail, part
    assert card["links"][0]["url"] == f"{BASE_URL}/app/patients/{patient}"
    resources = [a["resource"] for s in card["suggestions"] for a in s["actions"]]
    for resource in resources:
        model_class(resource["resourceType"]).model_validate(resource)  # valid FHIR R4
        assert resource.get("subject", resource.get("for", {})).get("reference") == (
            f"Patient/{patient}"
        )
    codes = {c["code"] for r in resources for c in r.get("code", {}).get("coding", [])}
    # a lactate is suggested, or said not to be because one resulted recently
    assert codes & {"2524-7", "32693-4"} or "lactate: already resulted" in detail
    assert {"ServiceRequest", "MedicationRequest", "Task"} <= {r["resourceType"] for r in resources}
    assert card["overrideReasons"] and card["selectionBehavior"] in ("any", "at-most-one")
    # the record of the card: a RiskAssessment with its Provenance, and the ledger row
    assessments = [
        stored.body
        for stored in store.search("RiskAssessment", patient_id=patient).resources
        if model_version in stored.body["method"]["text"]
    ]
    assert len(assessments) == 1
    assessment = assessments[0]
    assert assessment["prediction"][0]["probabilityDecimal"] > 0
    provenance = [
        p.body
        for p in store.search("Provenance", count=100).resources
        if {"reference": f"RiskAssessment/{assessment['id']}"} in p.body["target"]
    ]
    assert len(provenance) == 1
    sources = [e["what"]["reference"] for e in provenance[0]["entity"]]
    assert sources and all(ref.startswith("Observation/") for ref in sources)
    assert any(model_version in str(agent) for agent in provenance[0]["agent"])
    assert ledger_counts(store)[:2] == (1, len(document["cards"]))


@pytest.mark.shared_data
def test_a_penicillin_allergy_changes_the_antibiotic_suggested(
    cds: TestClient, ehr: Ehr, alerting_stay: list[dict]
) -> None:
    patient = patient_id(alerting_stay)

    def antibiotics(prefetch: dict[str, Any]) -> set[str]:
        answer = call(
            cds, ehr, PATIENT_VIEW, hook_request("patient-view", patient, prefetch=prefetch)
        )
        assert answer.status_code == 200, answer.text
        found = set()
        for card in answer.json()["cards"]:
            for suggestion in card.get("suggestions", []):
                for action in suggestion["actions"]:
                    if action["resource"]["resourceType"] == "MedicationRequest":
                        found |= medication_ingredients(action["resource"])
        return found

    usual = antibiotics(prefetch_of(alerting_stay))
    allergic = antibiotics(prefetch_of(alerting_stay, allergies=[penicillin_allergy(patient)]))
    assert usual and allergic and usual != allergic
    assert any("penicillins" in drug_classes(i) for i in usual)
    assert not any("penicillins" in drug_classes(i) for i in allergic)


@pytest.mark.shared_data
def test_an_action_already_ordered_is_not_suggested_again(
    cds: TestClient, ehr: Ehr, alerting_stay: list[dict]
) -> None:
    patient = patient_id(alerting_stay)
    latest = max(
        r["effectiveDateTime"] for r in alerting_stay if r["resourceType"] == "Observation"
    )
    lactate_order = {
        "resourceType": "ServiceRequest",
        "id": "lactate-order-1",
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": LOINC, "code": "2524-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "authoredOn": latest,
    }
    prefetch = prefetch_of(alerting_stay, orders=[lactate_order])
    answer = call(cds, ehr, PATIENT_VIEW, hook_request("patient-view", patient, prefetch=prefetch))
    assert answer.status_code == 200, answer.text
    card = next(
        c for c in answer.json()["cards"] if c["source"].get("topic", {}).get("code") == "sepsis"
    )
    codes = {
        c["code"]
        for s in card.get("suggestions", [])
        for a in s["actions"]
        for c in a["resource"].get("code", {}).get("coding", [])
    }
    assert not codes & {"2524-7", "32693-4"}
    assert "Not suggested again" in card["detail"]


@pytest.mark.shared_data
def test_a_quiet_patient_gets_no_sepsis_card(
    cds: TestClient, ehr: Ehr, quiet_stay: list[dict]
) -> None:
    patient = patient_id(quiet_stay)
    answer = call(
        cds,
        ehr,
        PATIENT_VIEW,
        hook_request("patient-view", patient, prefetch=prefetch_of(quiet_stay)),
    )
    assert answer.status_code == 200, answer.text
    check_response(answer.json())
    topics = {c["source"].get("topic", {}).get("code") for c in answer.json()["cards"]}
    assert "sepsis" not in topics and "deterioration" not in topics


@pytest.mark.shared_data
def test_opening_the_chart_again_does_not_interrupt_again(
    cds: TestClient, ehr: Ehr, alerting_stay: list[dict]
) -> None:
    patient = patient_id(alerting_stay)
    prefetch = prefetch_of(alerting_stay)
    first = call(cds, ehr, PATIENT_VIEW, hook_request("patient-view", patient, prefetch=prefetch))
    second = call(cds, ehr, PATIENT_VIEW, hook_request("patient-view", patient, prefetch=prefetch))
    sepsis = [
        next(c for c in a.json()["cards"] if c["source"].get("topic", {}).get("code") == "sepsis")
        for a in (first, second)
    ]
    assert sepsis[0]["indicator"] in ("warning", "critical")
    assert sepsis[1]["indicator"] == "info"
    assert "Already raised" in sepsis[1]["detail"]


@pytest.mark.shared_data
def test_without_prefetch_the_record_is_read_from_careloops_store(
    cds: TestClient, ehr: Ehr, store: ResourceStore, alerting_stay: list[dict]
) -> None:
    from careloop.ingest.pipeline import IngestOptions, Ingestor

    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in alerting_stay],
    }
    Ingestor(store, IngestOptions(workers=0)).ingest_document(orjson.dumps(bundle), "test")
    patient = patient_id(alerting_stay)
    answer = call(cds, ehr, PATIENT_VIEW, hook_request("patient-view", patient))
    assert answer.status_code == 200, answer.text
    assert any(c["source"].get("topic", {}).get("code") == "sepsis" for c in answer.json()["cards"])
    unknown = call(cds, ehr, PATIENT_VIEW, hook_request("patient-view", "nobody-here"))
    assert unknown.status_code == 412
    assert "no record of this patient" in unknown.json()["issue"][0]["diagnostics"]


# -- bad input: a clear 4xx and nothing recorded ----------------------------------------------


def small_patient(patient: str = "cds-p1") -> dict[str, Any]:
    return {
        "patient": {
            "resourceType": "Patient",
            "id": patient,
            "gender": "female",
            "birthDate": "1960-01-01",
        },
        "observations": searchset([]),
        "conditions": None,
        "allergies": None,
        "medications": None,
        "orders": None,
        "procedures": None,
        "encounters": None,
        "careplans": None,
        "goals": None,
    }


def _bad_requests() -> dict[str, tuple[str, Any, int, str]]:
    good = hook_request("patient-view", "cds-p1", prefetch=small_patient())
    missing_patient = copy.deepcopy(good)
    del missing_patient["context"]["patientId"]
    wrong_hook = copy.deepcopy(good) | {"hook": "order-sign"}
    malformed = copy.deepcopy(good)
    malformed["prefetch"]["observations"] = {"resourceType": "Bundle", "entry": "nope"}
    not_a_resource = copy.deepcopy(good)
    not_a_resource["prefetch"]["conditions"] = ["a", "list"]
    other_patient = copy.deepcopy(good)
    other_patient["prefetch"]["observations"] = searchset(
        [
            {
                "resourceType": "Observation",
                "id": "o1",
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
                "subject": {"reference": "Patient/someone-else"},
                "effectiveDateTime": "2024-01-01T00:00:00Z",
                "valueQuantity": {"value": 80, "unit": "/min"},
            }
        ]
    )
    other_patient_resource = copy.deepcopy(good)
    other_patient_resource["prefetch"]["patient"]["id"] = "someone-else"
    bad_instance = copy.deepcopy(good) | {"hookInstance": "not a uuid!"}
    return {
        "not-json": (PATIENT_VIEW, b"{not json", 400, "not JSON"),
        "not-an-object": (PATIENT_VIEW, b"[1, 2]", 400, "JSON object"),
        "unknown-service": ("/cds-services/no-such-service", good, 404, "no such CDS service"),
        "missing-context": (PATIENT_VIEW, missing_patient, 400, "context.patientId is required"),
        "unknown-hook": (PATIENT_VIEW, wrong_hook, 400, "answers the 'patient-view' hook"),
        "malformed-prefetch": (PATIENT_VIEW, malformed, 400, "Bundle.entry must be a list"),
        "prefetch-not-a-resource": (PATIENT_VIEW, not_a_resource, 400, "prefetch 'conditions'"),
        "prefetch-other-patient": (PATIENT_VIEW, other_patient, 400, "another patient"),
        "prefetch-other-patient-resource": (
            PATIENT_VIEW,
            other_patient_resource,
            400,
            "another patient",
        ),
        "bad-hook-instance": (PATIENT_VIEW, bad_instance, 400, "hookInstance"),
        "order-sign-without-drafts": (
            ORDER_SIGN,
            hook_request("order-sign", "cds-p1"),
            400,
            "context.draftOrders is required",
        ),
    }


@pytest.mark.parametrize("case", sorted(_bad_requests()))
def test_bad_input_gets_a_clear_4xx_and_records_nothing(
    cds: TestClient, ehr: Ehr, store: ResourceStore, case: str
) -> None:
    path, body, status, message = _bad_requests()[case]
    answer = call(cds, ehr, path, body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["issue"][0]["diagnostics"]
    assert ledger_counts(store) == (0, 0, 0)
    assert store.search("DetectedIssue", count=1).resources == []
    assert store.search("RiskAssessment", count=1).resources == []


def test_a_repeated_hook_instance_is_refused_and_recorded_once(
    cds: TestClient, ehr: Ehr, store: ResourceStore
) -> None:
    request = hook_request("patient-view", "cds-p1", prefetch=small_patient())
    assert call(cds, ehr, PATIENT_VIEW, request).status_code == 200
    counts = ledger_counts(store)
    again = call(cds, ehr, PATIENT_VIEW, request)
    assert again.status_code == 409
    assert "already been answered" in again.json()["issue"][0]["diagnostics"]
    assert ledger_counts(store) == counts


def test_a_consent_refusing_careloop_keeps_the_data_out_of_the_decision(
    cds: TestClient, ehr: Ehr, store: ResourceStore
) -> None:
    from careloop.access.consent import opt_out_consent
    from careloop.access.principal import Purpose

    with store.transaction() as transaction:
        transaction.put_resources([{"resourceType": "Patient", "id": "cds-p2"}])
    consent = opt_out_consent("cds-p2", [Purpose.TREATMENT])
    with store.transaction() as transaction:
        transaction.put_resources([consent])
    answer = call(
        cds,
        ehr,
        PATIENT_VIEW,
        hook_request("patient-view", "cds-p2", prefetch=small_patient("cds-p2")),
    )
    # the consent withholds every resource, the Patient included: nothing to decide on
    assert answer.status_code == 412, answer.text
    assert ledger_counts(store) == (0, 0, 0)
    events = [e for e in AuditLog(store).events() if "consent-denied" in e.flags]
    assert events, "the withholding is audited"


# -- order-sign and order-select: medication safety -----------------------------------------


def ten_active_medications(patient: str) -> list[dict]:
    names = [
        ("316672", "Simvastatin 10 MG Oral Tablet"),
        ("314076", "lisinopril 10 MG Oral Tablet"),
        ("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"),
        ("197361", "Amlodipine 5 MG Oral Tablet"),
        ("310798", "Hydrochlorothiazide 25 MG Oral Tablet"),
        ("198211", "Simvastatin 40 MG Oral Tablet"),
        ("243670", "aspirin 81 MG Oral Tablet"),
        ("1049221", "Acetaminophen 325 MG / Oxycodone Hydrochloride 5 MG Oral Tablet"),
        ("312961", "Simvastatin 20 MG Oral Tablet"),
        ("308136", "amLODIPine 2.5 MG Oral Tablet"),
    ]
    return [
        medication_request(f"active-{n}", patient, code, display)
        for n, (code, display) in enumerate(names)
    ]


def order_prefetch(
    patient: str, medications: list[dict], allergies: list[dict] = (), labs: list[dict] = ()
) -> dict:  # type: ignore[assignment]
    return {
        "patient": {
            "resourceType": "Patient",
            "id": patient,
            "gender": "male",
            "birthDate": "1950-05-01",
        },
        "medications": searchset(medications),
        "allergies": searchset(list(allergies)),
        "renal": searchset(list(labs)),
    }


@pytest.mark.shared_data
def test_order_sign_stops_a_high_priority_interaction_and_offers_to_remove_it(
    cds: TestClient, ehr: Ehr, store: ResourceStore
) -> None:
    patient = "cds-meds-1"
    draft = medication_request(
        "draft-1", patient, "197517", "Clarithromycin 500 MG Oral Tablet", "draft"
    )
    request = hook_request(
        "order-sign",
        patient,
        prefetch=order_prefetch(patient, ten_active_medications(patient)),
        draftOrders=draft_orders([draft]),
    )
    answer = call(cds, ehr, ORDER_SIGN, request)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    check_response(document)
    interactions = [c for c in document["cards"] if c["source"]["topic"]["code"] == "interaction"]
    assert interactions and interactions[0]["indicator"] == "critical"
    assert "simvastatin" in interactions[0]["summary"].lower()
    removal = [
        a for s in interactions[0]["suggestions"] for a in s["actions"] if a["type"] == "delete"
    ]
    assert removal and removal[0]["resourceId"] == "MedicationRequest/draft-1"
    issues = store.search("DetectedIssue", patient_id=patient).resources
    assert {i.body["severity"] for i in issues} >= {"high"}


def test_order_sign_flags_an_allergy_and_a_renal_dose(cds: TestClient, ehr: Ehr) -> None:
    patient = "cds-meds-2"
    amoxicillin = medication_request(
        "draft-amox", patient, "308182", "Amoxicillin 250 MG Oral Capsule", "draft"
    )
    metformin = medication_request(
        "draft-met", patient, "861007", "Metformin hydrochloride 500 MG Oral Tablet", "draft"
    )
    egfr = {
        "resourceType": "Observation",
        "id": "egfr-1",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "33914-3"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": _recent(),
        "valueQuantity": {"value": 22, "unit": "mL/min/{1.73_m2}"},
    }
    request = hook_request(
        "order-sign",
        patient,
        prefetch=order_prefetch(patient, [], [penicillin_allergy(patient)], [egfr]),
        draftOrders=draft_orders([amoxicillin, metformin]),
    )
    answer = call(cds, ehr, ORDER_SIGN, request)
    assert answer.status_code == 200, answer.text
    kinds = {c["source"]["topic"]["code"]: c for c in answer.json()["cards"]}
    assert "allergy" in kinds and "renal" in kinds
    assert kinds["allergy"]["indicator"] in ("warning", "critical")
    assert "22" in kinds["renal"]["detail"]


def test_order_select_speaks_only_of_the_selected_order(cds: TestClient, ehr: Ehr) -> None:
    patient = "cds-meds-3"
    amoxicillin = medication_request(
        "draft-amox", patient, "308182", "Amoxicillin 250 MG Oral Capsule", "draft"
    )
    paracetamol = medication_request(
        "draft-apap", patient, "313782", "Acetaminophen 325 MG Oral Tablet", "draft"
    )
    prefetch = order_prefetch(patient, [], [penicillin_allergy(patient)])
    drafts = draft_orders([amoxicillin, paracetamol])
    selected_other = hook_request(
        "order-select",
        patient,
        prefetch=prefetch,
        draftOrders=drafts,
        selections=["MedicationRequest/draft-apap"],
    )
    answer = call(cds, ehr, ORDER_SELECT, selected_other)
    assert answer.status_code == 200, answer.text
    assert not [
        c for c in answer.json()["cards"] if c["source"].get("topic", {}).get("code") == "allergy"
    ]
    selected_amox = hook_request(
        "order-select",
        patient,
        prefetch=prefetch,
        draftOrders=drafts,
        selections=["MedicationRequest/draft-amox"],
    )
    answer = call(cds, ehr, ORDER_SELECT, selected_amox)
    assert [
        c for c in answer.json()["cards"] if c["source"].get("topic", {}).get("code") == "allergy"
    ]


def _recent() -> str:
    return (datetime.now(UTC) - timedelta(days=2)).isoformat()


# -- feedback --------------------------------------------------------------------------------


def test_feedback_is_tied_to_the_card_safe_to_repeat_and_refused_for_unknown_cards(
    cds: TestClient, ehr: Ehr, store: ResourceStore
) -> None:
    patient = "cds-meds-4"
    amoxicillin = medication_request(
        "draft-amox", patient, "308182", "Amoxicillin 250 MG Oral Capsule", "draft"
    )
    request = hook_request(
        "order-sign",
        patient,
        prefetch=order_prefetch(patient, [], [penicillin_allergy(patient)]),
        draftOrders=draft_orders([amoxicillin]),
    )
    card = next(
        c
        for c in call(cds, ehr, ORDER_SIGN, request).json()["cards"]
        if c["source"].get("topic", {}).get("code") == "allergy"
    )
    reason = card["overrideReasons"][0]
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": reason, "userComment": "tolerated amoxicillin in 2023"},
        "outcomeTimestamp": datetime.now(UTC).isoformat(),
    }
    path = ORDER_SIGN + "/feedback"
    first = call(cds, ehr, path, {"feedback": [item]})
    assert first.status_code == 200, first.text
    again = call(cds, ehr, path, {"feedback": [item]})
    assert again.status_code == 200 and again.json()["repeated"] == 1
    assert ledger_counts(store)[2] == 1
    unknown = call(cds, ehr, path, {"feedback": [item | {"card": str(uuid.uuid4())}]})
    assert unknown.status_code == 404
    wrong_service = call(cds, ehr, PATIENT_VIEW + "/feedback", {"feedback": [item]})
    assert wrong_service.status_code == 422, wrong_service.text
    assert ledger_counts(store)[2] == 1


# -- generated input ---------------------------------------------------------------------------

JSON_LEAVES = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=12)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
REQUEST_PATHS = st.sampled_from(
    [
        ("context",),
        ("context", "patientId"),
        ("context", "userId"),
        ("context", "draftOrders"),
        ("prefetch",),
        ("prefetch", "patient"),
        ("prefetch", "observations"),
        ("hook",),
        ("hookInstance",),
        ("fhirServer",),
        ("fhirAuthorization",),
    ]
)


@pytest.fixture(scope="module")
def fuzz_target(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, Ehr, ResourceStore]]:
    from careloop.store.crypto import MasterKey, generate_key_text

    home = tmp_path_factory.mktemp("cds-fuzz")
    store = ResourceStore.open(
        f"sqlite:///{home / 'fuzz.db'}", MasterKey.from_text(generate_key_text(), "test")
    )
    ehr = Ehr()
    ehr.register(store)
    app = create_app(store, AppSettings(public_url=BASE_URL, sepsis_model=MODEL_DIR))
    with TestClient(app, base_url=BASE_URL) as client:
        yield client, ehr, store
    store.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=REQUEST_PATHS, value=JSON_VALUES, service=st.sampled_from([PATIENT_VIEW, ORDER_SIGN]))
def test_any_mangled_request_gets_an_answer_never_a_crash_and_records_only_answers(
    fuzz_target: tuple[TestClient, Ehr, ResourceStore],
    path: tuple[str, ...],
    value: Any,
    service: str,
) -> None:
    client, ehr, store = fuzz_target
    hook = "patient-view" if service == PATIENT_VIEW else "order-sign"
    request = hook_request(hook, "fuzz-p1", prefetch=small_patient("fuzz-p1"))
    if hook == "order-sign":
        request["context"]["draftOrders"] = draft_orders([])
        request["prefetch"] = {
            "patient": small_patient("fuzz-p1")["patient"],
            "medications": None,
            "allergies": None,
            "renal": None,
        }
    target = request
    for part in path[:-1]:
        target = target.setdefault(part, {}) if isinstance(target, dict) else {}
    if isinstance(target, dict):
        target[path[-1]] = value
    before = ledger_counts(store)
    answer = call(client, ehr, service, request)
    assert answer.status_code in (200, 400, 403, 404, 409, 412, 413), answer.text
    after = ledger_counts(store)
    if answer.status_code == 200:
        check_response(answer.json())
        assert after[0] == before[0] + 1
    else:
        assert answer.json()["resourceType"] == "OperationOutcome"
        assert after == before


def test_an_oversized_or_non_json_body_is_refused_unread(
    cds: TestClient, ehr: Ehr, store: ResourceStore
) -> None:
    from careloop.cds.hooks import MAX_REQUEST_BYTES

    oversized = b"{" + b" " * MAX_REQUEST_BYTES + b"}"
    answer = cds.post(
        PATIENT_VIEW,
        content=oversized,
        headers={"content-type": "application/json", **ehr.headers(PATIENT_VIEW)},
    )
    assert answer.status_code == 413
    as_text = cds.post(
        PATIENT_VIEW,
        content=b"hook=patient-view",
        headers={"content-type": "text/plain", **ehr.headers(PATIENT_VIEW)},
    )
    assert as_text.status_code == 415
    assert ledger_counts(store) == (0, 0, 0)
