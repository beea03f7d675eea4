"""`careloop evaluate monitoring`: the statistics and rules it is built from, a small run on the
real wearable exports (structure and real behaviour), the episode injection on a real
smartwatch stream, and the CLI's clean failures."""

from __future__ import annotations

import csv
import json
import math
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from careloop.monitoring.alerts import AlertPolicy
from careloop.monitoring.evaluate_cli import evaluate_monitoring_command
from careloop.monitoring.evaluation import (
    DAYS_PER_MONTH,
    DETECT_AFTER_ONSET_DAYS,
    FITBIT,
    PERSONAL,
    RHR_OVER_100,
    SEED,
    Episode,
    EvaluationOptions,
    Trial,
    burden,
    episode_starts,
    evaluate_monitoring,
    lead_days,
    method_rows,
    paired,
    poisson_interval,
    reduce_watch_person,
    rule_alert_days,
    run_trial,
    usable_daily_values,
    watch_samples,
)
from careloop.monitoring.evaluation_report import episodes_csv
from careloop.monitoring.importers import (
    ImportReport,
    read_fitbit,
    read_welltory,
    smartwatch_persons,
    welltory_onsets,
)
from careloop.monitoring.monitor import bucket_time
from careloop.monitoring.replay import ReplayRow
from careloop.monitoring.signals import Sample, Signal
from conftest import shared_data

WEARABLES = "wearables"
DAY = date(2024, 3, 1)


def _at(day: date, hour: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


# ----- statistics and rules --------------------------------------------------------------------


def test_poisson_interval_is_the_exact_garwood_interval():
    # chi-square quantiles / 2: 0 events -> (0, 3.689); 10 events -> (4.795, 18.390)
    assert poisson_interval(0, 1.0) == pytest.approx((0.0, 3.6889), abs=1e-3)
    assert poisson_interval(10, 1.0) == pytest.approx((4.7954, 18.3904), abs=1e-3)
    assert poisson_interval(10, 2.0) == pytest.approx((4.7954 / 2, 18.3904 / 2), abs=1e-3)
    with pytest.raises(ValueError):
        poisson_interval(1, 0.0)


def test_burden_is_alerts_over_person_months_with_intervals_around_it():
    rows = [ReplayRow("a", DAY + timedelta(days=n), 0.0, int(n in (3, 9))) for n in range(40)]
    rows += [ReplayRow("b", DAY + timedelta(days=n), 0.0, int(n == 5)) for n in range(20)]
    summary = burden(rows)

    months = 60 / DAYS_PER_MONTH
    assert (summary["persons"], summary["person_days"], summary["alerts"]) == (2, 60, 3)
    assert summary["per_person_month"] == pytest.approx(3 / months, abs=1e-4)
    low, high = summary["poisson_95"]
    assert low < summary["per_person_month"] < high
    assert summary["bootstrap_95"][0] <= summary["per_person_month"] <= summary["bootstrap_95"][1]
    assert burden([])["per_person_month"] is None


def test_population_rule_notifies_once_per_episode_and_clears_after_quiet_days():
    values = {DAY + timedelta(days=n): v for n, v in enumerate(
        [101, 105, 90, 90, 101, 90, 90, 90, 101, 80]
    )}  # fmt: skip
    alerts = rule_alert_days(values, RHR_OVER_100, clear_days=3)
    # day 4 is within the same episode (only 2 quiet days before it); 3 quiet days clear it
    assert alerts == {DAY, DAY + timedelta(days=8)}


def test_daily_values_follow_the_wear_gate_when_heart_rate_is_sent():
    def rhr(day: date, value: float) -> Sample:
        return Sample("p", Signal.RESTING_HEART_RATE, _at(day), value, f"r{day}", "t")

    def heart(day: date, hour: int) -> Sample:
        return Sample("p", Signal.HEART_RATE, _at(day, hour), 70.0, f"h{day}{hour}", "t")

    worn, brief = DAY, DAY + timedelta(days=1)
    samples = [rhr(worn, 60.0), rhr(brief, 80.0)]
    samples += [heart(worn, hour) for hour in range(12)] + [heart(brief, h) for h in range(3)]
    gated = usable_daily_values(samples, AlertPolicy())
    assert gated[Signal.RESTING_HEART_RATE] == {worn: 60.0}  # 3 hours of wear is too little
    ungated = usable_daily_values(samples[:2], AlertPolicy())  # daily summaries only
    assert ungated[Signal.RESTING_HEART_RATE] == {worn: 60.0, brief: 80.0}


def test_episode_shape_ramps_to_full_at_onset_then_recovers():
    episode = Episode("p", DAY, ramp_days=4, size_bpm=8.0)
    assert episode.onset == DAY + timedelta(days=4)
    assert episode.detect_until == DAY + timedelta(days=6)
    assert episode.days()[0] == DAY and episode.days()[-1] == episode.onset + timedelta(days=5)
    assert episode.rise(_at(DAY)) == 0.0
    assert episode.rise(_at(DAY + timedelta(days=2))) == pytest.approx(4.0)
    assert episode.rise(_at(episode.onset)) == pytest.approx(8.0)
    assert episode.rise(_at(episode.onset + timedelta(days=2), 23)) == pytest.approx(8.0)
    assert episode.rise(_at(episode.onset + timedelta(days=4), 12)) == pytest.approx(4.0)
    assert episode.rise(_at(episode.onset + timedelta(days=6))) == 0.0


def test_paired_comparison_counts_a_miss_as_never():
    def trial(personal: int | None, rule: int | None) -> Trial:
        episode = Episode("p", DAY, 3, 5.0)
        first = {
            name: None if lead is None else episode.onset - timedelta(days=lead)
            for name, lead in ((PERSONAL, personal), ("rule", rule))
        }
        return Trial(episode, 5, first, {PERSONAL: None, "rule": None}, {}, 0)

    trials = [trial(2, 1), trial(None, 0), trial(1, None), trial(0, 0), trial(None, None)]
    assert paired(trials, PERSONAL, "rule") == {
        "first_earlier": 2, "second_earlier": 1, "same_day": 1, "both_missed": 1,
    }  # fmt: skip


# ----- real data -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_run():
    """One smartwatch person, two starts, a 3 and a 10 bpm rise over 3 days: 4 episodes."""
    options = EvaluationOptions(
        watch_persons=1, starts_per_person=2, sizes_bpm=(3.0, 10.0), ramp_days=(3,)
    )
    return evaluate_monitoring(shared_data(WEARABLES), options)


@pytest.mark.shared_data
def test_no_event_rates_equal_alerts_over_person_months(small_run):
    no_event = small_run.metrics["no_event"]
    fitbit_days = {(s.person_id, s.time.date()) for s in read_fitbit(shared_data(
        f"{WEARABLES}/fitbit_fitabase_2016"))}  # fmt: skip
    for method, streams in no_event.items():
        assert streams[FITBIT]["persons"] == 33
        assert streams[FITBIT]["person_days"] == len(fitbit_days)
        parts = [streams[name] for name in streams if name != "all"]
        assert streams["all"]["person_days"] == sum(part["person_days"] for part in parts)
        assert streams["all"]["alerts"] == sum(part["alerts"] for part in parts)
        for summary in streams.values():
            months = summary["person_days"] / DAYS_PER_MONTH
            rate = summary["per_person_month"]
            assert math.isfinite(rate), method
            assert rate == pytest.approx(summary["alerts"] / months, abs=1e-4)
            assert summary["poisson_95"][0] <= rate <= summary["poisson_95"][1]


@pytest.mark.shared_data
def test_resting_heart_rate_over_100_rarely_fires_where_nothing_happened(small_run):
    everything = small_run.metrics["no_event"][RHR_OVER_100.name]["all"]
    assert everything["person_days"] > 1500
    assert everything["alerts"] <= everything["person_days"] / 100  # under 1 in 100 days


@pytest.mark.shared_data
def test_welltory_cohort_is_counted_from_the_export(small_run):
    folder = shared_data(f"{WEARABLES}/welltory_hrv_covid19")
    onsets = welltory_onsets(folder)
    days: dict[str, set[date]] = {}
    for sample in read_welltory(folder):
        # a sleep episode counts for the day it ends, as the monitor takes it
        days.setdefault(sample.person_id, set()).add(bucket_time(sample).date())
    before = [p for p, onset in onsets.items() if any(d < onset for d in days.get(p, ()))]

    found = small_run.metrics["welltory_onsets"]
    assert found["participants"] == len(days)
    assert found["with_onset"] == sum(1 for p in onsets if p in days)
    assert found["with_data_before_onset"] == len(before) > 0
    for summary in found["by_method"].values():
        cohort = summary["with_data_before_onset"]
        assert cohort["episodes"] == len(before)
        assert 0 <= cohort["detected"] <= cohort["episodes"]


@pytest.mark.shared_data
def test_small_run_trials_and_episodes_csv_agree(small_run):
    trials = small_run.trials
    assert len(trials) == 4
    assert {t.episode.size_bpm for t in trials} == {3.0, 10.0}
    for trial in trials:
        assert 0 <= trial.window_rhr_days <= 6  # ramp (3) + onset + 2 days
        for first in trial.first_alert.values():
            assert first is None or trial.episode.start <= first <= trial.episode.detect_until
    rows = list(csv.DictReader(episodes_csv(trials, small_run.methods).splitlines()))
    assert len(rows) == 4
    for row, trial in zip(rows, trials, strict=True):
        assert row["onset"] == trial.episode.onset.isoformat()
        detected = row["personal_detected"] == "1"
        assert detected == (trial.first_alert[PERSONAL] is not None)
        if detected:
            first = date.fromisoformat(row["personal_first_alert"])
            assert int(row["personal_lead_days"]) == (trial.episode.onset - first).days
    injected = small_run.metrics["injected"]
    assert injected["overall"][PERSONAL]["episodes"] == 4
    assert set(injected["by_size"][PERSONAL]) == {"3", "10"}
    json.dumps(small_run.metrics, allow_nan=False)  # every figure is plain JSON


@pytest.fixture(scope="module")
def watch_person():
    folder = shared_data(f"{WEARABLES}/stanford_covid")
    with_heart = [p for p in smartwatch_persons(folder) if (folder / f"{p}_hr.csv.zip").exists()]
    return reduce_watch_person(folder, with_heart[0], ImportReport())


def _rhr(samples: list[Sample]) -> dict[date, float]:
    return {s.time.date(): s.value for s in samples if s.signal is Signal.RESTING_HEART_RATE}


@pytest.mark.shared_data
def test_injected_rise_goes_through_the_resting_heart_rate_derivation(watch_person):
    days = sorted(watch_person.rhr)
    episode = Episode(watch_person.person_id, days[20], ramp_days=3, size_bpm=7.0)
    base, injected = _rhr(watch_samples(watch_person)), _rhr(watch_samples(watch_person, episode))
    inside = set(episode.days())
    full = [episode.onset + timedelta(days=n) for n in range(3)]

    assert {d: v for d, v in injected.items() if d not in inside} == {
        d: v for d, v in base.items() if d not in inside
    }
    shifted = [d for d in full if d in base]
    assert shifted, "the chosen episode has no resting heart rate on its full-size days"
    for day in shifted:  # every minute is 7 bpm higher, so their median is too
        assert injected[day] == pytest.approx(base[day] + 7.0, abs=0.11)
    ramp = [d for d in episode.days() if d < episode.onset and d in base]
    assert all(base[d] <= injected[d] <= base[d] + 7.0 for d in ramp)
    steps = {s.time: s.value for s in watch_samples(watch_person) if s.signal is Signal.STEPS}
    fewer = [s for s in watch_samples(watch_person, episode) if s.signal is Signal.STEPS]
    assert any(s.value < steps[s.time] for s in fewer)
    assert all(s.value <= steps[s.time] for s in fewer)


# a person whose derived resting heart rate is steady enough for a 10 bpm rise to stand out; on
# the noisiest streams (the first person's varies by about 6 bpm a day) it does not
STEADY_PERSON = "A4G0044"


@pytest.mark.shared_data
def test_a_large_episode_on_a_real_stream_is_detected_by_the_personal_method():
    folder = shared_data(f"{WEARABLES}/stanford_covid")
    person = reduce_watch_person(folder, STEADY_PERSON, ImportReport())
    policy, rules = AlertPolicy(), [RHR_OVER_100]
    base = method_rows(person.person_id, watch_samples(person), rules, policy)
    starts = episode_starts(list(person.rhr), 4, 3, random.Random(SEED))
    trials = [
        run_trial(person, Episode(person.person_id, start, 3, 10.0), rules, policy, base)
        for start in starts
    ]
    caused = [t for t in trials if t.first_alert[PERSONAL] and not t.without_injection[PERSONAL]]
    assert caused, "no 10 bpm episode raised an alert its window did not already have"
    for trial in caused:
        assert -DETECT_AFTER_ONSET_DAYS <= lead_days(trial, PERSONAL) <= trial.episode.ramp_days
        # the same rise stays far under a population limit of 100 bpm
        assert trial.first_alert[RHR_OVER_100.name] is None


# ----- the command -----------------------------------------------------------------------------


def _run(data: Path, out: Path):
    return CliRunner().invoke(evaluate_monitoring_command, ["--data", str(data), "--out", str(out)])


def test_missing_folder_fails_cleanly_and_writes_nothing(tmp_path: Path):
    out = tmp_path / "report"
    result = _run(tmp_path / "nowhere", out)
    assert result.exit_code == 2
    assert f"{tmp_path / 'nowhere'}: no such folder" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_folder_without_exports_fails_cleanly_and_writes_nothing(tmp_path: Path, content):
    data = tmp_path / "data"
    data.mkdir()
    if content:
        (data / content).write_text("nothing to see", encoding="utf-8")
    out = tmp_path / "report"
    result = _run(data, out)
    assert result.exit_code == 2
    assert f"{data}: no Fitbit, Welltory or smartwatch export found" in result.output
    assert not out.exists()


@pytest.mark.shared_data
def test_command_on_one_export_writes_the_three_files(tmp_path: Path):
    out = tmp_path / "report"
    result = _run(shared_data(f"{WEARABLES}/fitbit_fitabase_2016"), out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["episodes.csv", "metrics.json", "report.md"]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["no_event"][PERSONAL]["all"]["persons"] == 33
    assert metrics["injected"] == {"episodes": 0}
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "No smartwatch export" in report and "Alerts where nothing" in report
    assert (out / "episodes.csv").read_text(encoding="utf-8").startswith("person,start,onset")
