"""Samples to FHIR Observations and back: valid R4, idempotent ids, unit conversion, and that
an unreadable Observation names its field; one small ingest into each store backend."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from careloop.ingest import IngestOptions, Ingestor
from careloop.monitoring.fhir import (
    SampleError,
    observation_id,
    observation_to_sample,
    sample_to_observation,
)
from careloop.monitoring.signals import CATALOGUE, Sample, Signal

WHEN = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def sample(signal: Signal, value: float, period: int | None = None) -> Sample:
    return Sample("p-1", signal, WHEN, value, f"dev-x-{signal.value}", "watch-1", period)


def gateway_observation(code: str, value: float, unit: str) -> dict:
    """An Observation as another device gateway might send it."""
    return {
        "resourceType": "Observation",
        "id": "obs-7",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": "Patient/p-2"},
        "effectiveDateTime": "2024-03-01T09:30:00+01:00",
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": unit},
    }


@pytest.mark.parametrize("signal", list(Signal))
def test_every_signal_makes_a_valid_observation_that_reads_back(signal):
    info = CATALOGUE[signal]
    original = sample(signal, info.low + 1, 60 if info.summed else None)
    resource = sample_to_observation(original)

    get_fhir_model_class("Observation").model_validate(resource)
    assert resource["code"]["coding"][0]["code"] == info.loinc
    assert resource["valueQuantity"]["code"] == info.unit
    assert ("effectivePeriod" in resource) == info.summed
    assert observation_to_sample(resource) == original


def test_categories_and_device_tag():
    steps = sample_to_observation(sample(Signal.STEPS, 120, 60))
    pulse = sample_to_observation(sample(Signal.HEART_RATE, 61))
    assert steps["category"][0]["coding"][0]["code"] == "activity"
    assert pulse["category"][0]["coding"][0]["code"] == "vital-signs"
    assert steps["effectivePeriod"] == {
        "start": "2024-03-01T08:00:00Z",
        "end": "2024-03-01T09:00:00Z",
    }
    assert pulse["meta"]["tag"][0]["code"] == "device"
    assert pulse["device"] == {"display": "watch-1"}


def test_id_depends_only_on_sample_id():
    first = sample_to_observation(sample(Signal.WEIGHT, 70))
    corrected = sample_to_observation(sample(Signal.WEIGHT, 71))
    assert first["id"] == corrected["id"] == observation_id("dev-x-weight")
    assert observation_id("a") != observation_id("b")
    assert len(observation_id("x" * 500)) <= 64


@pytest.mark.parametrize(
    ("code", "value", "unit", "expected"),
    [
        ("29463-7", 154.0, "[lb_av]", 69.853),
        ("29463-7", 70500, "g", 70.5),
        ("2339-0", 5.5, "mmol/L", 99.088),
        ("59408-5", 0.97, "1", 97.0),
        ("80404-7", 0.042, "s", 42.0),
        ("8867-4", 64, "/min", 64.0),
    ],
)
def test_gateway_units_are_converted(code, value, unit, expected):
    read = observation_to_sample(gateway_observation(code, value, unit))
    assert read.value == pytest.approx(expected, abs=1e-3)
    assert read.person_id == "p-2"
    assert read.time == datetime(2024, 3, 1, 8, 30, tzinfo=UTC)
    assert read.sample_id == "observation-obs-7"
    assert read.source == "fhir"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda r: r.update(code={"coding": [{"system": "http://loinc.org", "code": "1-1"}]}),
            "code.coding",
        ),
        (lambda r: r.update(subject={"reference": "Group/9"}), "subject.reference"),
        (lambda r: r.update(effectiveDateTime="2024-03-01"), "effectiveDateTime"),
        (lambda r: r.update(effectiveDateTime="2024-03-01T09:30:00"), "effectiveDateTime"),
        (lambda r: r.pop("effectiveDateTime"), "effectiveDateTime"),
        (lambda r: r["valueQuantity"].update(value="64"), "valueQuantity.value"),
        (lambda r: r["valueQuantity"].update(value=float("nan")), "valueQuantity.value"),
        (lambda r: r["valueQuantity"].update(code="kg"), "valueQuantity.code"),
        (lambda r: r.pop("valueQuantity"), "valueQuantity"),
    ],
)
def test_unreadable_observations_name_the_field(change, field):
    resource = gateway_observation("8867-4", 64, "/min")
    change(resource)
    with pytest.raises(SampleError) as raised:
        observation_to_sample(resource)
    assert str(raised.value).startswith(field + ":")


def test_not_an_observation():
    with pytest.raises(SampleError, match="resourceType"):
        observation_to_sample({"resourceType": "Patient"})


def test_observations_ingest_into_the_store_and_again_change_nothing(store, tmp_path):
    samples = [sample(Signal.HEART_RATE, 60 + i) for i in range(2)]
    samples = [
        Sample("p-1", s.signal, s.time, s.value, f"hr-{i}", "watch-1")
        for i, s in enumerate(samples)
    ]
    samples.append(sample(Signal.STEPS, 300, 60))
    patient = tmp_path / "Patient.ndjson"
    patient.write_bytes(orjson.dumps({"resourceType": "Patient", "id": "p-1"}) + b"\n")
    observations = tmp_path / "Observation.ndjson"
    observations.write_bytes(
        b"".join(orjson.dumps(sample_to_observation(s)) + b"\n" for s in samples)
    )

    ingestor = Ingestor(store, IngestOptions(workers=0))
    first = ingestor.ingest_paths([patient, observations])
    assert first.ok, first.rejected
    assert first.created["Observation"] == 3
    stored = store.read("Observation", observation_id("hr-1")).body
    assert observation_to_sample(stored) == samples[1]

    again = Ingestor(store, IngestOptions(workers=0)).ingest_paths([observations])
    assert again.ok and not again.created and again.unchanged["Observation"] == 3


def test_time_outside_the_utc_calendar_is_a_sample_error():
    resource = gateway_observation("8867-4", 64, "/min")
    resource["effectiveDateTime"] = "0001-01-01T00:30:00+02:00"
    with pytest.raises(SampleError, match="^effectiveDateTime: out of range"):
        observation_to_sample(resource)
