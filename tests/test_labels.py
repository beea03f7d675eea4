"""Sensitivity labels: explicit meta.security, inference from codes, and real Synthea data."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.access.labels import (
    CLASS_LABELS,
    CONFIDENTIALITY_SYSTEM,
    DataClass,
    classes_of_code,
    data_classes,
    security_labels,
)
from careloop.fhir import codes

MH = DataClass.MENTAL_HEALTH
SUD = DataClass.SUBSTANCE_USE
HIV = DataClass.HIV
GEN = DataClass.GENETICS
REPRO = DataClass.REPRODUCTIVE_HEALTH


def concept(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


def condition(system: str, code: str) -> dict:
    return {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "Patient/p1"},
        "code": concept(system, code),
    }


def observation(system: str, code: str, **extra: object) -> dict:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": concept(system, code),
        **extra,
    }


def medication_request(rxnorm: str) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": concept(codes.RXNORM, rxnorm),
    }


def labelled(resource: dict, *labels: str, system: str = CONFIDENTIALITY_SYSTEM) -> dict:
    security = [{"system": system, "code": label} for label in labels]
    return {**resource, "meta": {"security": security}}


HEART_RATE = observation(
    codes.LOINC,
    codes.HEART_RATE,
    category=[concept(codes.OBSERVATION_CATEGORY, "vital-signs")],
    valueQuantity={"value": 72, "unit": "/min", "system": codes.UCUM, "code": "/min"},
)

INFERRED = [
    ("snomed-major-depression", condition(codes.SNOMED, "370143000"), {MH}),
    ("snomed-ptsd", condition(codes.SNOMED, "47505003"), {MH}),
    ("snomed-anxiety-common", condition(codes.SNOMED, "197480006"), {MH}),
    ("icd10cm-depression-with-dot", condition(codes.ICD10_CM, "F32.9"), {MH}),
    ("icd10cm-depression-without-dot", condition(codes.ICD10_CM, "F329"), {MH}),
    ("icd10-who-schizophrenia", condition(codes.ICD10, "F20.0"), {MH}),
    ("icd10cm-suicidal-ideation", condition(codes.ICD10_CM, "R45.851"), {MH}),
    ("icd10cm-alcohol-dependence-is-sud-only", condition(codes.ICD10_CM, "F10.20"), {SUD}),
    ("icd10cm-opioid-use", condition(codes.ICD10_CM, "F11.10"), {SUD}),
    ("icd10cm-nicotine-not-labelled", condition(codes.ICD10_CM, "F17.210"), set()),
    ("snomed-alcoholism", condition(codes.SNOMED, "7200002"), {SUD}),
    ("snomed-opioid-abuse", condition(codes.SNOMED, "5602001"), {SUD}),
    ("snomed-drug-overdose-not-labelled", condition(codes.SNOMED, "55680006"), set()),
    ("icd10cm-hiv-disease", condition(codes.ICD10_CM, "B20"), {HIV}),
    ("icd10cm-asymptomatic-hiv", condition(codes.ICD10_CM, "Z21"), {HIV}),
    ("icd10cm-hiv-in-pregnancy", condition(codes.ICD10_CM, "O98.72"), {HIV, REPRO}),
    ("snomed-hiv-infection", condition(codes.SNOMED, "86406008"), {HIV}),
    ("loinc-hiv-status", observation(codes.LOINC, "55277-8", valueString="negative"), {HIV}),
    ("icd10cm-genetic-susceptibility", condition(codes.ICD10_CM, "Z15.01"), {GEN}),
    ("icd10cm-genetic-carrier", condition(codes.ICD10_CM, "Z14.1"), {GEN}),
    ("icd10cm-down-syndrome", condition(codes.ICD10_CM, "Q90.9"), {GEN}),
    ("loinc-genetic-variant", observation(codes.LOINC, "69548-6"), {GEN}),
    ("icd10cm-normal-delivery", condition(codes.ICD10_CM, "O80"), {REPRO}),
    ("icd10cm-pre-eclampsia", condition(codes.ICD10_CM, "O14.00"), {REPRO}),
    ("icd10cm-contraception", condition(codes.ICD10_CM, "Z30.011"), {REPRO}),
    ("icd10cm-weeks-of-gestation", condition(codes.ICD10_CM, "Z3A.20"), {REPRO}),
    ("icd10cm-liveborn-infant-not-labelled", condition(codes.ICD10_CM, "Z38.00"), set()),
    ("snomed-normal-pregnancy", condition(codes.SNOMED, "72892002"), {REPRO}),
    ("loinc-pregnancy-status", observation(codes.LOINC, "82810-3"), {REPRO}),
    ("loinc-phq9-total", observation(codes.LOINC, "44261-6"), {MH}),
    ("rxnorm-buprenorphine-naloxone", medication_request("1010600"), {SUD}),
    ("rxnorm-naltrexone-injection", medication_request("637213"), {SUD}),
    ("rxnorm-biktarvy", medication_request("1999667"), {HIV}),
    ("rxnorm-dolutegravir", medication_request("1433873"), {HIV}),
    ("rxnorm-mirena", medication_request("807283"), {REPRO}),
    ("rxnorm-simvastatin-not-labelled", medication_request("316672"), set()),
    (
        "encounter-reason-ptsd",
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "type": [concept(codes.SNOMED, "185349003")],
            "reasonCode": [concept(codes.SNOMED, "47505003")],
        },
        {MH},
    ),
    (
        "encounter-type-drug-rehabilitation",
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "IMP"},
            "type": [concept(codes.SNOMED, "56876005")],
        },
        {SUD},
    ),
    (
        "procedure-hiv-antigen-test",
        {
            "resourceType": "Procedure",
            "status": "completed",
            "code": concept(codes.SNOMED, "31676001"),
        },
        {HIV},
    ),
    (
        "procedure-prenatal-aneuploidy-screening",
        {
            "resourceType": "Procedure",
            "status": "completed",
            "code": concept(codes.SNOMED, "443529005"),
        },
        {GEN, REPRO},
    ),
    (
        "diagnostic-report-genetics-category",
        {
            "resourceType": "DiagnosticReport",
            "status": "final",
            "category": [concept("http://terminology.hl7.org/CodeSystem/v2-0074", "GE")],
            "code": concept(codes.LOINC, "51969-4"),
        },
        {GEN},
    ),
    (
        "careplan-mental-health-category",
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "order",
            "category": [concept(codes.SNOMED, "718347000")],
        },
        {MH},
    ),
    (
        "claim-item-prenatal-visit",
        {
            "resourceType": "Claim",
            "status": "active",
            "item": [{"sequence": 1, "productOrService": concept(codes.SNOMED, "424619006")}],
        },
        {REPRO},
    ),
    (
        "contained-resource-codes-count",
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "contained": [
                {"resourceType": "Medication", "id": "m", "code": concept(codes.RXNORM, "351266")}
            ],
            "medicationReference": {"reference": "#m"},
        },
        {SUD},
    ),
]


@pytest.mark.parametrize(("name", "resource", "expected"), INFERRED, ids=[i[0] for i in INFERRED])
def test_inferred_classes(name: str, resource: dict, expected: set[DataClass]) -> None:
    assert data_classes(resource) == expected
    wanted = {label for data_class in expected for label in CLASS_LABELS[data_class]}
    if expected & {MH, SUD}:
        wanted.add("BH")
    assert security_labels(resource) == wanted


def test_mental_health_and_substance_use_labels_do_not_bleed() -> None:
    depression = security_labels(condition(codes.SNOMED, "370143000"))
    alcoholism = security_labels(condition(codes.SNOMED, "7200002"))
    assert depression == {"PSY", "MH", "BH"}
    assert alcoholism == {"ETH", "SUD", "BH"}


@pytest.mark.parametrize(
    "resource",
    [
        HEART_RATE,
        condition(codes.SNOMED, "38341003"),  # hypertension
        observation(codes.LOINC, codes.SYSTOLIC_BP),
        {
            "resourceType": "Patient",
            "id": "p1",
            "gender": "female",
            "maritalStatus": concept("http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "M"),
        },
        {"resourceType": "Organization", "id": "o1", "name": "General Hospital"},
    ],
    ids=["heart-rate", "hypertension", "systolic-bp", "patient", "organization"],
)
def test_ordinary_resources_get_nothing(resource: dict) -> None:
    assert security_labels(resource) == frozenset()
    assert data_classes(resource) == frozenset()


def test_explicit_labels() -> None:
    plain = labelled(observation(codes.LOINC, "11506-3"), "PSY")
    assert security_labels(plain) == {"PSY", "MH", "BH"}
    assert data_classes(plain) == {MH}

    # more specific ActCode codes are read as their class
    assert data_classes(labelled(HEART_RATE, "OPIOIDUD")) == {SUD}
    assert data_classes(labelled(HEART_RATE, "GDIS")) == {GEN}
    assert data_classes(labelled(HEART_RATE, "SEX")) == {REPRO}
    assert data_classes(labelled(HEART_RATE, "HIV")) == {HIV}


def test_explicit_bh_reads_as_both_behavioral_classes() -> None:
    resource = labelled(HEART_RATE, "BH")
    assert data_classes(resource) == {MH, SUD}
    assert security_labels(resource) == {"BH", "PSY", "MH", "ETH", "SUD"}


def test_labels_outside_the_five_classes_pass_through() -> None:
    resource = labelled(HEART_RATE, "STD", "SDV")
    assert security_labels(resource) == {"STD", "SDV"}
    assert data_classes(resource) == frozenset()


def test_labels_of_other_systems_are_not_actcode_labels() -> None:
    confidentiality = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
    resource = labelled(HEART_RATE, "R", system=confidentiality)
    assert security_labels(resource) == frozenset()


def test_explicit_and_inferred_combine() -> None:
    resource = labelled(condition(codes.SNOMED, "72892002"), "PSY")
    assert data_classes(resource) == {MH, REPRO}
    assert {"PSY", "MH", "BH", "SEX"} <= security_labels(resource)


def test_code_lookups_need_the_right_system() -> None:
    # the SNOMED code for major depression means nothing under LOINC, and vice versa
    assert classes_of_code(codes.LOINC, "370143000") == frozenset()
    assert classes_of_code(codes.SNOMED, "44261-6") == frozenset()
    assert classes_of_code(codes.SNOMED, "370143000") == {MH}
    assert classes_of_code(codes.ICD10_CM, "f32.9") == {MH}
    assert classes_of_code(codes.ICD10_CM, "F") == frozenset()


def test_deeply_nested_document_does_not_exhaust_the_stack() -> None:
    node: dict = {"system": codes.SNOMED, "code": "7200002"}
    for _ in range(20_000):
        node = {"extension": [{"valueCodeableConcept": node}]}
    resource = {"resourceType": "Observation", "extension": [node]}
    assert data_classes(resource) == {SUD}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["system", "code", "coding", "meta", "security", "contained", "x"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.text(max_size=6), JSON, max_size=6), meta=JSON, contained=JSON)
def test_arbitrary_json_never_raises(body: dict, meta: object, contained: object) -> None:
    resource = {**body, "resourceType": "Observation", "meta": meta, "contained": contained}
    labels = security_labels(resource)
    assert isinstance(labels, frozenset)
    assert all(isinstance(label, str) for label in labels)
    assert isinstance(data_classes(resource), frozenset)


# -- real Synthea data ---------------------------------------------------------------------------

BUNDLES_TO_READ = 40


def _synthea_resources(archive: Path) -> list[dict]:
    resources: list[dict] = []
    read = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".json"):
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            bundle = json.load(handle)
            resources.extend(entry["resource"] for entry in bundle.get("entry", []))
            read += 1
            if read >= BUNDLES_TO_READ:
                break
    return resources


@pytest.mark.shared_data
def test_real_synthea_resources_are_labelled_where_sensitive(synthea_archive: Path) -> None:
    """The shared conftest's `synthea_archive` is `shared_data("synthea_r4/synthea_r4.tar.gz")`."""
    resources = _synthea_resources(synthea_archive)
    classes_by_type: dict[str, set[DataClass]] = {}
    vital_signs = 0
    for resource in resources:
        found = data_classes(resource)
        classes_by_type.setdefault(resource["resourceType"], set()).update(found)
        categories = {
            coding.get("code")
            for category in resource.get("category", [])
            if isinstance(category, dict)
            for coding in category.get("coding", [])
        }
        if resource["resourceType"] == "Observation" and "vital-signs" in categories:
            vital_signs += 1
            assert security_labels(resource) == frozenset(), resource["code"]
    labelled_mh = [r for r in resources if MH in data_classes(r)]
    assert labelled_mh, "no mental-health resource found in the Synthea bundles read"
    assert any(r["resourceType"] in ("Condition", "Procedure", "Encounter") for r in labelled_mh)
    assert REPRO in classes_by_type.get("Condition", set()) | classes_by_type.get(
        "Encounter", set()
    )
    assert vital_signs > 100  # the check above really ran over vital signs
    for untouched in ("Patient", "Organization", "Practitioner", "Immunization"):
        assert not classes_by_type.get(untouched), untouched
