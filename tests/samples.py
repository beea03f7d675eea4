"""Small, realistic FHIR inputs written by hand for tests, and helpers to package them."""

from __future__ import annotations

import copy
import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import orjson

PATIENT_ID = "7f3c2a9e-1b4d-4c8e-9a51-0d2b6e8f4a10"
PATIENT_NAME = "Quillfeather"
PATIENT_GIVEN = "Ottoline"
PATIENT_BIRTH_DATE = "1948-07-23"
PATIENT_MRN = "MRN-58213377"
PATIENT_SSN = "999-41-7763"
VITAL_SIGNS_CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
        }
    ]
}


def patient(patient_id: str = PATIENT_ID) -> dict:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [
            {"system": "https://hospital.example/mrn", "value": PATIENT_MRN},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": PATIENT_SSN},
        ],
        "name": [{"family": PATIENT_NAME, "given": [PATIENT_GIVEN]}],
        "gender": "female",
        "birthDate": PATIENT_BIRTH_DATE,
        "address": [{"line": ["12 Larkspur Lane"], "city": "Fernhollow", "postalCode": "01234"}],
    }


def heart_rate(index: int, value: float, when: str, subject: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": f"hr-{index}",
        "status": "final",
        "category": [VITAL_SIGNS_CATEGORY],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def transaction_bundle(observations: int = 3) -> dict:
    """A patient, an encounter and heart rates, linked by urn:uuid full URLs."""
    patient_url = f"urn:uuid:{PATIENT_ID}"
    encounter_url = "urn:uuid:0e9d5a1c-7b2f-4f6a-8c3d-2a1b9e8f7c60"
    entries = [
        _entry(patient_url, _without_id(patient())),
        _entry(
            encounter_url,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "IMP",
                },
                "subject": {"reference": patient_url},
                "period": {"start": "2024-03-01T08:00:00Z", "end": "2024-03-04T10:00:00Z"},
            },
        ),
    ]
    for index in range(observations):
        observation = heart_rate(
            index, 80 + index, f"2024-03-0{1 + index % 3}T1{index % 10}:00:00Z", patient_url
        )
        observation["encounter"] = {"reference": encounter_url}
        entries.append(_entry(f"urn:uuid:00000000-0000-4000-8000-{index:012d}", observation))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _entry(full_url: str, resource: dict) -> dict:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def _without_id(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "id"}


def with_change(bundle: dict, entry_index: int, path: list, value: object) -> dict:
    """A deep copy of the bundle with one value in one entry's resource replaced."""
    changed = copy.deepcopy(bundle)
    node = changed["entry"][entry_index]["resource"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


def ndjson(resources: list[dict]) -> bytes:
    return b"".join(orjson.dumps(resource) + b"\n" for resource in resources)


def write_json(path: Path, document: dict) -> Path:
    path.write_bytes(orjson.dumps(document))
    return path


def write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_gz(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


def heart_rate_of(resource_id: str, patient_id: str, when: str = "2024-03-01T08:00:00Z") -> dict:
    """A heart-rate Observation with a given id, for tests that address resources by id."""
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": 91, "unit": "/min"},
    }


def put_transaction(resources: list[dict]) -> dict:
    """A transaction Bundle writing each resource at its own id (PUT Type/id)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": resource,
                "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
            }
            for resource in resources
        ],
    }
