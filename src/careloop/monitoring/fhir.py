"""Samples as FHIR R4 Observations and back.

Outgoing Observations carry the sample id as an identifier and derive their resource id from it,
so importing the same export twice rewrites the same resources instead of adding copies.
Incoming Observations may come from any device gateway: they are read by LOINC code and their
value is converted to the signal's canonical unit, or refused with a `SampleError` naming the
field that could not be read.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from careloop.monitoring.signals import BY_LOINC, CATALOGUE, Sample, Signal, SignalInfo

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
ORIGIN_SYSTEM = "https://careloop.dev/fhir/CodeSystem/data-origin"
SAMPLE_ID_SYSTEM = "https://careloop.dev/fhir/sid/device-sample"
DEVICE_ORIGIN = "device"
SUMMARY_ORIGIN = "derived"  # careloop's own daily values (a day's steps, derived resting HR)

# Levels measured on the body are vital signs; counts of behaviour are activity; glucose is a
# laboratory analyte even when a home meter measures it.
_CATEGORY: dict[Signal, str] = {
    Signal.STEPS: "activity",
    Signal.SLEEP_MINUTES: "activity",
    Signal.GLUCOSE: "laboratory",
}

# Units a sender may use for each signal, with the factor to the canonical unit. Glucose:
# 1 mmol/L = 18.016 mg/dL (molar mass of glucose 180.16 g/mol). SpO2 as a fraction is UCUM "1".
_UNIT_FACTORS: dict[Signal, dict[str, float]] = {
    Signal.HEART_RATE: {"/min": 1.0, "{beats}/min": 1.0, "1/min": 1.0},
    Signal.RESTING_HEART_RATE: {"/min": 1.0, "{beats}/min": 1.0, "1/min": 1.0},
    Signal.HRV_RMSSD: {"ms": 1.0, "s": 1000.0},
    Signal.SPO2: {"%": 1.0, "1": 100.0},
    Signal.STEPS: {"{steps}": 1.0, "1": 1.0, "{count}": 1.0, "/d": 1.0, "{steps}/d": 1.0},
    Signal.SLEEP_MINUTES: {"min": 1.0, "h": 60.0, "s": 1 / 60},
    Signal.WEIGHT: {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lb": 0.45359237},
    Signal.SYSTOLIC_BP: {"mm[Hg]": 1.0, "mmHg": 1.0},
    Signal.DIASTOLIC_BP: {"mm[Hg]": 1.0, "mmHg": 1.0},
    Signal.GLUCOSE: {"mg/dL": 1.0, "mmol/L": 18.016},
    Signal.BODY_TEMPERATURE: {"Cel": 1.0},
}
# Units that need an offset, not just a factor, to reach the canonical unit.
_UNIT_CONVERSIONS: dict[Signal, dict[str, Callable[[float], float]]] = {
    Signal.BODY_TEMPERATURE: {"[degF]": lambda fahrenheit: (fahrenheit - 32.0) * 5.0 / 9.0},
}


class SampleError(ValueError):
    """An Observation that cannot become a Sample; the message names the field."""


def observation_id(sample_id: str) -> str:
    """A FHIR id (at most 64 of [A-Za-z0-9-.]) that is the same whenever the sample id is."""
    return "dev-" + hashlib.sha256(sample_id.encode()).hexdigest()[:40]


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def sample_to_observation(sample: Sample) -> dict:
    """A FHIR R4 Observation for one sample (summed signals get an effectivePeriod)."""
    info = CATALOGUE[sample.signal]
    category = _CATEGORY.get(sample.signal, "vital-signs")
    resource: dict = {
        "resourceType": "Observation",
        "id": observation_id(sample.sample_id),
        "meta": {"tag": [{"system": ORIGIN_SYSTEM, "code": DEVICE_ORIGIN}]},
        "identifier": [{"system": SAMPLE_ID_SYSTEM, "value": sample.sample_id}],
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": category}]}],
        "code": {"coding": [{"system": LOINC, "code": info.loinc, "display": info.display}]},
        "subject": {"reference": f"Patient/{sample.person_id}"},
    }
    if info.summed and sample.period_minutes:
        end = sample.time + timedelta(minutes=sample.period_minutes)
        resource["effectivePeriod"] = {"start": _instant(sample.time), "end": _instant(end)}
    else:
        resource["effectiveDateTime"] = _instant(sample.time)
    resource["valueQuantity"] = {
        "value": sample.value,
        "unit": info.unit,
        "system": UCUM,
        "code": info.unit,
    }
    resource["device"] = {"display": sample.source}
    return resource


def summary_observation(sample: Sample) -> dict:
    """A daily value the monitoring worker computed (a day's steps, a derived resting heart
    rate) as an Observation for the record, tagged so it is never read back as device data."""
    resource = sample_to_observation(sample)
    resource["meta"] = {"tag": [{"system": ORIGIN_SYSTEM, "code": SUMMARY_ORIGIN}]}
    resource["device"] = {"display": "careloop remote monitoring (daily summary)"}
    return resource


def observation_to_sample(resource: object) -> Sample:
    """The Sample an Observation holds, in canonical units; `SampleError` for anything else."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
        raise SampleError("resourceType: expected an Observation")
    info = _signal_of(resource.get("code"))
    person_id = _person_of(resource.get("subject"))
    time, period = _effective_of(resource)
    value = _canonical_value(info, resource.get("valueQuantity"))
    return Sample(
        person_id=person_id,
        signal=info.signal,
        time=time,
        value=value,
        sample_id=_sample_id_of(resource, person_id, info, time),
        source=_source_of(resource.get("device")),
        period_minutes=period if info.summed else None,
    )


def _signal_of(code: object) -> SignalInfo:
    codings = code.get("coding") if isinstance(code, dict) else None
    if not isinstance(codings, list):
        raise SampleError("code.coding: missing")
    for coding in codings:
        if isinstance(coding, dict) and coding.get("system") == LOINC:
            found = BY_LOINC.get(str(coding.get("code")))
            if found is not None:
                return found
    raise SampleError("code.coding: no LOINC code of a monitored signal")


def _person_of(subject: object) -> str:
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str) or not reference.startswith("Patient/"):
        raise SampleError("subject.reference: expected Patient/<id>")
    person_id = reference.removeprefix("Patient/")
    if not person_id or "/" in person_id:
        raise SampleError("subject.reference: expected Patient/<id>")
    return person_id


def _parse_time(text: object, field: str) -> datetime:
    if not isinstance(text, str):
        raise SampleError(f"{field}: expected a dateTime string")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SampleError(f"{field}: not a valid dateTime") from None
    if moment.tzinfo is None or len(text) <= 10:
        raise SampleError(f"{field}: needs a time of day with a time zone")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise SampleError(f"{field}: out of range") from None


def _effective_of(resource: dict) -> tuple[datetime, int | None]:
    if "effectiveDateTime" in resource:
        return _parse_time(resource["effectiveDateTime"], "effectiveDateTime"), None
    period = resource.get("effectivePeriod")
    if not isinstance(period, dict):
        raise SampleError("effectiveDateTime: missing (nor an effectivePeriod)")
    start = _parse_time(period.get("start"), "effectivePeriod.start")
    if period.get("end") is None:
        return start, None
    end = _parse_time(period.get("end"), "effectivePeriod.end")
    minutes = (end - start).total_seconds() / 60
    if minutes <= 0:
        raise SampleError("effectivePeriod.end: not after start")
    return start, round(minutes)


def _canonical_value(info: SignalInfo, quantity: object) -> float:
    if not isinstance(quantity, dict):
        raise SampleError("valueQuantity: missing")
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SampleError("valueQuantity.value: expected a number")
    if not math.isfinite(value):
        raise SampleError("valueQuantity.value: not a finite number")
    unit = quantity.get("code", quantity.get("unit"))
    convert = _UNIT_CONVERSIONS.get(info.signal, {}).get(unit) if isinstance(unit, str) else None
    if convert is not None:
        return convert(float(value))
    factor = _UNIT_FACTORS[info.signal].get(unit) if isinstance(unit, str) else None
    if factor is None:
        raise SampleError(f"valueQuantity.code: unit not understood for {info.signal.value}")
    return float(value) * factor


def _sample_id_of(resource: dict, person_id: str, info: SignalInfo, time: datetime) -> str:
    """Our own identifier if present, else the sender's id, else one derived from content."""
    identifiers = resource.get("identifier")
    if isinstance(identifiers, list):
        for identifier in identifiers:
            if isinstance(identifier, dict) and identifier.get("system") == SAMPLE_ID_SYSTEM:
                value = identifier.get("value")
                if isinstance(value, str) and value:
                    return value
    given = resource.get("id")
    if isinstance(given, str) and given:
        return f"observation-{given}"
    return f"{person_id}-{info.signal.value}-{_instant(time)}"


def _source_of(device: object) -> str:
    display = device.get("display") if isinstance(device, dict) else None
    return display if isinstance(display, str) and display else "fhir"
