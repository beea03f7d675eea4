"""Wearable exports into Samples: the real Fitbit, Welltory and Stanford files (one Stanford
person: the files are large), bad rows counted by reason, and the convert command's NDJSON
loading with `careloop ingest`."""

from __future__ import annotations

import zipfile
from datetime import UTC, date, datetime
from itertools import islice

import orjson
import pytest
from click.testing import CliRunner

from careloop.ingest import IngestOptions, Ingestor
from careloop.monitoring.baseline import resting_heart_rate
from careloop.monitoring.cli import convert_wearables_command
from careloop.monitoring.fhir import observation_to_sample
from careloop.monitoring.importers import (
    ExportError,
    ImportReport,
    read_fitbit,
    read_smartwatch_heart_rate,
    read_smartwatch_steps,
    read_welltory,
    welltory_onsets,
)
from careloop.monitoring.signals import Signal
from conftest import shared_data

STANFORD_PERSON = "AQC0L71"


@pytest.mark.shared_data
def test_fitbit_export():
    report = ImportReport()
    samples = list(read_fitbit(shared_data("wearables/fitbit_fitabase_2016"), report))

    assert len(report.persons) == 33
    assert report.samples == {"steps": 22099, "sleep-minutes": 410, "weight": 67}
    assert report.skipped == {"duplicate sleep-minutes": 3}
    assert len({s.sample_id for s in samples}) == len(samples)
    first = samples[0]
    assert first.person_id == "fitbit-1503960366" and first.period_minutes == 60
    assert first.time == datetime(2016, 4, 12, tzinfo=UTC) and first.value == 373


@pytest.mark.shared_data
def test_welltory_export():
    folder = shared_data("wearables/welltory_hrv_covid19")
    report = ImportReport()
    samples = list(read_welltory(folder, report))

    assert len(report.persons) == 96
    assert report.samples["hrv-rmssd"] == 2071 and report.samples["resting-heart-rate"] == 938
    assert report.samples["spo2"] == 37  # written as fractions in this export, read as %
    assert all(90 <= s.value <= 100 for s in samples if s.signal is Signal.SPO2)
    # every skip has a reason; a day's steps may reach the catalogue's daily ceiling
    assert report.skipped.get("implausible steps", 0) == 0
    assert max(s.value for s in samples if s.signal is Signal.STEPS) > 20000
    onsets = welltory_onsets(folder)
    assert len(onsets) == 79 and onsets["welltory-01bad5a519"] == date(2020, 4, 5)


@pytest.mark.shared_data
def test_stanford_one_person_heart_rate_steps_and_resting_rate():
    folder = shared_data("wearables/stanford_covid")
    report = ImportReport()
    heart = list(islice(read_smartwatch_heart_rate(folder, STANFORD_PERSON, report), 5))
    assert heart[0].time == datetime(2020, 5, 23, 18, 15, 32, tzinfo=UTC) and heart[0].value == 70

    hourly = list(read_smartwatch_steps(folder, STANFORD_PERSON))
    assert all(s.period_minutes == 60 and s.time.minute == 0 for s in hourly)
    assert len({s.time for s in hourly}) == len(hourly) > 1000

    resting = resting_heart_rate(  # the live path's rule (Mishra et al. 2020)
        read_smartwatch_heart_rate(folder, STANFORD_PERSON),
        read_smartwatch_steps(folder, STANFORD_PERSON, period_minutes=1),
    )
    assert len(resting) > 30
    assert all(40 <= s.value <= 100 for s in resting)
    assert all(s.signal is Signal.RESTING_HEART_RATE for s in resting)


def _fitbit_folder(tmp_path, steps_rows: str):
    (tmp_path / "hourlySteps_merged.csv").write_text("Id,ActivityHour,StepTotal\n" + steps_rows)
    (tmp_path / "sleepDay_merged.csv").write_text(
        "Id,SleepDay,TotalSleepRecords,TotalMinutesAsleep,TotalTimeInBed\n"
        "42,4/12/2016 12:00:00 AM,1,400,420\n"
    )
    (tmp_path / "weightLogInfo_merged.csv").write_text(
        "Id,Date,WeightKg,WeightPounds,Fat,BMI,IsManualReport,LogId\n"
        "42,4/12/2016 7:00:00 AM,72.5,159.8,,,True,1\n"
    )
    return tmp_path


def test_bad_rows_are_counted_by_reason(tmp_path):
    folder = _fitbit_folder(
        tmp_path,
        "42,4/12/2016 1:00:00 AM,100\n"
        "42,yesterday,100\n"
        "42,4/12/2016 2:00:00 AM,\n"
        "42,4/12/2016 3:00:00 AM,-4\n"
        ",4/12/2016 3:00:00 AM,4\n",
    )
    report = ImportReport()
    samples = list(read_fitbit(folder, report))
    assert [s.signal for s in samples] == [Signal.STEPS, Signal.SLEEP_MINUTES, Signal.WEIGHT]
    assert report.skipped == {
        "unreadable time (steps)": 1,
        "no value (steps)": 1,
        "implausible steps": 1,
        "no person id": 1,
    }


def test_missing_file_or_column_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="hourlySteps_merged.csv: file not found"):
        list(read_fitbit(tmp_path))
    (tmp_path / "hourlySteps_merged.csv").write_text("Id,Hour,Steps\n")
    with pytest.raises(ExportError, match="missing column"):
        list(read_fitbit(tmp_path))
    (tmp_path / "X_hr.csv.zip").write_bytes(b"not a zip")
    with pytest.raises(ExportError, match="X_hr.csv.zip: not a readable zip"):
        list(read_smartwatch_heart_rate(tmp_path, "X"))


def test_smartwatch_zip_steps_are_summed_per_hour(tmp_path):
    rows = ",user,datetime,steps\n" + "".join(
        f"{i},X,2020-01-01 0{i // 60}:{i % 60:02d}:00,{i % 3}\n" for i in range(150)
    )
    with zipfile.ZipFile(tmp_path / "X_steps.csv.zip", "w") as archive:
        archive.writestr("X_steps.csv", rows)
    hourly = list(read_smartwatch_steps(tmp_path, "X"))
    assert [(s.time.hour, s.value) for s in hourly] == [(0, 60), (1, 60), (2, 30)]


def test_convert_writes_ndjson_that_ingests(store, tmp_path):
    (tmp_path / "in").mkdir()
    folder = _fitbit_folder(tmp_path / "in", "42,4/12/2016 1:00:00 AM,100\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        convert_wearables_command, ["--data", str(folder), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "fitbit: 1 persons, 3 samples" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["Observation.ndjson", "Patient.ndjson"]

    report = Ingestor(store, IngestOptions(workers=0)).ingest_paths([out])
    assert report.ok, report.rejected
    assert report.created == {"Patient": 1, "Observation": 3}
    lines = (out / "Observation.ndjson").read_bytes().splitlines()
    weight = observation_to_sample(orjson.loads(lines[-1]))
    assert weight.person_id == "fitbit-42" and weight.value == 72.5


def test_convert_of_a_folder_without_exports_fails_cleanly(tmp_path):
    result = CliRunner().invoke(
        convert_wearables_command, ["--data", str(tmp_path), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert "no Fitbit, Welltory or smartwatch export found" in result.output
    assert not (tmp_path / "out").exists()
