"""Observation builders shared by the clinic, ward and home-device generators."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from careloop.fhir.codes import BLOOD_PRESSURE_PANEL, LOINC, OBSERVATION_CATEGORY
from careloop.synth import catalog
from careloop.synth._fhir import (
    Measure,
    Resource,
    coding,
    concept,
    new_resource,
    quantity,
    timestamp,
)


def observation_category(code: str) -> list[dict[str, Any]]:
    display = {
        "vital-signs": "Vital Signs",
        "laboratory": "Laboratory",
        "activity": "Activity",
    }[code]
    return [concept(coding(OBSERVATION_CATEGORY, code, display))]


def quantity_observation(
    resource_id: str,
    measure: Measure,
    value: float,
    when: datetime,
    subject: dict[str, str],
    *,
    encounter: dict[str, str] | None = None,
    device: dict[str, str] | None = None,
) -> Resource:
    observation = new_resource("Observation", resource_id)
    observation["status"] = "final"
    observation["category"] = observation_category(measure.category)
    observation["code"] = concept(
        coding(LOINC, measure.loinc, measure.display), text=measure.display
    )
    observation["subject"] = dict(subject)
    if encounter is not None:
        observation["encounter"] = dict(encounter)
    observation["effectiveDateTime"] = timestamp(when)
    if device is not None:
        observation["device"] = dict(device)
    observation["valueQuantity"] = quantity(value, measure)
    return observation


def blood_pressure_observation(
    resource_id: str,
    systolic: float,
    diastolic: float,
    when: datetime,
    subject: dict[str, str],
    encounter: dict[str, str],
) -> Resource:
    """The vital-signs profile's panel: one Observation, systolic and diastolic as components."""
    panel = new_resource("Observation", resource_id)
    panel["status"] = "final"
    panel["category"] = observation_category("vital-signs")
    panel["code"] = concept(
        coding(LOINC, BLOOD_PRESSURE_PANEL, catalog.BLOOD_PRESSURE_PANEL_DISPLAY),
        text="Blood pressure",
    )
    panel["subject"] = dict(subject)
    panel["encounter"] = dict(encounter)
    panel["effectiveDateTime"] = timestamp(when)
    panel["component"] = [
        _component(catalog.SYSTOLIC_BP, systolic),
        _component(catalog.DIASTOLIC_BP, diastolic),
    ]
    return panel


def _component(measure: Measure, value: float) -> dict[str, object]:
    return {
        "code": concept(coding(LOINC, measure.loinc, measure.display)),
        "valueQuantity": quantity(value, measure),
    }
