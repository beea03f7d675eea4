"""Prescriptions that follow from a patient's problem list and allergies."""

from __future__ import annotations

from datetime import datetime

from careloop.fhir.codes import RXNORM, SNOMED
from careloop.synth import catalog
from careloop.synth._fhir import Resource, coding, concept, new_resource, reference_to, timestamp
from careloop.synth.catalog import Diagnosis, Drug
from careloop.synth.context import PatientContext


def medication_request(
    ctx: PatientContext,
    drug: Drug,
    *,
    encounter: Resource,
    authored: datetime,
    requester: Resource,
    reason: Resource | None,
    status: str = "active",
) -> Resource:
    request = new_resource("MedicationRequest", ctx.ids.next("MedicationRequest"))
    request["status"] = status
    request["intent"] = "order"
    request["medicationCodeableConcept"] = concept(
        coding(RXNORM, drug.rxnorm, drug.display), text=drug.display
    )
    request["subject"] = ctx.subject
    request["encounter"] = reference_to(encounter)
    request["authoredOn"] = timestamp(authored)
    request["requester"] = reference_to(requester)
    if reason is not None:
        request["reasonReference"] = [reference_to(reason)]
    dosage: dict[str, object] = {
        "sequence": 1,
        "text": drug.instruction,
        "timing": {"repeat": {"frequency": drug.doses_per_day, "period": 1, "periodUnit": "d"}},
    }
    if drug.as_needed:
        dosage["asNeededBoolean"] = True
    if drug.oral:
        dosage["route"] = concept(coding(SNOMED, *catalog.ORAL_ROUTE_SNOMED))
    request["dosageInstruction"] = [dosage]
    return request


def chronic_regimen(ctx: PatientContext) -> list[tuple[Drug, Diagnosis]]:
    """Guideline-shaped, not guideline-perfect: the usual first-line drugs for each diagnosis."""
    regimen: list[tuple[Drug, Diagnosis]] = []
    if ctx.has(catalog.HYPERTENSION):
        regimen.append((catalog.LISINOPRIL_10, catalog.HYPERTENSION))
        if ctx.rng.random() < 0.35:
            regimen.append((catalog.AMLODIPINE_5, catalog.HYPERTENSION))
    if ctx.has(catalog.HEART_FAILURE):
        if not ctx.has(catalog.HYPERTENSION):
            regimen.append((catalog.LISINOPRIL_20, catalog.HEART_FAILURE))
        regimen.append((catalog.FUROSEMIDE_40, catalog.HEART_FAILURE))
        regimen.append((catalog.CARVEDILOL_25, catalog.HEART_FAILURE))
    if ctx.has(catalog.TYPE2_DIABETES):
        regimen.append((catalog.METFORMIN_500, catalog.TYPE2_DIABETES))
    if ctx.has(catalog.HYPERLIPIDEMIA):
        regimen.append((catalog.ATORVASTATIN_20, catalog.HYPERLIPIDEMIA))
    if ctx.has(catalog.ATRIAL_FIBRILLATION):
        anticoagulant = catalog.APIXABAN_5 if ctx.rng.random() < 0.7 else catalog.WARFARIN_5
        regimen.append((anticoagulant, catalog.ATRIAL_FIBRILLATION))
    if ctx.has(catalog.COPD):
        regimen.append((catalog.ALBUTEROL_INHALER, catalog.COPD))
    return regimen


def chronic_prescriptions(
    ctx: PatientContext, visit: Resource, visit_time: datetime
) -> list[Resource]:
    return [
        medication_request(
            ctx,
            drug,
            encounter=visit,
            authored=visit_time,
            requester=ctx.primary_care,
            reason=ctx.chronic_conditions[diagnosis.key],
        )
        for drug, diagnosis in chronic_regimen(ctx)
    ]


def discharge_antibiotic(ctx: PatientContext, infection: Diagnosis) -> Drug | None:
    """Oral step-down therapy, switched away from penicillins for penicillin-allergic patients."""
    if infection not in (catalog.PNEUMONIA, catalog.CELLULITIS):
        return None
    if not ctx.avoids(catalog.AMOXICILLIN_500.key):
        return catalog.AMOXICILLIN_500
    if infection == catalog.PNEUMONIA:
        return catalog.AZITHROMYCIN_250
    return catalog.DOXYCYCLINE_100
