"""De-identification (careloop.deid) on a hand-written patient compartment.

`SAFE_HARBOR_CHECKS` is the list of 18 named checks, one per identifier of
45 CFR 164.514(b)(2)(i)(A)-(R): each names values that are present in the input compartment
(asserted, so a check cannot pass vacuously) and must be absent from the de-identified output.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.deid import AGE_BAND_URL, Category, Deidentifier, DeidOptions, export_ndjson
from careloop.deid.dates import (
    DateRule,
    age_in_years,
    is_ninety_or_older,
    shift_days,
    year_instant,
)
from careloop.deid.pseudonyms import Pseudonymizer
from careloop.deid.safe_harbor import RESTRICTED_ZIP3, generalize_postal_code
from careloop.deid.text import KnownTerms, scrub
from careloop.ingest.validation import structural_errors
from careloop.store.repository import ResourceStore

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
AS_OF = date(2025, 6, 15)
PATIENT_ID = "pat-7f3a"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"

NOTE = (
    "Quintessa Zebulon-Marsh seen on 03/01/2020; call 617-555-0142 or write to "
    "quintessa.zm@example.org. Car VIN 1HGCM82633A004352. Portal "
    "https://portal.example.org/p/778899 from 203.0.113.7. SSN 123-45-6789, MRN-778899, "
    "plan HP-99887766."
)


def _typed(code: str) -> dict:
    return {"coding": [{"system": V2_0203, "code": code}]}


def _ref(target: str, display: str | None = None) -> dict:
    return {"reference": target, **({"display": display} if display else {})}


def patient(patient_id: str = PATIENT_ID, birth: str = "1961-04-17", **extra: object) -> dict:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "meta": {
            "versionId": "3",
            "lastUpdated": "2024-05-01T10:00:00Z",
            "source": "https://ehr.example.org/fhir",
        },
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Quintessa Zebulon-Marsh</div>',
        },
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                "valueString": "Ophelia Brightwater",
            },
            {
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                "valueCode": "F",
            },
        ],
        "identifier": [
            {
                "type": _typed("SS"),
                "system": "http://hl7.org/fhir/sid/us-ssn",
                "value": "123-45-6789",
            },
            {
                "type": _typed("MR"),
                "system": "https://hospital.example.org/mrn",
                "value": "MRN-778899",
            },
            {
                "type": _typed("MB"),
                "system": "https://payer.example.org/member",
                "value": "HP-99887766",
            },
            {
                "type": _typed("DL"),
                "system": "urn:oid:2.16.840.1.113883.4.3.25",
                "value": "S12345678",
            },
        ],
        "name": [{"use": "official", "family": "Zebulon-Marsh", "given": ["Quintessa", "Ravenna"]}],
        "telecom": [
            {"system": "phone", "value": "617-555-0142", "use": "home"},
            {"system": "fax", "value": "617-555-0199"},
            {"system": "email", "value": "quintessa.zm@example.org"},
            {"system": "url", "value": "https://quintessa-zm.example.org/"},
        ],
        "gender": "female",
        "birthDate": birth,
        "address": [
            {
                "use": "home",
                "line": ["42 Wallaby Way", "Apt 9"],
                "city": "Cambridge",
                "district": "Middlesex",
                "state": "MA",
                "postalCode": "02139",
                "country": "US",
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                        "extension": [
                            {"url": "latitude", "valueDecimal": 42.3736},
                            {"url": "longitude", "valueDecimal": -71.1097},
                        ],
                    }
                ],
            },
            {
                "use": "old",
                "text": "12 Elm Street, Walpole NH 03601",
                "line": ["12 Elm Street"],
                "city": "Walpole",
                "state": "NH",
                "postalCode": "03601",
                "country": "US",
            },
        ],
        "photo": [{"contentType": "image/jpeg", "data": "RkFDRVBIT1RPREFUQQ=="}],
        "contact": [
            {
                "relationship": [{"coding": [{"system": V2_0203, "code": "N"}]}],
                "name": {"family": "Zebulon-Marsh", "given": ["Bartholomew"]},
                "telecom": [{"system": "phone", "value": "617-555-0177"}],
            }
        ],
        "generalPractitioner": [_ref("Practitioner/prac-91c2", "Dr. Gregor Hollowell")],
        **extra,
    }


def compartment(patient_id: str = PATIENT_ID) -> list[dict]:
    subject = _ref(f"Patient/{patient_id}", "Quintessa Zebulon-Marsh")
    return [
        patient(patient_id),
        {
            "resourceType": "Encounter",
            "id": "enc-5512",
            "identifier": [
                {
                    "type": _typed("AN"),
                    "system": "https://hospital.example.org/account",
                    "value": "ACCT-445566",
                }
            ],
            "status": "finished",
            "class": {"system": V3_ACT, "code": "IMP"},
            "subject": subject,
            "participant": [{"individual": _ref("Practitioner/prac-91c2", "Dr. Gregor Hollowell")}],
            "period": {"start": "2020-03-01T08:15:00-05:00", "end": "2020-03-03T12:45:30-05:00"},
            "serviceProvider": _ref("Organization/org-1", "Cambridge Small Clinic"),
        },
        {
            "resourceType": "Observation",
            "id": "obs-a1",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "718-7", "display": "Hemoglobin"}]},
            "subject": subject,
            "encounter": _ref("Encounter/enc-5512"),
            "effectiveDateTime": "2020-03-01T09:00:00-05:00",
            "issued": "2020-03-01T09:30:00.250-05:00",
            "performer": [_ref("Practitioner/prac-91c2")],
            "valueQuantity": {
                "value": 13.2,
                "unit": "g/dL",
                "system": "http://unitsofmeasure.org",
                "code": "g/dL",
            },
            "note": [
                {
                    "authorString": "Nurse Wilhelmina Crabtree",
                    "time": "2020-03-01T09:35:00-05:00",
                    "text": NOTE,
                }
            ],
        },
        {
            "resourceType": "Observation",
            "id": "obs-b2",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "72166-2"}], "text": "Smoking status"},
            "subject": subject,
            "effectiveDateTime": "2020-03-15T10:30:00-05:00",
            "valueString": "Follow-up with Dr. Hollowell at 42 Wallaby Way, Cambridge MA 02139",
        },
        {
            "resourceType": "Condition",
            "id": "cond-77",
            "code": {"coding": [{"system": SNOMED, "code": "44054006", "display": "Diabetes"}]},
            "subject": subject,
            "onsetDateTime": "2019-11-20",
            "recordedDate": "2019-11-21",
        },
        {
            "resourceType": "Practitioner",
            "id": "prac-91c2",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
            "name": [{"family": "Hollowell", "given": ["Gregor"], "prefix": ["Dr."]}],
            "telecom": [{"system": "phone", "value": "617-555-0123"}],
            "address": [{"line": ["1 Clinic Road"], "city": "Cambridge", "state": "MA"}],
            "gender": "male",
            "birthDate": "1970-01-01",
            "qualification": [
                {
                    "identifier": [{"value": "LIC-MA-55321"}],
                    "code": {"text": "MD"},
                    "period": {"start": "1998-06-01"},
                }
            ],
        },
        {
            "resourceType": "Device",
            "id": "dev-3",
            "udiCarrier": [
                {
                    "deviceIdentifier": "00844588003288",
                    "carrierHRF": "(01)00844588003288(21)SN-ABC-123456",
                }
            ],
            "serialNumber": "SN-ABC-123456",
            "lotNumber": "LOT-7788-X",
            "type": {"coding": [{"system": SNOMED, "code": "43252007", "display": "Pump"}]},
            "patient": _ref(f"Patient/{patient_id}"),
        },
        {
            "resourceType": "Media",
            "id": "media-fp",
            "status": "completed",
            "subject": _ref(f"Patient/{patient_id}"),
            "content": {"contentType": "image/png", "data": "RklOR0VSUFJJTlRY"},
        },
        {
            "resourceType": "Coverage",
            "id": "cov-1",
            "status": "active",
            "subscriberId": "SUB-55555",
            "beneficiary": _ref(f"Patient/{patient_id}"),
            "payor": [_ref("Organization/org-1")],
        },
        {
            "resourceType": "DiagnosticReport",
            "id": "dr-1",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "58410-2"}]},
            "subject": subject,
            "effectiveDateTime": "2020-03-01T09:00:00-05:00",
            "result": [_ref("Observation/obs-a1", "Hemoglobin")],
            "conclusion": "Normal. Reviewed by Dr. Hollowell",
            "presentedForm": [{"contentType": "application/pdf", "data": "UkVQT1JUUERG"}],
        },
        {
            "resourceType": "RelatedPerson",
            "id": "rp-1",
            "patient": _ref(f"Patient/{patient_id}"),
            "relationship": [{"coding": [{"system": V2_0203, "code": "N"}]}],
            "name": [{"family": "Zebulon-Marsh", "given": ["Bartholomew"]}],
            "telecom": [{"system": "phone", "value": "617-555-0177"}],
            "birthDate": "1958-02-02",
        },
        {
            "resourceType": "Provenance",
            "id": "prov-1",
            "target": [_ref("Observation/obs-a1")],
            "recorded": "2020-03-01T09:31:00-05:00",
            "agent": [{"who": _ref("Practitioner/prac-91c2")}],
        },
    ]


def deidentify(
    resources: list[dict] | None = None,
    key: bytes = KEY,
    patient_id: str = PATIENT_ID,
    **options: object,
) -> tuple[list[dict], Deidentifier]:
    deidentifier = Deidentifier(key, DeidOptions(as_of=AS_OF, **options))  # type: ignore[arg-type]
    return deidentifier.patient_resources(
        patient_id, resources or compartment(patient_id)
    ), deidentifier


def by_type(resources: list[dict], resource_type: str) -> list[dict]:
    return [r for r in resources if r["resourceType"] == resource_type]


def one(resources: list[dict], resource_type: str) -> dict:
    [found] = by_type(resources, resource_type)
    return found


def text_of(resources: list[dict]) -> str:
    return json.dumps(resources).lower()


def _absent(*needles: str) -> Callable[[list[dict], list[dict]], list[str]]:
    """Each needle is in the input and in no form in the output (case-insensitive)."""

    def check(inputs: list[dict], outputs: list[dict]) -> list[str]:
        assert all(n.lower() in text_of(inputs) for n in needles), "fixture lost a needle"
        return [n for n in needles if n.lower() in text_of(outputs)]

    return check


def _geographic(inputs: list[dict], outputs: list[dict]) -> list[str]:
    problems = _absent(
        "Wallaby",
        "Cambridge",
        "Middlesex",
        "Walpole",
        "Elm Street",
        "02139",
        "03601",
        "42.3736",
        "-71.1097",
    )(inputs, outputs)
    zips = [a.get("postalCode") for a in one(outputs, "Patient")["address"]]
    return problems + ([] if zips == ["021", "000"] else [f"postal codes {zips}"])


def _dates(inputs: list[dict], outputs: list[dict]) -> list[str]:
    problems = _absent(
        "1961-04-17",
        "2020-03-01",
        "2020-03-03",
        "2020-03-15",
        "2019-11-20",
        "1958-02-02",
        "1998-06-01",
        "03/01/2020",
    )(inputs, outputs)
    birth = one(outputs, "Patient").get("birthDate")
    return problems + ([] if birth not in (None, "1961-04-17") else ["birthDate kept"])


def _photos(inputs: list[dict], outputs: list[dict]) -> list[str]:
    problems = _absent("RkFDRVBIT1RPREFUQQ==", "UkVQT1JUUERG")(inputs, outputs)
    return problems + (["photo element"] if "photo" in one(outputs, "Patient") else [])


def _other_ids(inputs: list[dict], outputs: list[dict]) -> list[str]:
    ids = [r["id"] for r in inputs]
    return _absent(*ids)(inputs, outputs)


# The 18 identifiers of 45 CFR 164.514(b)(2)(i), in order.
SAFE_HARBOR_CHECKS: list[tuple[str, Callable[[list[dict], list[dict]], list[str]]]] = [
    (
        "A names",
        _absent(
            "Quintessa",
            "Zebulon",
            "Ravenna",
            "Ophelia",
            "Brightwater",
            "Bartholomew",
            "Gregor",
            "Hollowell",
            "Wilhelmina",
            "Crabtree",
            "Small Clinic",
        ),
    ),
    ("B geographic subdivisions smaller than a state", _geographic),
    ("C dates except year", _dates),
    ("D telephone numbers", _absent("617-555-0142", "617-555-0177", "617-555-0123")),
    ("E fax numbers", _absent("617-555-0199")),
    ("F email addresses", _absent("quintessa.zm@example.org")),
    ("G social security numbers", _absent("123-45-6789")),
    ("H medical record numbers", _absent("MRN-778899", "778899")),
    ("I health plan beneficiary numbers", _absent("HP-99887766", "SUB-55555")),
    ("J account numbers", _absent("ACCT-445566")),
    ("K certificate and license numbers", _absent("S12345678", "1234567893", "LIC-MA-55321")),
    ("L vehicle identifiers", _absent("1HGCM82633A004352")),
    (
        "M device identifiers and serial numbers",
        _absent("SN-ABC-123456", "LOT-7788-X", "00844588003288"),
    ),
    ("N web URLs", _absent("quintessa-zm.example.org", "portal.example.org", "ehr.example.org")),
    ("O IP addresses", _absent("203.0.113.7")),
    ("P biometric identifiers", _absent("RklOR0VSUFJJTlRY")),
    ("Q full-face photographs", _photos),
    ("R other unique identifying numbers", _other_ids),
]


@pytest.mark.parametrize("mode", ["shift", "year"])
@pytest.mark.parametrize(
    "check", [c for _, c in SAFE_HARBOR_CHECKS], ids=[n for n, _ in SAFE_HARBOR_CHECKS]
)
def test_safe_harbor_identifier_is_gone(check: Callable, mode: str) -> None:
    inputs = compartment()
    outputs, _ = deidentify(inputs, date_mode=mode)
    assert check(inputs, outputs) == []


def test_there_are_eighteen_checks_one_per_category() -> None:
    assert len(SAFE_HARBOR_CHECKS) == 18 == len(Category)
    assert [name[0] for name, _ in SAFE_HARBOR_CHECKS] == list("ABCDEFGHIJKLMNOPQR")


def test_identifying_types_are_dropped_and_clinical_types_kept() -> None:
    outputs, deidentifier = deidentify()
    kept = sorted(r["resourceType"] for r in outputs)
    assert kept == sorted(
        [
            "Patient",
            "Encounter",
            "Observation",
            "Observation",
            "Condition",
            "Practitioner",
            "Device",
            "DiagnosticReport",
            "RelatedPerson",
        ]
    )
    report = deidentifier.report()
    assert dict(report.resources_dropped) == {"Coverage": 1, "Media": 1, "Provenance": 1}
    assert (report.resources_in, report.resources_out, report.patients) == (12, 9, 1)
    assert "presentedForm" not in one(outputs, "DiagnosticReport")


def test_report_counts_each_category_found() -> None:
    _, deidentifier = deidentify()
    report = deidentifier.report()
    removed = report.identifiers_removed
    assert set(removed) == {c.value for c in Category}
    for category in Category:
        if category is not Category.BIOMETRIC:  # the biometric Media is dropped whole
            assert removed[category.value] > 0, category
    assert report.narratives_dropped == 1
    assert report.free_text_scrubbed >= 3  # the note, valueString, conclusion
    assert report.dates_shifted > 0 and report.dates_generalized == 0
    assert report.attachments_removed == 2
    # the report holds counts and type names only
    assert "quintessa" not in repr(report).lower() and "pat-7f3a" not in repr(report)


def test_reduced_types_keep_only_non_identifying_elements() -> None:
    outputs, _ = deidentify()
    practitioner = one(outputs, "Practitioner")
    assert set(practitioner) == {"resourceType", "id", "meta", "gender", "qualification"}
    assert practitioner["qualification"] == [{"code": {"text": "MD"}}]
    related = one(outputs, "RelatedPerson")
    assert set(related) == {"resourceType", "id", "meta", "patient", "relationship"}
    device = one(outputs, "Device")
    assert not {"serialNumber", "lotNumber", "udiCarrier"} & set(device)


def test_references_point_at_the_pseudonymized_resources() -> None:
    outputs, deidentifier = deidentify()
    patient_id = one(outputs, "Patient")["id"]
    encounter = one(outputs, "Encounter")
    practitioner = one(outputs, "Practitioner")
    assert patient_id == deidentifier.pseudonym("id", PATIENT_ID) != PATIENT_ID
    for observation in by_type(outputs, "Observation"):
        assert observation["subject"] == {"reference": f"Patient/{patient_id}"}  # display gone
    first = next(o for o in by_type(outputs, "Observation") if "encounter" in o)
    assert first["encounter"]["reference"] == f"Encounter/{encounter['id']}"
    assert first["performer"][0]["reference"] == f"Practitioner/{practitioner['id']}"
    report = one(outputs, "DiagnosticReport")
    assert report["result"][0] == {
        "reference": f"Observation/{first['id']}",
        "display": "Hemoglobin",
    }
    assert encounter["serviceProvider"] == {
        "reference": f"Organization/{deidentifier.pseudonym('id', 'org-1')}"
    }


def test_urn_uuid_references_resolve_within_the_compartment() -> None:
    patient_uuid = "6c4b1a3e-55e1-4f7e-9d0e-2f7a1c9b8d10"
    practitioner_uuid = "0b7e9a52-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
    resources = [
        {"resourceType": "Patient", "id": patient_uuid, "gender": "male"},
        {
            "resourceType": "Encounter",
            "id": "1d2e3f4a-5b6c-4d7e-8f90-a1b2c3d4e5f6",
            "status": "finished",
            "class": {"system": V3_ACT, "code": "AMB"},
            "subject": {"reference": f"urn:uuid:{patient_uuid}"},
            "participant": [{"individual": {"reference": f"urn:uuid:{practitioner_uuid}"}}],
        },
    ]
    outputs, deidentifier = deidentify(resources, patient_id=patient_uuid)
    encounter = one(outputs, "Encounter")
    pseudo = deidentifier.pseudonym("id", patient_uuid)
    assert encounter["subject"] == {"reference": f"Patient/{pseudo}"}
    # not in the compartment, so its type is unknown: still the same pseudonym, as a urn:uuid
    practitioner = deidentifier.pseudonym("id", practitioner_uuid)
    assert encounter["participant"][0]["individual"] == {"reference": f"urn:uuid:{practitioner}"}
    assert all(structural_errors(r) == [] for r in outputs)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_shift_mode_preserves_intervals_precision_and_time_zone() -> None:
    inputs = compartment()
    outputs, deidentifier = deidentify(inputs)
    days = deidentifier.date_shift_days(PATIENT_ID)
    assert days != 0 and -365 <= days <= 365
    source_encounter, encounter = one(inputs, "Encounter"), one(outputs, "Encounter")
    length = _instant(encounter["period"]["end"]) - _instant(encounter["period"]["start"])
    source_length = _instant(source_encounter["period"]["end"]) - _instant(
        source_encounter["period"]["start"]
    )
    assert length == source_length
    assert encounter["period"]["start"].endswith("T08:15:00-05:00")  # time and zone kept
    first, second = (o["effectiveDateTime"] for o in by_type(outputs, "Observation"))
    assert _instant(second) - _instant(first) == _instant("2020-03-15T10:30:00-05:00") - _instant(
        "2020-03-01T09:00:00-05:00"
    )
    # one offset for every resource of the patient, dates and dateTimes alike
    shifted = {
        one(outputs, "Patient")["birthDate"]: "1961-04-17",
        one(outputs, "Condition")["onsetDateTime"]: "2019-11-20",
        encounter["period"]["start"][:10]: "2020-03-01",
    }
    for new, old in shifted.items():
        assert (date.fromisoformat(new[:10]) - date.fromisoformat(old)).days == days


def test_observation_instant_keeps_its_precision_when_shifted() -> None:
    outputs, deidentifier = deidentify()
    observation = next(o for o in by_type(outputs, "Observation") if "issued" in o)
    days = deidentifier.date_shift_days(PATIENT_ID)
    assert observation["issued"][10:] == "T09:30:00.250-05:00"
    assert (date.fromisoformat(observation["issued"][:10]) - date(2020, 3, 1)).days == days


def test_shift_differs_between_patients_and_is_stable() -> None:
    deidentifier = Deidentifier(KEY)
    shifts = [deidentifier.date_shift_days(f"patient-{n}") for n in range(12)]
    assert len(set(shifts)) > 1  # all equal has probability 730**-11
    assert all(s != 0 and -365 <= s <= 365 for s in shifts)
    assert shifts == [Deidentifier(KEY).date_shift_days(f"patient-{n}") for n in range(12)]
    other = [Deidentifier(OTHER_KEY).date_shift_days(f"patient-{n}") for n in range(12)]
    assert other != shifts


def test_two_patients_get_different_offsets_in_their_exports() -> None:
    deidentifier = Deidentifier(KEY, DeidOptions(as_of=AS_OF))
    births = []
    for patient_id in [f"pat-{n}" for n in range(6)]:
        out = deidentifier.patient_resources(patient_id, [patient(patient_id)])
        births.append(one(out, "Patient")["birthDate"])
    assert len(set(births)) > 1  # the same birth date lands on different days


@settings(max_examples=200, deadline=None)
@given(patient_id=st.text(min_size=1, max_size=40), max_days=st.integers(1, 3650))
def test_shift_is_within_bounds_and_never_zero(patient_id: str, max_days: int) -> None:
    days = Deidentifier(KEY, DeidOptions(max_shift_days=max_days)).date_shift_days(patient_id)
    assert days != 0 and -max_days <= days <= max_days


def test_shift_days_covers_both_signs_uniformly_enough() -> None:
    draws = [shift_days(n.to_bytes(8, "big"), 2) for n in range(8)]
    assert sorted(set(draws)) == [-2, -1, 1, 2]


def test_partial_dates_keep_their_precision() -> None:
    assert DateRule("shift", 10).apply("2011") == "2011"
    assert DateRule("shift", 200).apply("2011") == "2012"
    assert DateRule("shift", -200).apply("2011") == "2010"
    assert DateRule("shift", 20).apply("2011-11") == "2011-12"
    assert DateRule("shift", 1).apply("2011-12-31T23:59:59.123+14:00") == (
        "2012-01-01T23:59:59.123+14:00"
    )
    assert DateRule("shift", 1).apply("2000-02-28") == "2000-02-29"
    assert DateRule("year").apply("2011-11-14T03:43:05+00:00") == "2011"


def test_year_mode_reduces_every_date_to_the_year() -> None:
    outputs, deidentifier = deidentify(date_mode="year")
    assert one(outputs, "Patient")["birthDate"] == "1961"
    assert one(outputs, "Encounter")["period"] == {"start": "2020", "end": "2020"}
    assert [o["effectiveDateTime"] for o in by_type(outputs, "Observation")] == ["2020", "2020"]
    assert all("issued" not in o for o in by_type(outputs, "Observation"))  # optional instant
    assert one(outputs, "Condition")["onsetDateTime"] == "2019"
    found = re.findall(r'"(\d{4}-\d{2}[^"]*)"', json.dumps(outputs))
    assert found == []
    assert deidentifier.report().dates_generalized > 0


def test_year_mode_moves_an_instant_choice_to_its_datetime_form() -> None:
    observation = {
        "resourceType": "Observation",
        "id": "o-instant",
        "status": "final",
        "code": {"text": "Steps"},
        "subject": {"reference": "Patient/p1"},
        "effectiveInstant": "2021-07-04T12:00:00Z",
    }
    outputs, _ = deidentify([observation], patient_id="p1", date_mode="year")
    assert "effectiveInstant" not in outputs[0]
    assert outputs[0]["effectiveDateTime"] == "2021"
    assert structural_errors(outputs[0]) == []


@pytest.mark.parametrize(
    ("birth", "deceased", "as_of", "banded"),
    [
        ("1935-06-15", None, date(2025, 6, 15), True),  # 90 today
        ("1935-06-16", None, date(2025, 6, 15), False),  # 89, 90 tomorrow
        ("1936-02-29", None, date(2026, 2, 28), False),  # leap-day birthday not yet reached
        ("1936-02-29", None, date(2026, 3, 1), True),
        ("1935", None, date(2025, 6, 15), True),  # may be 90: the earliest birth counts
        ("1936", None, date(2025, 6, 15), False),
        ("1935-07", None, date(2025, 6, 30), False),
        ("1920-01-01", "2005-06-01T10:00:00Z", date(2025, 6, 15), False),  # died at 85
        ("1915-01-01", "2005-06-01T10:00:00Z", date(2025, 6, 15), True),  # died at 90
    ],
)
@pytest.mark.parametrize("mode", ["shift", "year"])
def test_age_over_89_is_banded(
    birth: str, deceased: str | None, as_of: date, banded: bool, mode: str
) -> None:
    extra = {"deceasedDateTime": deceased} if deceased else {}
    source = patient(birth=birth, **extra)
    deidentifier = Deidentifier(KEY, DeidOptions(date_mode=mode, as_of=as_of))
    out = one(deidentifier.patient_resources(PATIENT_ID, [source]), "Patient")
    bands = [e for e in out.get("extension", []) if e["url"] == AGE_BAND_URL]
    if banded:
        assert "birthDate" not in out
        assert bands == [{"url": AGE_BAND_URL, "valueString": "90+"}]
        assert deidentifier.report().age_banded == 1
    else:
        assert "birthDate" in out
        if len(birth) == 10:
            assert out["birthDate"] == birth[:4] if mode == "year" else out["birthDate"] != birth
        assert bands == []
    assert structural_errors(out) == []
    if deceased:
        assert out["deceasedDateTime"] != deceased


def test_age_arithmetic_around_birthdays() -> None:
    assert age_in_years(date(1935, 6, 15), date(2025, 6, 14)) == 89
    assert age_in_years(date(1935, 6, 15), date(2025, 6, 15)) == 90
    assert age_in_years(date(2000, 2, 29), date(2001, 2, 28)) == 0
    assert age_in_years(date(2000, 2, 29), date(2001, 3, 1)) == 1
    assert is_ninety_or_older("not a date", date(2025, 1, 1))  # unknown: assume the worst


def test_age_values_over_89_are_capped() -> None:
    condition = {
        "resourceType": "Condition",
        "id": "c-age",
        "subject": {"reference": "Patient/p1"},
        "code": {"text": "Fall"},
        "onsetAge": {
            "value": 93,
            "unit": "years",
            "system": "http://unitsofmeasure.org",
            "code": "a",
        },
    }
    young = copy.deepcopy(condition) | {"id": "c-young"}
    young["onsetAge"] = {
        "value": 89,
        "unit": "years",
        "system": "http://unitsofmeasure.org",
        "code": "a",
    }
    outputs, _ = deidentify([condition, young], patient_id="p1")
    old_out, young_out = outputs
    assert old_out["onsetAge"]["value"] == 90 and old_out["onsetAge"]["comparator"] == ">="
    assert young_out["onsetAge"]["value"] == 89
    assert all(structural_errors(r) == [] for r in outputs)


@pytest.mark.parametrize("zip3", sorted(RESTRICTED_ZIP3))
def test_restricted_zip3_becomes_000(zip3: str) -> None:
    assert generalize_postal_code(f"{zip3}42", "US") == "000"


@pytest.mark.parametrize(
    ("postal_code", "country", "expected"),
    [
        ("02139", "US", "021"),
        ("02139-4307", None, "021"),
        ("021394307", "USA", "021"),
        ("03601", "US", "000"),
        ("SW1A 1AA", "GB", None),
        ("02139", "DE", None),
        ("0213", "US", None),
    ],
)
def test_postal_codes(postal_code: str, country: str | None, expected: str | None) -> None:
    assert generalize_postal_code(postal_code, country) == expected
    assert len(RESTRICTED_ZIP3) == 17


def test_state_is_dropped_when_not_kept() -> None:
    outputs, _ = deidentify(keep_state=False)
    addresses = one(outputs, "Patient")["address"]
    assert all("state" not in a for a in addresses)
    outputs, _ = deidentify()
    assert [a["state"] for a in one(outputs, "Patient")["address"]] == ["MA", "NH"]


def test_meta_is_labelled_and_store_metadata_removed() -> None:
    outputs, _ = deidentify()
    for resource in outputs:
        meta = resource["meta"]
        assert not {"versionId", "lastUpdated", "source"} & set(meta)
        codes = {(s["system"], s["code"]) for s in meta["security"]}
        system = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
        assert {(system, "PSEUDED"), (system, "REDACTED")} <= codes
        assert "text" not in resource


def test_patient_extensions_are_allowlisted() -> None:
    outputs, _ = deidentify()
    urls = [e["url"] for e in one(outputs, "Patient")["extension"]]
    assert urls == ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"]


def test_free_text_is_scrubbed_with_tags() -> None:
    outputs, _ = deidentify()
    note = next(o for o in by_type(outputs, "Observation") if "note" in o)["note"][0]
    assert "authorString" not in note
    for tag in ("[NAME]", "[DATE]", "[PHONE]", "[EMAIL]", "[VIN]", "[URL]", "[IP]", "[SSN]"):
        assert tag in note["text"], tag
    follow_up = next(o for o in by_type(outputs, "Observation") if "valueString" in o)
    assert follow_up["valueString"] == "Follow-up with Dr. [NAME] at [ADDRESS], [LOCATION] MA [ZIP]"
    assert one(outputs, "DiagnosticReport")["conclusion"] == "Normal. Reviewed by Dr. [NAME]"
    # standard terminology displays are kept as they are
    condition = one(outputs, "Condition")
    assert condition["code"]["coding"][0]["display"] == "Diabetes"


@pytest.mark.parametrize("mode", ["shift", "year"])
def test_outputs_are_valid_r4(mode: str) -> None:
    inputs = compartment()
    assert all(structural_errors(r) == [] for r in inputs)  # a valid input to begin with
    outputs, _ = deidentify(inputs, date_mode=mode)
    for resource in outputs:
        assert structural_errors(resource) == [], resource["resourceType"]


def test_inputs_are_not_mutated() -> None:
    inputs = compartment()
    before = copy.deepcopy(inputs)
    outputs, _ = deidentify(inputs)
    assert inputs == before
    # and the output shares no mutable object with the input
    outputs[0]["address"][0]["state"] = "XX"
    outputs[0]["meta"]["security"].clear()
    assert inputs == before


def test_pseudonyms_are_stable_under_one_key_and_differ_under_another() -> None:
    first, _ = deidentify()
    again, _ = deidentify()
    assert first == again
    other, _ = deidentify(key=OTHER_KEY)
    assert {r["id"] for r in first}.isdisjoint({r["id"] for r in other})
    deidentifier = Deidentifier(KEY)
    assert deidentifier.pseudonym("id", "x") == Deidentifier(KEY).pseudonym("id", "x")
    assert deidentifier.pseudonym("id", "x") != deidentifier.pseudonym("contained", "x")
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        deidentifier.pseudonym("id", "x"),
    )


def test_contained_resources_and_local_references() -> None:
    request = {
        "resourceType": "MedicationRequest",
        "id": "mr-1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med1",
                "code": {"text": "Metformin 500 mg"},
                "batch": {"lotNumber": "LOT-1", "expirationDate": "2026-01-01"},
            },
            {"resourceType": "Person", "id": "someone", "name": [{"family": "Quill"}]},
        ],
        "medicationReference": {"reference": "#med1"},
        "requester": {"reference": "#someone", "display": "Quill"},
    }
    outputs, deidentifier = deidentify([request], patient_id="p1")
    [out] = outputs
    [medication] = out["contained"]
    assert medication == {
        "resourceType": "Medication",
        "id": deidentifier.pseudonym("contained", "med1"),
        "code": {"text": "Metformin 500 mg"},
    }
    assert out["medicationReference"] == {"reference": f"#{medication['id']}"}
    assert "requester" not in out  # its target (a Person) was dropped, and its display is a name
    assert "quill" not in text_of(outputs)
    assert structural_errors(out) == []


def test_rejects_bad_keys_and_inputs_without_echoing_them() -> None:
    secret = b"short-secret-key"
    with pytest.raises(ValueError) as error:
        Deidentifier(secret)
    assert "short-secret" not in str(error.value)
    with pytest.raises(ValueError) as error:
        Deidentifier(KEY).patient_resources("p1", [{"name": "Quintessa"}])  # type: ignore[list-item]
    assert "Quintessa" not in str(error.value) and "item 0" in str(error.value)
    with pytest.raises(ValueError):
        DeidOptions(date_mode="month")
    with pytest.raises(ValueError):
        DeidOptions(max_shift_days=0)


def own_ids(resources: list[dict], suffix: str) -> list[dict]:
    """The compartment with its clinical ids made unique to one patient (shared ones kept)."""
    text = json.dumps(resources)
    for resource in resources:
        if resource["resourceType"] not in ("Patient", "Practitioner"):
            text = text.replace(f'{resource["id"]}"', f'{resource["id"]}-{suffix}"')
    return json.loads(text)


def test_export_ndjson_writes_one_file_per_type(tmp_path: Path) -> None:
    deidentifier = Deidentifier(KEY, DeidOptions(as_of=AS_OF))
    exported: list[dict] = []
    practitioners = []
    for patient_id in ("pat-1", "pat-2"):
        out = deidentifier.patient_resources(
            patient_id, own_ids(compartment(patient_id), patient_id)
        )
        practitioners.append(one(out, "Practitioner"))
        exported += out
    counts = export_ndjson(exported, tmp_path / "out")
    # the Practitioner appears in both compartments, identical, and is written once
    assert practitioners[0] == practitioners[1]
    assert counts == {
        "Condition": 2,
        "Device": 2,
        "DiagnosticReport": 2,
        "Encounter": 2,
        "Observation": 4,
        "Patient": 2,
        "Practitioner": 1,
        "RelatedPerson": 2,
    }
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [f"{t}.ndjson" for t in counts]
    patients = [
        json.loads(line) for line in (tmp_path / "out/Patient.ndjson").read_text().splitlines()
    ]
    assert {p["id"] for p in patients} == {
        deidentifier.pseudonym("id", "pat-1"),
        deidentifier.pseudonym("id", "pat-2"),
    }


def test_export_ndjson_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    outputs, _ = deidentify()

    def failing() -> object:
        yield from outputs[:3]
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        export_ndjson(failing(), tmp_path)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError) as error:
        export_ndjson([{"resourceType": "../../etc/passwd"}], tmp_path)
    assert "passwd" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_store_compartment_with_the_service_key(store: ResourceStore) -> None:
    """End to end on both backends: the access layer's inputs are the store's current resources
    (with meta stamped on read) and the store's pseudonym service key."""
    resources = [r for r in compartment() if r["resourceType"] not in ("Practitioner",)]
    with store.transaction() as tx:
        tx.put_resources(resources)
    key = store.service_key("pseudonym")
    assert key == store.service_key("pseudonym") and len(key) == 32
    stored = list(store.patient_resources(PATIENT_ID))
    assert {r["resourceType"] for r in stored} >= {"Patient", "Observation", "Encounter"}
    assert any("versionId" in r.get("meta", {}) for r in stored)
    outputs = Deidentifier(key, DeidOptions(as_of=AS_OF)).patient_resources(PATIENT_ID, stored)
    assert all(not {"versionId", "lastUpdated"} & set(r["meta"]) for r in outputs)
    needles = (
        "Quintessa",
        "1961-04-17",
        "617-555-0142",
        "quintessa.zm@example.org",
        "123-45-6789",
        "MRN-778899",
        "ACCT-445566",
        "SN-ABC-123456",
        PATIENT_ID,
    )
    assert _absent(*needles)(stored, outputs) == []
    again = Deidentifier(store.service_key("pseudonym")).pseudonym("id", PATIENT_ID)
    assert one(outputs, "Patient")["id"] == again


# --- the text scrubber ------------------------------------------------------------------------

EMAIL_SHAPE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}")
PHONE_SHAPE = re.compile(r"\(?\d{3}\)?[-.\s]?\d{3}[-.\s]\d{4}")

_pieces = st.sampled_from(
    [
        "617-555-0142",
        "(617) 555 0142",
        "123-45-6789",
        "a.b@c.org",
        "x@y.io",
        "@",
        "-",
        ".",
        " ",
        "(",
        ")",
        "Dr. ",
        "March 3, 2020",
        "12/31/1999",
        "http://",
        "www.",
        "MRN: ",
        "1",
        "22",
        "333",
        "4444",
        "Zeb",
        "\u0663",
        "\u2003",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.lists(st.one_of(_pieces, st.text(max_size=5)), max_size=30).map("".join),
    ),
    names=st.lists(st.text(min_size=1, max_size=12), max_size=4),
)
def test_scrubber_never_crashes_nor_leaves_email_ssn_or_phone(text: str, names: list[str]) -> None:
    known = KnownTerms.of((name, "NAME") for name in names)
    result = scrub(text, known)
    assert isinstance(result.text, str)
    assert EMAIL_SHAPE.search(result.text) is None
    assert SSN_SHAPE.search(result.text) is None
    assert PHONE_SHAPE.search(result.text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seen 2020-03-01T10:00:00Z and 3/1/20", "seen [DATE] and [DATE]"),
        ("on March 3rd, 2020 then 4 Apr 2021 then Dec 2019", "on [DATE] then [DATE] then [DATE]"),
        ("lives at 1015 Kuhic Lodge Apt 76, MA 02108", "lives at [ADDRESS], MA [ZIP]"),
        ("PO Box 1234", "[ADDRESS]"),
        ("ZIP 02139-4307", "ZIP [ZIP]"),
        ("MRN: A1234567 and acct #778899", "MRN: [ID] and acct #[ID]"),
        ("host 10.0.0.1 or fe80:0:0:0:202:b3ff:fe1e:8329", "host [IP] or [IP]"),
        ("BP 120/80, HR 72, glucose 110 mg/dL", "BP 120/80, HR 72, glucose 110 mg/dL"),
        ("Hemoglobin A1c 7.5 %", "Hemoglobin A1c 7.5 %"),
    ],
)
def test_scrubber_patterns(text: str, expected: str) -> None:
    assert scrub(text).text == expected


def test_known_terms_are_whole_words_and_case_insensitive() -> None:
    known = KnownTerms.of([("Rice", "NAME"), ("a39449f8-f68c", "ID"), ("J", "NAME")])
    result = scrub("RICE ate rice; Varicella; id a39449f8-f68c; J. Doe", known)
    assert result.text == "[NAME] ate [NAME]; Varicella; id [ID]; J. Doe"
    assert result.tags["NAME"] == 2 and result.tags["ID"] == 1


@pytest.mark.parametrize(
    ("reference", "expected_type", "kept"),
    [
        ("Patient/123", "Patient", True),
        ("https://ehr.example.org/fhir/Patient/123/_history/2", "Patient", True),
        ("Patient?identifier=https://hospital.example.org/mrn|MRN-778899", None, False),
        ("urn:oid:2.16.840.1.113883.19.5", None, False),
        ("#missing", None, False),
        ("#", None, True),
    ],
)
def test_reference_forms(reference: str, expected_type: str | None, kept: bool) -> None:
    pseudonyms = Pseudonymizer(KEY)
    new, target_type = pseudonyms.reference(reference, {}, {})
    assert target_type == expected_type
    assert (new is not None) == kept
    if expected_type == "Patient":
        assert new == f"Patient/{pseudonyms.resource_id('123')}"  # the base URL is gone


def test_a_required_instant_in_year_mode_is_january_first() -> None:
    assert year_instant("2021-07-04T12:00:00.5+02:00") == "2021-01-01T00:00:00Z"


def test_extensions_on_primitives_follow_their_values() -> None:
    source = patient(birth="1970-05-05")
    source["_birthDate"] = {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "1970-05-05T04:30:00-05:00",
            }
        ]
    }
    shifted, deidentifier = deidentify([source])
    [out] = shifted
    days = deidentifier.date_shift_days(PATIENT_ID)
    birth_time = out["_birthDate"]["extension"][0]["valueDateTime"]
    assert (date.fromisoformat(birth_time[:10]) - date(1970, 5, 5)).days == days
    assert structural_errors(out) == []
    old = patient(birth="1920-05-05") | {"_birthDate": source["_birthDate"]}
    [banded], _ = deidentify([old])
    assert "birthDate" not in banded and "_birthDate" not in banded  # no birth time either
    assert "04:30" not in json.dumps(banded)
