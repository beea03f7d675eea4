"""Each person's own resting physiology, drawn once so clinic, ward and home data agree."""

from __future__ import annotations

import random
from dataclasses import dataclass

from careloop.synth import catalog
from careloop.synth.catalog import Diagnosis
from careloop.synth.people import Person


@dataclass(frozen=True)
class Physiology:
    height_cm: float
    weight_kg: float
    heart_rate: float
    systolic: float
    diastolic: float
    respiratory_rate: float
    spo2: float
    temperature: float
    creatinine: float
    glucose: float
    hba1c: float
    potassium: float
    sodium: float
    bun: float
    hemoglobin: float
    wbc: float
    platelets: float
    bilirubin: float
    lactate: float


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _body_size(rng: random.Random, person: Person, keys: set[str]) -> tuple[float, float]:
    mean_height = 163.0 if person.gender == "female" else 177.0
    height = clamp(rng.gauss(mean_height, 7.0), 145.0, 200.0)
    metabolic = catalog.TYPE2_DIABETES.key in keys or catalog.HEART_FAILURE.key in keys
    bmi = clamp(rng.gauss(30.5 if metabolic else 27.0, 4.5), 18.5, 45.0)
    return height, bmi * (height / 100.0) ** 2


def _creatinine(rng: random.Random, person: Person, keys: set[str]) -> float:
    if catalog.CKD_STAGE_3.key in keys:
        # eGFR 30-59 puts serum creatinine roughly at 1.3-2.3 mg/dL in older adults.
        return rng.uniform(1.3, 2.2)
    return rng.uniform(0.6, 1.0) if person.gender == "female" else rng.uniform(0.75, 1.2)


def draw_physiology(rng: random.Random, person: Person, diagnoses: list[Diagnosis]) -> Physiology:
    keys = {diagnosis.key for diagnosis in diagnoses}
    height, weight = _body_size(rng, person, keys)
    diabetic = catalog.TYPE2_DIABETES.key in keys
    hypertensive = catalog.HYPERTENSION.key in keys
    systolic = clamp(rng.gauss(136.0 if hypertensive else 121.0, 9.0), 98.0, 170.0)
    copd_penalty = 3.0 if catalog.COPD.key in keys else 0.0
    return Physiology(
        height_cm=height,
        weight_kg=weight,
        heart_rate=clamp(rng.gauss(74.0, 8.0), 55.0, 98.0),
        systolic=systolic,
        diastolic=clamp(systolic * 0.6 + rng.gauss(2.0, 5.0), 55.0, 100.0),
        respiratory_rate=clamp(rng.gauss(16.0 + copd_penalty / 2, 1.5), 12.0, 22.0),
        spo2=clamp(rng.gauss(97.0 - copd_penalty, 1.0), 89.0, 99.5),
        temperature=clamp(rng.gauss(36.8, 0.2), 36.2, 37.3),
        creatinine=_creatinine(rng, person, keys),
        glucose=rng.uniform(135.0, 190.0) if diabetic else rng.uniform(82.0, 108.0),
        hba1c=rng.uniform(6.6, 8.8) if diabetic else rng.uniform(4.9, 5.8),
        potassium=clamp(rng.gauss(4.2, 0.3), 3.5, 5.1),
        sodium=clamp(rng.gauss(139.5, 2.0), 134.0, 145.0),
        bun=clamp(rng.gauss(28.0 if catalog.CKD_STAGE_3.key in keys else 15.0, 4.0), 7.0, 45.0),
        hemoglobin=clamp(rng.gauss(12.9 if person.gender == "female" else 14.3, 1.1), 9.5, 17.0),
        wbc=clamp(rng.gauss(7.2, 1.5), 4.2, 10.5),
        platelets=clamp(rng.gauss(245.0, 50.0), 150.0, 400.0),
        bilirubin=clamp(rng.gauss(0.6, 0.2), 0.2, 1.1),
        lactate=clamp(rng.gauss(1.1, 0.25), 0.5, 1.8),
    )
