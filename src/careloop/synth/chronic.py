"""The outpatient record: problem list, allergies, clinic visits with vitals and labs, and drugs."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from careloop.fhir.codes import ACT_CODE, ALLERGY_CLINICAL, CONDITION_CLINICAL, ICD10_CM, SNOMED
from careloop.synth import catalog
from careloop.synth._fhir import (
    Measure,
    Resource,
    coding,
    concept,
    new_resource,
    reference_to,
    timestamp,
)
from careloop.synth.catalog import Allergen, Diagnosis
from careloop.synth.context import PatientContext
from careloop.synth.medications import chronic_prescriptions
from careloop.synth.observations import blood_pressure_observation, quantity_observation
from careloop.synth.physiology import clamp

DAYS_PER_YEAR = 365.25


def _prevalence(age: int, at_40: float, at_90: float) -> float:
    progress = clamp((age - 40) / 50, 0.0, 1.0)
    return at_40 + progress * (at_90 - at_40)


def draw_chronic_diagnoses(
    rng: random.Random, age: int, required: tuple[Diagnosis, ...] = ()
) -> list[Diagnosis]:
    return [
        diagnosis
        for diagnosis, at_40, at_90 in catalog.CHRONIC_PREVALENCE
        # Draw for every diagnosis even when required, so the random stream stays aligned.
        if rng.random() < _prevalence(age, at_40, at_90) or diagnosis in required
    ]


def draw_allergens(rng: random.Random) -> tuple[Allergen, ...]:
    if rng.random() >= 0.25:
        return ()
    allergens = [allergen for allergen, _ in catalog.ALLERGEN_MIX]
    weights = [weight for _, weight in catalog.ALLERGEN_MIX]
    first = rng.choices(allergens, weights)[0]
    second = rng.choices(allergens, weights)[0]
    return (first,) if second == first or rng.random() >= 0.15 else (first, second)


def diagnosis_concept(diagnosis: Diagnosis) -> dict[str, object]:
    return concept(
        coding(SNOMED, diagnosis.snomed, diagnosis.snomed_display),
        coding(ICD10_CM, diagnosis.icd10, diagnosis.icd10_display),
        text=diagnosis.text,
    )


def condition_resource(
    ctx: PatientContext,
    diagnosis: Diagnosis,
    *,
    category: tuple[str, str],
    onset: datetime,
    recorded: datetime,
    encounter: Resource | None = None,
    abatement: datetime | None = None,
    ground_truth: bool = False,
) -> Resource:
    condition = new_resource("Condition", ctx.ids.next("Condition"), ground_truth=ground_truth)
    status = "resolved" if abatement is not None else "active"
    condition["clinicalStatus"] = concept(coding(CONDITION_CLINICAL, status, status.title()))
    condition["verificationStatus"] = concept(
        coding(catalog.CONDITION_VERIFICATION, "confirmed", "Confirmed")
    )
    condition["category"] = [concept(coding(catalog.CONDITION_CATEGORY, *category))]
    condition["code"] = diagnosis_concept(diagnosis)
    condition["subject"] = ctx.subject
    if encounter is not None:
        condition["encounter"] = reference_to(encounter)
    condition["onsetDateTime"] = timestamp(onset)
    if abatement is not None:
        condition["abatementDateTime"] = timestamp(abatement)
    condition["recordedDate"] = timestamp(recorded)
    return condition


def problem_list(ctx: PatientContext, diagnoses: list[Diagnosis]) -> list[Resource]:
    resources = []
    adult_years = ctx.person.age - 22
    for diagnosis in diagnoses:
        years_ago = ctx.rng.uniform(0.5, max(1.0, min(15.0, adult_years)))
        onset = ctx.window_start - timedelta(days=years_ago * DAYS_PER_YEAR)
        recorded = onset + timedelta(days=ctx.rng.uniform(0, 30))
        condition = condition_resource(
            ctx,
            diagnosis,
            category=("problem-list-item", "Problem List Item"),
            onset=onset,
            recorded=min(recorded, ctx.window_start - timedelta(days=1)),
        )
        ctx.chronic_conditions[diagnosis.key] = condition
        resources.append(condition)
    return resources


def allergy_resource(ctx: PatientContext, allergen: Allergen) -> Resource:
    reaction_code, reaction_display, severity = ctx.rng.choices(
        catalog.REACTIONS, weights=(0.5, 0.4, 0.1)
    )[0]
    allergy = new_resource("AllergyIntolerance", ctx.ids.next("AllergyIntolerance"))
    allergy["clinicalStatus"] = concept(coding(ALLERGY_CLINICAL, "active", "Active"))
    allergy["verificationStatus"] = concept(
        coding(catalog.ALLERGY_VERIFICATION, "confirmed", "Confirmed")
    )
    allergy["type"] = "allergy"
    allergy["category"] = [allergen.category]
    allergy["criticality"] = "high" if severity == "severe" else "low"
    allergy["code"] = concept(
        coding(allergen.system, allergen.code, allergen.display), text=allergen.display
    )
    allergy["patient"] = ctx.subject
    years_ago = ctx.rng.uniform(1.0, max(2.0, ctx.person.age - 5.0))
    allergy["recordedDate"] = timestamp(ctx.window_start - timedelta(days=years_ago * 365.25))
    allergy["reaction"] = [
        {
            "manifestation": [concept(coding(SNOMED, reaction_code, reaction_display))],
            "severity": severity,
        }
    ]
    return allergy


def _visit_times(ctx: PatientContext) -> list[datetime]:
    # Sicker people are seen more often; everyone has had at least one visit in the last year.
    count = 1 + min(3, len(ctx.chronic_conditions) // 2) + ctx.rng.randint(0, 1)
    days_before = sorted(ctx.rng.sample(range(14, 365), count), reverse=True)
    midnight = ctx.window_start.replace(hour=0, minute=0, second=0, microsecond=0)
    return [midnight - timedelta(days=days) + _clinic_hour(ctx.rng) for days in days_before]


def _clinic_hour(rng: random.Random) -> timedelta:
    return timedelta(hours=rng.randint(8, 16), minutes=15 * rng.randint(0, 3))


def outpatient_encounter(ctx: PatientContext, start: datetime) -> Resource:
    encounter = new_resource("Encounter", ctx.ids.next("Encounter"))
    encounter["status"] = "finished"
    encounter["class"] = coding(ACT_CODE, "AMB", "ambulatory")
    visit_type = catalog.PROBLEM_VISIT if ctx.chronic_conditions else catalog.CHECK_UP_VISIT
    encounter["type"] = [concept(coding(SNOMED, *visit_type))]
    encounter["subject"] = ctx.subject
    encounter["participant"] = [{"individual": reference_to(ctx.primary_care)}]
    end = start + timedelta(minutes=ctx.rng.choice((20, 30, 40)))
    encounter["period"] = {"start": timestamp(start), "end": timestamp(end)}
    encounter["serviceProvider"] = reference_to(ctx.site.clinic)
    return encounter


def _visit_measurements(ctx: PatientContext, first_visit: bool) -> list[tuple[Measure, float]]:
    body = ctx.physiology
    rng = ctx.rng
    weight = body.weight_kg + rng.gauss(0, 0.8)
    measured = [
        (catalog.HEART_RATE, clamp(body.heart_rate + rng.gauss(2, 5), 45, 120)),
        (catalog.BODY_WEIGHT, weight),
        (catalog.BMI, weight / (body.height_cm / 100) ** 2),
    ]
    if first_visit:
        measured.append((catalog.BODY_HEIGHT, body.height_cm))
    if rng.random() < 0.75:
        measured += [
            (catalog.CREATININE, body.creatinine * rng.uniform(0.93, 1.07)),
            (catalog.GLUCOSE, body.glucose + rng.gauss(0, 8)),
            (catalog.POTASSIUM, body.potassium + rng.gauss(0, 0.15)),
            (catalog.SODIUM, body.sodium + rng.gauss(0, 1)),
            (catalog.BUN, body.bun + rng.gauss(0, 2)),
        ]
        if ctx.has(catalog.TYPE2_DIABETES) or rng.random() < 0.3:
            measured.append((catalog.HBA1C, body.hba1c + rng.gauss(0, 0.2)))
    return measured


def clinic_visit(ctx: PatientContext, start: datetime, first_visit: bool) -> list[Resource]:
    encounter = outpatient_encounter(ctx, start)
    vitals_time = start + timedelta(minutes=5)
    # White-coat effect: clinic readings sit a little above the person's usual pressure.
    systolic = ctx.physiology.systolic + ctx.rng.gauss(4, 6)
    diastolic = min(ctx.physiology.diastolic + ctx.rng.gauss(2, 4), systolic - 25)
    pressure = blood_pressure_observation(
        ctx.ids.next("Observation"),
        systolic,
        diastolic,
        vitals_time,
        ctx.subject,
        reference_to(encounter),
    )
    resources = [encounter, pressure]
    for measure, value in _visit_measurements(ctx, first_visit):
        when = vitals_time if measure.category == "vital-signs" else start + timedelta(minutes=25)
        resources.append(
            quantity_observation(
                ctx.ids.next("Observation"),
                measure,
                value,
                when,
                ctx.subject,
                encounter=reference_to(encounter),
            )
        )
    return resources


def outpatient_record(ctx: PatientContext, diagnoses: list[Diagnosis]) -> list[Resource]:
    """Problem list, allergies, the last year's clinic visits, and the drugs prescribed there."""
    resources = problem_list(ctx, diagnoses)
    resources += [allergy_resource(ctx, allergen) for allergen in ctx.allergens]
    visits = _visit_times(ctx)
    last_encounter: Resource | None = None
    for number, start in enumerate(visits):
        visit_resources = clinic_visit(ctx, start, first_visit=number == 0)
        last_encounter = visit_resources[0]
        resources += visit_resources
    assert last_encounter is not None  # _visit_times always returns at least one visit
    resources += chronic_prescriptions(ctx, last_encounter, visits[-1] + timedelta(minutes=20))
    return resources
