"""`careloop monitor replay`: the whole monitoring path over the real Fitbit and Welltory
exports (one row per person-day, deterministic), over constructed streams with and without an
infection-like episode, and the CLI's CSV and its clean failures."""

from __future__ import annotations

import csv
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from careloop.monitoring.importers import ExportError, read_fitbit, read_welltory
from careloop.monitoring.monitor import Monitor, bucket_time
from careloop.monitoring.replay import (
    ReplayCounters,
    ReplayRow,
    replay,
    replay_samples,
    replayable_exports,
)
from careloop.monitoring.replay_cli import monitor_group
from careloop.monitoring.signals import Sample, Signal
from conftest import shared_data
from monitoring_streams import EPISODE, START, person_stream

FITBIT = "wearables/fitbit_fitabase_2016"
WELLTORY = "wearables/welltory_hrv_covid19"


def _keys(rows: list[ReplayRow]) -> list[tuple[str, date]]:
    return [(row.person, row.date) for row in rows]


def _check_rows(rows: list[ReplayRow], expected_days: set[tuple[str, date]]) -> None:
    assert len(_keys(rows)) == len(set(_keys(rows))), "a person-day appears twice"
    assert set(_keys(rows)) == expected_days
    assert all(math.isfinite(row.score) and row.score >= 0 for row in rows)
    assert {row.alert for row in rows} <= {0, 1}


@pytest.mark.shared_data
def test_fitbit_replay_one_row_per_person_day():
    folder = shared_data(FITBIT)
    expected = {(s.person_id, s.time.date()) for s in read_fitbit(folder)}
    counters = ReplayCounters()
    rows = list(replay(folder, counters=counters))

    _check_rows(rows, expected)
    assert counters.persons == 33
    assert counters.person_days == len(rows)
    assert counters.alerts == sum(row.alert for row in rows)
    assert any(row.score > 0 for row in rows)  # baselines do come to speak for the person
    assert list(replay(folder)) == rows  # deterministic


@pytest.mark.shared_data
def test_welltory_replay_one_row_per_person_day():
    folder = shared_data(WELLTORY)
    expected = set()
    for sample in read_welltory(folder):
        # a sleep episode counts for the day it ends
        expected.add((sample.person_id, bucket_time(sample).date()))
    counters = ReplayCounters()
    rows = list(replay(folder, counters=counters))

    _check_rows(rows, expected)
    assert counters.alerts == sum(row.alert for row in rows) > 0
    per_month: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row.person, f"{row.date:%Y-%m}")
        per_month[key] = per_month.get(key, 0) + row.alert
    assert max(per_month.values()) <= 6  # information 2 + nurse review 4 per month at most
    assert list(replay(folder)) == rows


@pytest.mark.shared_data
def test_limit_persons_keeps_the_first_persons():
    folder = shared_data(FITBIT)
    rows = list(replay(folder, limit_persons=2))
    persons = sorted({row.person for row in rows})
    assert len(persons) == 2
    assert persons == sorted({s.person_id for s in read_fitbit(folder)})[:2]


def test_injected_rise_raises_an_alert_within_the_episode():
    counters = ReplayCounters()
    rows = list(replay_samples({"p1": person_stream(episode=True)}, counters=counters))

    alert_days = [(row.date - START).days for row in rows if row.alert]
    assert alert_days and all(day in EPISODE for day in alert_days)
    assert alert_days[0] == EPISODE[1]  # the pattern needs two days of the rise
    assert max(row.score for row in rows if (row.date - START).days in EPISODE) >= 4
    assert counters.alerts == len(alert_days) == 1


def test_same_stream_without_the_rise_raises_nothing():
    counters = ReplayCounters()
    rows = list(replay_samples({"p1": person_stream(episode=False)}, counters=counters))

    assert len(rows) == 40
    assert not any(row.alert for row in rows)
    assert counters.alerts == 0
    assert max(row.score for row in rows) < 2


def test_too_little_wear_holds_the_episode_back():
    """Intraday heart rate in only 3 hours a day: resting heart rate from such days is not
    trusted (under 10 hours of wear), so the episode is suppressed for data quality."""
    counters = ReplayCounters()
    rows = list(
        replay_samples({"p1": person_stream(episode=True, heart_hours=3)}, counters=counters)
    )

    assert not any(row.alert for row in rows)
    assert counters.suppressed["quality"] > 0

    worn = list(replay_samples({"p1": person_stream(episode=True, heart_hours=12)}))
    assert [(r.date - START).days for r in worn if r.alert] == [EPISODE[1]]


def test_implausible_samples_are_refused_and_counted():
    samples = person_stream(episode=False, days=5)
    time = datetime.combine(START, datetime.min.time(), UTC) + timedelta(hours=3)
    samples.append(Sample("p1", Signal.RESTING_HEART_RATE, time, 400.0, "bad", "test"))
    counters = ReplayCounters()
    rows = list(replay_samples({"p1": samples}, counters=counters))

    assert counters.refused == {"implausible resting-heart-rate": 1}
    assert len(rows) == 5


def test_hourly_steps_become_one_daily_total():
    hours = [
        Sample("p1", Signal.STEPS, datetime(2024, 3, 1, h, tzinfo=UTC), 100.0, f"s{h}", "t", 60)
        for h in range(24)
    ]
    monitor = Monitor()
    for sample in hours:
        assert monitor.accept(sample) == []
    (outcome,) = monitor.finish()
    assert [(s.signal, s.value, s.period_minutes) for s in outcome.summaries] == [
        (Signal.STEPS, 2400.0, 1440)
    ]


def test_replayable_exports_errors(tmp_path: Path):
    with pytest.raises(ExportError, match="no such folder"):
        replayable_exports(tmp_path / "absent")
    with pytest.raises(ExportError, match="no Fitbit, Welltory or smartwatch export"):
        replayable_exports(tmp_path)


@pytest.mark.shared_data
def test_cli_writes_the_csv(tmp_path: Path):
    folder = shared_data(FITBIT)
    out = tmp_path / "replay.csv"
    result = CliRunner().invoke(
        monitor_group, ["replay", "--data", str(folder), "--out", str(out), "--limit-persons", "3"]
    )

    assert result.exit_code == 0, result.output
    assert "3 persons" in result.output and "suppressed:" in result.output
    with out.open(newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["person", "date", "score", "alert"]
    expected = list(replay(folder, limit_persons=3))
    assert [(p, d, float(s), int(a)) for p, d, s, a in table[1:]] == [
        (row.person, row.date.isoformat(), row.score, row.alert) for row in expected
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["replay.csv"]  # no temporary file left


def test_cli_fails_cleanly_on_a_missing_folder(tmp_path: Path):
    out = tmp_path / "replay.csv"
    result = CliRunner().invoke(
        monitor_group, ["replay", "--data", str(tmp_path / "absent"), "--out", str(out)]
    )

    assert result.exit_code == 2
    assert "no such folder" in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_fails_cleanly_on_a_folder_without_exports(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("nothing here")
    out = tmp_path / "replay.csv"
    result = CliRunner().invoke(monitor_group, ["replay", "--data", str(data), "--out", str(out)])

    assert result.exit_code == 2
    assert "no Fitbit, Welltory or smartwatch export found" in result.output
    assert not out.exists()


def test_cli_fails_cleanly_on_an_unreadable_export(tmp_path: Path):
    data = tmp_path / "fitbit"
    data.mkdir()
    (data / "hourlySteps_merged.csv").write_text("Id,Wrong\n1,2\n")
    out = tmp_path / "replay.csv"
    result = CliRunner().invoke(monitor_group, ["replay", "--data", str(data), "--out", str(out)])

    assert result.exit_code == 2
    assert "missing column" in result.output
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
