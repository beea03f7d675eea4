"""Medication safety checks on draft orders: interactions, allergies, duplicates, renal dosing.

Most tests use the shipped, reviewed knowledge files and a small interaction index written
here (so they run without the shared data); one test runs the real ONC lists.
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.cds.interactions import HIGH_PRIORITY, Interaction, InteractionIndex
from careloop.cds.medications import KNOWLEDGE_DIR, RXNORM, SNOMED, ingredients_from_name
from careloop.cds.medsafety import (
    MedicationContext,
    SafetyFinding,
    SafetyKnowledge,
    check_orders,
)
from careloop.cds.renal import LOINC, ckd_epi_2021, latest_egfr
from conftest import shared_data
from samples import PATIENT_GIVEN, PATIENT_NAME, patient

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
FEMALE_1950 = {**patient(), "gender": "female", "birthDate": "1950-05-01"}  # 76 on NOW
CLARITHROMYCIN_SIMVASTATIN = Interaction(
    drugs=("clarithromycin", "simvastatin"),
    list_name=HIGH_PRIORITY,
    severity="critical",
    group="25",
    classes=("CYP3A4 inhibitors / Macrolides", "HMG Co-A reductase inhibitors"),
    drugbank_ids=("DB01211", "DB00641"),
)


@pytest.fixture(scope="module")
def shipped() -> SafetyKnowledge:
    return SafetyKnowledge.load(None)


@pytest.fixture(scope="module")
def knowledge(shipped: SafetyKnowledge) -> SafetyKnowledge:
    index = InteractionIndex({CLARITHROMYCIN_SIMVASTATIN.drugs: CLARITHROMYCIN_SIMVASTATIN})
    return dataclasses.replace(shipped, interactions=index)


def order(rid: str, display: str, status: str = "draft", kind: str = "MedicationRequest") -> dict:
    return {
        "resourceType": kind,
        "id": rid,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{FEMALE_1950['id']}"},
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "0", "display": display}],
            "text": display,
        },
    }


def allergy(
    code: str = "91936005", clinical: str = "active", verification: str = "confirmed"
) -> dict:
    return {
        "resourceType": "AllergyIntolerance",
        "id": f"allergy-{code}",
        "clinicalStatus": {"coding": [{"code": clinical}]},
        "verificationStatus": {"coding": [{"code": verification}]},
        "code": {"coding": [{"system": SNOMED, "code": code}]},
    }


def lab(rid: str, code: str, value: float, unit: str, when: datetime, **extra: object) -> dict:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "effectiveDateTime": when.isoformat(),
        "valueQuantity": {"value": value, "unit": unit, **extra},
    }


def egfr(value: float, days_ago: float = 2, **extra: object) -> dict:
    return lab(
        "egfr", "33914-3", value, "mL/min/{1.73_m2}", NOW - timedelta(days=days_ago), **extra
    )


def context(**fields: object) -> MedicationContext:
    return MedicationContext(patient=FEMALE_1950, now=NOW, **fields)  # type: ignore[arg-type]


def kinds(findings: list[SafetyFinding], kind: str) -> list[SafetyFinding]:
    return [f for f in findings if f.kind == kind]


# --- interactions -----------------------------------------------------------------------------


def test_interaction_with_an_active_medication(knowledge: SafetyKnowledge) -> None:
    active = [order("statin", "Simvastatin 20 MG Oral Tablet", "active")]
    drafts = [order("d1", "Clarithromycin 500 MG Oral Tablet")]
    [finding] = kinds(
        check_orders(drafts, context(active_medications=active), knowledge), "interaction"
    )
    assert finding.key == "interaction:clarithromycin+simvastatin"
    assert finding.severity == "critical"
    assert finding.order_ref == "MedicationRequest/d1"
    assert finding.involved == ("MedicationRequest/statin",)
    assert "rhabdomyolysis" in finding.summary and len(finding.summary) < 140
    assert "Simvastatin 20 MG Oral Tablet" in finding.detail and "group 25" in finding.detail
    assert any("Phansalkar" in c.title for c in finding.evidence)
    assert any("azithromycin" in a.lower() for a in finding.alternatives)
    assert ("not-current", "Medication list is out of date") in finding.override_reasons


def test_no_interaction_between_unrelated_drugs(knowledge: SafetyKnowledge) -> None:
    active = [order("a", "Amoxicillin 500 MG Oral Tablet", "active")]
    drafts = [order("d1", "Clarithromycin 500 MG Oral Tablet")]
    assert (
        kinds(check_orders(drafts, context(active_medications=active), knowledge), "interaction")
        == []
    )


def test_only_active_medications_count(knowledge: SafetyKnowledge) -> None:
    drafts = [order("d1", "Clarithromycin 500 MG Oral Tablet")]
    stopped = [order("old", "Simvastatin 20 MG Oral Tablet", "stopped")]
    assert check_orders(drafts, context(active_medications=stopped), knowledge) == []
    on_hold = [order("held", "Simvastatin 20 MG Oral Tablet", "on-hold")]
    assert kinds(
        check_orders(drafts, context(active_medications=on_hold), knowledge), "interaction"
    )
    statement = [order("said", "Simvastatin 20 MG", "active", kind="MedicationStatement")]
    [hit] = check_orders(drafts, context(active_medications=statement), knowledge)
    assert hit.involved == ("MedicationStatement/said",)


def test_two_drafts_interact_once(knowledge: SafetyKnowledge) -> None:
    drafts = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": order("d1", "Simvastatin 20 MG Oral Tablet")},
            {"resource": order("d2", "Clarithromycin 500 MG Oral Tablet")},
        ],
    }
    [finding] = check_orders(drafts, context(), knowledge)
    assert finding.kind == "interaction"
    assert (finding.order_ref, finding.involved) == (
        "MedicationRequest/d2",
        ("MedicationRequest/d1",),
    )


def test_a_draft_does_not_interact_with_itself(knowledge: SafetyKnowledge) -> None:
    # the EHR may already list the draft among the patient's active orders, under the same id
    draft = order("d1", "Clarithromycin 500 MG / Simvastatin 20 MG Oral Tablet")
    listed = {**draft, "status": "active"}
    assert check_orders([draft], context(active_medications=[listed]), knowledge) == []


def test_without_interaction_lists_other_checks_still_run(shipped: SafetyKnowledge) -> None:
    assert shipped.interactions_loaded is False
    active = [order("statin", "Simvastatin 20 MG Oral Tablet", "active")]
    drafts = [
        order("d1", "Clarithromycin 500 MG Oral Tablet"),
        order("d2", "Amoxicillin 500 MG Oral Tablet"),
    ]
    findings = check_orders(
        drafts, context(active_medications=active, allergies=[allergy()]), shipped
    )
    assert [f.key for f in findings] == ["allergy:amoxicillin"]


@pytest.mark.shared_data
def test_real_onc_lists_in_the_checks() -> None:
    real = SafetyKnowledge.load(shared_data("ddi"))
    assert real.interactions_loaded
    active = [
        order("statin", "Simvastatin 20 MG Oral Tablet", "active"),
        order("ac", "Warfarin Sodium 5 MG Oral Tablet", "active"),
    ]
    drafts = [
        order("d1", "Clarithromycin 500 MG Oral Tablet"),
        order("d2", "Acetaminophen 325 MG Oral Tablet"),
    ]
    findings = check_orders(drafts, context(active_medications=active), real)
    by_key = {f.key: f for f in findings}
    assert by_key["interaction:clarithromycin+simvastatin"].severity == "critical"
    assert by_key["interaction:acetaminophen+warfarin"].severity == "info"
    assert by_key["interaction:acetaminophen+warfarin"].order_ref == "MedicationRequest/d2"
    assert all(len(f.summary) < 140 for f in findings)


# --- allergies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("display", "severity"),
    [
        ("Amoxicillin 500 MG Oral Tablet", "critical"),
        ("Cephalexin 500 MG Oral Capsule", "warning"),
        ("meropenem 1000 MG Injection", "info"),
    ],
)
def test_penicillin_allergy_against_beta_lactams(
    knowledge: SafetyKnowledge, display: str, severity: str
) -> None:
    recorded = {
        **allergy(),
        "criticality": "high",
        "reaction": [{"manifestation": [{"coding": [{"system": SNOMED, "display": "Hives"}]}]}],
    }
    [finding] = check_orders([order("d1", display)], context(allergies=[recorded]), knowledge)
    assert (finding.kind, finding.severity) == ("allergy", severity)
    assert finding.involved == ("AllergyIntolerance/allergy-91936005",)
    assert "penicillin" in finding.detail.lower()
    assert "Recorded: criticality high; reaction: Hives." in finding.detail


def test_allergy_negative_cases(knowledge: SafetyKnowledge) -> None:
    drafts = [order("d1", "Azithromycin 250 MG Oral Tablet")]
    assert check_orders(drafts, context(allergies=[allergy()]), knowledge) == []
    amoxicillin = [order("d2", "Amoxicillin 500 MG Oral Tablet")]
    inactive = [allergy(clinical="inactive"), allergy(clinical="resolved")]
    assert check_orders(amoxicillin, context(allergies=inactive), knowledge) == []
    refuted = [allergy(verification="refuted"), allergy(verification="entered-in-error")]
    assert check_orders(amoxicillin, context(allergies=refuted), knowledge) == []


def test_sulfonamide_allergy_spares_non_antibiotic_sulfonamides(knowledge: SafetyKnowledge) -> None:
    sulfa = [allergy("294505008")]
    bactrim = [order("d1", "Sulfamethoxazole 800 MG / Trimethoprim 160 MG Oral Tablet")]
    [finding] = check_orders(bactrim, context(allergies=sulfa), knowledge)
    assert (finding.key, finding.severity) == ("allergy:sulfamethoxazole", "critical")
    furosemide = [order("d2", "Furosemide 40 MG Oral Tablet")]
    assert check_orders(furosemide, context(allergies=sulfa), knowledge) == []


# --- duplicate therapy ------------------------------------------------------------------------


def test_same_ingredient_is_a_duplicate(knowledge: SafetyKnowledge) -> None:
    active = [
        order("a", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet", "active")
    ]
    drafts = [order("d1", "Metformin hydrochloride 1000 MG Oral Tablet")]
    [finding] = check_orders(drafts, context(active_medications=active), knowledge)
    assert (finding.kind, finding.key, finding.severity) == (
        "duplicate",
        "duplicate:metformin",
        "warning",
    )


def test_same_class_is_a_duplicate_only_where_the_class_says_so(knowledge: SafetyKnowledge) -> None:
    statins = check_orders(
        [order("d1", "Atorvastatin 40 MG Oral Tablet")],
        context(active_medications=[order("a", "Rosuvastatin 10 MG Oral Tablet", "active")]),
        knowledge,
    )
    assert [f.key for f in statins] == ["duplicate:statins"]
    # long-acting plus short-acting opioid is standard care: not flagged
    opioids = check_orders(
        [order("d1", "Oxycodone Hydrochloride 5 MG Oral Tablet")],
        context(
            active_medications=[
                order("a", "12 HR Morphine Sulfate 30 MG Extended Release Oral Tablet", "active")
            ]
        ),
        knowledge,
    )
    assert opioids == []
    unrelated = check_orders(
        [order("d1", "Lisinopril 10 MG Oral Tablet")],
        context(active_medications=[order("a", "Amlodipine 5 MG Oral Tablet", "active")]),
        knowledge,
    )
    assert unrelated == []


# --- renal dosing -----------------------------------------------------------------------------


def test_metformin_is_contraindicated_with_egfr_from_a_newer_creatinine(
    knowledge: SafetyKnowledge,
) -> None:
    labs = [egfr(62, days_ago=20), lab("cr", "2160-0", 2.1, "mg/dL", NOW - timedelta(days=1))]
    drafts = [order("d1", "Metformin hydrochloride 500 MG Oral Tablet")]
    [finding] = check_orders(drafts, context(observations=labs), knowledge)
    assert (finding.kind, finding.key, finding.severity) == ("renal", "renal:metformin", "critical")
    assert finding.involved == ("Observation/cr",)
    assert "CKD-EPI 2021 from creatinine 2.10 mg/dL" in finding.detail
    assert finding.replacement is None


def test_metformin_between_30_and_45_depends_on_whether_it_is_new(
    knowledge: SafetyKnowledge,
) -> None:
    drafts = [order("d1", "Metformin hydrochloride 500 MG Oral Tablet")]
    [new] = check_orders(drafts, context(observations=[egfr(38)]), knowledge)
    assert new.severity == "warning" and "Do not start" in new.detail
    taking = [order("a", "Metformin hydrochloride 500 MG Oral Tablet", "active")]
    renal = kinds(
        check_orders(
            drafts, context(observations=[egfr(38)], active_medications=taking), knowledge
        ),
        "renal",
    )
    assert [f.severity for f in renal] == ["info"]


def test_dose_band_gives_a_replacement_order(knowledge: SafetyKnowledge) -> None:
    drafts = [order("d1", "Gabapentin 300 MG Oral Capsule")]
    [finding] = check_orders(drafts, context(observations=[egfr(25)]), knowledge)
    assert finding.severity == "warning"
    assert finding.replacement is not None
    assert "id" not in finding.replacement
    assert finding.replacement["dosageInstruction"][0]["text"].endswith(
        "200-700 mg per day as a single daily dose"
    )
    assert (
        finding.replacement["medicationCodeableConcept"] == drafts[0]["medicationCodeableConcept"]
    )
    assert drafts[0].get("dosageInstruction") is None  # the draft itself is left alone


def test_class_rule_applies_to_members(knowledge: SafetyKnowledge) -> None:
    [finding] = check_orders(
        [order("d1", "Ibuprofen 400 MG Oral Tablet")], context(observations=[egfr(22)]), knowledge
    )
    assert (finding.key, finding.severity) == ("renal:ibuprofen", "warning")


def test_no_renal_finding_without_a_recent_reduced_egfr(knowledge: SafetyKnowledge) -> None:
    drafts = [order("d1", "Metformin hydrochloride 500 MG Oral Tablet")]
    assert check_orders(drafts, context(observations=[egfr(20, days_ago=120)]), knowledge) == []
    assert check_orders(drafts, context(), knowledge) == []
    assert check_orders(drafts, context(observations=[egfr(88)]), knowledge) == []
    assert check_orders(drafts, context(observations=[egfr(20, comparator=">")]), knowledge) == []
    recent_enough = MedicationContext(
        observations=[egfr(20, days_ago=120)],
        patient=FEMALE_1950,
        now=NOW,
        egfr_max_age=timedelta(days=180),
    )
    assert [f.key for f in check_orders(drafts, recent_enough, knowledge)] == ["renal:metformin"]


# --- eGFR -------------------------------------------------------------------------------------


def test_ckd_epi_2021_worked_examples() -> None:
    # 60-year-old man, creatinine 1.0 mg/dL: 142 x (1.0/0.9)^-1.200 x 0.9938^60 = 86.2
    # (the NKF eGFR calculator gives 86 for the same inputs)
    assert ckd_epi_2021(1.0, 60, female=False) == pytest.approx(86.2, abs=0.1)
    # 70-year-old woman, creatinine 1.2 mg/dL: 142 x (1.2/0.7)^-1.200 x 0.9938^70 x 1.012 = 48.7
    assert ckd_epi_2021(1.2, 70, female=True) == pytest.approx(48.7, abs=0.1)
    # below kappa the other exponent applies: woman 40, creatinine 0.6 mg/dL:
    # (0.6/0.7)^-0.241 = 1.03785, 0.9938^40 = 0.77974 -> 142 x 1.03785 x 0.77974 x 1.012 = 116.3
    assert ckd_epi_2021(0.6, 40, female=True) == pytest.approx(116.3, abs=0.1)
    with pytest.raises(ValueError, match="creatinine"):
        ckd_epi_2021(0, 40, female=True)


def test_latest_egfr_prefers_the_newest_source() -> None:
    man = {"gender": "male", "birthDate": "1966-11-01"}
    creatinine = lab("cr", "2160-0", 88.4, "umol/L", NOW - timedelta(days=3))  # 1.0 mg/dL
    measured_later = egfr(55, days_ago=1)
    measured_earlier = egfr(55, days_ago=10)
    newer_lab = latest_egfr([creatinine, measured_later], man, NOW)
    assert newer_lab is not None and not newer_lab.computed and newer_lab.value == 55
    computed = latest_egfr([creatinine, measured_earlier], man, NOW)
    assert computed is not None and computed.computed and computed.source == "computed"
    assert computed.value == pytest.approx(ckd_epi_2021(1.0, 60, female=False))
    assert computed.reference == "Observation/cr"


def test_latest_egfr_ignores_what_it_cannot_trust() -> None:
    child = {"gender": "female", "birthDate": "2015-01-01"}
    creatinine = lab("cr", "2160-0", 0.5, "mg/dL", NOW - timedelta(days=1))
    measured = egfr(95, days_ago=5)
    reading = latest_egfr([creatinine, measured], child, NOW)  # no adult equation for a child
    assert reading is not None and reading.value == 95 and not reading.computed
    assert latest_egfr([creatinine], {"gender": "unknown", "birthDate": "1950-01-01"}, NOW) is None
    erroneous = {**egfr(15), "status": "entered-in-error"}
    assert latest_egfr([erroneous], FEMALE_1950, NOW) is None
    future = egfr(15, days_ago=-2)
    assert latest_egfr([future], FEMALE_1950, NOW) is None
    stale = egfr(15, days_ago=91)
    assert latest_egfr([stale], FEMALE_1950, NOW) is None
    assert latest_egfr([stale], FEMALE_1950, NOW, max_age=timedelta(days=100)) is not None


# --- what a finding may say -------------------------------------------------------------------


def test_summaries_are_short_and_carry_no_identifiers(knowledge: SafetyKnowledge) -> None:
    drafts = [
        order("d1", "Clarithromycin 500 MG Oral Tablet"),
        order("d2", "Amoxicillin 500 MG Oral Tablet"),
        order("d3", "Metformin hydrochloride 500 MG Oral Tablet"),
        order("d4", "Atorvastatin 40 MG Oral Tablet"),
    ]
    ctx = context(
        active_medications=[order("a", "Simvastatin 20 MG Oral Tablet", "active")],
        allergies=[allergy()],
        observations=[egfr(20)],
    )
    findings = check_orders(drafts, ctx, knowledge)
    assert {f.kind for f in findings} == {"interaction", "allergy", "duplicate", "renal"}
    for finding in findings:
        assert len(finding.summary) < 140
        for text in (finding.summary, finding.detail):
            assert PATIENT_NAME not in text and PATIENT_GIVEN not in text
            assert FEMALE_1950["id"] not in text
        assert finding.evidence and finding.override_reasons


def test_bad_draft_entries_are_named(knowledge: SafetyKnowledge) -> None:
    with pytest.raises(ValueError, match=r"draftOrders\.entry\[1\] has no resource"):
        check_orders(
            {"resourceType": "Bundle", "entry": [{"resource": order("d1", "x")}, {}]},
            context(),
            knowledge,
        )
    with pytest.raises(ValueError, match="draft order 0 is not a FHIR resource"):
        check_orders(["not a resource"], context(), knowledge)  # type: ignore[list-item]


# --- knowledge files --------------------------------------------------------------------------


def _knowledge_copy(tmp_path: Path) -> Path:
    for path in KNOWLEDGE_DIR.glob("*.yaml"):
        shutil.copyfile(path, tmp_path / path.name)
    return tmp_path


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        ("drug_classes.yaml", "classes:\n", "classes:\n  : [\n", r"drug_classes\.yaml line \d+"),
        (
            "drug_classes.yaml",
            "  paracetamol: acetaminophen\n",
            "  paracetamol: acetaminophen\n  paracetamol: aspirin\n",
            r"drug_classes\.yaml line \d+: duplicate key 'paracetamol'",
        ),
        (
            "drug_classes.yaml",
            "    duplicate_therapy: true\n",
            "    duplicate_therapy: maybe\n",
            r"drug_classes\.yaml line \d+: class 'penicillins': duplicate_therapy must be "
            "true/false",
        ),
        (
            "renal_dosing.yaml",
            "      - below: 30\n        severity: critical\n",
            "      - below: 30\n        severity: severe\n",
            r"renal_dosing\.yaml line \d+: severity must be one of info, warning, critical",
        ),
        (
            "renal_dosing.yaml",
            "      - below: 15\n        severity: warning\n",
            "      - below: low\n        severity: warning\n",
            r"renal_dosing\.yaml line \d+: below must be an eGFR",
        ),
        (
            "interaction_guidance.yaml",
            "    risk: hypertensive crisis\n    consequence:",
            "    risk: hypertensive crisis\n    consequences:",
            r"interaction_guidance\.yaml line \d+: consequence must be text",
        ),
    ],
)
def test_malformed_knowledge_files_name_file_and_line(
    tmp_path: Path, file: str, old: str, new: str, message: str
) -> None:
    directory = _knowledge_copy(tmp_path)
    text = (directory / file).read_text(encoding="utf-8")
    assert old in text
    (directory / file).write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        SafetyKnowledge.load(None, knowledge_dir=directory)


def test_error_line_points_at_the_problem(tmp_path: Path) -> None:
    directory = _knowledge_copy(tmp_path)
    path = directory / "renal_dosing.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    target = next(i for i, line in enumerate(lines) if line.strip() == "severity: critical")
    lines[target] = lines[target].replace("critical", "grave")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        SafetyKnowledge.load(None, knowledge_dir=directory)
    # the message names the threshold entry that holds the bad value (one line above it)
    assert f"renal_dosing.yaml line {target}:" in str(caught.value)


def test_shipped_knowledge_loads_fast() -> None:
    started = datetime.now(UTC)
    SafetyKnowledge.load(None)
    assert datetime.now(UTC) - started < timedelta(seconds=1)


# --- never crash on what the EHR sends -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_display_string_parses_without_error(display: str) -> None:
    for ingredient in ingredients_from_name(display):
        assert ingredient and ingredient == ingredient.lower()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    display=st.text(max_size=80),
    concept=_JSON,
    status=st.sampled_from(["active", "on-hold", "stopped", None]),
)
def test_any_medication_content_gives_findings_without_error(
    knowledge: SafetyKnowledge, display: str, concept: object, status: str | None
) -> None:
    drafts = [
        order("d1", display),
        {"resourceType": "MedicationRequest", "medicationCodeableConcept": concept},
    ]
    active = [
        {
            "resourceType": "MedicationRequest",
            "status": status,
            "medicationCodeableConcept": concept,
        }
    ]
    weird_allergy = {
        "resourceType": "AllergyIntolerance",
        "code": concept,
        "clinicalStatus": concept,
    }
    findings = check_orders(
        drafts, context(active_medications=active, allergies=[weird_allergy]), knowledge
    )
    assert all(len(f.summary) < 140 for f in findings)


def test_orders_without_ids_stay_distinct(knowledge: SafetyKnowledge) -> None:
    draft = order("x", "Clarithromycin 500 MG Oral Tablet")
    active = order("y", "Simvastatin 20 MG Oral Tablet", "active")
    del draft["id"], active["id"]
    [finding] = check_orders([draft], context(active_medications=[active]), knowledge)
    assert (finding.order_ref, finding.involved) == (
        "MedicationRequest/#draft-0",
        ("MedicationRequest/#0",),
    )
