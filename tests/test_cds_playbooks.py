"""Next-best-action playbooks: the shipped ones, personalization, triggers, and `check`."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import get_args

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.cds import playbooks
from careloop.cds.cli_playbooks import playbooks_group
from careloop.cds.facts import GOALS_OF_CARE, facts_from
from careloop.cds.playbooks import (
    BUILTIN_DIR,
    PlaybookLibrary,
    PlaybookPlan,
    TriggerSignals,
    check_playbooks,
)
from careloop.ingest.validation import structural_errors
from test_cds_facts import synthea_patients

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PID = "p-play"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SEPSIS = TriggerSignals(sepsis_alert=True)


@pytest.fixture(scope="module")
def library() -> PlaybookLibrary:
    return PlaybookLibrary.load()


def at(**delta: float) -> str:
    return (NOW - timedelta(**delta)).isoformat()


def concept(system: str, code: str, display: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def patient(birth: str = "1958-03-14", gender: str = "male") -> dict:
    return {"resourceType": "Patient", "id": PID, "gender": gender, "birthDate": birth}


def observation(code: str, value: float, unit: str, when: str, ident: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": ident,
        "status": "final",
        "code": concept(LOINC, code),
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def egfr(value: float) -> dict:
    return observation("33914-3", value, "mL/min/{1.73_m2}", at(days=1), "egfr")


def penicillin_allergy(severe: bool = False) -> dict:
    found = {
        "resourceType": "AllergyIntolerance",
        "id": "pen",
        "clinicalStatus": concept(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"
        ),
        "code": concept(SNOMED, "91936005", "Allergy to penicillin"),
        "patient": {"reference": f"Patient/{PID}"},
    }
    if severe:
        found["criticality"] = "high"
    return found


def condition(code: str, onset_days: float = 800) -> dict:
    return {
        "resourceType": "Condition",
        "id": f"c-{code}",
        "clinicalStatus": concept(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", "active"
        ),
        "code": concept(SNOMED, code),
        "subject": {"reference": f"Patient/{PID}"},
        "onsetDateTime": at(days=onset_days),
    }


def plans_for(
    library: PlaybookLibrary, resources: list[dict], signals: TriggerSignals = SEPSIS
) -> dict[str, PlaybookPlan]:
    facts = facts_from(PID, resources, NOW)
    return {plan.playbook.id: plan for plan in library.plans(signals, facts, NOW)}


def sepsis_plan(library: PlaybookLibrary, *resources: dict) -> PlaybookPlan:
    return plans_for(library, [patient(), *resources])["sepsis-hour-1-bundle"]


def action(plan: PlaybookPlan, action_id: str) -> dict:
    return next(a.resource for a in plan.actions if a.id == action_id)


def drug(resource: dict) -> str:
    return resource["medicationCodeableConcept"]["coding"][0]["display"]


def doses(resource: dict) -> list[float]:
    return [d["doseAndRate"][0]["doseQuantity"]["value"] for d in resource["dosageInstruction"]]


# -- the shipped playbooks ----------------------------------------------------------------


def test_every_condition_field_is_evaluated() -> None:
    assert {name for name, _ in playbooks._TESTS} == set(playbooks.When.model_fields)
    assert set(GOALS_OF_CARE) == set(get_args(playbooks.GoalName))


def test_shipped_playbooks_pass_check() -> None:
    report = check_playbooks([BUILTIN_DIR], today=date(2026, 11, 22))
    assert report.errors == [] and report.warnings == []
    assert {p.id for p in report.playbooks} == {
        "sepsis-hour-1-bundle",
        "news2-urgent-review",
        "news2-emergency-response",
        "diabetes-hba1c-follow-up",
        "hypertension-bp-follow-up",
        "ckd-monitoring",
    }
    assert all(p.evidence and p.review.reviewed_by for p in report.playbooks)


def test_penicillin_allergy_changes_the_antibiotic(library: PlaybookLibrary) -> None:
    standard = sepsis_plan(library)
    assert drug(action(standard, "empiric-antibiotic")) == "piperacillin / tazobactam"
    assert "companion-antibiotic" not in {a.id for a in standard.actions}

    allergic = sepsis_plan(library, penicillin_allergy())
    chosen = next(a for a in allergic.actions if a.id == "empiric-antibiotic")
    assert drug(chosen.resource) == "cefepime"
    assert "penicillin allergy" in chosen.personalization
    assert "allergy recorded: penicillins" in chosen.personalization
    assert drug(action(allergic, "companion-antibiotic")) == "metronidazole"

    severe = sepsis_plan(library, penicillin_allergy(severe=True))
    assert drug(action(severe, "empiric-antibiotic")) == "aztreonam"
    assert drug(action(severe, "companion-antibiotic")) == "vancomycin"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(70, [4.5]), (35, [4.5, 3.375]), (15, [4.5, 2.25])],
)
def test_egfr_variant_reduces_later_doses_only(
    library: PlaybookLibrary, value: float, expected: list[float]
) -> None:
    plan = sepsis_plan(library, egfr(value))
    antibiotic = next(a for a in plan.actions if a.id == "empiric-antibiotic")
    assert drug(antibiotic.resource) == "piperacillin / tazobactam"
    assert doses(antibiotic.resource) == expected  # the first dose is always in full
    if len(expected) > 1:
        assert f"eGFR {value}" in antibiotic.personalization
        assert "Observation/egfr" in antibiotic.personalization


def test_allergy_and_kidney_function_combine(library: PlaybookLibrary) -> None:
    plan = sepsis_plan(library, penicillin_allergy(), egfr(45))
    antibiotic = action(plan, "empiric-antibiotic")
    assert drug(antibiotic) == "cefepime"
    assert [d["timing"]["repeat"].get("period") for d in antibiotic["dosageInstruction"]] == [
        None,
        12,
    ]


def test_no_egfr_on_record_keeps_the_default(library: PlaybookLibrary) -> None:
    plan = sepsis_plan(library)
    chosen = next(a for a in plan.actions if a.id == "empiric-antibiotic")
    assert doses(chosen.resource) == [4.5]
    assert chosen.personalization is not None and "standard adult dose" in chosen.personalization


def test_recent_lactate_is_skipped_with_reason_and_old_one_suggested(
    library: PlaybookLibrary,
) -> None:
    recent = sepsis_plan(library, observation("2524-7", 1.8, "mmol/L", at(hours=2), "lac1"))
    assert "measure-lactate" not in {a.id for a in recent.actions}
    skipped = next(s for s in recent.skipped if s.id == "measure-lactate")
    assert skipped.reason.startswith("already resulted 2 h ago (Observation/lac1)")
    assert "remeasure" in skipped.reason

    old = sepsis_plan(library, observation("2524-7", 1.8, "mmol/L", at(hours=7), "lac2"))
    assert "measure-lactate" in {a.id for a in old.actions}
    assert old.skipped == ()

    ordered = {
        "resourceType": "ServiceRequest",
        "id": "sr-lac",
        "status": "active",
        "intent": "order",
        "code": concept(LOINC, "32693-4"),
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": at(minutes=20),
    }
    pending = sepsis_plan(library, ordered)
    assert pending.skipped[0].reason.startswith(
        "already ordered 20 min ago (ServiceRequest/sr-lac)"
    )


def test_antibiotic_already_ordered_is_not_suggested_again(library: PlaybookLibrary) -> None:
    given = {
        "resourceType": "MedicationRequest",
        "id": "mr-cro",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {"system": RXNORM, "code": "1665021", "display": "ceftriaxone 1000 MG Injection"}
            ]
        },
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": at(hours=1),
    }
    plan = sepsis_plan(library, given)
    skipped = {s.id: s.reason for s in plan.skipped}
    assert skipped["empiric-antibiotic"].startswith("ceftriaxone already ordered 60 min ago")


def test_fluids_only_for_hypoperfusion_with_volume_from_weight(library: PlaybookLibrary) -> None:
    weight = observation("29463-7", 72.5, "kg", at(days=1), "wt")
    normal = sepsis_plan(library, weight, observation("2524-7", 2.1, "mmol/L", at(hours=1), "l"))
    assert "crystalloid-bolus" not in {a.id for a in normal.actions}
    assert "crystalloid-bolus" not in {s.id for s in normal.skipped}

    high = sepsis_plan(library, weight, observation("2524-7", 4.6, "mmol/L", at(hours=1), "l"))
    bolus = next(a for a in high.actions if a.id == "crystalloid-bolus")
    dose = bolus.resource["dosageInstruction"][0]
    assert dose["doseAndRate"][0]["doseQuantity"]["value"] == 2175  # 30 mL/kg x 72.5 kg
    assert dose["text"].startswith("2175 mL IV (30 mL/kg for 72.5 kg)")
    assert "lactate 4.6 mmol/L" in bolus.personalization

    hypotensive = sepsis_plan(library, observation("8480-6", 84, "mm[Hg]", at(minutes=30), "s"))
    unweighed = next(a for a in hypotensive.actions if a.id == "crystalloid-bolus")
    assert "doseAndRate" not in unweighed.resource["dosageInstruction"][0]
    assert "no weight on record" in unweighed.personalization
    stale = sepsis_plan(library, observation("8480-6", 84, "mm[Hg]", at(hours=5), "s"))
    assert "crystalloid-bolus" not in {a.id for a in stale.actions}


def test_engine_fills_patient_time_priority_and_due(library: PlaybookLibrary) -> None:
    plan = sepsis_plan(library)
    task = action(plan, "nurse-review")
    assert task["for"] == {"reference": f"Patient/{PID}"}
    assert task["authoredOn"] == "2026-11-22T12:00:00Z"
    assert task["priority"] == "stat"
    assert task["restriction"]["period"]["end"] == "2026-11-22T12:30:00Z"
    cultures = action(plan, "blood-cultures")
    assert cultures["subject"] == {"reference": f"Patient/{PID}"}
    assert cultures["occurrencePeriod"]["end"] == "2026-11-22T13:00:00Z"
    assert "subject" not in task and "for" not in cultures
    assert plan.selection_behavior == "any"
    assert ("not-sepsis", "Assessed; sepsis is not suspected") in plan.override_reasons
    assert any("10.1097/CCM.0000000000005337" in (c.url or "") for c in plan.evidence)
    assert plan.alternatives[0] == "Continue observation and re-score in 1 hour"
    assert plan.summary == "Sepsis alert: assess now and consider the hour-1 bundle"


def test_every_suggested_resource_is_valid_fhir(library: PlaybookLibrary) -> None:
    scenarios = [
        [],
        [penicillin_allergy(), egfr(25)],
        [penicillin_allergy(severe=True), egfr(20)],
        [
            egfr(15),
            observation("2524-7", 5.0, "mmol/L", at(hours=1), "l"),
            observation("29463-7", 81, "kg", at(days=1), "w"),
        ],
    ]
    for extra in scenarios:
        plan = sepsis_plan(library, *extra)
        for planned in plan.actions:
            assert structural_errors(planned.resource, "library") == [], planned.id


# -- exclusions: goals of care, age, pregnancy ---------------------------------------------


def terminal_care_plan() -> dict:
    return {
        "resourceType": "CarePlan",
        "id": "cp-terminal",
        "status": "active",
        "intent": "order",
        "category": [concept(SNOMED, "182964004", "Terminal care")],
        "subject": {"reference": f"Patient/{PID}"},
        "period": {"start": at(days=3)},
    }


def test_comfort_care_excludes_the_sepsis_bundle(library: PlaybookLibrary) -> None:
    plan = sepsis_plan(library, terminal_care_plan())
    assert plan.actions == () and plan.skipped == ()
    assert plan.excluded is not None
    assert plan.excluded.startswith("Care is comfort-focused")
    assert "CarePlan/cp-terminal" in plan.excluded


def test_do_not_resuscitate_alone_does_not_withhold_treatment(library: PlaybookLibrary) -> None:
    dnr = {
        "resourceType": "Observation",
        "id": "dnr",
        "status": "final",
        "code": concept(LOINC, "81351-9"),
        "effectiveDateTime": at(days=2),
        "valueBoolean": True,
    }
    plan = sepsis_plan(library, dnr)
    assert plan.excluded is None and plan.actions


def test_age_rules(library: PlaybookLibrary) -> None:
    child = plans_for(library, [patient("2014-01-01")], TriggerSignals(True, 6))
    assert child["sepsis-hour-1-bundle"].excluded.startswith("The adult bundle")
    assert child["news2-urgent-review"].excluded.startswith("NEWS2 is not for use under 16")
    sixteen = plans_for(library, [patient("2010-11-22")], TriggerSignals(False, 6))
    assert sixteen["news2-urgent-review"].excluded is None


def test_pregnancy_rules(library: PlaybookLibrary) -> None:
    pregnancy = condition("72892002", onset_days=100)
    pregnant = plans_for(library, [patient(gender="female"), pregnancy], TriggerSignals(False, 7))
    assert pregnant["news2-emergency-response"].excluded.startswith(
        "NEWS2 is not validated in pregnancy"
    )
    assert "Condition/c-72892002" in pregnant["news2-emergency-response"].excluded

    # an action-level rule: no ACE inhibitor/ARB review in pregnancy
    albuminuria = observation("14959-1", 120, "mg/g", at(days=300), "acr")
    base = [patient(gender="female"), condition("431856006"), albuminuria]
    not_pregnant = plans_for(library, base, TriggerSignals())["ckd-monitoring"]
    review = next(a for a in not_pregnant.actions if a.id == "review-ras-inhibitor")
    assert "not pregnant on record" in review.personalization
    assert "urine albumin-creatinine ratio 120 mg/g" in review.personalization
    with_pregnancy = plans_for(library, [*base, pregnancy], TriggerSignals())["ckd-monitoring"]
    ids = {a.id for a in with_pregnancy.actions} | {s.id for s in with_pregnancy.skipped}
    assert "review-ras-inhibitor" not in ids
    assert {"order-creatinine-egfr", "order-urine-acr"} <= ids


def test_ras_review_not_suggested_when_already_taking_one(library: PlaybookLibrary) -> None:
    taking = {
        "resourceType": "MedicationRequest",
        "id": "mr-lis",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {"system": RXNORM, "code": "314076", "display": "lisinopril 10 MG Oral Tablet"}
            ]
        },
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": at(days=200),
    }
    resources = [
        patient(),
        condition("431856006"),
        observation("14959-1", 120, "mg/g", at(days=300), "acr"),
        taking,
    ]
    plan = plans_for(library, resources, TriggerSignals())["ckd-monitoring"]
    assert "review-ras-inhibitor" not in {a.id for a in plan.actions}


def test_deceased_patients_get_no_plans(library: PlaybookLibrary) -> None:
    dead = {**patient(), "deceasedDateTime": at(days=1)}
    assert plans_for(library, [dead, condition("44054006")], TriggerSignals(True, 9)) == {}


# -- triggers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (None, set()),
        (4, set()),
        (5, {"news2-urgent-review"}),
        (6, {"news2-urgent-review"}),
        (7, {"news2-emergency-response"}),
        (12, {"news2-emergency-response"}),
    ],
)
def test_news2_thresholds(library: PlaybookLibrary, score: int | None, expected: set) -> None:
    plans = plans_for(library, [patient()], TriggerSignals(news2=score))
    assert set(plans) == expected
    for plan in plans.values():
        assert plan.summary.startswith(f"NEWS2 {score} (")


def test_overdue_hba1c_by_its_age(library: PlaybookLibrary) -> None:
    diabetic = [patient(), condition("44054006")]

    def hba1c(days: float) -> dict:
        return observation("4548-4", 7.9, "%", at(days=days), "a1c")

    assert "diabetes-hba1c-follow-up" not in plans_for(
        library, [*diabetic, hba1c(100)], TriggerSignals()
    )
    due = plans_for(library, [*diabetic, hba1c(200)], TriggerSignals())["diabetes-hba1c-follow-up"]
    assert due.summary == "Diabetes follow-up due: HbA1c, last 200 days ago"
    assert due.indicator == "info"
    assert [a.id for a in due.actions] == ["order-hba1c"]
    never = plans_for(library, diabetic, TriggerSignals())["diabetes-hba1c-follow-up"]
    assert never.summary == "Diabetes follow-up due: HbA1c, none on record"
    without = plans_for(library, [patient(), hba1c(400)], TriggerSignals())
    assert "diabetes-hba1c-follow-up" not in without  # no diabetes, no follow-up


@pytest.mark.shared_data
def test_overdue_playbooks_fire_on_a_real_synthea_patient(
    library: PlaybookLibrary, synthea_archive: Path
) -> None:
    prefix = "Dirk_Kuhlman_"  # type 2 diabetes, hypertension, CKD stage 1 in Synthea
    resources = synthea_patients(synthea_archive, prefix)[prefix]
    patient_id = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    last_hba1c = max(
        datetime.fromisoformat(r["effectiveDateTime"])
        for r in resources
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "4548-4"
    )
    half_year = last_hba1c + timedelta(days=200)
    facts = facts_from(patient_id, resources, half_year)
    fired = {p.playbook.id: p for p in library.plans(TriggerSignals(), facts, half_year)}
    # HbA1c is due twice a year and blood pressure every 6 months; kidney tests yearly
    assert set(fired) == {"diabetes-hba1c-follow-up", "hypertension-bp-follow-up"}
    assert fired["diabetes-hba1c-follow-up"].summary.endswith("HbA1c, last 200 days ago")

    year = last_hba1c + timedelta(days=400)
    facts = facts_from(patient_id, resources, year)
    fired = {p.playbook.id: p for p in library.plans(TriggerSignals(), facts, year)}
    assert set(fired) == {
        "diabetes-hba1c-follow-up",
        "hypertension-bp-follow-up",
        "ckd-monitoring",
    }
    assert fired["ckd-monitoring"].summary == (
        "CKD monitoring due: eGFR, last 400 days ago; urine ACR, last 400 days ago"
    )
    assert {a.id for a in fired["ckd-monitoring"].actions} == {
        "order-creatinine-egfr",
        "order-urine-acr",
    }
    for plan in fired.values():
        assert plan.excluded is None
        for planned in plan.actions:
            assert planned.resource.get("subject", planned.resource.get("for")) == {
                "reference": f"Patient/{patient_id}"
            }

    soon = last_hba1c + timedelta(days=30)
    recent = facts_from(patient_id, resources, soon)
    assert library.plans(TriggerSignals(), recent, soon) == []


# -- a playbook is data: new files, and every way a file can be wrong ---------------------

VALID = {
    "id": "copd-spirometry",
    "version": "0.1.0",
    "title": "COPD spirometry follow-up",
    "status": "active",
    "review": {"reviewed_by": "test", "reviewed_on": "2026-01-01", "next_review": "2027-01-01"},
    "trigger": {
        "kind": "overdue",
        "conditions": [f"{SNOMED}|13645005"],
        "due": [{"label": "spirometry", "codes": [f"{LOINC}|19926-5"], "every": "365d"}],
    },
    "card": {"summary": "COPD follow-up due: {overdue}", "indicator": "info"},
    "evidence": [{"title": "GOLD 2024 report", "url": "https://goldcopd.org/2024-gold-report/"}],
    "override_reasons": [{"code": "not-now", "display": "Not now"}],
    "selection_behavior": "any",
    "actions": [
        {
            "id": "order-spirometry",
            "label": "Order spirometry",
            "due_within": "30d",
            "resource": {
                "resourceType": "ServiceRequest",
                "status": "draft",
                "intent": "proposal",
                "code": {"coding": [{"system": LOINC, "code": "19926-5"}], "text": "Spirometry"},
            },
        },
        {
            "id": "inhaler-dose",
            "label": "Weight-based dose",
            "resource": {
                "resourceType": "MedicationRequest",
                "status": "draft",
                "intent": "proposal",
                "medicationCodeableConcept": {"text": "Example"},
                "dosageInstruction": [{"text": "${weight_kg*2} mg once"}],
            },
        },
    ],
}


def write(directory: Path, name: str, content: dict | str) -> Path:
    path = directory / name
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_new_playbook_in_a_directory_is_picked_up(tmp_path: Path) -> None:
    write(tmp_path, "copd.yaml", VALID)
    library = PlaybookLibrary.load([tmp_path])
    assert "copd-spirometry" in {p.id for p in library.playbooks()}
    facts = facts_from(PID, [patient(), condition("13645005")], NOW)
    plan = next(
        p for p in library.plans(TriggerSignals(), facts, NOW) if p.playbook.id == "copd-spirometry"
    )
    assert plan.summary == "COPD follow-up due: spirometry, none on record"
    assert [a.id for a in plan.actions] == ["order-spirometry"]
    assert plan.skipped[0].id == "inhaler-dose"
    assert plan.skipped[0].reason == "needs a body weight, not on record"


def test_draft_and_retired_playbooks_do_not_run(tmp_path: Path) -> None:
    write(tmp_path, "copd.yaml", {**VALID, "status": "draft"})
    library = PlaybookLibrary.load([tmp_path])
    facts = facts_from(PID, [patient(), condition("13645005")], NOW)
    assert "copd-spirometry" not in {
        p.playbook.id for p in library.plans(TriggerSignals(), facts, NOW)
    }
    report = check_playbooks([tmp_path], today=date(2026, 6, 1))
    assert report.warnings == ["copd.yaml: status: draft; it will not run until it is active"]


def broken(change: str) -> dict | str:
    """VALID with one kind of mistake."""
    data = copy.deepcopy(VALID)
    if change == "unknown field":
        data["actions"][0]["skip_if_done"] = {"within": "1d", "codez": [f"{LOINC}|19926-5"]}
    elif change == "bad code":
        data["trigger"]["conditions"] = [f"{SNOMED}|13645006"]
    elif change == "invalid FHIR":
        data["actions"][0]["resource"]["code"] = "spirometry"
    elif change == "unknown FHIR element":
        data["actions"][0]["resource"]["reasonCodes"] = [{"text": "COPD"}]
    elif change == "bad duration":
        data["trigger"]["due"][0]["every"] = "1 year"
    elif change == "summary too long":
        data["card"]["summary"] = "COPD follow-up due: {overdue}. " + "Please review. " * 7
    elif change == "yaml syntax":
        return yaml.safe_dump(data, sort_keys=False).replace("title: COPD", "title: [COPD", 1)
    elif change == "bad template code":
        data["actions"][0]["resource"]["code"]["coding"][0]["code"] = "19926-4"
    elif change == "engine field":
        data["actions"][0]["resource"]["subject"] = {"reference": "Patient/x"}
    elif change == "unknown placeholder":
        data["actions"][1]["resource"]["dosageInstruction"][0]["text"] = "${height_cm} mg"
    elif change == "label too long":
        data["actions"][0]["label"] = "Order spirometry " * 5
    return data


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("unknown field", "copd.yaml: actions[0].skip_if_done.codez: unknown field (line "),
        (
            "bad code",
            "copd.yaml: trigger.conditions[0]: bad code 'http://snomed.info/sct|13645006'",
        ),
        ("invalid FHIR", "copd.yaml: actions[0].resource.code: expected a FHIR element"),
        (
            "unknown FHIR element",
            "copd.yaml: actions[0].resource.reasonCodes: not an element of a FHIR R4 Service",
        ),
        ("bad duration", "copd.yaml: trigger.due[0].every: bad duration '1 year'"),
        ("summary too long", "copd.yaml: card.summary: "),
        ("yaml syntax", "copd.yaml: YAML syntax error at line "),
        (
            "bad template code",
            "copd.yaml: actions[0].resource.code.coding[0].code: not a valid LOINC",
        ),
        ("engine field", "copd.yaml: actions[0].resource.subject: set by the engine"),
        ("unknown placeholder", "copd.yaml: actions[1].resource: unknown placeholder ${height_cm}"),
        ("label too long", "copd.yaml: actions[0].label: 85 characters"),
    ],
)
def test_each_mistake_names_file_and_path(tmp_path: Path, change: str, expected: str) -> None:
    path = write(tmp_path, "copd.yaml", broken(change))
    report = check_playbooks([path])
    assert not report.ok and report.playbooks == []
    assert any(error.startswith(expected) for error in report.errors), report.errors
    with pytest.raises(ValueError, match="copd.yaml"):
        PlaybookLibrary.load([tmp_path])


def test_error_lines_point_into_the_file(tmp_path: Path) -> None:
    text = yaml.safe_dump(broken("unknown field"), sort_keys=False)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "codez" in row)
    (error,) = check_playbooks([write(tmp_path, "copd.yaml", text)]).errors
    assert error.endswith(f"(line {line})")
    syntax = broken("yaml syntax")
    assert isinstance(syntax, str)
    bad_line = next(n for n, row in enumerate(syntax.splitlines(), 1) if "[COPD" in row)
    (error,) = check_playbooks([write(tmp_path, "copd.yaml", syntax)]).errors
    assert f"line {bad_line}," in error or f"line {bad_line + 1}," in error


def test_duplicate_ids_and_duplicate_keys(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", VALID)
    write(tmp_path, "b.yaml", VALID)
    report = check_playbooks([tmp_path])
    assert report.errors == [
        f"b.yaml: id: duplicate playbook id 'copd-spirometry' (also in {first})"
    ]
    # a playbook may not reuse a built-in id either
    write(tmp_path, "b.yaml", {**VALID, "id": "ckd-monitoring"})
    with pytest.raises(ValueError, match="duplicate playbook id 'ckd-monitoring'"):
        PlaybookLibrary.load([tmp_path])
    (tmp_path / "b.yaml").unlink()
    first.write_text(yaml.safe_dump(VALID, sort_keys=False) + "status: retired\n")
    (error,) = check_playbooks([first]).errors
    assert error.startswith("a.yaml: status: duplicate key (line ")


def test_load_lists_every_problem(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", broken("bad duration"))
    write(tmp_path, "two.yaml", broken("bad code"))
    with pytest.raises(ValueError) as raised:
        PlaybookLibrary.load([tmp_path])
    assert "one.yaml: trigger.due[0].every" in str(raised.value)
    assert "two.yaml: trigger.conditions[0]" in str(raised.value)
    with pytest.raises(ValueError, match="playbook directory not found"):
        PlaybookLibrary.load([tmp_path / "missing"])


def test_overdue_review_is_a_warning_not_an_error(tmp_path: Path) -> None:
    write(tmp_path, "copd.yaml", VALID)
    report = check_playbooks([tmp_path], today=date(2027, 3, 1))
    assert report.ok
    assert report.warnings == ["copd.yaml: review.next_review: review overdue since 2027-01-01"]


# -- the command line ----------------------------------------------------------------------


def test_check_cli_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.delenv("CARELOOP_PLAYBOOKS", raising=False)
    shipped = runner.invoke(playbooks_group, ["check"])
    assert shipped.exit_code == 0, shipped.output
    assert "6 of 6 playbook files valid, 0 errors" in shipped.output

    good = write(
        tmp_path, "copd.yaml", {**VALID, "review": {**VALID["review"], "next_review": "2026-02-01"}}
    )
    warned = runner.invoke(playbooks_group, ["check", str(good)])
    assert warned.exit_code == 0
    assert "warning: copd.yaml: review.next_review: review overdue" in warned.output

    bad = write(tmp_path, "bad.yaml", broken("bad duration"))
    failed = runner.invoke(playbooks_group, ["check", str(good), str(bad)])
    assert failed.exit_code == 1
    assert "error: bad.yaml: trigger.due[0].every: bad duration" in failed.output
    assert "1 of 2 playbook files valid" in failed.output

    monkeypatch.setenv("CARELOOP_PLAYBOOKS", str(tmp_path))
    assert runner.invoke(playbooks_group, ["check"]).exit_code == 1
    listed = runner.invoke(playbooks_group, ["list"])
    assert listed.exit_code == 1 and "copd-spirometry" in listed.output
    bad.unlink()
    listed = runner.invoke(playbooks_group, ["list"])
    assert listed.exit_code == 0
    assert "sepsis-hour-1-bundle" in listed.output and "copd-spirometry" in listed.output


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ALIAS_BOMB, "too large or too deeply nested"),
        ("a: " + "[" * 60 + "]" * 60 + "\n", "too large or too deeply nested"),
        ("? [1, 2]\n: x\n", "found unhashable key"),
        ("- just\n- a list\n", "a playbook is a YAML mapping of fields"),
        ("", "a playbook is a YAML mapping of fields"),
        ("id: a\n---\nid: b\n", "YAML syntax error"),
        ("id: 'unterminated\n", "YAML syntax error at line"),
    ],
)
def test_hostile_or_odd_yaml_gets_a_clear_error(text: str, expected: str) -> None:
    result = playbooks.check_text(text, "odd.yaml", date(2026, 11, 22))
    assert result.playbook is None
    assert any(expected in error for error in result.errors), result.errors
    assert all(error.startswith("odd.yaml: ") for error in result.errors)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(
    field=st.sampled_from(sorted(VALID)),
    value=json_values,
)
def test_any_value_in_any_field_is_an_error_or_valid_never_a_crash(
    field: str, value: object
) -> None:
    data = {**copy.deepcopy(VALID), field: value}
    result = playbooks.check_text(yaml.safe_dump(data), "fuzz.yaml", date(2026, 11, 22))
    assert (result.playbook is None) == bool(result.errors)
    assert all(error.startswith("fuzz.yaml: ") for error in result.errors)


condition_values = st.one_of(
    st.booleans(),
    st.integers(0, 150),
    st.floats(0, 200),
    st.sampled_from(["female", "male"]),
    st.lists(
        st.sampled_from(["penicillins", "comfort-care", f"{LOINC}|2524-7", "lisinopril"]),
        min_size=1,
        max_size=2,
    ),
    st.fixed_dictionaries(
        {
            "codes": st.just([f"{LOINC}|2524-7"]),
            "within": st.just("6h"),
            "at_least": st.floats(0, 9),
        }
    ),
    json_values,
)


@settings(max_examples=60, deadline=None)
@given(
    when=st.dictionaries(
        st.sampled_from(sorted(playbooks.When.model_fields)),
        condition_values,
        min_size=1,
        max_size=3,
    )
)
def test_arbitrary_conditions_validate_or_fail_cleanly(when: dict) -> None:
    data = copy.deepcopy(VALID)
    data["actions"][0]["only_if"] = when
    result = playbooks.check_text(yaml.safe_dump(data), "fuzz.yaml", date(2026, 11, 22))
    assert (result.playbook is None) == bool(result.errors)
    if result.playbook is not None:  # a valid condition can be evaluated on any patient
        resources = [
            patient(),
            condition("13645005"),
            penicillin_allergy(),
            egfr(40),
            observation("2524-7", 5, "mmol/L", at(hours=1), "lac"),
        ]
        plan = playbooks.plan_for(
            result.playbook, {"overdue": "x"}, facts_from(PID, resources, NOW), NOW
        )
        assert {a.id for a in plan.actions} <= {"order-spirometry"}
