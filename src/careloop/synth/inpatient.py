"""A hospital stay: hourly ward vital signs, labs every 6-24 h, and for some a drift into sepsis.

Physiology is the person's own baseline plus two disturbances: the illness they were admitted
with, which fades as treatment works, and (for septic stays) a sepsis severity that starts to
climb `drift_lead_hours` before the recorded onset, peaks a few hours after it, and then resolves
on treatment. Nurses chart less at night and more when a patient is unwell, as they do on a ward.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from careloop.fhir.codes import ACT_CODE, SNOMED
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
from careloop.synth.catalog import Diagnosis
from careloop.synth.chronic import condition_resource, diagnosis_concept
from careloop.synth.context import PatientContext
from careloop.synth.medications import discharge_antibiotic, medication_request
from careloop.synth.observations import blood_pressure_observation, quantity_observation
from careloop.synth.physiology import Physiology, clamp

HOURS_PER_DAY = 24
SEPSIS_PEAK_AFTER_ONSET_HOURS = 3.0
COMPLETE_BLOOD_COUNT = (catalog.WBC, catalog.PLATELETS, catalog.HEMOGLOBIN)
METABOLIC_PANEL = (
    catalog.CREATININE,
    catalog.GLUCOSE,
    catalog.POTASSIUM,
    catalog.SODIUM,
    catalog.BUN,
)
# Share of hours a vital is charted on a calm day shift; nights and sicker hours adjust it.
CHARTING_RATE = {
    catalog.HEART_RATE: 0.93,
    catalog.OXYGEN_SATURATION: 0.9,
    catalog.RESPIRATORY_RATE: 0.8,
    catalog.SYSTOLIC_BP: 0.85,
}


@dataclass(frozen=True)
class StayPlan:
    admit: datetime
    length_hours: int
    reason: Diagnosis
    sepsis_onset_hour: float | None = None
    drift_lead_hours: float = 0.0
    recovery_hours: float = 24.0
    # How hard this person's physiology swings with sepsis; people differ.
    sepsis_response: float = 1.0

    @property
    def discharge(self) -> datetime:
        return self.admit + timedelta(hours=self.length_hours)


def plan_stay(ctx: PatientContext, septic: bool) -> StayPlan:
    rng = ctx.rng
    if ctx.has(catalog.COPD) and not septic and rng.random() < 0.5:
        reason = catalog.COPD_EXACERBATION
    else:
        reason = rng.choice(catalog.INFECTIOUS_ADMISSION_REASONS)
    # Emergency admissions arrive at any hour; keep whole minutes as an EHR would show them.
    admit = ctx.window_start + timedelta(minutes=rng.randint(3 * 1440, 75 * 1440))
    if not septic:
        return StayPlan(admit, rng.randint(48, 120), reason)
    # Onset no earlier than day 2, so there is a stable stretch to compare against.
    onset = rng.uniform(36.0, 60.0)
    return StayPlan(
        admit=admit,
        length_hours=int(min(144.0, onset + rng.uniform(60.0, 96.0))),
        reason=reason,
        sepsis_onset_hour=onset,
        drift_lead_hours=rng.uniform(10.0, 16.0),
        recovery_hours=rng.uniform(18.0, 30.0),
        sepsis_response=rng.uniform(0.85, 1.15),
    )


def admission_illness(hour: float) -> float:
    # Patients arrive unwell with what brought them in and improve as treatment takes hold.
    return 0.35 * math.exp(-hour / 24.0)


def sepsis_severity(plan: StayPlan, hour: float) -> float:
    if plan.sepsis_onset_hour is None:
        return 0.0
    drift_start = plan.sepsis_onset_hour - plan.drift_lead_hours
    peak = plan.sepsis_onset_hour + SEPSIS_PEAK_AFTER_ONSET_HOURS
    if hour <= drift_start:
        return 0.0
    if hour <= peak:
        severity = (hour - drift_start) / (peak - drift_start)
    else:
        severity = math.exp(-(hour - peak) / plan.recovery_hours)
    return severity * plan.sepsis_response


def _circadian(moment: datetime) -> float:
    # Peaks mid-afternoon and dips before dawn, like heart rate and temperature do.
    hour = moment.hour + moment.minute / 60
    return math.sin(2 * math.pi * (hour - 10) / HOURS_PER_DAY)


def ward_vitals(
    body: Physiology, illness: float, sepsis: float, moment: datetime, rng: random.Random
) -> dict[Measure, float]:
    rhythm = _circadian(moment)
    systolic = clamp(body.systolic - 5 * illness - 35 * sepsis + rng.gauss(0, 7), 70, 210)
    diastolic = body.diastolic - 2 * illness - 18 * sepsis + rng.gauss(0, 5)
    return {
        catalog.HEART_RATE: clamp(
            body.heart_rate + 12 * illness + 35 * sepsis + 3 * rhythm + rng.gauss(0, 3.5), 40, 175
        ),
        catalog.RESPIRATORY_RATE: clamp(
            body.respiratory_rate + 3 * illness + 10 * sepsis + rng.gauss(0, 1.2), 8, 40
        ),
        catalog.OXYGEN_SATURATION: clamp(
            body.spo2 - 1.5 * illness - 5 * sepsis + rng.gauss(0, 0.8), 82, 100
        ),
        catalog.BODY_TEMPERATURE: clamp(
            body.temperature + 0.6 * illness + 1.8 * sepsis + 0.2 * rhythm + rng.gauss(0, 0.15),
            35.0,
            41.0,
        ),
        catalog.SYSTOLIC_BP: systolic,
        catalog.DIASTOLIC_BP: clamp(diastolic, 35, systolic - 20),
    }


def ward_labs(
    body: Physiology, illness: float, sepsis: float, hour: float, rng: random.Random
) -> dict[Measure, float]:
    return {
        catalog.LACTATE: clamp(
            body.lactate + 0.4 * illness + 3.2 * sepsis + rng.gauss(0, 0.15), 0.4, 12.0
        ),
        catalog.WBC: clamp(body.wbc + 5 * illness + 10 * sepsis + rng.gauss(0, 0.7), 1.0, 40.0),
        catalog.CREATININE: clamp(
            body.creatinine * (1 + 0.1 * illness + 0.9 * sepsis) + rng.gauss(0, 0.04), 0.3, 8.0
        ),
        catalog.PLATELETS: clamp(body.platelets * (1 - 0.45 * sepsis) + rng.gauss(0, 10), 10, 600),
        catalog.BILIRUBIN_TOTAL: clamp(body.bilirubin + 1.5 * sepsis + rng.gauss(0, 0.08), 0.1, 10),
        catalog.GLUCOSE: clamp(
            body.glucose + 15 * illness + 45 * sepsis + rng.gauss(0, 10), 45, 450
        ),
        catalog.POTASSIUM: clamp(body.potassium + 0.3 * sepsis + rng.gauss(0, 0.15), 2.8, 6.5),
        catalog.SODIUM: clamp(body.sodium - 2 * sepsis + rng.gauss(0, 1.0), 122, 155),
        # Daily phlebotomy and dilution nudge haemoglobin down over a stay.
        catalog.HEMOGLOBIN: clamp(
            body.hemoglobin - 0.6 * sepsis - 0.15 * hour / HOURS_PER_DAY + rng.gauss(0, 0.2), 6, 18
        ),
        catalog.BUN: clamp(body.bun + 12 * sepsis + rng.gauss(0, 1.5), 4, 120),
    }


def _is_charted(rng: random.Random, usual_rate: float, moment: datetime, sick: bool) -> bool:
    if sick:
        return rng.random() < 0.97
    night = moment.hour < 6
    return rng.random() < (usual_rate - 0.2 if night else usual_rate)


def _vital_resources(
    ctx: PatientContext, plan: StayPlan, encounter: Resource, hour: int
) -> list[Resource]:
    rng = ctx.rng
    moment = plan.admit + timedelta(hours=hour, minutes=rng.randint(0, 12))
    illness, sepsis = admission_illness(hour), sepsis_severity(plan, hour)
    sick = sepsis > 0.3
    values = ward_vitals(ctx.physiology, illness, sepsis, moment, rng)
    encounter_ref = reference_to(encounter)
    resources = []
    for measure in (catalog.HEART_RATE, catalog.RESPIRATORY_RATE, catalog.OXYGEN_SATURATION):
        if _is_charted(rng, CHARTING_RATE[measure], moment, sick):
            resources.append(
                quantity_observation(
                    ctx.ids.next("Observation"),
                    measure,
                    values[measure],
                    moment,
                    ctx.subject,
                    encounter=encounter_ref,
                )
            )
    if _is_charted(rng, CHARTING_RATE[catalog.SYSTOLIC_BP], moment, sick):
        resources.append(
            blood_pressure_observation(
                ctx.ids.next("Observation"),
                values[catalog.SYSTOLIC_BP],
                values[catalog.DIASTOLIC_BP],
                moment,
                ctx.subject,
                encounter_ref,
            )
        )
    # Temperature is a four-hourly observation unless the patient looks septic.
    temperature_due = hour % 4 == 0 and rng.random() < 0.9
    if temperature_due or (sick and rng.random() < 0.6):
        resources.append(
            quantity_observation(
                ctx.ids.next("Observation"),
                catalog.BODY_TEMPERATURE,
                values[catalog.BODY_TEMPERATURE],
                moment,
                ctx.subject,
                encounter=encounter_ref,
            )
        )
    return resources


def _next_morning_round(plan: StayPlan, last_draw: float, rng: random.Random) -> float:
    earliest = plan.admit + timedelta(hours=last_draw + 6)
    morning = earliest.replace(hour=5, minute=0, second=0, microsecond=0)
    if morning < earliest:
        morning += timedelta(days=1)
    morning += timedelta(minutes=rng.randint(0, 90))
    return (morning - plan.admit).total_seconds() / 3600


def _deterioration_noticed(plan: StayPlan, after: float, before: float) -> float | None:
    """The first hour the team would send bloods because the patient looks worse."""
    hour = math.floor(after) + 1
    while hour < before:
        if sepsis_severity(plan, hour) > 0.35:
            return float(hour)
        hour += 1
    return None


def lab_draw_hours(plan: StayPlan, rng: random.Random) -> list[float]:
    """Admission bloods, then the morning round, or every ~6 h while sepsis is being chased."""
    hours = [rng.uniform(0.3, 1.5)]
    while True:
        last = hours[-1]
        if sepsis_severity(plan, last) > 0.25:
            upcoming = last + rng.uniform(5.5, 7.0)
        else:
            upcoming = _next_morning_round(plan, last, rng)
            noticed = _deterioration_noticed(plan, last + 2, upcoming)
            if noticed is not None:
                upcoming = noticed + rng.uniform(0.5, 1.5)
        if upcoming >= plan.length_hours - 1:
            return hours
        hours.append(upcoming)


def _ordered_panels(rng: random.Random, first_draw: bool, sick: bool) -> list[Measure]:
    ordered: list[Measure] = []
    if rng.random() < (0.97 if first_draw else 0.9):
        ordered += COMPLETE_BLOOD_COUNT
    if rng.random() < (0.97 if first_draw else 0.9):
        ordered += METABOLIC_PANEL
    lactate_chance = 0.6 if first_draw else (0.9 if sick else 0.1)
    if rng.random() < lactate_chance:
        ordered.append(catalog.LACTATE)
    if rng.random() < (0.7 if first_draw or sick else 0.25):
        ordered.append(catalog.BILIRUBIN_TOTAL)
    # A haemolysed or lost tube: single results go missing now and then.
    return [measure for measure in ordered if rng.random() >= 0.03]


def _lab_resources(
    ctx: PatientContext, plan: StayPlan, encounter: Resource, hour: float, first_draw: bool
) -> list[Resource]:
    rng = ctx.rng
    collected = plan.admit + timedelta(hours=hour)
    sepsis = sepsis_severity(plan, hour)
    values = ward_labs(ctx.physiology, admission_illness(hour), sepsis, hour, rng)
    resulted = timestamp(collected + timedelta(minutes=rng.randint(40, 100)))
    resources = []
    for measure in _ordered_panels(rng, first_draw, sick=sepsis > 0.25):
        observation = quantity_observation(
            ctx.ids.next("Observation"),
            measure,
            values[measure],
            collected,
            ctx.subject,
            encounter=reference_to(encounter),
        )
        # When the result reached the chart; what a real-time model could have known.
        observation["issued"] = resulted
        resources.append(observation)
    return resources


def inpatient_encounter(ctx: PatientContext, plan: StayPlan) -> Resource:
    encounter = new_resource("Encounter", ctx.ids.next("Encounter"))
    encounter["status"] = "finished"
    encounter["class"] = coding(ACT_CODE, "IMP", "inpatient encounter")
    encounter["type"] = [concept(coding(SNOMED, *catalog.EMERGENCY_ADMISSION))]
    encounter["subject"] = ctx.subject
    encounter["participant"] = [{"individual": reference_to(ctx.hospitalist)}]
    encounter["period"] = {"start": timestamp(plan.admit), "end": timestamp(plan.discharge)}
    encounter["reasonCode"] = [diagnosis_concept(plan.reason)]
    septic = plan.sepsis_onset_hour is not None
    disposition = (
        ("snf", "Skilled nursing facility")
        if septic and ctx.rng.random() < 0.4
        else ("home", "Home")
    )
    encounter["hospitalization"] = {
        "dischargeDisposition": concept(coding(catalog.DISCHARGE_DISPOSITION, *disposition))
    }
    encounter["serviceProvider"] = reference_to(ctx.site.hospital)
    return encounter


def _sepsis_condition(ctx: PatientContext, plan: StayPlan, encounter: Resource) -> Resource:
    assert plan.sepsis_onset_hour is not None
    onset = plan.admit + timedelta(hours=plan.sepsis_onset_hour)
    return condition_resource(
        ctx,
        catalog.SEPSIS,
        category=("encounter-diagnosis", "Encounter Diagnosis"),
        onset=onset,
        recorded=onset + timedelta(hours=ctx.rng.uniform(1.0, 4.0)),
        encounter=encounter,
        abatement=plan.discharge,
        ground_truth=True,
    )


def hospital_stay(ctx: PatientContext, septic: bool) -> list[Resource]:
    """Encounter, admitting diagnosis, time-ordered vitals and labs, then the sepsis truth."""
    plan = plan_stay(ctx, septic)
    encounter = inpatient_encounter(ctx, plan)
    admitting = condition_resource(
        ctx,
        plan.reason,
        category=("encounter-diagnosis", "Encounter Diagnosis"),
        onset=plan.admit - timedelta(hours=ctx.rng.uniform(6, 48)),
        recorded=plan.admit + timedelta(minutes=ctx.rng.randint(20, 90)),
        encounter=encounter,
        abatement=plan.discharge,
    )
    observations: list[Resource] = []
    for hour in range(plan.length_hours):
        observations += _vital_resources(ctx, plan, encounter, hour)
    for number, hour in enumerate(lab_draw_hours(plan, ctx.rng)):
        observations += _lab_resources(ctx, plan, encounter, hour, first_draw=number == 0)
    # All timestamps are UTC in one format, so text order is time order; the sort is stable.
    observations.sort(key=lambda observation: observation["effectiveDateTime"])
    resources = [encounter, admitting, *observations]
    if septic:
        resources.append(_sepsis_condition(ctx, plan, encounter))
    antibiotic = discharge_antibiotic(ctx, plan.reason)
    if antibiotic is not None:
        resources.append(
            medication_request(
                ctx,
                antibiotic,
                encounter=encounter,
                authored=plan.discharge - timedelta(hours=2),
                requester=ctx.hospitalist,
                reason=admitting,
                status="completed",
            )
        )
    return resources
