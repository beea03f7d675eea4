"""The ONC interaction lists read from the shared data, and real Synthea medication names.

The lists are read from ../shared/data/ddi at run time (never copied into the repository);
tests that need to break a file copy it into a temporary directory first.
"""

from __future__ import annotations

import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from careloop.cds.interactions import (
    HIGH_PRIORITY,
    HIGH_PRIORITY_PAIRS,
    HIGH_PRIORITY_TABLE,
    NON_INTERRUPTIVE,
    NON_INTERRUPTIVE_PAIRS,
    NON_INTERRUPTIVE_TABLE,
    InteractionIndex,
    guidance_for,
    load_guidance,
)
from careloop.cds.medications import RXNORM, allergy_classes, default_vocabulary
from careloop.cds.renal import CREATININE_LOINC, EGFR_LOINC, latest_egfr
from careloop.fhir.timeutil import parse_fhir_instant_range
from conftest import shared_data

pytestmark = pytest.mark.shared_data
SYNTHEA_BUNDLES = 80  # patient bundles read for their medication names (of 615)


@pytest.fixture(scope="module")
def ddi_dir() -> Path:
    return shared_data("ddi")


@pytest.fixture(scope="module")
def index(ddi_dir: Path) -> InteractionIndex:
    return InteractionIndex.load(ddi_dir, default_vocabulary())


@pytest.mark.parametrize(
    "order", [("simvastatin", "clarithromycin"), ("clarithromycin", "simvastatin")]
)
def test_high_priority_pair_is_found_either_way_round(
    index: InteractionIndex, order: tuple[str, str]
) -> None:
    hit = index.find(*order)
    assert hit is not None
    assert hit.list_name == HIGH_PRIORITY and hit.severity == "critical"
    assert hit.drugs == ("clarithromycin", "simvastatin")
    assert hit.group == "25"
    assert hit.class_of("simvastatin") == "HMG Co-A reductase inhibitors"
    assert hit.class_of("clarithromycin") == "CYP3A4 inhibitors / Macrolides"
    assert hit.drugbank_ids == ("DB01211", "DB00641")


def test_non_interruptive_pair(index: InteractionIndex) -> None:
    hit = index.find("warfarin", "acetaminophen")
    assert hit is not None
    assert (hit.list_name, hit.severity, hit.group) == (NON_INTERRUPTIVE, "info", "18")
    assert hit.class_of("warfarin") == "Anticoagulants"


def test_unrelated_drugs_do_not_interact(index: InteractionIndex) -> None:
    assert index.find("amoxicillin", "metformin") is None
    assert index.find("simvastatin", "simvastatin") is None
    assert index.between({"amoxicillin", "acetaminophen"}, {"metformin", "lisinopril"}) == []


def test_inn_names_of_the_list_meet_rxnorm_names(index: InteractionIndex) -> None:
    # the list writes "Rifampicin" and "Pethidine"; orders say rifampin and meperidine
    rifampin = index.find("rifampin", "atazanavir")
    assert rifampin is not None and rifampin.group == "23"
    assert index.find("meperidine", "phenelzine") is not None


def test_qt_pairs_are_labelled_with_their_group(index: InteractionIndex) -> None:
    hit = index.find("methadone", "amiodarone")
    assert hit is not None
    assert hit.group == "21" and hit.classes == ("QT prolonging agents", "QT prolonging agents")


def test_pairs_only_in_the_published_table_are_added(index: InteractionIndex) -> None:
    hit = index.find("febuxostat", "azathioprine")
    assert hit is not None
    assert hit.severity == "critical" and hit.group == "6"
    assert hit.drugbank_ids == (None, None)  # the mapped file does not know them


def test_every_high_priority_pair_has_a_group_and_guidance(index: InteractionIndex) -> None:
    guidance = load_guidance()
    high = [i for i in index.pairs.values() if i.list_name == HIGH_PRIORITY]
    assert len(high) >= 1150
    assert all(i.group for i in high)
    assert [i.key for i in high if guidance_for(i, guidance) is None] == []


def test_lists_load_fast(ddi_dir: Path) -> None:
    started = time.perf_counter()
    InteractionIndex.load(ddi_dir, default_vocabulary())
    assert time.perf_counter() - started < 1.0


def _copy_lists(ddi_dir: Path, target: Path) -> Path:
    for relative in (
        HIGH_PRIORITY_PAIRS,
        HIGH_PRIORITY_TABLE,
        NON_INTERRUPTIVE_PAIRS,
        NON_INTERRUPTIVE_TABLE,
    ):
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ddi_dir / relative, target / relative)
    return target


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Simvastatin$DB00641$Clarithromycin\n", "row 3: expected 4 fields, found 3"),
        ("Simvastatin$DB00641$Clarithromycin$DBX$\n", "row 3: 'DBX' is not a DrugBank id"),
        ("$DB00641$Clarithromycin$DB01211$\n", "row 3: drug name '' is empty"),
    ],
)
def test_malformed_pair_file_names_file_and_row(
    ddi_dir: Path, tmp_path: Path, line: str, message: str
) -> None:
    copied = _copy_lists(ddi_dir, tmp_path)
    target = copied / HIGH_PRIORITY_PAIRS
    rows = target.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    target.write_text("".join(rows[:2] + [line] + rows[2:]), encoding="utf-8")
    with pytest.raises(ValueError, match="ONC_High_Priority_Mapped.csv") as caught:
        InteractionIndex.load(copied, default_vocabulary())
    assert message in str(caught.value)


def test_missing_or_unreadable_files_are_named(ddi_dir: Path, tmp_path: Path) -> None:
    copied = _copy_lists(ddi_dir, tmp_path)
    (copied / HIGH_PRIORITY_TABLE).write_bytes(b"not a spreadsheet")
    with pytest.raises(ValueError, match=r"ONC High Priority List\.xls: not a readable \.xls"):
        InteractionIndex.load(copied, default_vocabulary())
    shutil.copyfile(ddi_dir / HIGH_PRIORITY_TABLE, copied / HIGH_PRIORITY_TABLE)
    (copied / NON_INTERRUPTIVE_PAIRS).unlink()
    with pytest.raises(ValueError, match="ONC_Non_Interuptive_Mapped.csv: missing"):
        InteractionIndex.load(copied, default_vocabulary())
    with pytest.raises(ValueError, match="does not exist"):
        InteractionIndex.load(tmp_path / "nowhere", default_vocabulary())


def _synthea_medication_names(archive: Path, limit: int) -> set[str]:
    names: set[str] = set()
    for bundle in _bundles(archive, limit):
        for entry in bundle.get("entry", []):
            concept = entry["resource"].get("medicationCodeableConcept") or {}
            for coding in concept.get("coding", []):
                if coding.get("system") == RXNORM and coding.get("display"):
                    names.add(coding["display"])
    return names


def _bundles(archive: Path, limit: int) -> Iterator[dict]:
    with tarfile.open(archive, "r:gz") as tar:
        read = 0
        for member in tar:
            if read >= limit:
                return
            if (
                member.isfile()
                and member.name.endswith(".json")
                and "Information" not in member.name
            ):
                handle = tar.extractfile(member)
                if handle is not None:
                    read += 1
                    yield orjson.loads(handle.read())


def test_real_synthea_medication_names_parse(
    synthea_archive: Path, index: InteractionIndex
) -> None:
    names = _synthea_medication_names(synthea_archive, SYNTHEA_BUNDLES)
    assert len(names) >= 40
    unparsed = sorted(n for n in names if not default_vocabulary().ingredients_from_name(n))
    assert unparsed == []
    ingredients = set().union(*(default_vocabulary().ingredients_from_name(n) for n in names))
    # the drugs Synthea prescribes most that the ONC lists know must meet them by name
    assert {"simvastatin", "acetaminophen", "hydrochlorothiazide", "ibuprofen"} <= ingredients
    assert {"simvastatin", "acetaminophen", "ibuprofen", "warfarin"} <= index.drugs


def test_real_synthea_allergies_and_kidney_labs(synthea_archive: Path) -> None:
    """Synthea's allergies are foods, pollen, latex and the like: none may become a drug. Its
    eGFR and creatinine results must give a reading at the time they were taken."""
    allergies, readings = 0, 0
    for bundle in _bundles(synthea_archive, SYNTHEA_BUNDLES):
        resources = [entry["resource"] for entry in bundle["entry"]]
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        for resource in resources:
            if resource["resourceType"] == "AllergyIntolerance":
                allergies += 1
                assert allergy_classes(resource) == frozenset(), resource["code"]
        labs = [r for r in resources if r["resourceType"] == "Observation"]
        kidney = [r for r in labs if _loinc(r) in EGFR_LOINC | CREATININE_LOINC]
        if kidney:
            last = max(parse_fhir_instant_range(r["effectiveDateTime"])[0] for r in kidney)
            reading = latest_egfr(labs, patient, last)
            assert reading is not None and 0 < reading.value < 200
            readings += 1
    assert allergies > 0 and readings > 0


def _loinc(observation: dict) -> str | None:
    return next((c.get("code") for c in observation["code"].get("coding", [])), None)
