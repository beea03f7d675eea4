"""Assemble patients into a population and write it out as FHIR Bulk Data NDJSON."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson

from careloop.synth import catalog
from careloop.synth._fhir import IdMinter, Resource
from careloop.synth.chronic import draw_allergens, draw_chronic_diagnoses, outpatient_record
from careloop.synth.context import PatientContext
from careloop.synth.inpatient import hospital_stay
from careloop.synth.people import Site, build_site, draw_person, patient_resource
from careloop.synth.physiology import draw_physiology
from careloop.synth.wearable import HF_DECOMPENSATION, INFECTION_LIKE, home_monitoring

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)

GENERATED_RESOURCE_TYPES = (
    "Organization",
    "Practitioner",
    "Patient",
    "Condition",
    "AllergyIntolerance",
    "Encounter",
    "Observation",
    "MedicationRequest",
    "Device",
    "Flag",
)


@dataclass(frozen=True)
class Storyline:
    """What happens to one patient inside the simulated window, besides their routine care."""

    stay: str | None = None  # None, "stable" or "septic"
    home: str | None = None  # None, "steady", HF_DECOMPENSATION, INFECTION_LIKE or "either"


# Ten storylines giving the intended mix: 30% admitted (a third of them septic), 50% wearing a
# tracker, some of those with an episode. The first block keeps this order so that even a
# five-patient demo shows every storyline; later blocks are shuffled.
COHORT_PLAN = (
    Storyline(stay="septic"),
    Storyline(home=HF_DECOMPENSATION),
    Storyline(stay="stable"),
    Storyline(home=INFECTION_LIKE),
    Storyline(home="steady"),
    Storyline(),
    Storyline(stay="stable"),
    Storyline(home="either"),
    Storyline(),
    Storyline(home="steady"),
)


def storyline_for(seed: int, index: int) -> Storyline:
    block, slot = divmod(index, len(COHORT_PLAN))
    plan = list(COHORT_PLAN)
    if block:
        random.Random(f"careloop-synth/{seed}/plan/{block}").shuffle(plan)
    return plan[slot]


def _home_episode(ctx: PatientContext, home: str) -> str | None:
    if home == "steady":
        return None
    if home != "either":
        return home
    if ctx.rng.random() < 0.5:
        return None
    return HF_DECOMPENSATION if ctx.has(catalog.HEART_FAILURE) else INFECTION_LIKE


def patient_resources(
    seed: int, index: int, window_start: datetime, site: Site
) -> Iterator[Resource]:
    """One patient and everything recorded about them, in reference order."""
    # Seeded per patient, so patient k is the same whatever the population size.
    rng = random.Random(f"careloop-synth/{seed}/patient/{index}")
    ids = IdMinter(f"{seed}/patient/{index}")
    story = storyline_for(seed, index)
    heart_failure_story = story.home == HF_DECOMPENSATION
    person = draw_person(rng, index, window_start, min_age=55 if heart_failure_story else 25)
    required = (catalog.HEART_FAILURE,) if heart_failure_story else ()
    diagnoses = draw_chronic_diagnoses(rng, person.age, required)
    allergens = draw_allergens(rng)
    physiology = draw_physiology(rng, person, diagnoses)
    primary_care = rng.choice(site.primary_care)
    patient = patient_resource(ids.next("Patient"), person, primary_care, site.clinic)
    ctx = PatientContext(
        rng=rng,
        ids=ids,
        person=person,
        patient=patient,
        site=site,
        window_start=window_start,
        primary_care=primary_care,
        hospitalist=rng.choice(site.hospitalists),
        physiology=physiology,
        allergens=allergens,
    )
    yield patient
    yield from outpatient_record(ctx, diagnoses)
    if story.stay is not None:
        yield from hospital_stay(ctx, septic=story.stay == "septic")
    if story.home is not None:
        yield from home_monitoring(ctx, _home_episode(ctx, story.home))


def _as_utc(start: datetime | None) -> datetime:
    if start is None:
        return DEFAULT_START
    # A naive datetime is read as UTC rather than as this machine's local time, for determinism.
    return start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)


def generate_population(
    patients: int, seed: int = 7, start: datetime | None = None
) -> Iterator[Resource]:
    """Yield JSON-ready resource dicts: the care site first, then each patient and their record.

    `start` opens the simulated window (default 2026-01-01T00:00Z): history (diagnoses, clinic
    visits, prescriptions) lies before it, hospital stays and home monitoring after it.
    """
    if patients < 0:
        raise ValueError(f"patients must be zero or more, got {patients}")
    window_start = _as_utc(start)
    site = build_site(seed)
    yield from site.resources()
    for index in range(patients):
        yield from patient_resources(seed, index, window_start, site)


def write_population(
    out_dir: Path, patients: int, seed: int = 7, start: datetime | None = None
) -> dict[str, int]:
    """Write FHIR Bulk Data NDJSON files (one file per resourceType, e.g. Patient.ndjson,
    Observation.ndjson, ...) into out_dir; return counts by resource type.

    Files left in out_dir by an earlier run for a type this run did not produce are removed, so a
    smaller population never inherits, say, an old Flag.ndjson with someone else's ground truth.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with ExitStack() as stack:
        files: dict[str, BinaryIO] = {}
        for resource in generate_population(patients, seed, start):
            resource_type = resource["resourceType"]
            if resource_type not in files:
                path = out_dir / f"{resource_type}.ndjson"
                files[resource_type] = stack.enter_context(path.open("wb"))
                counts[resource_type] = 0
            files[resource_type].write(orjson.dumps(resource) + b"\n")
            counts[resource_type] += 1
    for resource_type in GENERATED_RESOURCE_TYPES:
        if resource_type not in counts:
            (out_dir / f"{resource_type}.ndjson").unlink(missing_ok=True)
    return counts
