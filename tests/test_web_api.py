"""The FHIR HTTP API over a real store (SQLite and PostgreSQL): ingest, read, search, errors."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from api_clients import BASE_URL, auth, bearer_token, practitioner_for
from careloop.access.roles import Role
from careloop.fhir.structure import model_class
from careloop.store.repository import ResourceStore
from careloop.web import create_app
from careloop.web.app import AppSettings
from careloop.web.resource_types import NOT_VALIDATED, R4_RESOURCE_TYPES
from careloop.web.search_params import SearchParamError, parse_search
from samples import VITAL_SIGNS_CATEGORY

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
HEART_RATE = "8867-4"
RESP_RATE = "9279-1"  # respiratory rate (9279-2 fails the LOINC check digit)
PATIENT_ID = "6a1f0f6e-1d0b-4f7e-9a53-0c3b2e1d4f01"
ENCOUNTER_ID = "6a1f0f6e-1d0b-4f7e-9a53-0c3b2e1d4f02"
PATIENT_NAME = "Quintessa-Marlowe"  # must never appear in an error
FHIR_JSON = {"content-type": "application/fhir+json"}

# (id suffix, LOINC code, value, effective time) of the five vitals in the bundle
VITALS = [
    ("11", HEART_RATE, 88, "2024-03-01T08:00:00Z"),
    ("12", RESP_RATE, 18, "2024-03-05T08:00:00Z"),
    ("13", HEART_RATE, 112, "2024-03-10T08:00:00Z"),
    ("14", HEART_RATE, 96, "2024-04-02T08:00:00Z"),
    ("15", RESP_RATE, 24, "2024-04-10T08:00:00Z"),
]


def urn(resource_id: str) -> str:
    return f"urn:uuid:{resource_id}"


def obs_id(suffix: str) -> str:
    return f"6a1f0f6e-1d0b-4f7e-9a53-0c3b2e1d4f{suffix}"


def entry(resource: dict[str, Any], resource_id: str) -> dict[str, Any]:
    """A transaction entry the way EHR exports send new resources: urn:uuid, POST, no id."""
    return {
        "fullUrl": urn(resource_id),
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def vital(code: str, value: float, effective: str) -> dict[str, Any]:
    unit = "/min"
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [VITAL_SIGNS_CATEGORY],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": urn(PATIENT_ID)},
        "encounter": {"reference": urn(ENCOUNTER_ID)},
        "effectiveDateTime": effective,
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def care_bundle(bundle_type: str = "transaction") -> dict[str, Any]:
    """A patient's admission: Patient, Encounter, five vitals, a Condition, a MedicationRequest."""
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "MRN-40021"}],
        "name": [{"family": PATIENT_NAME, "given": ["Ada"]}],
        "gender": "female",
        "birthDate": "1948-07-14",
    }
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "IMP",
        },
        "subject": {"reference": urn(PATIENT_ID)},
        "period": {"start": "2024-03-01T07:00:00Z", "end": "2024-03-03T12:00:00Z"},
    }
    condition = {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": SNOMED, "code": "91302008", "display": "Sepsis"}]},
        "subject": {"reference": urn(PATIENT_ID)},
        "encounter": {"reference": urn(ENCOUNTER_ID)},
        "onsetDateTime": "2024-03-01T09:30:00Z",
    }
    medication = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "197361", "display": "amlodipine 5 MG"}]
        },
        "subject": {"reference": urn(PATIENT_ID)},
        "authoredOn": "2024-03-02T10:00:00Z",
    }
    entries = [entry(patient, PATIENT_ID), entry(encounter, ENCOUNTER_ID)]
    entries += [entry(vital(code, value, at), obs_id(s)) for s, code, value, at in VITALS]
    entries += [entry(condition, obs_id("21")), entry(medication, obs_id("31"))]
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}


def post_bundle(client: TestClient, bundle: dict[str, Any]) -> Any:
    return client.post("/fhir", content=orjson.dumps(bundle), headers=FHIR_JSON)


@contextmanager
def api_client(store: ResourceStore, **settings: Any) -> Iterator[TestClient]:
    """The API as a clinician's EHR client sees it (bearer token, HTTPS); `bulk(client)` adds
    an integration client's token for Bulk NDJSON, which clinicians may not load."""
    app = create_app(store, AppSettings(public_url=BASE_URL, **settings))
    with TestClient(app, base_url=BASE_URL) as test_client:
        clinician = bearer_token(
            test_client, store, Role.CLINICIAN, fhir_user=practitioner_for(Role.CLINICIAN)
        )
        test_client.headers.update(auth(clinician))
        test_client.bulk_auth = auth(bearer_token(test_client, store, Role.INTEGRATION))  # type: ignore[attr-defined]
        yield test_client


def bulk(client: TestClient, content_type: str = "application/fhir+ndjson") -> dict[str, str]:
    return {"content-type": content_type, **client.bulk_auth}  # type: ignore[attr-defined]


@pytest.fixture
def client(store: ResourceStore) -> Iterator[TestClient]:
    with api_client(store) as test_client:
        yield test_client


@pytest.fixture
def loaded(client: TestClient) -> dict[str, Any]:
    response = post_bundle(client, care_bundle())
    assert response.status_code == 200, response.text
    return response.json()


def search(client: TestClient, url: str, **params: Any) -> dict[str, Any]:
    # httpx replaces a URL's own query with `params` when given, even an empty one
    response = client.get(url, params=params) if params else client.get(url)
    assert response.status_code == 200, response.text
    return response.json()


def ids_of(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def assert_outcome(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and body["issue"][0]["severity"] in ("error", "fatal")
    assert body["issue"][0]["diagnostics"]
    if code:
        assert body["issue"][0]["code"] == code
    assert "Traceback" not in response.text and PATIENT_NAME not in response.text
    return body


# -- writes -----------------------------------------------------------------------------------


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_transaction_creates_every_entry(loaded: dict[str, Any], store: ResourceStore) -> None:
    assert loaded["resourceType"] == "Bundle" and loaded["type"] == "transaction-response"
    responses = [e["response"] for e in loaded["entry"]]
    assert len(responses) == len(care_bundle()["entry"])
    assert {r["status"] for r in responses} == {"201 Created"}
    assert responses[0]["location"] == f"Patient/{PATIENT_ID}/_history/1"
    assert responses[2]["location"] == f"Observation/{obs_id('11')}/_history/1"
    assert {r["etag"] for r in responses} == {'W/"1"'}
    assert store.counts_by_type() == {
        "Patient": 1,
        "Encounter": 1,
        "Observation": 5,
        "Condition": 1,
        "MedicationRequest": 1,
    }


def test_read_back_has_references_rewritten_and_version_headers(
    client: TestClient, loaded: dict[str, Any]
) -> None:
    response = client.get(f"/fhir/Observation/{obs_id('13')}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json"
    assert response.headers["etag"] == 'W/"1"'
    modified = parsedate_to_datetime(response.headers["last-modified"])
    assert abs((datetime.now(UTC) - modified).total_seconds()) < 120
    observation = response.json()
    assert observation["subject"] == {"reference": f"Patient/{PATIENT_ID}"}
    assert observation["encounter"] == {"reference": f"Encounter/{ENCOUNTER_ID}"}
    assert observation["valueQuantity"]["value"] == 112
    assert observation["meta"]["versionId"] == "1"
    patient = client.get(f"/fhir/Patient/{PATIENT_ID}").json()
    assert patient["name"][0]["family"] == PATIENT_NAME


def test_reposting_the_same_bundle_changes_nothing(
    client: TestClient, loaded: dict[str, Any], store: ResourceStore
) -> None:
    counts = store.counts_by_type()
    again = post_bundle(client, care_bundle()).json()
    assert {e["response"]["status"] for e in again["entry"]} == {"200 OK"}
    assert {e["response"]["etag"] for e in again["entry"]} == {'W/"1"'}
    assert store.counts_by_type() == counts
    assert len(client.get(f"/fhir/Patient/{PATIENT_ID}/_history").json()["entry"]) == 1


def test_a_changed_resource_gets_a_new_version_and_history(
    client: TestClient, loaded: dict[str, Any]
) -> None:
    bundle = care_bundle()
    bundle["entry"][4]["resource"]["valueQuantity"]["value"] = 120  # the 2024-03-10 heart rate
    result = post_bundle(client, bundle).json()
    changed = result["entry"][4]["response"]
    assert changed == {
        "status": "200 OK",
        "location": f"Observation/{obs_id('13')}/_history/2",
        "etag": 'W/"2"',
    }
    assert [e["response"]["etag"] for e in result["entry"]].count('W/"1"') == 8

    current = client.get(f"/fhir/Observation/{obs_id('13')}")
    assert current.headers["etag"] == 'W/"2"'
    assert current.json()["valueQuantity"]["value"] == 120
    history = client.get(f"/fhir/Observation/{obs_id('13')}/_history").json()
    assert history["type"] == "history" and history["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert [e["response"]["status"] for e in history["entry"]] == ["200 OK", "201 Created"]
    assert history["entry"][0]["fullUrl"].endswith(f"/fhir/Observation/{obs_id('13')}")
    first = client.get(f"/fhir/Observation/{obs_id('13')}/_history/1")
    assert first.headers["etag"] == 'W/"1"' and first.json()["valueQuantity"]["value"] == 112
    assert_outcome(client.get(f"/fhir/Observation/{obs_id('13')}/_history/3"), 404, "not-found")
    assert_outcome(client.get(f"/fhir/Observation/{obs_id('13')}/_history/x"), 400)
    # only the current version is searchable
    found = search(client, "/fhir/Observation", code=HEART_RATE, date="2024-03-10")
    assert [e["resource"]["valueQuantity"]["value"] for e in found["entry"]] == [120]


@pytest.mark.parametrize(
    ("bundle_type", "response_type"),
    [("batch", "batch-response"), ("collection", "batch-response")],
)
def test_batch_and_collection_bundles_are_accepted(
    client: TestClient, store: ResourceStore, bundle_type: str, response_type: str
) -> None:
    bundle = care_bundle(bundle_type)
    if bundle_type == "collection":
        for item in bundle["entry"]:
            del item["request"]
    result = post_bundle(client, bundle).json()
    assert result["type"] == response_type
    assert len(result["entry"]) == 9
    assert store.counts_by_type()["Observation"] == 5


def test_batch_is_atomic_too(client: TestClient, store: ResourceStore) -> None:
    bundle = care_bundle("batch")
    bundle["entry"][-1]["resource"]["status"] = "not-a-status"
    assert_outcome(post_bundle(client, bundle), 422, "invalid")
    assert store.counts_by_type() == {}


def test_json_content_type_and_put_entries_with_ids(
    client: TestClient, loaded: dict[str, Any], store: ResourceStore
) -> None:
    practitioner = {"resourceType": "Practitioner", "id": "dr-7", "active": True}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": practitioner, "request": {"method": "PUT", "url": "Practitioner/dr-7"}}
        ],
    }
    response = client.post(
        "/fhir", content=orjson.dumps(bundle), headers={"content-type": "application/json"}
    )
    assert response.json()["entry"][0]["response"]["location"] == "Practitioner/dr-7/_history/1"
    assert client.get("/fhir/Practitioner/dr-7").json()["active"] is True


def test_concurrent_bundles_are_serialized(client: TestClient, store: ResourceStore) -> None:
    def bundle_for(n: int) -> dict[str, Any]:
        patients = [
            entry({"resourceType": "Patient", "gender": "other"}, f"{n:04d}-{i:04d}")
            for i in range(20)
        ]
        return {"resourceType": "Bundle", "type": "transaction", "entry": patients}

    statuses: list[int] = []

    def post(n: int) -> None:
        statuses.append(post_bundle(client, bundle_for(n)).status_code)

    threads = [threading.Thread(target=post, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6
    assert store.counts_by_type() == {"Patient": 120}


# -- search -----------------------------------------------------------------------------------


def test_search_by_patient_in_every_form(client: TestClient, loaded: dict[str, Any]) -> None:
    for params in (
        {"patient": f"Patient/{PATIENT_ID}"},
        {"patient": PATIENT_ID},
        {"subject": f"Patient/{PATIENT_ID}"},
        {"subject": PATIENT_ID, "patient": PATIENT_ID},
    ):
        assert search(client, "/fhir/Observation", **params)["total"] == 5
    assert search(client, "/fhir/Condition", patient=PATIENT_ID)["total"] == 1
    assert search(client, "/fhir/Observation", patient="someone-else")["total"] == 0
    both = search(client, "/fhir/Observation", patient=PATIENT_ID, subject="someone-else")
    assert both["total"] == 0


def test_searchset_shape(client: TestClient, loaded: dict[str, Any]) -> None:
    found = search(client, "/fhir/Condition", patient=PATIENT_ID)
    assert found["type"] == "searchset" and found["total"] == 1
    [match] = found["entry"]
    assert match["fullUrl"] == f"https://testserver/fhir/Condition/{obs_id('21')}"
    assert match["search"] == {"mode": "match"}
    assert match["resource"]["subject"]["reference"] == f"Patient/{PATIENT_ID}"
    [self_link] = found["link"]
    assert self_link["relation"] == "self"
    assert self_link["url"].startswith("https://testserver/fhir/Condition?patient=")
    empty = search(client, "/fhir/Condition", patient="nobody")
    assert empty["total"] == 0 and "entry" not in empty


def test_search_by_code_with_and_without_system(client: TestClient, loaded: dict[str, Any]) -> None:
    def total(code: str, resource_type: str = "Observation") -> int:
        return search(client, f"/fhir/{resource_type}", code=code)["total"]

    assert total(f"{LOINC}|{HEART_RATE}") == 3
    assert total(HEART_RATE) == 3
    assert total(RESP_RATE) == 2
    assert total(f"{HEART_RATE},{LOINC}|{RESP_RATE}") == 5
    assert total(f"{SNOMED}|{HEART_RATE}") == 0
    assert total(f"|{HEART_RATE}") == 0  # |code means "without a system"
    assert total(f"{SNOMED}|91302008", "Condition") == 1
    assert total(f"{RXNORM}|197361", "MedicationRequest") == 1


def test_search_by_date_with_prefixes_and_partial_dates(
    client: TestClient, loaded: dict[str, Any]
) -> None:
    def found(*dates: str, resource_type: str = "Observation") -> list[str]:
        query = "&".join(f"date={d}" for d in dates)
        return ids_of(search(client, f"/fhir/{resource_type}?{query}"))

    assert found("ge2024-03-05", "lt2024-04-01") == [obs_id("12"), obs_id("13")]
    assert found("2024-03") == [obs_id("11"), obs_id("12"), obs_id("13")]
    assert found("eq2024-04") == [obs_id("14"), obs_id("15")]
    assert found("2024-03-10") == [obs_id("13")]
    assert found("gt2024-04-01") == [obs_id("14"), obs_id("15")]
    assert found("le2024-03-05") == [obs_id("11"), obs_id("12")]
    assert found("ne2024-03") == [obs_id("14"), obs_id("15")]
    assert found("2023") == []
    # a zone offset whose '+' the client did not percent-encode arrives as a space
    assert found("ge2024-03-10T09:00:00+01:00") == [obs_id("13"), obs_id("14"), obs_id("15")]
    assert found("ge2024-03-10T09:00:00%2B01:00") == [obs_id("13"), obs_id("14"), obs_id("15")]
    # the encounter spans three days: inside March, overlapping the 2nd, not within the 2nd
    assert found("2024-03", resource_type="Encounter") == [ENCOUNTER_ID]
    assert found("ap2024-03-02", resource_type="Encounter") == [ENCOUNTER_ID]
    assert found("eq2024-03-02", resource_type="Encounter") == []
    assert found("2024-03", resource_type="MedicationRequest") == [obs_id("31")]


def test_paging_walks_every_result_with_next_links(
    client: TestClient, loaded: dict[str, Any]
) -> None:
    url: str | None = f"/fhir/Observation?patient=Patient/{PATIENT_ID}&_count=2"
    pages: list[dict[str, Any]] = []
    while url:
        pages.append(search(client, url))
        url = next((x["url"] for x in pages[-1]["link"] if x["relation"] == "next"), None)
    assert [len(page["entry"]) for page in pages] == [2, 2, 1]
    assert {page["total"] for page in pages} == {5}
    assert [i for page in pages for i in ids_of(page)] == [obs_id(v[0]) for v in VITALS]
    for page in pages:
        for link in page["link"]:
            assert link["url"].startswith("https://testserver/fhir/Observation?")
            assert f"patient=Patient%2F{PATIENT_ID}" in link["url"] and "_count=2" in link["url"]
    relations = [[x["relation"] for x in page["link"]] for page in pages]
    assert relations == [["self", "next"], ["self", "next", "previous"], ["self", "previous"]]
    previous = next(x["url"] for x in pages[1]["link"] if x["relation"] == "previous")
    assert ids_of(search(client, previous)) == ids_of(pages[0])
    only_total = search(client, "/fhir/Observation", _count=0)
    assert only_total["total"] == 5 and "entry" not in only_total


def test_post_search_with_a_form_matches_get(client: TestClient, loaded: dict[str, Any]) -> None:
    response = client.post(
        "/fhir/Observation/_search",
        data={"patient": PATIENT_ID, "code": HEART_RATE, "_count": "2"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 3 and len(body["entry"]) == 2
    assert any(link["relation"] == "next" for link in body["link"])
    assert client.post("/fhir/Observation/_search").json()["total"] == 5
    assert_outcome(
        client.post(
            "/fhir/Observation/_search",
            content=b"patient=x",
            headers={"content-type": "text/plain"},
        ),
        415,
    )


# -- errors: nothing is written, every answer is an OperationOutcome --------------------------


def _with(change: Any) -> bytes:
    bundle = care_bundle()
    change(bundle)
    return orjson.dumps(bundle)


def _set(path: list[Any], value: Any) -> Any:
    def change(bundle: dict[str, Any]) -> None:
        node = bundle
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _duplicate_patient(bundle: dict[str, Any]) -> None:
    twin = copy.deepcopy(bundle["entry"][0])
    twin["fullUrl"] = urn("6a1f0f6e-1d0b-4f7e-9a53-0c3b2e1d4f99")
    twin["resource"]["id"] = PATIENT_ID
    bundle["entry"][0]["resource"]["id"] = PATIENT_ID
    bundle["entry"].append(twin)


BAD_BUNDLES = {
    "malformed JSON": (b'{"resourceType": "Bundle", "type": ', 400, "structure", None),
    "not UTF-8": (b'{"resourceType": "Bundle", "\xff\xfe": 1}', 400, "structure", None),
    "empty body": (b"", 400, "structure", None),
    "a JSON array": (b"[]", 400, "structure", None),
    "not a Bundle": (
        orjson.dumps({"resourceType": "Patient", "name": [{"family": PATIENT_NAME}]}),
        400,
        "structure",
        None,
    ),
    "a searchset Bundle": (_with(_set(["type"], "searchset")), 400, "structure", "Bundle.type"),
    "entry without request": (
        _with(lambda b: b["entry"][3].pop("request")),
        400,
        "structure",
        "Bundle.entry[3].request",
    ),
    "DELETE entry": (
        _with(_set(["entry", 3, "request", "method"], "DELETE")),
        400,
        "structure",
        "Bundle.entry[3].request",
    ),
    "bad field": (
        _with(_set(["entry", 4, "resource", "effectiveDateTime"], "10 March")),
        422,
        "invalid",
        "Observation.effectiveDateTime",
    ),
    "unknown element": (
        _with(_set(["entry", 0, "resource", "favouriteColour"], PATIENT_NAME)),
        422,
        "invalid",
        "Patient.favouriteColour",
    ),
    "dangling urn:uuid": (
        _with(_set(["entry", 5, "resource", "subject", "reference"], urn(obs_id("98")))),
        422,
        "not-found",
        "Observation.subject.reference",
    ),
    "dangling Type/id": (
        _with(_set(["entry", 6, "resource", "subject", "reference"], "Patient/not-stored")),
        422,
        "not-found",
        "Observation.subject.reference",
    ),
    "duplicate ids": (_with(_duplicate_patient), 422, "duplicate", "Patient.id"),
}


@pytest.mark.parametrize("case", list(BAD_BUNDLES), ids=list(BAD_BUNDLES))
def test_a_bad_bundle_is_rejected_whole(
    client: TestClient, loaded: dict[str, Any], store: ResourceStore, case: str
) -> None:
    body, status, code, expression = BAD_BUNDLES[case]
    counts = store.counts_by_type()
    outcome = assert_outcome(client.post("/fhir", content=body, headers=FHIR_JSON), status, code)
    issue = outcome["issue"][0]
    if expression:
        assert issue["expression"] == [expression]
    if status == 422:
        assert "entry " in issue["diagnostics"]  # names the entry index
    assert store.counts_by_type() == counts


def test_a_bad_entry_does_not_write_the_good_ones(client: TestClient, store: ResourceStore) -> None:
    bundle = care_bundle()
    bundle["entry"][8]["resource"]["intent"] = "wish"
    outcome = assert_outcome(post_bundle(client, bundle), 422, "invalid")
    assert "entry 8 (MedicationRequest)" in outcome["issue"][0]["diagnostics"]
    assert store.counts_by_type() == {}


def test_dangling_reference_to_the_store_is_rejected(
    client: TestClient, store: ResourceStore
) -> None:
    bundle = care_bundle()
    bundle["entry"][2]["resource"]["subject"]["reference"] = "Patient/not-stored"
    outcome = assert_outcome(post_bundle(client, bundle), 422, "not-found")
    assert "entry 2 (Observation)" in outcome["issue"][0]["diagnostics"]
    assert store.counts_by_type() == {}


@pytest.mark.parametrize(
    "headers",
    [{"content-type": "text/plain"}, {"content-type": "application/xml"}, {}],
    ids=["text", "xml", "none"],
)
def test_a_non_json_content_type_is_415(
    client: TestClient, store: ResourceStore, headers: dict[str, str]
) -> None:
    response = client.post("/fhir", content=orjson.dumps(care_bundle()), headers=headers)
    assert_outcome(response, 415, "not-supported")
    assert store.counts_by_type() == {}


def test_a_non_utf8_charset_is_415(client: TestClient) -> None:
    headers = {"content-type": "application/fhir+json; charset=latin-1"}
    assert_outcome(client.post("/fhir", content=b"{}", headers=headers), 415)


def test_an_oversize_body_is_413_by_length_and_while_streaming(store: ResourceStore) -> None:
    body = orjson.dumps(care_bundle())
    with api_client(store, max_body_bytes=len(body) - 1) as small:
        assert_outcome(small.post("/fhir", content=body, headers=FHIR_JSON), 413, "too-long")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        assert_outcome(small.post("/fhir", content=chunks(), headers=FHIR_JSON), 413)
        assert store.counts_by_type() == {}
        response = small.post("/fhir", content=body, headers={**FHIR_JSON, "content-length": "ten"})
        assert response.status_code in (400, 413)
    with api_client(store, max_body_bytes=len(body)) as exact:
        assert exact.post("/fhir", content=body, headers=FHIR_JSON).status_code == 200


BAD_SEARCHES = {
    "unknown parameter": ("/fhir/Observation?name=Smith", "name", "not-supported"),
    "modifier": ("/fhir/Observation?code:text=heart", "code:text", "not-supported"),
    "code on a type without codes": ("/fhir/Patient?code=8867-4", "code", "not-supported"),
    "bad date": ("/fhir/Observation?date=ge2024-13-01", "date", "invalid"),
    "not a date": ("/fhir/Observation?date=yesterday", "date", "invalid"),
    "unknown prefix": ("/fhir/Observation?date=xx2024", "date", "invalid"),
    "count too large": ("/fhir/Observation?_count=1001", "_count", "invalid"),
    "negative count": ("/fhir/Observation?_count=-1", "_count", "invalid"),
    "count not a number": ("/fhir/Observation?_count=ten", "_count", "invalid"),
    "offset twice": ("/fhir/Observation?_offset=1&_offset=2", "_offset", "invalid"),
    "code twice": ("/fhir/Observation?code=a&code=b", "code", "invalid"),
    "system-only token": ("/fhir/Observation?code=http://loinc.org|", "code", "invalid"),
    "subject not a patient": ("/fhir/Observation?subject=Group/7", "subject", "invalid"),
    "xml format": ("/fhir/Observation?_format=xml", "_format", "not-supported"),
    "type not FHIR": ("/fhir/Observations?patient=1", "Observations", "not-supported"),
}


@pytest.mark.parametrize("case", list(BAD_SEARCHES), ids=list(BAD_SEARCHES))
def test_a_bad_search_is_400_naming_the_parameter(
    client: TestClient, loaded: dict[str, Any], case: str
) -> None:
    url, named, code = BAD_SEARCHES[case]
    outcome = assert_outcome(client.get(url), 400, code)
    assert named in outcome["issue"][0]["diagnostics"]


def test_empty_parameters_and_json_format_are_accepted(
    client: TestClient, loaded: dict[str, Any]
) -> None:
    assert search(client, "/fhir/Observation?code=&date=&_format=json")["total"] == 5


@pytest.mark.parametrize(
    ("url", "status"),
    [
        (f"/fhir/Patient/{'9' * 64}", 404),
        ("/fhir/Observation/unknown-id/_history", 404),
        (f"/fhir/Patient/{'9' * 65}", 400),
        ("/fhir/Patient/a_b", 400),
        ("/fhir/Patients/123", 400),
        ("/fhir/patient/123", 400),
        ("/nowhere", 404),
    ],
)
def test_reads_of_missing_or_malformed_ids(
    client: TestClient, loaded: dict[str, Any], url: str, status: int
) -> None:
    assert_outcome(client.get(url), status)


def test_method_not_allowed_is_an_outcome(client: TestClient) -> None:
    response = client.delete(f"/fhir/Patient/{PATIENT_ID}")
    assert_outcome(response, 405, "not-supported")
    assert "GET" in response.headers["allow"]


def test_an_unexpected_exception_is_a_500_without_internals(
    store: ResourceStore, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(store, AppSettings(public_url=BASE_URL))

    def explode(patient_id: str) -> None:
        raise RuntimeError(f"secret detail about {PATIENT_NAME}")

    app.add_api_route("/explode/{patient_id}", explode)
    with (
        TestClient(app, base_url=BASE_URL) as test_client,
        caplog.at_level("ERROR", logger="careloop.web"),
    ):
        outcome = assert_outcome(test_client.get(f"/explode/{PATIENT_ID}"), 500, "exception")
    assert "secret" not in orjson.dumps(outcome).decode()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "RuntimeError" in logged and "/explode/{patient_id}" in logged
    assert PATIENT_NAME not in logged and PATIENT_ID not in logged


# -- bulk NDJSON --------------------------------------------------------------------------------


def ndjson_lines() -> list[dict[str, Any]]:
    """The care bundle's resources as Bulk Data export lines: ids given, Type/id references."""
    bundle = care_bundle()
    resources = []
    for item in bundle["entry"]:
        resource = copy.deepcopy(item["resource"])
        resource["id"] = item["fullUrl"].removeprefix("urn:uuid:")
        for element in ("subject", "encounter"):
            if element in resource:
                target = resource[element]["reference"].removeprefix("urn:uuid:")
                kind = "Patient" if target == PATIENT_ID else "Encounter"
                resource[element]["reference"] = f"{kind}/{target}"
        resources.append(resource)
    return resources


def ndjson_body(resources: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(resource) + b"\n" for resource in resources)


def test_ndjson_file_loads(client: TestClient, store: ResourceStore) -> None:
    response = client.post(
        "/fhir/$ingest-ndjson", content=ndjson_body(ndjson_lines()), headers=bulk(client)
    )
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    summary = outcome["issue"][0]
    assert summary["severity"] == "information"
    assert "ingested 9 resources" in summary["diagnostics"]
    assert "Observation: 5 created" in summary["diagnostics"]
    assert store.counts_by_type()["Observation"] == 5
    read = client.get(f"/fhir/Observation/{obs_id('11')}").json()
    assert read["subject"]["reference"] == f"Patient/{PATIENT_ID}"
    again = client.post(
        "/fhir/$ingest-ndjson",
        content=ndjson_body(ndjson_lines()),
        headers=bulk(client, "application/x-ndjson"),
    )
    assert (
        "Observation: 0 created, 0 updated, 5 unchanged" in again.json()["issue"][0]["diagnostics"]
    )


def test_ndjson_malformed_codes_load_with_warnings(
    client: TestClient, store: ResourceStore
) -> None:
    resources = ndjson_lines()
    resources[2]["code"]["coding"][0]["code"] = "8867-5"  # wrong LOINC check digit
    response = client.post(
        "/fhir/$ingest-ndjson", content=ndjson_body(resources), headers=bulk(client)
    )
    assert response.status_code == 200, response.text
    summary, *warnings = response.json()["issue"]
    assert "1 warnings" in summary["diagnostics"]
    assert [(w["severity"], w["code"]) for w in warnings] == [("warning", "code-invalid")]
    assert "line 3 (Observation)" in warnings[0]["diagnostics"]
    assert warnings[0]["expression"] == ["Observation.code.coding[0].code"]
    assert store.counts_by_type()["Observation"] == 5


def test_ndjson_with_a_bad_line_is_rejected_whole_naming_the_line(
    client: TestClient, store: ResourceStore
) -> None:
    resources = ndjson_lines()
    resources[3]["status"] = "sort-of-final"
    outcome = assert_outcome(
        client.post("/fhir/$ingest-ndjson", content=ndjson_body(resources), headers=bulk(client)),
        422,
        "invalid",
    )
    assert "line 4 (Observation)" in outcome["issue"][0]["diagnostics"]
    assert outcome["issue"][0]["expression"] == ["Observation.status"]
    assert store.counts_by_type() == {}


@pytest.mark.parametrize(
    ("bad_line", "status"),
    [(b'{"resourceType": "Patient", \n', 400), (b'{"resourceType": "\xff"}\n', 400)],
    ids=["malformed JSON", "not UTF-8"],
)
def test_ndjson_that_is_not_json_lines_is_400(
    client: TestClient, store: ResourceStore, bad_line: bytes, status: int
) -> None:
    body = ndjson_body(ndjson_lines()[:2]) + bad_line
    outcome = assert_outcome(
        client.post("/fhir/$ingest-ndjson", content=body, headers=bulk(client)), status, "structure"
    )
    assert "line 3" in outcome["issue"][0]["diagnostics"]
    assert store.counts_by_type() == {}


def test_ndjson_dangling_reference_is_rejected(client: TestClient, store: ResourceStore) -> None:
    resources = [r for r in ndjson_lines() if r["resourceType"] != "Patient"]
    outcome = assert_outcome(
        client.post("/fhir/$ingest-ndjson", content=ndjson_body(resources), headers=bulk(client)),
        422,
        "not-found",
    )
    assert "line" in outcome["issue"][0]["diagnostics"]
    assert store.counts_by_type() == {}


def test_ndjson_content_type_and_size_limits(store: ResourceStore) -> None:
    body = ndjson_body(ndjson_lines())
    with api_client(store, max_ndjson_bytes=len(body) - 1) as small:
        headers = bulk(small, "application/fhir+json")
        assert_outcome(small.post("/fhir/$ingest-ndjson", content=body, headers=headers), 415)
        too_big = small.post("/fhir/$ingest-ndjson", content=body, headers=bulk(small))
        assert_outcome(too_big, 413, "too-long")
        streamed = small.post(
            "/fhir/$ingest-ndjson", content=iter([body[:500], body[500:]]), headers=bulk(small)
        )
        assert_outcome(streamed, 413)
    assert store.counts_by_type() == {}


# -- metadata -----------------------------------------------------------------------------------


def test_metadata_is_a_valid_r4_capability_statement(client: TestClient) -> None:
    response = client.get("/fhir/metadata")
    assert response.headers["content-type"] == "application/fhir+json"
    statement = response.json()
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1" and statement["kind"] == "instance"
    [rest] = statement["rest"]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
    resources = {r["type"]: r for r in rest["resource"]}
    observation = resources["Observation"]
    assert {i["code"] for i in observation["interaction"]} >= {"read", "search-type"}
    assert {p["name"] for p in observation["searchParam"]} == {"patient", "subject", "code", "date"}
    assert {p["name"] for p in resources["Patient"]["searchParam"]} == {"patient", "subject"}
    assert "Bundle" not in resources
    assert statement["implementation"]["url"] == "https://testserver/fhir"


def test_the_types_without_a_validator_model_are_exactly_those_listed() -> None:
    assert {t for t in R4_RESOURCE_TYPES if model_class(t) is None} == NOT_VALIDATED


# -- search parameter parsing (pure) ----------------------------------------------------------


def test_parse_search_builds_store_arguments() -> None:
    query = parse_search(
        "Observation",
        [
            ("subject", "Patient/p1"),
            ("code", f"{LOINC}|{HEART_RATE}, {RESP_RATE}"),
            ("date", "ge2024-03"),
            ("date", "lt2024-04-01T00:00:00Z"),
            ("_count", "10"),
            ("_offset", "20"),
        ],
    )
    assert query.patient_id == "p1" and not query.matches_nothing
    assert query.codes == (f"{LOINC}|{HEART_RATE}", RESP_RATE)
    assert [(d.prefix, d.start.isoformat()) for d in query.dates] == [
        ("ge", "2024-03-01T00:00:00+00:00"),
        ("lt", "2024-04-01T00:00:00+00:00"),
    ]
    assert query.dates[0].end == datetime(2024, 3, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert (query.count, query.offset) == (10, 20)
    assert ("_count", "10") not in query.filters and ("date", "ge2024-03") in query.filters


def test_parse_search_defaults_and_limits() -> None:
    query = parse_search("Observation", [])
    assert (query.patient_id, query.codes, query.dates, query.count, query.offset) == (
        None,
        (),
        (),
        50,
        0,
    )
    assert parse_search("Observation", [("_count", "1000")]).count == 1000
    with pytest.raises(SearchParamError, match="_count") as raised:
        parse_search("Observation", [("_count", "1001")])
    assert raised.value.param == "_count"
    with pytest.raises(SearchParamError, match="date #2"):
        parse_search("Observation", [("date", "2024"), ("date", "2024-02-30")])
    unknown = "<script>" * 20
    with pytest.raises(SearchParamError) as raised:
        parse_search("Observation", [(unknown, "1")])
    assert "<" not in str(raised.value) and raised.value.code == "not-supported"
