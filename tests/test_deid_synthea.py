"""De-identification on real data: Synthea R4 patient bundles from the shared data sets.

A few patients are read from the archive (the first ones, plus the first living patient aged 90
or more, the first who died aged 90 or more, and the first born before 1935 who died younger),
each bundle is de-identified as one compartment, and the serialized output is searched for
everything identifying the input held.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson
import pytest

from careloop.deid import AGE_BAND_URL, Deidentifier, DeidOptions
from careloop.deid.dates import DateRule
from careloop.ingest.validation import structural_errors

KEY = bytes(range(7, 39))
AS_OF = date(2025, 1, 1)
FIRST_PATIENTS = 4
SCAN_LIMIT = 300  # bundles read at most while looking for the elderly cases
DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")

pytestmark = pytest.mark.shared_data


@dataclass(frozen=True)
class Case:
    label: str
    patient: dict
    resources: list[dict]


def _age(birth: str, on: date) -> int:
    born = date.fromisoformat(birth)
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def _kind(patient: dict) -> str | None:
    """Which elderly slot a patient fills, if any."""
    birth, died = patient.get("birthDate"), patient.get("deceasedDateTime")
    if not birth:
        return None
    at = date.fromisoformat(died[:10]) if died else AS_OF
    if _age(birth, at) >= 90:
        return "died-90-plus" if died else "living-90-plus"
    if died and birth < "1935":
        return "died-younger-born-early"
    return None


def _bundles(archive: Path) -> Iterator[tuple[str, dict]]:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = Path(member.name).name
            if not member.isfile() or not name.endswith(".json") or "Information" in name:
                continue  # the hospital and practitioner bundles hold no patient
            handle = tar.extractfile(member)
            if handle is not None:
                yield name, orjson.loads(handle.read())


@pytest.fixture(scope="module")
def cases(synthea_archive: Path) -> list[Case]:
    """`synthea_archive` is conftest's `shared_data("synthea_r4/synthea_r4.tar.gz")`."""
    wanted = {"living-90-plus", "died-90-plus", "died-younger-born-early"}
    found: list[Case] = []
    for index, (_, bundle) in enumerate(_bundles(synthea_archive)):
        resources = [entry["resource"] for entry in bundle["entry"]]
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        kind = _kind(patient)
        if index < FIRST_PATIENTS:
            found.append(Case(f"patient-{index}", patient, resources))
        elif kind in wanted:
            wanted.discard(kind)
            found.append(Case(kind, patient, resources))
        if (index >= FIRST_PATIENTS and not wanted) or index >= SCAN_LIMIT:
            break
    assert not wanted, f"no Synthea patient found for {sorted(wanted)}"
    return found


def _needles(case: Case) -> dict[str, list[str]]:
    """What identified the patient in the input, by kind."""
    patient = case.patient
    names = [
        part
        for name in patient.get("name", [])
        for part in [name.get("family"), *name.get("given", [])]
        if isinstance(part, str) and len(part) >= 3  # "Al" also spells Alabama's code
    ]
    for extension in patient.get("extension", []):
        if extension["url"].endswith("patient-mothersMaidenName"):
            names += extension["valueString"].split()
    addresses = patient.get("address", [])
    identifiers = [i["value"] for i in patient.get("identifier", [])]
    return {
        "name": names,
        "address line": [line for a in addresses for line in a.get("line", [])],
        "city": [a["city"] for a in addresses if "city" in a],
        "phone": [t["value"] for t in patient.get("telecom", [])],
        "identifier": identifiers,
        "resource id": [r["id"] for r in case.resources],
    }


def _deidentify(case: Case, mode: str) -> tuple[list[dict], Deidentifier]:
    deidentifier = Deidentifier(KEY, DeidOptions(date_mode=mode, as_of=AS_OF))
    return deidentifier.patient_resources(case.patient["id"], case.resources), deidentifier


@pytest.mark.parametrize("mode", ["shift", "year"])
@pytest.mark.parametrize("slot", range(FIRST_PATIENTS + 3))
def test_nothing_identifying_survives(cases: list[Case], slot: int, mode: str) -> None:
    case = cases[slot]
    outputs, deidentifier = _deidentify(case, mode)
    text = json.dumps(outputs)
    lowered = text.lower()
    needles = _needles(case)
    assert needles["name"] and needles["identifier"] and needles["phone"]
    for kind in ("address line", "phone", "identifier", "resource id"):
        for needle in needles[kind]:
            assert needle.lower() not in lowered, f"{case.label}: a {kind} survived"
    for kind in ("name", "city"):
        for needle in needles[kind]:
            pattern = re.compile(rf"(?<!\w){re.escape(needle)}(?!\w)", re.IGNORECASE)
            assert pattern.search(text) is None, f"{case.label}: a {kind} survived"
    birth = case.patient["birthDate"]
    if mode == "year":
        assert DATE_TEXT.search(text) is None  # no date finer than a year anywhere
    else:
        # the birth date may only reappear as some other date moved by the patient's offset
        rule = DateRule("shift", deidentifier.date_shift_days(case.patient["id"]))
        moved = {rule.apply(d) for d in DATE_TEXT.findall(json.dumps(case.resources))}
        assert birth not in text or birth in moved, f"{case.label}: the birth date survived"


@pytest.mark.parametrize("mode", ["shift", "year"])
@pytest.mark.parametrize("slot", range(FIRST_PATIENTS + 3))
def test_outputs_are_valid_r4_and_consistent(cases: list[Case], slot: int, mode: str) -> None:
    case = cases[slot]
    outputs, deidentifier = _deidentify(case, mode)
    for resource in outputs:
        assert structural_errors(resource) == [], f"{case.label}: {resource['resourceType']}"
    patient = next(r for r in outputs if r["resourceType"] == "Patient")
    assert patient["id"] == deidentifier.pseudonym("id", case.patient["id"])
    exported = {f"{r['resourceType']}/{r['id']}" for r in outputs}
    for resource in outputs:
        for key in ("subject", "patient"):
            reference = resource.get(key, {}).get("reference")
            if reference and reference.startswith("Patient/"):
                assert reference == f"Patient/{patient['id']}"
        encounter = resource.get("encounter", {}).get("reference")
        if encounter:
            assert encounter in exported  # the Encounter left with the same pseudonym
    report = deidentifier.report()
    assert report.resources_in == len(case.resources)
    assert report.resources_out == len(outputs)
    assert set(report.resources_dropped) <= {"Claim", "ExplanationOfBenefit", "ImagingStudy"}


def test_ninety_plus_patients_lose_their_birth_date(cases: list[Case]) -> None:
    by_label = {case.label: case for case in cases}
    for label, banded in (
        ("living-90-plus", True),
        ("died-90-plus", True),
        ("died-younger-born-early", False),
    ):
        outputs, _ = _deidentify(by_label[label], "shift")
        patient = next(r for r in outputs if r["resourceType"] == "Patient")
        bands = [e for e in patient.get("extension", []) if e["url"] == AGE_BAND_URL]
        assert ("birthDate" not in patient) == banded, label
        assert bands == ([{"url": AGE_BAND_URL, "valueString": "90+"}] if banded else [])
