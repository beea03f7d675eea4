"""The synthetic demo population: valid FHIR, deterministic, and carrying the signals it claims."""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from careloop.fhir import codes
from careloop.synth import (
    EPISODE_SYSTEM,
    GROUND_TRUTH_TAG_CODE,
    GROUND_TRUTH_TAG_SYSTEM,
    generate_population,
    write_population,
)
from careloop.synth.population import GENERATED_RESOURCE_TYPES

Resource = dict[str, Any]
REFERENCE_FORM = re.compile(r"^[A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
SEPSIS_SNOMED = "91302008"


@pytest.fixture(scope="module")
def small_population() -> list[Resource]:
    return list(generate_population(6, seed=7))


@pytest.fixture(scope="module")
def population() -> list[Resource]:
    """Three blocks of the cohort plan: enough patients for every storyline to recur."""
    return list(generate_population(30, seed=7))


def of_type(resources: list[Resource], resource_type: str) -> list[Resource]:
    return [r for r in resources if r["resourceType"] == resource_type]


def first_code(resource: Resource, field: str = "code") -> str:
    return resource[field]["coding"][0]["code"]


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


def references_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from references_in(item)


def is_ground_truth(resource: Resource) -> bool:
    return any(
        tag["system"] == GROUND_TRUTH_TAG_SYSTEM and tag["code"] == GROUND_TRUTH_TAG_CODE
        for tag in resource["meta"]["tag"]
    )


def series(
    resources: list[Resource],
    loinc: str,
    *,
    encounter: str | None = None,
    wearer: str | None = None,
) -> list[tuple[datetime, float]]:
    """(time, value) of one LOINC code, from one stay or from one person's home devices.

    Blood pressure panels give their systolic component.
    """
    points = []
    for observation in of_type(resources, "Observation"):
        if encounter and observation.get("encounter", {}).get("reference") != encounter:
            continue
        if wearer and not (
            "device" in observation and observation["subject"]["reference"] == wearer
        ):
            continue
        code, when = first_code(observation), moment(observation["effectiveDateTime"])
        if code == loinc and "valueQuantity" in observation:
            points.append((when, observation["valueQuantity"]["value"]))
        elif code == codes.BLOOD_PRESSURE_PANEL and loinc == codes.SYSTOLIC_BP:
            points.append((when, observation["component"][0]["valueQuantity"]["value"]))
    return points


def mean_between(points: list[tuple[datetime, float]], start: datetime, end: datetime) -> float:
    values = [value for when, value in points if start <= when < end]
    assert len(values) >= 3, f"too few values between {start} and {end} to compare"
    return statistics.fmean(values)


def by_id(resources: list[Resource]) -> dict[str, Resource]:
    return {f"{r['resourceType']}/{r['id']}": r for r in resources}


# Determinism and shape of the output -------------------------------------------------------------


def test_same_arguments_write_byte_identical_files(tmp_path: Path) -> None:
    first = write_population(tmp_path / "a", 4, seed=11)
    second = write_population(tmp_path / "b", 4, seed=11)

    assert first == second
    names = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert names == sorted(path.name for path in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_another_seed_gives_other_people() -> None:
    seven = of_type(list(generate_population(3, seed=7)), "Patient")
    eight = of_type(list(generate_population(3, seed=8)), "Patient")

    assert {p["id"] for p in seven}.isdisjoint({p["id"] for p in eight})
    assert [p["birthDate"] for p in seven] != [p["birthDate"] for p in eight]


def test_a_patient_does_not_depend_on_population_size() -> None:
    three = list(generate_population(3, seed=5))
    five = list(generate_population(5, seed=5))

    assert five[: len(three)] == three


def test_naive_start_is_read_as_utc_and_opens_the_window() -> None:
    naive = list(generate_population(1, start=datetime(2026, 3, 1)))
    aware = list(generate_population(1, start=datetime(2026, 3, 1, tzinfo=UTC)))

    assert naive == aware
    stay = [e for e in of_type(aware, "Encounter") if e["class"]["code"] == "IMP"]
    assert stay and moment(stay[0]["period"]["start"]) > datetime(2026, 3, 1, tzinfo=UTC)


def test_negative_patient_count_is_refused() -> None:
    with pytest.raises(ValueError):
        list(generate_population(-1))


def test_ndjson_files_hold_one_resource_per_line(tmp_path: Path) -> None:
    counts = write_population(tmp_path, 3, seed=3)

    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        f"{resource_type}.ndjson" for resource_type in counts
    )
    for resource_type, count in counts.items():
        content = (tmp_path / f"{resource_type}.ndjson").read_bytes()
        assert content.endswith(b"\n")
        lines = content[:-1].split(b"\n")
        assert len(lines) == count
        for line in lines:
            resource = orjson.loads(line)
            assert isinstance(resource, dict)
            assert resource["resourceType"] == resource_type


def test_rewriting_a_smaller_population_drops_stale_files(tmp_path: Path) -> None:
    write_population(tmp_path, 10)
    assert (tmp_path / "Flag.ndjson").exists()

    # Patient 0 is the septic inpatient storyline: no tracker, so no Device and no Flag.
    counts = write_population(tmp_path, 1)

    assert "Flag" not in counts and "Device" not in counts
    assert not (tmp_path / "Flag.ndjson").exists()
    assert not (tmp_path / "Device.ndjson").exists()


def test_fifty_patients_are_quick_and_moderately_sized() -> None:
    started = time.perf_counter()
    resources = list(generate_population(50))
    elapsed = time.perf_counter() - started

    assert elapsed < 10
    assert 50 * 100 < len(resources) < 50 * 2000


# Validity and integrity --------------------------------------------------------------------------


def test_every_resource_validates_as_fhir_r4b(small_population: list[Resource]) -> None:
    for resource in small_population:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)

    counts = Counter(resource["resourceType"] for resource in small_population)
    assert set(counts) == set(GENERATED_RESOURCE_TYPES)
    assert all(count > 0 for count in counts.values())


def test_ids_are_unique(population: list[Resource]) -> None:
    keys = [f"{r['resourceType']}/{r['id']}" for r in population]
    assert len(keys) == len(set(keys))


def test_references_point_back_to_resources_already_emitted(population: list[Resource]) -> None:
    seen: set[str] = set()
    checked = 0
    for resource in population:
        for reference in references_in(resource):
            assert REFERENCE_FORM.match(reference), reference
            assert reference in seen, f"{reference} used before it was emitted"
            checked += 1
        seen.add(f"{resource['resourceType']}/{resource['id']}")
    assert checked > len(population)


def test_every_resource_is_tagged_synthetic(population: list[Resource]) -> None:
    for resource in population:
        assert {
            "system": codes.SYNTHETIC_TAG_SYSTEM,
            "code": codes.SYNTHETIC_TAG_CODE,
        }.items() <= resource["meta"]["tag"][0].items()


def test_timestamps_carry_a_timezone(small_population: list[Resource]) -> None:
    stamps = []
    for resource in small_population:
        for field in ("effectiveDateTime", "issued", "authoredOn", "onsetDateTime", "recordedDate"):
            if field in resource:
                stamps.append(resource[field])
        stamps += list(resource.get("period", {}).values())
    assert len(stamps) > len(small_population) / 2
    for stamp in stamps:
        assert moment(stamp).tzinfo is not None, stamp


def test_quantities_are_ucum_coded(small_population: list[Resource]) -> None:
    for observation in of_type(small_population, "Observation"):
        parts = observation.get("component", [observation])
        for part in parts:
            quantity = part["valueQuantity"]
            assert quantity["system"] == codes.UCUM
            assert quantity["code"] and quantity["unit"]


def test_penicillin_allergy_never_gets_amoxicillin(population: list[Resource]) -> None:
    allergic = {
        a["patient"]["reference"]
        for a in of_type(population, "AllergyIntolerance")
        if first_code(a) == "70618"
    }
    amoxicillin = [
        m["subject"]["reference"]
        for m in of_type(population, "MedicationRequest")
        if first_code(m, "medicationCodeableConcept") == "308192"
    ]
    assert allergic and amoxicillin
    assert allergic.isdisjoint(amoxicillin)


def test_medications_cite_the_condition_they_treat(population: list[Resource]) -> None:
    index = by_id(population)
    requests = of_type(population, "MedicationRequest")
    chronic_requests = [m for m in requests if m["status"] == "active"]
    assert chronic_requests
    for request in chronic_requests:
        [reason] = request["reasonReference"]
        condition = index[reason["reference"]]
        assert condition["subject"] == request["subject"]


# Cohort mix and ground truth ---------------------------------------------------------------------


def test_cohort_mix_matches_the_plan(population: list[Resource]) -> None:
    stays = [e for e in of_type(population, "Encounter") if e["class"]["code"] == "IMP"]
    sepsis = [c for c in of_type(population, "Condition") if first_code(c) == SEPSIS_SNOMED]
    trackers = {d["patient"]["reference"] for d in of_type(population, "Device")}

    assert len(stays) == 9
    assert len(sepsis) == 3
    assert len(trackers) == 15
    for stay in stays:
        days = (moment(stay["period"]["end"]) - moment(stay["period"]["start"])) / timedelta(days=1)
        assert 2 <= days <= 6


def test_only_simulation_truth_is_tagged_ground_truth(population: list[Resource]) -> None:
    truth = [r for r in population if is_ground_truth(r)]

    assert truth
    for resource in truth:
        if resource["resourceType"] == "Condition":
            assert first_code(resource) == SEPSIS_SNOMED
        else:
            assert resource["resourceType"] == "Flag"
            assert resource["code"]["coding"][0]["system"] == EPISODE_SYSTEM
    for condition in of_type(population, "Condition"):
        assert is_ground_truth(condition) == (first_code(condition) == SEPSIS_SNOMED)


def test_septic_patients_drift_before_onset(population: list[Resource]) -> None:
    index = by_id(population)
    septic = [c for c in of_type(population, "Condition") if first_code(c) == SEPSIS_SNOMED]
    assert septic
    for condition in septic:
        stay_ref = condition["encounter"]["reference"]
        admitted = moment(index[stay_ref]["period"]["start"])
        onset = moment(condition["onsetDateTime"])
        early = (admitted, admitted + timedelta(hours=12))
        before_onset = (onset - timedelta(hours=12), onset)

        heart_rate = series(population, codes.HEART_RATE, encounter=stay_ref)
        breathing = series(population, codes.RESPIRATORY_RATE, encounter=stay_ref)
        systolic = series(population, codes.SYSTOLIC_BP, encounter=stay_ref)
        assert mean_between(heart_rate, *before_onset) > mean_between(heart_rate, *early) + 4
        assert mean_between(breathing, *before_onset) > mean_between(breathing, *early) + 1
        assert mean_between(systolic, *before_onset) < mean_between(systolic, *early) - 4

        lactate = series(population, codes.LACTATE, encounter=stay_ref)
        around_onset = [v for when, v in lactate if abs(when - onset) <= timedelta(hours=12)]
        assert around_onset and max(around_onset) >= 2.0


def test_stays_without_sepsis_settle(population: list[Resource]) -> None:
    septic_stays = {
        c["encounter"]["reference"]
        for c in of_type(population, "Condition")
        if first_code(c) == SEPSIS_SNOMED
    }
    calm = [
        e
        for e in of_type(population, "Encounter")
        if e["class"]["code"] == "IMP" and f"Encounter/{e['id']}" not in septic_stays
    ]
    assert calm
    for stay in calm:
        stay_ref = f"Encounter/{stay['id']}"
        admitted, discharged = moment(stay["period"]["start"]), moment(stay["period"]["end"])
        heart_rate = series(population, codes.HEART_RATE, encounter=stay_ref)
        last_half_day = mean_between(heart_rate, discharged - timedelta(hours=12), discharged)
        first_half_day = mean_between(heart_rate, admitted, admitted + timedelta(hours=12))
        assert last_half_day < first_half_day + 3


def _episode_windows(population: list[Resource]) -> dict[str, list[tuple[datetime, datetime]]]:
    windows: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for flag in of_type(population, "Flag"):
        period = flag["period"]
        span = (moment(period["start"]), moment(period["end"]))
        windows[flag["subject"]["reference"]].append(span)
    return windows


def _quiet_values(
    points: list[tuple[datetime, float]], episodes: list[tuple[datetime, datetime]]
) -> list[float]:
    # Leave a week after each episode for recovery before calling a day quiet again.
    return [
        value
        for when, value in points
        if not any(start <= when < end + timedelta(days=7) for start, end in episodes)
    ]


def test_wearable_values_centre_on_each_persons_own_baseline(population: list[Resource]) -> None:
    episodes = _episode_windows(population)
    wearers = sorted({d["patient"]["reference"] for d in of_type(population, "Device")})
    personal_means, personal_spreads = [], []
    for wearer in wearers:
        resting = series(population, codes.RESTING_HEART_RATE, wearer=wearer)
        quiet = _quiet_values(resting, episodes[wearer])
        assert len(quiet) >= 30
        halves = quiet[: len(quiet) // 2], quiet[len(quiet) // 2 :]
        # Stable around the person's own level from one month to the next...
        assert abs(statistics.fmean(halves[0]) - statistics.fmean(halves[1])) < 3
        personal_means.append(statistics.fmean(quiet))
        personal_spreads.append(statistics.stdev(quiet))
    # ...while people differ from each other far more than a person varies day to day.
    assert statistics.stdev(personal_means) > 1.5 * statistics.fmean(personal_spreads)
    assert max(personal_means) - min(personal_means) > 10


def test_steps_follow_a_personal_weekday_weekend_rhythm(population: list[Resource]) -> None:
    ratios = []
    for wearer in sorted({d["patient"]["reference"] for d in of_type(population, "Device")}):
        steps = series(population, codes.STEPS_24H, wearer=wearer)
        weekend = [v for when, v in steps if when.weekday() >= 5]
        weekday = [v for when, v in steps if when.weekday() < 5]
        ratios.append(statistics.median(weekend) / statistics.median(weekday))
    assert min(ratios) < 0.9 and max(ratios) > 1.1


def test_episodes_are_visible_against_the_personal_baseline(population: list[Resource]) -> None:
    episodes = _episode_windows(population)
    flags = of_type(population, "Flag")
    kinds = {first_code(flag) for flag in flags}
    assert kinds == {"hf-decompensation", "infection-like"}
    for flag in flags:
        wearer = flag["subject"]["reference"]
        start, end = moment(flag["period"]["start"]), moment(flag["period"]["end"])
        resting = series(population, codes.RESTING_HEART_RATE, wearer=wearer)
        baseline = statistics.fmean(_quiet_values(resting, episodes[wearer]))
        during = [v for when, v in resting if start <= when < end]
        assert max(during) > baseline + 4
        if first_code(flag) == "hf-decompensation":
            weight = series(population, codes.BODY_WEIGHT, wearer=wearer)
            usual = statistics.median(_quiet_values(weight, episodes[wearer]))
            assert max(v for when, v in weight if start <= when < end) > usual + 1.5
