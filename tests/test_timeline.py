"""The patient timeline: built from FHIR R4 dicts, queried the way features and rules query it."""

from __future__ import annotations

import json
import os
import tarfile
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.fhir.codes import (
    BLOOD_PRESSURE_PANEL,
    BODY_HEIGHT,
    BODY_WEIGHT,
    DIASTOLIC_BP,
    HEART_RATE,
    LACTATE,
    LOINC,
    RXNORM,
    SNOMED,
    SYSTOLIC_BP,
    UCUM,
)
from careloop.timeline import (
    Coding,
    ConditionEntry,
    EncounterEntry,
    MedicationEntry,
    ObservationPoint,
    PatientTimeline,
    TimelineError,
    build_timeline,
    parse_fhir_date,
    parse_fhir_datetime,
)
from samples import VITAL_SIGNS_CATEGORY

PATIENT_ID = "7f1c2b9e-4d8a-4b1e-9c57-1a2f3e4d5c6b"
SUBJECT = {"reference": f"Patient/{PATIENT_ID}"}
LOCAL_HR_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679"  # an EHR's own flowsheet codes
T = TypeVar("T")
SEPSIS = "91302008"
TYPE_2_DIABETES = "44054006"
HYPERTENSION = "38341003"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def vital(
    resource_id: str,
    code: str,
    value: float,
    unit: str,
    effective: str,
    **extra: Any,
) -> dict[str, Any]:
    """A vital-signs Observation shaped as an EHR exports it."""
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "final",
        "category": [VITAL_SIGNS_CATEGORY],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": SUBJECT,
        "effectiveDateTime": effective,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        **extra,
    }


BLOOD_PRESSURE = {
    "resourceType": "Observation",
    "id": "bp-1",
    "status": "final",
    "code": {
        "coding": [
            {"system": LOINC, "code": BLOOD_PRESSURE_PANEL, "display": "Blood pressure panel"}
        ],
        "text": "Blood pressure",
    },
    "subject": SUBJECT,
    "encounter": {"reference": "Encounter/enc-ed"},
    "effectiveDateTime": "2024-03-01T08:15:00+01:00",
    "component": [
        {
            "code": {"coding": [{"system": LOINC, "code": SYSTOLIC_BP, "display": "Systolic"}]},
            "valueQuantity": {"value": 88, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": LOINC, "code": DIASTOLIC_BP, "display": "Diastolic"}]},
            "valueQuantity": {"value": 52, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"},
        },
    ],
}

PATIENT = {
    "resourceType": "Patient",
    "id": PATIENT_ID,
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "999-45-1234"}],
    "name": [{"family": "Lind", "given": ["Maren"]}],
    "gender": "female",
    "birthDate": "1958-03-01",
}


def condition(
    resource_id: str,
    code: str,
    display: str,
    clinical: str,
    onset: str | None,
    abatement: str | None = None,
    verification: str = "confirmed",
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": resource_id,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": clinical,
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": verification,
                }
            ]
        },
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
        "subject": SUBJECT,
    }
    if onset:
        resource["onsetDateTime"] = onset
    if abatement:
        resource["abatementDateTime"] = abatement
    return resource


def medication_request(
    resource_id: str, rxnorm: str, display: str, status: str, authored: str, **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": resource_id,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": rxnorm, "display": display}],
            "text": display,
        },
        "subject": SUBJECT,
        "authoredOn": authored,
        **extra,
    }


def allergy(resource_id: str, clinical: str, verification: str) -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "id": resource_id,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": clinical,
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "code": verification,
                }
            ]
        },
        "type": "allergy",
        "category": ["medication"],
        "criticality": "high",
        "code": {
            "coding": [{"system": RXNORM, "code": "7980", "display": "Penicillin G"}],
            "text": "Penicillin",
        },
        "patient": SUBJECT,
        "reaction": [
            {
                "manifestation": [
                    {"coding": [{"system": SNOMED, "code": "39579001", "display": "Anaphylaxis"}]}
                ],
                "description": "Throat swelling within minutes of the first dose",
            }
        ],
    }


def encounter(
    resource_id: str, class_code: str, start: str, end: str | None, status: str = "finished"
) -> dict[str, Any]:
    period = {"start": start} | ({"end": end} if end else {})
    return {
        "resourceType": "Encounter",
        "id": resource_id,
        "status": status,
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": class_code,
        },
        "type": [{"coding": [{"system": SNOMED, "code": "50849002", "display": "Emergency"}]}],
        "subject": SUBJECT,
        "period": period,
    }


def present(found: T | None) -> T:
    assert found is not None
    return found


def timeline_of(*resources: dict[str, Any]) -> PatientTimeline:
    return build_timeline(PATIENT_ID, resources)


# -- observations ------------------------------------------------------------------------------


def test_blood_pressure_panel_expands_into_one_point_per_component() -> None:
    timeline = timeline_of(BLOOD_PRESSURE)

    systolic = timeline.latest(SYSTOLIC_BP)
    diastolic = timeline.latest(DIASTOLIC_BP)

    assert systolic is not None and diastolic is not None
    assert (systolic.value, systolic.unit) == (88.0, "mm[Hg]")
    assert diastolic.value == 52.0
    assert systolic.time == utc(2024, 3, 1, 7, 15)
    assert systolic.source_id == "bp-1"
    assert systolic.encounter_id == "enc-ed"
    assert systolic.display == "Systolic"
    assert timeline.observations(BLOOD_PRESSURE_PANEL) == []


def test_panel_with_its_own_value_is_a_point_too() -> None:
    scored_panel = {
        **BLOOD_PRESSURE,
        "id": "bp-2",
        "valueString": "hypotensive",
    }

    timeline = timeline_of(scored_panel)

    [panel] = timeline.observations(BLOOD_PRESSURE_PANEL)
    assert panel.text_value == "hypotensive"
    assert len(timeline.observations([SYSTOLIC_BP, DIASTOLIC_BP])) == 2


def test_point_is_found_by_every_coding_and_keeps_loinc_as_primary() -> None:
    heart_rate = vital("hr-1", HEART_RATE, 118, "/min", "2024-03-01T09:00:00Z")
    heart_rate["code"] = {
        "coding": [
            {"system": LOCAL_HR_SYSTEM, "code": "8", "display": "Pulse"},
            {"system": LOINC, "code": HEART_RATE, "display": "Heart rate"},
        ]
    }
    timeline = timeline_of(heart_rate)

    by_loinc = timeline.observations(HEART_RATE)
    assert by_loinc == timeline.observations("8")
    assert by_loinc == timeline.observations(f"{LOINC}|{HEART_RATE}")
    assert by_loinc == timeline.observations(f"{LOCAL_HR_SYSTEM}|8")
    assert timeline.observations(f"{SNOMED}|{HEART_RATE}") == []
    assert (by_loinc[0].system, by_loinc[0].code, by_loinc[0].display) == (
        LOINC,
        HEART_RATE,
        "Heart rate",
    )
    assert by_loinc[0].codes == {(LOCAL_HR_SYSTEM, "8"), (LOINC, HEART_RATE)}
    # Asking for both of its codes must not return the point twice.
    assert timeline.observations([HEART_RATE, "8"]) == by_loinc
    assert {"8", HEART_RATE} == timeline.codes_observed()


def test_windows_are_half_open_so_hourly_windows_partition_the_points() -> None:
    timeline = timeline_of(
        vital("hr-0800", HEART_RATE, 90, "/min", "2024-03-01T08:00:00Z"),
        vital("hr-0830", HEART_RATE, 96, "/min", "2024-03-01T08:30:00Z"),
        vital("hr-0900", HEART_RATE, 104, "/min", "2024-03-01T09:00:00Z"),
        vital("hr-1000", HEART_RATE, 112, "/min", "2024-03-01T10:00:00Z"),
    )

    first_hour = timeline.observations(HEART_RATE, utc(2024, 3, 1, 8), utc(2024, 3, 1, 9))
    second_hour = timeline.observations(HEART_RATE, utc(2024, 3, 1, 9), utc(2024, 3, 1, 10))

    assert [point.source_id for point in first_hour] == ["hr-0800", "hr-0830"]
    assert [point.source_id for point in second_hour] == ["hr-0900"]
    assert len(timeline.observations(HEART_RATE, start=utc(2024, 3, 1, 10))) == 1
    assert len(timeline.observations(HEART_RATE, end=utc(2024, 3, 1, 8))) == 0
    assert timeline.observations(HEART_RATE, utc(2024, 3, 1, 10), utc(2024, 3, 1, 8)) == []


def test_latest_includes_a_point_exactly_at_the_moment_asked() -> None:
    timeline = timeline_of(
        vital("lac-1", LACTATE, 4.1, "mmol/L", "2024-03-01T06:00:00Z"),
        vital("lac-2", LACTATE, 2.2, "mmol/L", "2024-03-01T12:00:00Z"),
    )

    assert timeline.latest(LACTATE, utc(2024, 3, 1, 5, 59)) is None
    assert present(timeline.latest(LACTATE, utc(2024, 3, 1, 6))).source_id == "lac-1"
    assert present(timeline.latest(LACTATE, utc(2024, 3, 1, 11, 59))).value == 4.1
    assert present(timeline.latest(LACTATE, utc(2024, 3, 1, 12))).value == 2.2
    assert present(timeline.latest(LACTATE)).value == 2.2
    assert timeline.latest("no-such-code") is None


def test_time_falls_back_from_effective_to_period_instant_and_issued() -> None:
    def hr(resource_id: str, **time_fields: Any) -> dict[str, Any]:
        resource = vital(resource_id, HEART_RATE, 80, "/min", "unused")
        del resource["effectiveDateTime"]
        return resource | time_fields

    timeline = timeline_of(
        hr("by-period", effectivePeriod={"start": "2024-03-01T01:00:00Z"}),
        hr("by-instant", effectiveInstant="2024-03-01T02:00:00.000Z"),
        hr("by-issued", issued="2024-03-01T03:00:00.123456789Z"),
        hr("no-time"),
    )

    points = timeline.observations(HEART_RATE)
    assert [point.source_id for point in points] == ["by-period", "by-instant", "by-issued"]
    assert points[2].time == datetime(2024, 3, 1, 3, 0, 0, 123456, tzinfo=UTC)


def test_coded_string_and_integer_values() -> None:
    def result(resource_id: str, coding: dict[str, str], **value: Any) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": resource_id,
            "status": "final",
            "code": {"coding": [coding]},
            "subject": SUBJECT,
            "effectiveDateTime": "2024-03-01T10:00:00Z",
            **value,
        }

    timeline = timeline_of(
        result(
            "culture-1",
            {"system": LOINC, "code": "600-7", "display": "Blood culture"},
            valueCodeableConcept={
                "coding": [{"system": SNOMED, "code": "10828004", "display": "Positive"}]
            },
        ),
        result("note-1", {"code": "x-note"}, valueString="gram-negative rods"),
        result("gcs-1", {"system": LOINC, "code": "9269-2"}, valueInteger=13),
    )

    culture = present(timeline.latest("600-7"))
    assert (culture.text_value, culture.value) == ("Positive", None)
    assert present(timeline.latest("x-note")).text_value == "gram-negative rods"
    assert timeline.latest("|x-note") is not None  # FHIR token form for "no system"
    assert present(timeline.latest("9269-2")).value == 13.0


def test_entered_in_error_and_cancelled_observations_are_left_out() -> None:
    timeline = timeline_of(
        vital("ok", HEART_RATE, 80, "/min", "2024-03-01T08:00:00Z"),
        vital("oops", HEART_RATE, 800, "/min", "2024-03-01T09:00:00Z", status="entered-in-error"),
        vital("never", HEART_RATE, 81, "/min", "2024-03-01T10:00:00Z", status="cancelled"),
        vital("prelim", HEART_RATE, 82, "/min", "2024-03-01T11:00:00Z", status="preliminary"),
    )

    assert [point.source_id for point in timeline.observations(HEART_RATE)] == ["ok", "prelim"]


# -- dates and times ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019", utc(2019, 1, 1)),
        ("2019-04", utc(2019, 4, 1)),
        ("2019-04-17", utc(2019, 4, 17)),
        ("2019-04-17T10:30:00Z", utc(2019, 4, 17, 10, 30)),
        ("2019-04-17T10:30:00+02:00", utc(2019, 4, 17, 8, 30)),
        ("2019-04-17T01:30:00-05:00", utc(2019, 4, 17, 6, 30)),
        ("2019-04-17T10:30:00", utc(2019, 4, 17, 10, 30)),  # naive: read as UTC
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_fhir_datetimes_parse_to_utc(text: str, expected: datetime) -> None:
    parsed = parse_fhir_datetime(text)

    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["", "19", "2019-13", "2019-02-30", "2019/04/17", "20190417"])
def test_invalid_fhir_datetimes_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fhir_datetime(text)


def test_partial_birth_date_means_first_day() -> None:
    assert parse_fhir_date("1958") == date(1958, 1, 1)
    with pytest.raises(ValueError):
        parse_fhir_date("1958-03-01T00:00:00Z")


def test_unreadable_date_raises_naming_resource_and_field() -> None:
    broken = vital("hr-bad", HEART_RATE, 80, "/min", "yesterday at noon")

    with pytest.raises(TimelineError, match="Observation/hr-bad effectiveDateTime") as caught:
        timeline_of(broken)

    assert (caught.value.resource_type, caught.value.resource_id) == ("Observation", "hr-bad")
    assert caught.value.field_path == "effectiveDateTime"


def test_non_numeric_quantity_raises() -> None:
    broken = vital("hr-text", HEART_RATE, 80, "/min", "2024-03-01T08:00:00Z")
    broken["valueQuantity"]["value"] = "eighty"

    with pytest.raises(TimelineError, match="valueQuantity.value"):
        timeline_of(broken)


# -- conditions --------------------------------------------------------------------------------


def test_active_conditions_follow_status_and_dates() -> None:
    timeline = timeline_of(
        condition("dm", TYPE_2_DIABETES, "Diabetes mellitus type 2", "active", "2011-06"),
        condition(
            "sepsis",
            SEPSIS,
            "Sepsis",
            "resolved",
            "2024-03-01T07:00:00Z",
            abatement="2024-03-09T12:00:00Z",
        ),
        condition("htn-ruled-out", HYPERTENSION, "Hypertension", "active", "2020", None, "refuted"),
        condition("typo", HYPERTENSION, "Hypertension", "active", "2020", None, "entered-in-error"),
    )

    assert [entry.source_id for entry in timeline.conditions] == ["dm", "htn-ruled-out", "sepsis"]
    assert [entry.source_id for entry in timeline.active_conditions()] == ["dm"]
    during_stay = utc(2024, 3, 5)
    assert {entry.source_id for entry in timeline.active_conditions(during_stay)} == {
        "dm",
        "sepsis",
    }
    assert timeline.has_condition(SEPSIS, during_stay)
    assert not timeline.has_condition(SEPSIS, utc(2024, 3, 9, 12))  # abatement is exclusive
    assert not timeline.has_condition(SEPSIS, utc(2024, 3, 1, 6))  # before onset
    assert not timeline.has_condition(SEPSIS)
    assert not timeline.has_condition(HYPERTENSION, during_stay)
    assert timeline.has_condition([f"{SNOMED}|{TYPE_2_DIABETES}", "E11.9"])
    assert not timeline.has_condition(TYPE_2_DIABETES, utc(2011, 5, 31))


def test_resolved_condition_without_date_is_inactive_at_any_time() -> None:
    entry = ConditionEntry(
        codings=(Coding(SNOMED, SEPSIS),), clinical_status="resolved", onset=utc(2020, 1, 1)
    )

    assert not entry.is_active(utc(2020, 6, 1))
    assert not entry.is_active()


def test_condition_without_onset_counts_from_when_it_was_recorded() -> None:
    recorded_only = condition("ckd", "431855005", "CKD stage 1", "active", None)
    recorded_only["recordedDate"] = "2022-01-10"

    timeline = timeline_of(recorded_only)

    assert not timeline.has_condition("431855005", utc(2022, 1, 9))
    assert timeline.has_condition("431855005", utc(2022, 1, 10))


# -- medications -------------------------------------------------------------------------------


def test_active_medications_by_status_and_period() -> None:
    bounded = medication_request(
        "vanco",
        "11124",
        "Vancomycin",
        "completed",
        "2024-03-01T09:00:00Z",
        dosageInstruction=[
            {
                "text": "1 g IV every 12 hours",
                "timing": {
                    "repeat": {
                        "boundsPeriod": {
                            "start": "2024-03-01T10:00:00Z",
                            "end": "2024-03-04T10:00:00Z",
                        }
                    }
                },
            }
        ],
    )
    timeline = timeline_of(
        medication_request("metformin", "860975", "Metformin 500 MG", "active", "2015-06-02"),
        medication_request("ocp", "748879", "Levora 0.15/30", "stopped", "2015-04-23"),
        bounded,
        medication_request("err", "860975", "Metformin 500 MG", "entered-in-error", "2016-01-01"),
    )

    assert [entry.source_id for entry in timeline.medications] == ["ocp", "metformin", "vanco"]
    assert [entry.source_id for entry in timeline.active_medications()] == ["metformin"]
    on_ward = utc(2024, 3, 2)
    assert {entry.source_id for entry in timeline.active_medications(on_ward)} == {
        "metformin",
        "vanco",
    }
    assert not timeline.active_medications(utc(2015, 1, 1))
    vanco = timeline.medications[2]
    assert (vanco.start, vanco.end) == (utc(2024, 3, 1, 10), utc(2024, 3, 4, 10))
    assert vanco.dosage_text == "1 g IV every 12 hours"
    assert vanco.codings == (Coding(RXNORM, "11124", "Vancomycin"),)
    assert not vanco.is_active(utc(2024, 3, 4, 10))


def test_proposals_are_not_therapy() -> None:
    suggestion = medication_request(
        "careloop-proposal", "197361", "Amlodipine 5 MG", "active", "2024-03-02", intent="proposal"
    )

    assert timeline_of(suggestion).active_medications() == []


def test_statement_and_dispense_and_medication_reference() -> None:
    statement = {
        "resourceType": "MedicationStatement",
        "id": "home-aspirin",
        "status": "active",
        "medicationReference": {"reference": "Medication/aspirin-81"},
        "subject": SUBJECT,
        "effectivePeriod": {"start": "2019-05"},
        "dateAsserted": "2024-03-01T08:00:00Z",
        "dosage": [{"text": "81 mg by mouth daily"}],
    }
    dispense = {
        "resourceType": "MedicationDispense",
        "id": "furosemide-fill",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "310429"}]},
        "subject": SUBJECT,
        "whenHandedOver": "2024-04-01T15:00:00Z",
        "daysSupply": {"value": 30, "unit": "Day", "system": UCUM, "code": "d"},
    }

    timeline = timeline_of(statement, dispense)

    aspirin, furosemide = timeline.medications
    assert aspirin.kind == "statement"
    assert aspirin.medication_reference == "Medication/aspirin-81"
    assert aspirin.start == utc(2019, 5, 1)
    assert aspirin.dosage_text == "81 mg by mouth daily"
    assert furosemide.kind == "dispense"
    assert furosemide.end == utc(2024, 5, 1, 15)
    assert timeline.active_medications(utc(2024, 4, 15)) == [aspirin, furosemide]
    assert timeline.active_medications(utc(2024, 5, 2)) == [aspirin]
    assert timeline.active_medications() == [aspirin]  # a dispense is not a standing order


# -- allergies ---------------------------------------------------------------------------------


def test_refuted_resolved_and_erroneous_allergies_are_not_active() -> None:
    timeline = timeline_of(
        allergy("pcn", "active", "confirmed"),
        allergy("pcn-refuted", "active", "refuted"),
        allergy("pcn-outgrown", "resolved", "confirmed"),
        allergy("pcn-typo", "active", "entered-in-error"),
    )

    assert [entry.source_id for entry in timeline.allergies] == [
        "pcn",
        "pcn-refuted",
        "pcn-outgrown",
    ]
    [active] = timeline.active_allergies()
    assert active.source_id == "pcn"
    assert active.criticality == "high"
    assert active.categories == ("medication",)
    assert active.text == "Penicillin"
    assert active.reactions == ("Anaphylaxis", "Throat swelling within minutes of the first dose")


# -- encounters and procedures -------------------------------------------------------------------


def test_encounters_overlapping_a_window_and_the_current_one() -> None:
    timeline = timeline_of(
        encounter("enc-pcp", "AMB", "2024-02-10T14:00:00Z", "2024-02-10T14:30:00Z"),
        encounter("enc-ed", "EMER", "2024-03-01T06:40:00Z", "2024-03-01T11:00:00Z"),
        encounter("enc-ward", "IMP", "2024-03-01T10:30:00Z", None, status="in-progress"),
        encounter("enc-noshow", "AMB", "2024-03-05T09:00:00Z", None, status="cancelled"),
    )

    in_march = timeline.encounters(utc(2024, 3, 1), utc(2024, 4, 1))
    assert [entry.class_code for entry in in_march] == ["EMER", "IMP"]
    assert [entry.source_id for entry in timeline.encounters()] == [
        "enc-pcp",
        "enc-ed",
        "enc-ward",
    ]
    assert timeline.encounters(utc(2024, 2, 10, 14, 30), utc(2024, 3, 1)) == []
    assert present(timeline.current_encounter(utc(2024, 3, 1, 8))).source_id == "enc-ed"
    # The admission began while the emergency visit was still open: the later start wins.
    assert present(timeline.current_encounter(utc(2024, 3, 1, 10, 45))).source_id == "enc-ward"
    assert present(timeline.current_encounter(utc(2025, 1, 1))).source_id == "enc-ward"
    assert timeline.current_encounter(utc(2024, 3, 1, 6)) is None
    assert timeline.encounters()[0].type_codings[0].code == "50849002"


def test_procedures_in_a_window() -> None:
    line = {
        "resourceType": "Procedure",
        "id": "cvc",
        "status": "completed",
        "code": {"coding": [{"system": SNOMED, "code": "233527006", "display": "Central line"}]},
        "subject": SUBJECT,
        "encounter": {"reference": "Encounter/enc-ward"},
        "performedPeriod": {"start": "2024-03-01T12:00:00Z", "end": "2024-03-01T12:40:00Z"},
    }
    not_done = line | {"id": "cvc-2", "status": "not-done"}

    timeline = timeline_of(line, not_done)

    [procedure] = timeline.procedures(utc(2024, 3, 1, 12, 30), utc(2024, 3, 1, 13))
    assert procedure.encounter_id == "enc-ward"
    assert timeline.procedures(utc(2024, 3, 1, 12, 40)) == []


# -- demographics, scope and safety ---------------------------------------------------------------


def test_demographics_without_name_or_identifiers() -> None:
    timeline = timeline_of(PATIENT)

    assert (timeline.birth_date, timeline.sex) == (date(1958, 3, 1), "female")
    assert timeline.age_at(utc(2023, 3, 1)) == 65.0  # the birthday itself counts
    assert timeline.age_at(utc(2023, 2, 28, 23, 59)) == pytest.approx(64.997, abs=1e-3)
    assert timeline.age_at(utc(1950, 1, 1)) is None
    assert not any("name" in slot or "identifier" in slot for slot in PatientTimeline.__slots__)
    assert "Lind" not in repr(timeline)


def test_leap_day_birthday_and_unknown_birth_date() -> None:
    leapling = PatientTimeline(patient_id="p", birth_date=date(2000, 2, 29))

    assert leapling.age_at(utc(2018, 2, 28)) == 18.0
    assert PatientTimeline(patient_id="p").age_at(utc(2020, 1, 1)) is None


def test_unknown_resource_types_are_ignored() -> None:
    claim = {"resourceType": "Claim", "id": "c1", "status": "active", "created": "not a date"}
    immunization = {"resourceType": "Immunization", "id": "i1", "status": "completed"}

    timeline = timeline_of(claim, immunization, BLOOD_PRESSURE)

    assert timeline.codes_observed() == {SYSTOLIC_BP, DIASTOLIC_BP}
    assert timeline.conditions == ()


def test_a_bundle_must_be_unpacked_first() -> None:
    with pytest.raises(TimelineError, match="entries"):
        timeline_of({"resourceType": "Bundle", "type": "collection", "entry": []})


@pytest.mark.parametrize(
    "subject",
    [
        {"reference": "Patient/someone-else"},
        {"reference": "https://ehr.example/fhir/Patient/someone-else/_history/3"},
        {"reference": "urn:uuid:someone-else"},
    ],
)
def test_another_patients_resource_is_refused(subject: dict[str, str]) -> None:
    stray = vital("hr-x", HEART_RATE, 80, "/min", "2024-03-01T08:00:00Z", subject=subject)

    with pytest.raises(TimelineError, match="someone-else"):
        timeline_of(stray)


def test_subject_references_to_this_patient_in_any_form_are_accepted() -> None:
    forms = [
        f"urn:uuid:{PATIENT_ID}",
        f"https://ehr.example/fhir/Patient/{PATIENT_ID}/_history/2",
        f"Patient/{PATIENT_ID}",
    ]
    resources = [
        vital(
            f"hr-{n}", HEART_RATE, 80, "/min", "2024-03-01T08:00:00Z", subject={"reference": form}
        )
        for n, form in enumerate(forms)
    ]

    assert len(build_timeline(PATIENT_ID, resources).observations(HEART_RATE)) == 3


def test_direct_construction_for_non_fhir_sources() -> None:
    berlin = timezone(timedelta(hours=1))
    timeline = PatientTimeline(
        patient_id="physionet-p000001",
        sex="male",
        observations=[
            ObservationPoint(code=HEART_RATE, system=LOINC, time=utc(2024, 1, 1, 2), value=97.0),
            ObservationPoint(
                code=HEART_RATE, system=LOINC, time=datetime(2024, 1, 1, 2, tzinfo=berlin), value=91
            ),
        ],
        encounters=[EncounterEntry(class_code="IMP", start=utc(2024, 1, 1), status="in-progress")],
        medications=[
            MedicationEntry(kind="statement", codings=(), text="norepinephrine", status="active")
        ],
    )

    first, second = timeline.observations(f"{LOINC}|{HEART_RATE}")
    assert first.time == utc(2024, 1, 1, 1) and first.time.tzinfo is UTC
    assert second.value == 97.0
    assert timeline.current_encounter(utc(2024, 1, 1, 3)) is not None
    assert len(timeline.active_medications()) == 1


def test_naive_times_and_nan_values_are_refused_from_code() -> None:
    timeline = PatientTimeline(patient_id="p")

    with pytest.raises(ValueError, match="naive"):
        ObservationPoint(code=HEART_RATE, time=datetime(2024, 1, 1), value=80.0)
    with pytest.raises(ValueError, match="NaN"):
        ObservationPoint(code=HEART_RATE, time=utc(2024, 1, 1), value=float("nan"))
    with pytest.raises(ValueError, match="naive"):
        timeline.observations(HEART_RATE, start=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        timeline.latest(HEART_RATE, at=datetime(2024, 1, 1))


# -- properties --------------------------------------------------------------------------------

BASE = utc(2024, 3, 1)
CODES = ["a", "b", "c"]
QUERIES = [*CODES, f"{LOINC}|a", "local|b", "|c", "missing"]
moments = st.integers(min_value=0, max_value=240).map(
    lambda minutes: BASE + timedelta(minutes=minutes)
)
query_moments = st.builds(
    lambda minutes, offset: (BASE + timedelta(minutes=minutes)).astimezone(
        timezone(timedelta(hours=offset))
    ),
    st.integers(min_value=-10, max_value=250),
    st.integers(min_value=-12, max_value=14),
)
points = st.builds(
    lambda code, local_codes, time, value: ObservationPoint(
        code=code,
        system=LOINC,
        time=time,
        value=value,
        codes=frozenset(("local", local) for local in local_codes),
    ),
    st.sampled_from(CODES),
    st.sets(st.sampled_from(CODES), max_size=2),
    moments,
    st.floats(min_value=0, max_value=300, allow_nan=False),
)


def found_by(point: ObservationPoint, queries: set[str]) -> bool:
    return any(
        code in queries or f"{system or ''}|{code}" in queries for system, code in point.codes
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(points, max_size=40),
    st.sets(st.sampled_from(QUERIES), min_size=1, max_size=3),
    st.none() | query_moments,
    st.none() | query_moments,
)
def test_window_query_equals_brute_force_filter(
    observed: list[ObservationPoint],
    queries: set[str],
    start: datetime | None,
    end: datetime | None,
) -> None:
    timeline = PatientTimeline(patient_id="p", observations=observed)

    expected = [
        point
        for point in sorted(observed, key=lambda point: point.time)
        if found_by(point, queries)
        and (start is None or point.time >= start)
        and (end is None or point.time < end)
    ]
    assert timeline.observations(queries, start, end) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(points, max_size=40),
    st.sets(st.sampled_from(QUERIES), min_size=1, max_size=3),
    st.none() | query_moments,
)
def test_latest_equals_brute_force_last(
    observed: list[ObservationPoint], queries: set[str], at: datetime | None
) -> None:
    timeline = PatientTimeline(patient_id="p", observations=observed)

    candidates = [
        point
        for point in sorted(observed, key=lambda point: point.time)
        if found_by(point, queries) and (at is None or point.time <= at)
    ]
    assert timeline.latest(queries, at) == (candidates[-1] if candidates else None)


# -- real data ---------------------------------------------------------------------------------


def shared_data_dir() -> Path:
    configured = os.environ.get("CARELOOP_SHARED_DATA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def first_synthea_patient_resources(archive: Path) -> list[dict[str, Any]]:
    """The resources of the first patient bundle (the archive also holds bundles of
    organizations and practitioners, which are not about any one patient)."""
    with tarfile.open(archive) as tar:
        for member in tar:
            name = PurePosixPath(member.name).name
            if not member.isfile() or not name.endswith(".json"):
                continue
            if name.startswith(("hospitalInformation", "practitionerInformation")):
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            bundle = json.load(handle)
            return [entry["resource"] for entry in bundle["entry"]]
    raise AssertionError(f"no patient bundle in {archive}")


@pytest.mark.shared_data
def test_builds_from_a_real_synthea_bundle() -> None:
    archive = shared_data_dir() / "synthea_r4" / "synthea_r4.tar.gz"
    if not archive.exists():
        reason = f"Synthea data not found at {archive} (set CARELOOP_SHARED_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    resources = first_synthea_patient_resources(archive)
    [patient] = [resource for resource in resources if resource["resourceType"] == "Patient"]

    timeline = build_timeline(patient["id"], resources)

    assert timeline.observations([BODY_HEIGHT, BODY_WEIGHT])
    assert timeline.conditions
    assert timeline.encounters()
    assert timeline.birth_date is not None and timeline.sex in {"male", "female"}
    for point in timeline.observations(timeline.codes_observed()):
        assert point.time.tzinfo is UTC
    first_visit = timeline.encounters()[0]
    assert first_visit.start is not None
    assert timeline.age_at(first_visit.start) is not None
