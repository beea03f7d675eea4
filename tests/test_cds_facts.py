"""Patient facts for playbooks: what is in effect now, read from FHIR resources."""

from __future__ import annotations

import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.cds.facts import COMFORT_CARE, DNR, HOSPICE, PALLIATIVE, facts_from

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PID = "p-facts"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


def at(**delta: float) -> str:
    return (NOW - timedelta(**delta)).isoformat()


def patient(birth: str = "1950-06-30", gender: str = "female", **extra: object) -> dict:
    return {"resourceType": "Patient", "id": PID, "gender": gender, "birthDate": birth, **extra}


def concept(system: str, code: str, display: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def condition(code: str, system: str = SNOMED, status: str = "active", **extra: object) -> dict:
    return {
        "resourceType": "Condition",
        "id": f"c-{code}-{status}",
        "clinicalStatus": concept(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", status
        ),
        "code": concept(system, code),
        "subject": {"reference": f"Patient/{PID}"},
        **extra,
    }


def observation(code: str, value: float, unit: str, when: str, ident: str = "o1", **extra) -> dict:
    return {
        "resourceType": "Observation",
        "id": ident,
        "status": "final",
        "code": concept(LOINC, code),
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        **extra,
    }


def allergy(code: str, display: str, ident: str = "a1", **extra: object) -> dict:
    return {
        "resourceType": "AllergyIntolerance",
        "id": ident,
        "clinicalStatus": concept(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"
        ),
        "code": concept(SNOMED, code, display),
        "patient": {"reference": f"Patient/{PID}"},
        **extra,
    }


def test_age_sex_and_deceased() -> None:
    facts = facts_from(PID, [patient("1950-11-23")], NOW)
    assert (facts.age, facts.sex, facts.deceased) == (75, "female", False)
    assert facts_from(PID, [patient("1950-11-22")], NOW).age == 76
    died = facts_from(PID, [patient(deceasedDateTime=at(days=3))], NOW)
    assert died.deceased
    assert not facts_from(PID, [patient(deceasedDateTime=at(days=-3))], NOW).deceased
    assert facts_from(PID, [], NOW).age is None


def test_pregnancy_from_condition_and_status_observation() -> None:
    current = condition("72892002", onsetDateTime=at(days=60))
    assert facts_from(PID, [patient(), current], NOW).pregnant
    evidence = facts_from(PID, [patient(), current], NOW).pregnancy_evidence
    assert evidence == f"Condition/{current['id']}"
    delivered = condition("72892002", onsetDateTime=at(days=300), abatementDateTime=at(days=20))
    assert not facts_from(PID, [patient(), delivered], NOW).pregnant
    # Synthea leaves some pregnancies open for decades: no pregnancy lasts that long
    stale = condition("79586000", onsetDateTime=at(days=4000))
    assert not facts_from(PID, [patient(), stale], NOW).pregnant
    icd = condition("Z34.00", system=ICD10CM, onsetDateTime=at(days=30))
    assert facts_from(PID, [patient(), icd], NOW).pregnant

    def status(value: str, days: float) -> dict:
        return {
            "resourceType": "Observation",
            "id": f"preg-{value}",
            "status": "final",
            "code": concept(LOINC, "82810-3"),
            "effectiveDateTime": at(days=days),
            "valueCodeableConcept": concept(SNOMED, value),
        }

    later_negative = [patient(), current, status("60001007", 1)]
    assert not facts_from(PID, later_negative, NOW).pregnant
    assert facts_from(PID, [patient(), status("77386006", 2)], NOW).pregnant
    # an older negative test does not outweigh a newer pregnancy diagnosis
    assert facts_from(PID, [patient(), current, status("60001007", 90)], NOW).pregnant


def test_allergy_classes_severity_and_status() -> None:
    penicillin = allergy("91936005", "Allergy to penicillin")
    facts = facts_from(PID, [patient(), penicillin], NOW)
    assert "penicillins" in facts.allergy_classes
    assert "penicillins" not in facts.severe_allergy_classes
    severe = allergy("91936005", "Allergy to penicillin", criticality="high")
    assert "penicillins" in facts_from(PID, [severe], NOW).severe_allergy_classes
    anaphylaxis = allergy(
        "91936005",
        "Allergy to penicillin",
        reaction=[{"manifestation": [concept(SNOMED, "39579001", "Anaphylaxis")]}],
    )
    assert "penicillins" in facts_from(PID, [anaphylaxis], NOW).severe_allergy_classes
    refuted = allergy(
        "91936005",
        "Allergy to penicillin",
        verificationStatus=concept(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "refuted"
        ),
    )
    assert facts_from(PID, [refuted], NOW).allergy_classes == frozenset()


def medication_request(display: str, status: str, ident: str, authored: str) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": ident,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "314076", "display": display}]
        },
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": authored,
    }


def test_active_medications_and_medication_events() -> None:
    active = medication_request("Lisinopril 10 MG Oral Tablet", "active", "m1", at(days=90))
    stopped = medication_request("Simvastatin 20 MG Oral Tablet", "stopped", "m2", at(days=30))
    facts = facts_from(PID, [active, stopped], NOW)
    assert "lisinopril" in facts.medication_ingredients
    assert "simvastatin" not in facts.medication_ingredients
    assert facts.last_medication(["lisinopril"]).reference == "MedicationRequest/m1"
    assert facts.last_medication(["simvastatin"]) is None  # stopped: never counted as ordered


def test_egfr_weight_and_latest_values_with_components() -> None:
    egfr = observation("33914-3", 38, "mL/min/{1.73_m2}", at(days=2), "e1")
    pounds = observation("29463-7", 176, "[lb_av]", at(days=1), "w1")
    panel = {
        "resourceType": "Observation",
        "id": "bp1",
        "status": "final",
        "code": concept(LOINC, "85354-9"),
        "effectiveDateTime": at(hours=1),
        "component": [
            {
                "code": concept(LOINC, "8480-6"),
                "valueQuantity": {"value": 88, "code": "mm[Hg]", "system": UCUM},
            },
            {
                "code": concept(LOINC, "8462-4"),
                "valueQuantity": {"value": 50, "code": "mm[Hg]", "system": UCUM},
            },
        ],
    }
    facts = facts_from(PID, [patient(), egfr, pounds, panel], NOW)
    assert facts.egfr is not None and facts.egfr.value == pytest.approx(38)
    assert facts.weight is not None and facts.weight.value == pytest.approx(79.8)
    systolic = facts.latest_value([f"{LOINC}|8480-6"])
    assert systolic is not None and (systolic.value, systolic.unit) == (88, "mm[Hg]")
    assert systolic.reference == "Observation/bp1"
    unknown_unit = observation("29463-7", 12, "st", at(days=1), "w2")
    assert facts_from(PID, [unknown_unit], NOW).weight is None  # stones are not guessed


def test_active_conditions_only() -> None:
    resources = [
        condition("44054006", onsetDateTime=at(days=900)),
        condition("38341003", status="resolved"),
        condition(
            "15777000",
            verificationStatus=concept(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status", "refuted"
            ),
        ),
        condition("431855005", onsetDateTime=at(days=-10)),  # recorded for the future
    ]
    assert facts_from(PID, resources, NOW).condition_codes == {f"{SNOMED}|44054006"}


def test_goals_of_care_from_each_source() -> None:
    terminal = {
        "resourceType": "CarePlan",
        "id": "cp1",
        "status": "active",
        "intent": "order",
        "category": [concept(SNOMED, "182964004", "Terminal care")],
        "subject": {"reference": f"Patient/{PID}"},
        "period": {"start": at(days=5)},
    }
    finished = {**terminal, "id": "cp2", "period": {"start": at(days=50), "end": at(days=10)}}
    hospice_goal = {
        "resourceType": "Goal",
        "id": "g1",
        "lifecycleStatus": "active",
        "description": concept(SNOMED, "385763009", "Hospice care"),
        "subject": {"reference": f"Patient/{PID}"},
    }
    dnr_condition = condition("Z66", system=ICD10CM)
    palliative_long_ago = {
        "resourceType": "Procedure",
        "id": "pr1",
        "status": "completed",
        "code": concept(SNOMED, "103735009"),
        "performedDateTime": at(days=700),
    }
    facts = facts_from(PID, [terminal, hospice_goal, dnr_condition, palliative_long_ago], NOW)
    assert facts.goals_of_care == {
        COMFORT_CARE: "CarePlan/cp1",
        HOSPICE: "Goal/g1",
        DNR: f"Condition/{dnr_condition['id']}",
    }
    assert PALLIATIVE not in facts.goals_of_care  # a procedure two years ago says nothing now
    assert facts_from(PID, [finished], NOW).goals_of_care == {}


def test_dnr_order_observation_latest_wins() -> None:
    def order(value: bool, days: float, ident: str) -> dict:
        return {
            "resourceType": "Observation",
            "id": ident,
            "status": "final",
            "code": concept(LOINC, "81351-9"),
            "effectiveDateTime": at(days=days),
            "valueBoolean": value,
        }

    assert facts_from(PID, [order(True, 3, "d1")], NOW).goals_of_care == {DNR: "Observation/d1"}
    lifted = [order(True, 3, "d1"), order(False, 1, "d2")]
    assert facts_from(PID, lifted, NOW).goals_of_care == {}


def test_done_events_by_code_newest_first() -> None:
    ordered = {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "status": "active",
        "intent": "order",
        "code": concept(LOINC, "2524-7"),
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": at(hours=1),
    }
    revoked = {**ordered, "id": "sr2", "status": "revoked", "authoredOn": at(minutes=10)}
    resulted = observation("2524-7", 3.1, "mmol/L", at(hours=3), "l1")
    future = observation("2524-7", 1.0, "mmol/L", at(hours=-5), "l2")
    facts = facts_from(PID, [ordered, revoked, resulted, future], NOW)
    events = facts.done[f"{LOINC}|2524-7"]
    assert [(e.reference, e.verb) for e in events] == [
        ("ServiceRequest/sr1", "ordered"),
        ("Observation/l1", "resulted"),
    ]
    assert facts.last_done([f"{LOINC}|2524-7", f"{LOINC}|600-7"]).reference == "ServiceRequest/sr1"
    assert facts.last_done([f"{LOINC}|600-7"]) is None


def test_unreadable_resources_are_left_out_not_fatal() -> None:
    junk = [
        {"resourceType": "Observation", "id": "x", "status": "final", "effectiveDateTime": "soon"},
        {"resourceType": "Condition", "code": "not a concept", "onsetDateTime": 12},
        {"resourceType": "Patient", "id": PID, "birthDate": "19xx"},
        {"resourceType": "AllergyIntolerance", "reaction": "bad"},
        {"no": "type"},
        "not even a dict",
    ]
    facts = facts_from(PID, junk, NOW)  # type: ignore[arg-type]
    assert (facts.age, facts.condition_codes, dict(facts.done)) == (None, frozenset(), {})


# -- real Synthea records ------------------------------------------------------------------


def synthea_patients(archive: Path, *prefixes: str) -> dict[str, list[dict]]:
    """The resources of the Synthea patients whose file names start with the given prefixes."""
    found: dict[str, list[dict]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = Path(member.name).name
            prefix = next((p for p in prefixes if name.startswith(p)), None)
            if prefix is None or not member.isfile():
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            bundle = json.load(handle)
            found[prefix] = [entry["resource"] for entry in bundle["entry"]]
            if len(found) == len(prefixes):
                break
    assert set(found) == set(prefixes), "the Synthea archive lacks a patient these tests read"
    return found


@pytest.mark.shared_data
def test_synthea_terminal_care_reads_as_comfort_care(synthea_archive: Path) -> None:
    resources = synthea_patients(synthea_archive, "Gilbert_Wunsch_")["Gilbert_Wunsch_"]
    plan = next(
        r
        for r in resources
        if r["resourceType"] == "CarePlan" and "Terminal care" in json.dumps(r.get("category"))
    )
    started = datetime.fromisoformat(plan["period"]["start"])
    patient_id = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    facts = facts_from(patient_id, resources, started + timedelta(days=1))
    assert facts.goals_of_care[COMFORT_CARE] == f"CarePlan/{plan['id']}"
    assert not facts.deceased
    before = facts_from(patient_id, resources, started - timedelta(days=1))
    assert COMFORT_CARE not in before.goals_of_care


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
SHAPED = [
    patient(),
    condition("44054006", onsetDateTime=at(days=10)),
    allergy("91936005", "Allergy to penicillin"),
    observation("85354-9", 120, "mm[Hg]", at(hours=1)),
    medication_request("Lisinopril 10 MG Oral Tablet", "active", "m1", at(days=1)),
    {"resourceType": "CarePlan", "id": "cp", "status": "active", "category": []},
    {"resourceType": "Goal", "id": "g", "lifecycleStatus": "active"},
    {"resourceType": "Procedure", "id": "pr", "status": "completed"},
    {"resourceType": "ServiceRequest", "id": "sr", "status": "active", "authoredOn": at(hours=1)},
]


@settings(max_examples=80, deadline=None)
@given(
    index=st.integers(0, len(SHAPED) - 1),
    field=st.sampled_from(
        [
            "code",
            "coding",
            "clinicalStatus",
            "reaction",
            "component",
            "category",
            "activity",
            "effectiveDateTime",
            "valueQuantity",
            "birthDate",
            "period",
            "description",
            "status",
            "medicationCodeableConcept",
            "criticality",
            "onsetDateTime",
            "performedDateTime",
        ]
    ),
    value=json_values,
)
def test_malformed_elements_never_crash(index: int, field: str, value: object) -> None:
    resources = [dict(r) for r in SHAPED]
    resources[index][field] = value
    facts_from(PID, resources, NOW)
