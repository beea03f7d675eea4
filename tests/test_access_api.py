"""The access layer seen through the API, on both backends: consent on every read, a patient's
own record only, break-glass, audit of every access, sign-in, hardening and hostile input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import orjson
import pytest
from fastapi.testclient import TestClient

from api_clients import (
    BASE_URL,
    assertion,
    auth,
    bearer_token,
    practitioner_for,
    signing_key,
    token_form,
)
from careloop.access.consent import data_class_restriction, opt_out_consent
from careloop.access.labels import DataClass
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.rights import deidentified_compartments
from careloop.access.roles import Role
from careloop.audit.log import AuditLog
from careloop.identity import totp
from careloop.identity.clients import ClientRegistry
from careloop.identity.users import UserDirectory
from careloop.store.repository import ResourceStore
from careloop.web import create_app
from careloop.web.app import AppSettings
from careloop.web.auth import SESSION_COOKIE
from samples import heart_rate_of, put_transaction

ALICE = "acc-patient-alice"  # restricts mental-health data
BOB = "acc-patient-bob"  # opted out of model training
CAROL = "acc-patient-carol"
FHIR_JSON = {"content-type": "application/fhir+json"}
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"


def depression(resource_id: str, patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": resource_id,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": ICD10, "code": "F32.9"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "onsetDateTime": "2023-05-01",
    }


def population() -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for patient_id in (ALICE, BOB, CAROL):
        resources += [
            {"resourceType": "Patient", "id": patient_id, "gender": "female"},
            heart_rate_of(f"{patient_id}-hr", patient_id),
            depression(f"{patient_id}-dep", patient_id),
        ]
    resources.append(
        data_class_restriction(ALICE, [DataClass.MENTAL_HEALTH], consent_id="alice-mh")
    )
    resources.append(opt_out_consent(BOB, [Purpose.MODEL_TRAINING], consent_id="bob-train"))
    return put_transaction(resources)


class Api:
    """The app, and a bearer token per role (care roles with a Practitioner fhirUser)."""

    def __init__(self, store: ResourceStore, client: TestClient) -> None:
        self.store = store
        self.client = client
        self.tokens: dict[str, str] = {}

    def token(self, role: Role, fhir_user: str | None = None) -> dict[str, str]:
        key = f"{role.value}:{fhir_user}"
        if key not in self.tokens:
            self.tokens[key] = bearer_token(
                self.client, self.store, role, fhir_user=fhir_user or practitioner_for(role)
            )
        return auth(self.tokens[key])

    def get(self, path: str, role: Role, fhir_user: str | None = None, **kw: Any) -> Any:
        headers = {**self.token(role, fhir_user), **kw.pop("headers", {})}
        return self.client.get(path, headers=headers, **kw)

    def post(self, path: str, role: Role, fhir_user: str | None = None, **kw: Any) -> Any:
        headers = {**self.token(role, fhir_user), **kw.pop("headers", {})}
        return self.client.post(path, headers=headers, **kw)


@pytest.fixture
def api(store: ResourceStore) -> Iterator[Api]:
    app = create_app(store, AppSettings(public_url=BASE_URL, token_burst=1000))
    with TestClient(app, base_url=BASE_URL) as client:
        wrapper = Api(store, client)
        loaded = wrapper.post(
            "/fhir", Role.INTEGRATION, content=orjson.dumps(population()), headers=FHIR_JSON
        )
        assert loaded.status_code == 200, loaded.text
        yield wrapper


def audit_events(store: ResourceStore) -> list[Any]:
    return list(AuditLog(store).events())


# -- consent on every read ------------------------------------------------------------------------


def test_a_data_class_restriction_withholds_exactly_that_class(api: Api) -> None:
    hidden = api.get(f"/fhir/Condition/{ALICE}-dep", Role.CLINICIAN)
    assert hidden.status_code == 403 and "consent" in hidden.text
    assert api.get(f"/fhir/Observation/{ALICE}-hr", Role.CLINICIAN).status_code == 200
    assert api.get(f"/fhir/Condition/{CAROL}-dep", Role.CLINICIAN).status_code == 200
    found = api.get("/fhir/Condition", Role.CLINICIAN, params={"patient": ALICE}).json()
    assert "entry" not in found and "total" not in found  # no count that would reveal it
    other = api.get("/fhir/Condition", Role.CLINICIAN, params={"patient": CAROL}).json()
    assert other["total"] == 1
    denied = [e for e in audit_events(api.store) if "consent-denied" in e.flags]
    assert denied and all(e.patient_hash == api.store.patient_hash(ALICE) for e in denied)


def test_the_patient_always_sees_their_own_record(api: Api) -> None:
    own = api.get(f"/fhir/Condition/{ALICE}-dep", Role.PATIENT, f"Patient/{ALICE}")
    assert own.status_code == 200


def test_a_consent_change_is_enforced_on_the_next_read(api: Api) -> None:
    assert api.get(f"/fhir/Condition/{CAROL}-dep", Role.NURSE).status_code == 200
    consent = data_class_restriction(CAROL, [DataClass.MENTAL_HEALTH], consent_id="carol-mh")
    recorded = api.post(
        f"/rights/Patient/{CAROL}/consent",
        Role.PATIENT,
        f"Patient/{CAROL}",
        content=orjson.dumps(consent),
        headers=FHIR_JSON,
    )
    assert recorded.status_code == 201, recorded.text
    assert api.get(f"/fhir/Condition/{CAROL}-dep", Role.NURSE).status_code == 403


def test_a_consent_for_another_patient_is_refused(api: Api) -> None:
    consent = opt_out_consent(ALICE, [Purpose.RESEARCH], consent_id="forged")
    response = api.post(
        f"/rights/Patient/{ALICE}/consent",
        Role.PATIENT,
        f"Patient/{CAROL}",
        content=orjson.dumps(consent),
        headers=FHIR_JSON,
    )
    assert response.status_code == 403
    assert api.store.read("Consent", "forged") is None


# -- a patient's own record only ------------------------------------------------------------------


def test_a_patient_reaching_for_another_record_is_refused_and_audited(api: Api) -> None:
    as_carol = {"fhir_user": f"Patient/{CAROL}"}
    assert api.get(f"/fhir/Observation/{CAROL}-hr", Role.PATIENT, **as_carol).status_code == 200
    assert api.get(f"/fhir/Observation/{BOB}-hr", Role.PATIENT, **as_carol).status_code == 403
    assert api.get(f"/fhir/Patient/{BOB}", Role.PATIENT, **as_carol).status_code == 403
    searched = api.get("/fhir/Observation", Role.PATIENT, params={"patient": BOB}, **as_carol)
    assert searched.status_code == 403
    everything = api.get("/fhir/Observation", Role.PATIENT, **as_carol).json()
    assert [e["resource"]["id"] for e in everything["entry"]] == [f"{CAROL}-hr"]
    export = api.get(f"/rights/Patient/{BOB}/record", Role.PATIENT, **as_carol)
    assert export.status_code == 403
    flagged = [e for e in audit_events(api.store) if "other-patient" in e.flags]
    assert len(flagged) >= 4
    assert {e.patient_hash for e in flagged} == {api.store.patient_hash(BOB)}


def test_a_patient_exports_their_record_and_requests_an_amendment(api: Api) -> None:
    as_bob = {"fhir_user": f"Patient/{BOB}"}
    bundle = api.get(f"/rights/Patient/{BOB}/record", Role.PATIENT, **as_bob).json()
    ids = {e["resource"]["id"] for e in bundle["entry"]}
    assert {BOB, f"{BOB}-hr", f"{BOB}-dep", "bob-train"} <= ids
    assert not any(ALICE in i or CAROL in i for i in ids)
    body = {"target": f"Observation/{BOB}-hr", "change": "taken after climbing stairs"}
    task = api.post(
        f"/rights/Patient/{BOB}/amendment",
        Role.PATIENT,
        content=orjson.dumps(body),
        **as_bob,
        headers={"content-type": "application/json"},
    )
    assert task.status_code == 201, task.text
    stored = api.store.read("Task", task.json()["id"])
    assert stored is not None and stored.body["for"]["reference"] == f"Patient/{BOB}"
    wrong = {"target": f"Observation/{ALICE}-hr", "change": "not mine"}
    refused = api.post(
        f"/rights/Patient/{BOB}/amendment",
        Role.PATIENT,
        content=orjson.dumps(wrong),
        **as_bob,
        headers={"content-type": "application/json"},
    )
    assert refused.status_code == 404


# -- break-glass ----------------------------------------------------------------------------------


def test_break_glass_opens_a_denied_record_with_a_reason_and_is_flagged(api: Api) -> None:
    assert api.get(f"/fhir/Condition/{ALICE}-dep", Role.CLINICIAN).status_code == 403
    no_reason = api.post(
        "/access/break-glass", Role.CLINICIAN, json={"patient": ALICE, "reason": "x"}
    )
    assert no_reason.status_code == 400
    granted = api.post(
        "/access/break-glass",
        Role.CLINICIAN,
        json={"patient": ALICE, "reason": "unconscious, possible overdose", "minutes": 15},
    )
    assert granted.status_code == 200, granted.text
    assert api.get(f"/fhir/Condition/{ALICE}-dep", Role.CLINICIAN).status_code == 200
    # the grant is the clinician's own, for this patient only
    assert api.get(f"/fhir/Condition/{ALICE}-dep", Role.NURSE).status_code == 403
    used = [e for e in audit_events(api.store) if "break-glass" in e.flags]
    assert any(e.action == "read" for e in used)
    assert all(e.patient_hash == api.store.patient_hash(ALICE) for e in used)
    assert (
        api.post(
            "/access/break-glass",
            Role.CARE_COORDINATOR,
            json={"patient": ALICE, "reason": "curious about this patient"},
        ).status_code
        == 403
    )


def test_break_glass_expires(store: ResourceStore) -> None:
    clock = [datetime(2026, 1, 1, 12, tzinfo=UTC)]
    access = AccessLayer(store, clock=lambda: clock[0])
    principal = Principal("dr-x", "user", Role.CLINICIAN, "Practitioner/x")
    ctx = AccessContext(Purpose.TREATMENT)
    _load(store, population())
    assert access.read(principal, ctx, "Observation", f"{ALICE}-hr") is not None
    with pytest.raises(Exception, match="consent"):
        access.read(principal, ctx, "Condition", f"{ALICE}-dep")
    access.grant_break_glass(principal, ctx, ALICE, "arrest in the ward", timedelta(minutes=30))
    assert access.read(principal, ctx, "Condition", f"{ALICE}-dep") is not None
    clock[0] += timedelta(minutes=31)
    with pytest.raises(Exception, match="consent"):
        access.read(principal, ctx, "Condition", f"{ALICE}-dep")


def _load(store: ResourceStore, bundle: dict[str, Any]) -> None:
    from careloop.ingest import IngestOptions, Ingestor

    Ingestor(store, IngestOptions(workers=0)).ingest_document(orjson.dumps(bundle), "test")


# -- training data ----------------------------------------------------------------------------


def test_patients_who_opted_out_of_training_are_left_out_of_training_data(api: Api) -> None:
    access = AccessLayer(api.store)
    scientist = Principal("ds", "user", Role.DATA_SCIENTIST)
    training = list(
        deidentified_compartments(access, scientist, AccessContext(Purpose.MODEL_TRAINING))
    )
    research = list(deidentified_compartments(access, scientist, AccessContext(Purpose.RESEARCH)))
    assert len(training) == 2 and len(research) == 3
    serialized = orjson.dumps(training).decode()
    for patient_id in (ALICE, BOB, CAROL):
        assert patient_id not in serialized  # pseudonyms only
    bob_hash = api.store.patient_hash(BOB)
    refusals = [e for e in audit_events(api.store) if e.action == "consent-decision"]
    assert [e.patient_hash for e in refusals] == [bob_hash]
    over_http = api.get(
        "/deid/export",
        Role.DATA_SCIENTIST,
        params={"limit": 10},
        headers={"x-purpose-of-use": "MODELTRAIN"},
    )
    assert over_http.status_code == 200
    patients = [line for line in over_http.text.splitlines() if '"resourceType":"Patient"' in line]
    assert len(patients) == 2


def test_a_data_scientist_cannot_read_identified_data(api: Api) -> None:
    assert api.get(f"/fhir/Patient/{CAROL}", Role.DATA_SCIENTIST).status_code == 403
    assert api.get("/fhir/Observation", Role.DATA_SCIENTIST).status_code == 403
    treat = api.get("/deid/export", Role.DATA_SCIENTIST, headers={"x-purpose-of-use": "TREAT"})
    assert treat.status_code == 403


# -- audit ----------------------------------------------------------------------------------------


def test_every_read_and_search_is_audited_per_patient_and_the_chain_verifies(api: Api) -> None:
    before = len(audit_events(api.store))
    api.get(f"/fhir/Observation/{CAROL}-hr", Role.CLINICIAN)
    api.get("/fhir/Observation", Role.CLINICIAN)  # three patients' observations
    events = audit_events(api.store)[before:]
    reads = [e for e in events if e.action == "read"]
    searches = [e for e in events if e.action == "search"]
    assert len(reads) == 1 and reads[0].patient_hash == api.store.patient_hash(CAROL)
    assert len(searches) == 3
    assert {e.patient_hash for e in searches} == {
        api.store.patient_hash(p) for p in (ALICE, BOB, CAROL)
    }
    assert "no-care-relationship" in reads[0].flags
    report = api.get("/audit/verify", Role.AUDITOR).json()
    assert report["ok"] and report["events_checked"] >= len(events)
    assert api.get("/audit/verify", Role.CLINICIAN).status_code == 403


def test_a_care_relationship_clears_the_review_flag(api: Api) -> None:
    assigned = api.post(
        "/admin/care-relationships",
        Role.ADMIN,
        json={"practitioner": practitioner_for(Role.NURSE), "patient": CAROL},
    )
    assert assigned.status_code == 200
    before = len(audit_events(api.store))
    api.get(f"/fhir/Observation/{CAROL}-hr", Role.NURSE)
    api.get(f"/fhir/Observation/{BOB}-hr", Role.NURSE)
    carol, bob = [e for e in audit_events(api.store)[before:] if e.action == "read"]
    assert "no-care-relationship" not in carol.flags
    assert "no-care-relationship" in bob.flags


# -- erasure --------------------------------------------------------------------------------------


def test_erasure_by_an_administrator_leaves_a_tombstone_and_an_audit_record(api: Api) -> None:
    assert api.post(f"/rights/Patient/{CAROL}/erase", Role.CLINICIAN).status_code == 403
    requested = api.post(
        f"/rights/Patient/{CAROL}/erasure-request", Role.PATIENT, f"Patient/{CAROL}"
    )
    assert requested.status_code == 200
    erased = api.post(f"/rights/Patient/{CAROL}/erase", Role.ADMIN)
    assert erased.status_code == 200 and erased.json()["resources_shredded"] >= 3
    assert api.get(f"/fhir/Observation/{CAROL}-hr", Role.CLINICIAN).status_code == 404
    assert api.store.is_erased(CAROL)
    erasures = [e for e in audit_events(api.store) if e.action == "erasure"]
    assert [sorted(e.flags) for e in erasures] == [["erasure-requested"], ["erasure"]]
    assert AuditLog(api.store).verify().ok


# -- sign-in --------------------------------------------------------------------------------------


def test_a_person_signs_in_with_password_and_totp_and_the_session_needs_csrf(
    api: Api,
) -> None:
    enrolled = UserDirectory(api.store).add(
        "dr.okafor", Role.CLINICIAN, "a long passphrase 4 tests", "Practitioner/okafor"
    )
    code = totp.code_at(enrolled.totp_secret, datetime.now(UTC))
    form = {"username": "dr.okafor", "password": "a long passphrase 4 tests", "code": code}
    wrong = api.client.post("/auth/login", data={**form, "password": "wrong"})
    assert wrong.status_code == 401
    signed_in = api.client.post("/auth/login", data=form)
    assert signed_in.status_code == 200, signed_in.text
    cookie = signed_in.headers["set-cookie"]
    assert SESSION_COOKIE in cookie and "Secure" in cookie and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    csrf = signed_in.json()["csrf_token"]
    assert api.client.get(f"/fhir/Observation/{CAROL}-hr").status_code == 200
    no_csrf = api.client.post(f"/rights/Patient/{CAROL}/erasure-request")
    assert no_csrf.status_code == 403
    replay = api.client.post("/auth/login", data=form)  # the same TOTP code again
    assert replay.status_code == 401
    out = api.client.post("/auth/logout", headers={"x-csrf-token": csrf})
    assert out.status_code == 200
    api.client.cookies.set(SESSION_COOKIE, signed_in.cookies[SESSION_COOKIE])
    assert api.client.get(f"/fhir/Observation/{CAROL}-hr").status_code == 401
    logins = [e for e in audit_events(api.store) if e.action == "login"]
    assert [e.outcome for e in logins] == ["4", "0", "4"]


def test_login_is_rate_limited(store: ResourceStore) -> None:
    app = create_app(store, AppSettings(public_url=BASE_URL, login_burst=3))
    with TestClient(app, base_url=BASE_URL) as client:
        form = {"username": "nobody", "password": "x", "code": "123456"}
        statuses = [client.post("/auth/login", data=form).status_code for _ in range(5)]
        assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429]
        limited = client.post("/auth/login", data=form)
        assert int(limited.headers["retry-after"]) >= 1


JWT_ATTACKS = ["alg-none", "hmac-with-public-key", "wrong-audience", "expired", "replayed-jti"]


@pytest.mark.parametrize("attack", JWT_ATTACKS)
def test_forged_client_assertions_are_refused_and_audited(api: Api, attack: str) -> None:
    key, jwks = signing_key()
    kid = jwks["keys"][0]["kid"]
    client_id = ClientRegistry(api.store).register(
        "attacked", Role.CLINICIAN, ["system/*.rs"], jwks, "Practitioner/z"
    )
    now = datetime.now(UTC)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": f"{BASE_URL}/auth/token",
        "exp": now + timedelta(minutes=4),
        "jti": f"jti-{attack}",
    }
    if attack == "alg-none":
        signed = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    elif attack == "hmac-with-public-key":
        public_pem = key.public_key().public_bytes(
            encoding=__import__("cryptography").hazmat.primitives.serialization.Encoding.PEM,
            format=__import__(
                "cryptography"
            ).hazmat.primitives.serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        signed = _hmac_token(claims, public_pem, kid)
    elif attack == "wrong-audience":
        signed = assertion(client_id, key, kid, aud="https://evil.example/token")
    elif attack == "expired":
        signed = assertion(client_id, key, kid, exp=now - timedelta(minutes=1))
    else:
        signed = assertion(client_id, key, kid, jti="once")
        first = api.client.post("/auth/token", data=token_form(client_id, signed, "system/*.rs"))
        assert first.status_code == 200
    response = api.client.post("/auth/token", data=token_form(client_id, signed, "system/*.rs"))
    assert response.status_code in (400, 401)
    assert response.json()["error"] in ("invalid_client", "invalid_grant", "invalid_request")
    failures = [e for e in audit_events(api.store) if e.action == "token" and e.outcome != "0"]
    assert failures and failures[-1].agent in (client_id, "unknown-client")


def _hmac_token(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """HS256 signed with the public key as the secret (the classic algorithm confusion); PyJWT
    refuses to do this itself, so the token is put together by hand."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    payload = {**claims, "exp": int(claims["exp"].timestamp())}
    header = b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}))
    body = b64(orjson.dumps(payload))
    signature = b64(hmac.new(secret, header + b"." + body, hashlib.sha256).digest())
    return (header + b"." + body + b"." + signature).decode()


# -- hardening ------------------------------------------------------------------------------------


def test_security_headers_and_tls_only(store: ResourceStore, api: Api) -> None:
    response = api.get(f"/fhir/Observation/{CAROL}-hr", Role.CLINICIAN)
    assert response.headers["strict-transport-security"].startswith("max-age=")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    app = create_app(store, AppSettings(public_url=BASE_URL))
    with TestClient(app, base_url="http://testserver") as plain:
        assert plain.get("/fhir/metadata").status_code == 403
        assert plain.get("/healthz").status_code == 200
        assert "strict-transport-security" not in plain.get("/healthz").headers
    demo = create_app(store, AppSettings(public_url="http://testserver", plain_http_allowed=True))
    with TestClient(demo, base_url="http://testserver") as plain:
        assert plain.get("/fhir/metadata").status_code == 200


def test_deeply_nested_json_is_refused_before_it_is_walked(api: Api) -> None:
    nested: dict[str, Any] = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(200):
        nested = {"url": "http://example.org/x", "extension": [nested]}
    patient = {"resourceType": "Patient", "id": "deep", "extension": [nested]}
    bundle = put_transaction([patient])
    response = api.post("/fhir", Role.CLINICIAN, content=json.dumps(bundle), headers=FHIR_JSON)
    assert response.status_code == 400 and "nested deeper" in response.text
    assert api.store.read("Patient", "deep") is None
    refused = [e for e in audit_events(api.store) if "rejected-input" in e.flags]
    assert [e.action for e in refused] == ["create"]


INJECTIONS = [
    ("patient", "x' OR '1'='1"),
    ("patient", "1; DROP TABLE resources; --"),
    ("code", "8867-4' UNION SELECT body FROM resources --"),
    ("date", "ge2024-01-01'); DELETE FROM audit_events; --"),
    ("_count", "1 OR 1=1"),
]


@pytest.mark.parametrize(("name", "value"), INJECTIONS)
def test_injection_in_search_parameters_is_inert(api: Api, name: str, value: str) -> None:
    response = api.get("/fhir/Observation", Role.CLINICIAN, params={name: value})
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert "entry" not in response.json()
    else:
        refused = [e for e in audit_events(api.store) if "rejected-input" in e.flags]
        assert [e.action for e in refused] == ["search"]
    assert api.store.counts_by_type()["Observation"] == 3
    assert AuditLog(api.store).verify().ok


def test_an_unknown_purpose_and_a_purpose_the_role_may_not_state_are_refused(api: Api) -> None:
    path = f"/fhir/Observation/{CAROL}-hr"
    bad = api.get(path, Role.CLINICIAN, headers={"x-purpose-of-use": "MARKETING"})
    assert bad.status_code == 400
    research = api.get(path, Role.CLINICIAN, headers={"x-purpose-of-use": "HRESCH"})
    assert research.status_code == 403
