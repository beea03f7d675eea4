"""The synthetic population through the real path: NDJSON files, ingest, store, timeline."""

from __future__ import annotations

from datetime import timedelta

from careloop.fhir import codes
from careloop.ingest import IngestOptions, Ingestor
from careloop.synth import write_population
from careloop.timeline import build_timeline

SEPSIS = "91302008"


def test_population_loads_and_reads_back_as_timelines(store, tmp_path):
    counts = write_population(tmp_path / "population", patients=12, seed=11)

    report = Ingestor(store, IngestOptions(workers=2)).ingest_paths([tmp_path / "population"])

    assert report.ok, report.rejected[:3]
    assert report.warning_count == 0
    assert store.counts_by_type() == counts
    septic = store.search("Condition", codes=[f"{codes.SNOMED}|{SEPSIS}"], count=50)
    assert septic.total >= 1
    condition = septic.resources[0].body
    patient_id = condition["subject"]["reference"].removeprefix("Patient/")
    timeline = build_timeline(patient_id, store.patient_resources(patient_id))
    sepsis_onset = next(
        c.onset for c in timeline.conditions if any(coding.code == SEPSIS for coding in c.codings)
    )
    before = timeline.observations(
        codes.HEART_RATE, sepsis_onset - timedelta(hours=6), sepsis_onset
    )
    assert len(before) >= 4  # hourly vitals up to onset
    assert timeline.latest(codes.HEART_RATE, sepsis_onset).value > 0
    assert timeline.age_at(sepsis_onset) >= 18
