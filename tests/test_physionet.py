"""The PhysioNet 2019 reader: files to timelines and FHIR, bad files to named problems.

The key property: a stay read from its `.psv` file and the same stay loaded into the store as FHIR
and read back through `build_timeline` give the same hourly grid.
"""

from __future__ import annotations

import math
import tarfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.ingest import IngestOptions, Ingestor
from careloop.ingest.validation import structural_errors
from careloop.sepsis.grid import HourlyGrid, grid_from_timeline
from careloop.sources.physionet import (
    ANCHOR,
    COLUMN_SIGNALS,
    MIN_HOURS,
    PhysioNetStay,
    read_physionet,
    read_psv,
    stay_to_fhir,
    write_fhir_ndjson,
)
from careloop.store.repository import ResourceStore
from careloop.timeline import build_timeline
from conftest import shared_data
from samples import write_tar_gz, write_zip

HEADER = (
    "HR|O2Sat|Temp|SBP|MAP|DBP|Resp|EtCO2|BaseExcess|HCO3|FiO2|pH|PaCO2|SaO2|AST|BUN|"
    "Alkalinephos|Calcium|Chloride|Creatinine|Bilirubin_direct|Glucose|Lactate|Magnesium|"
    "Phosphate|Potassium|Bilirubin_total|TroponinI|Hct|Hgb|PTT|WBC|Fibrinogen|Platelets|Age|"
    "Gender|Unit1|Unit2|HospAdmTime|ICULOS|SepsisLabel"
).split("|")
STAY = {"Age": "65.5", "Gender": "1", "Unit1": "0", "Unit2": "1", "HospAdmTime": "-3.5"}


def psv(rows: list[dict[str, str]], columns: list[str] = HEADER, stay: dict = STAY) -> bytes:
    """A file with the given columns; per-stay values on every row, NaN where nothing is given."""
    lines = ["|".join(columns)]
    for row in rows:
        cells = {**stay, **row}
        lines.append("|".join(cells.get(column, "NaN") for column in columns))
    return ("\n".join(lines) + "\n").encode()


def hourly(values: list[dict[str, str]], first_hour: int = 1) -> list[dict[str, str]]:
    """Rows with ICULOS counting up from `first_hour` and SepsisLabel 0."""
    return [
        {"ICULOS": str(first_hour + i), "SepsisLabel": "0", **row} for i, row in enumerate(values)
    ]


NORMAL_ROWS = hourly(
    [
        {"HR": "80", "O2Sat": "97", "MAP": "75.33"},
        {"Temp": "38.2", "Resp": "22"},
        {"HR": "90", "Lactate": "2.5", "FiO2": "0.4", "SepsisLabel": "1"},
    ]
)


def grid_of(stay: PhysioNetStay) -> HourlyGrid:
    return grid_from_timeline(stay.timeline, stay.start, stay.hours, stay_id=stay.stay_id)


def kinds(stay: PhysioNetStay) -> set[str]:
    return {problem.kind for problem in stay.problems}


def messages(stay: PhysioNetStay) -> str:
    return "\n".join(problem.message for problem in stay.problems)


# -- a normal stay ------------------------------------------------------------------------------


def test_normal_stay_lands_values_on_their_rows() -> None:
    stay = read_psv("setA/p000042.psv", psv(NORMAL_ROWS))
    assert stay.stay_id == "p000042"
    assert stay.problems == () and stay.scorable
    assert stay.hours == 3
    assert stay.start == ANCHOR + timedelta(hours=1)
    assert stay.labels is not None and stay.labels.dtype == np.int8
    assert stay.labels.tolist() == [0, 0, 1]
    assert stay.unit == "SICU" and stay.hosp_adm_hours == -3.5
    grid = grid_of(stay)
    np.testing.assert_array_equal(grid.column("hr"), [80, np.nan, 90])
    np.testing.assert_array_equal(grid.column("spo2"), [97, np.nan, np.nan])
    np.testing.assert_array_equal(grid.column("map"), [75.33, np.nan, np.nan])
    np.testing.assert_array_equal(grid.column("temp"), [np.nan, 38.2, np.nan])
    np.testing.assert_array_equal(grid.column("lactate"), [np.nan, np.nan, 2.5])
    np.testing.assert_array_equal(grid.column("fio2"), [np.nan, np.nan, 0.4])
    assert int(np.count_nonzero(~np.isnan(grid.values))) == 8
    assert grid.sex == "male"
    assert grid.age == pytest.approx(65.5, abs=0.01)


def test_start_follows_the_first_iculos_and_rows_stay_hourly() -> None:
    stay = read_psv("p1.psv", psv(hourly([{"HR": "70"}, {"HR": "71"}], first_hour=5)))
    assert stay.start == ANCHOR + timedelta(hours=5)
    assert [p.time for p in stay.timeline.observations("8867-4")] == [
        stay.start,
        stay.start + timedelta(hours=1),
    ]


def test_female_micu_and_test_set_files_without_labels() -> None:
    columns = [c for c in HEADER if c != "SepsisLabel"]
    stay_values = {**STAY, "Gender": "0", "Unit1": "1", "Unit2": "0"}
    stay = read_psv("p2.psv", psv(hourly([{"HR": "70"}, {"HR": "72"}]), columns, stay_values))
    assert stay.labels is None
    assert stay.problems == ()
    assert stay.timeline.sex == "female" and stay.unit == "MICU"


def test_unit_is_none_when_neither_unit_is_set() -> None:
    stay = read_psv("p3.psv", psv(NORMAL_ROWS, stay={**STAY, "Unit1": "NaN", "Unit2": "NaN"}))
    assert stay.unit is None and stay.scorable


def test_empty_cells_mean_not_measured() -> None:
    data = psv(NORMAL_ROWS).replace(b"|NaN|", b"||")
    stay = read_psv("p4.psv", data)
    assert stay.problems == ()
    np.testing.assert_array_equal(
        grid_of(stay).values, grid_of(read_psv("p4", psv(NORMAL_ROWS))).values
    )


# -- bad input: the right problem, never a crash ---------------------------------------------------


def without(*dropped: str) -> list[str]:
    return [column for column in HEADER if column not in dropped]


VITALS = ["HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp", "EtCO2"]
BAD_INPUTS = {
    "missing lab columns": (
        psv(NORMAL_ROWS, without("Lactate", "Fibrinogen")),
        "missing-columns",
        ["Lactate", "Fibrinogen"],
        True,
    ),
    "missing ICULOS": (psv(NORMAL_ROWS, without("ICULOS")), "invalid", ["ICULOS"], False),
    "missing every vital column": (
        psv(NORMAL_ROWS, without(*VITALS)),
        "invalid",
        ["vital-sign column"],
        False,
    ),
    "all vitals NaN": (
        psv(hourly([{"Lactate": "2"}, {"WBC": "12"}])),
        "insufficient",
        ["no vital sign"],
        False,
    ),
    "heart rate 900": (
        psv(hourly([{"HR": "900"}, {"HR": "80"}])),
        "implausible",
        ["HR", "row 0"],
        True,
    ),
    "negative age": (psv(NORMAL_ROWS, stay={**STAY, "Age": "-4"}), "invalid", ["Age"], False),
    "age 130": (psv(NORMAL_ROWS, stay={**STAY, "Age": "130"}), "invalid", ["Age"], False),
    "unsorted ICULOS": (
        psv([{**row, "ICULOS": los} for row, los in zip(NORMAL_ROWS, "132", strict=True)]),
        "invalid",
        ["ICULOS is not increasing", "row 2 (line 4)"],
        False,
    ),
    "duplicated ICULOS": (
        psv([{**row, "ICULOS": los} for row, los in zip(NORMAL_ROWS, "112", strict=True)]),
        "invalid",
        ["ICULOS is not increasing", "row 1 (line 3)"],
        False,
    ),
    "ICULOS skips an hour": (
        psv([{**row, "ICULOS": los} for row, los in zip(NORMAL_ROWS, "124", strict=True)]),
        "invalid",
        ["ICULOS skips", "row 2"],
        False,
    ),
    "ICULOS empty": (
        psv([{**NORMAL_ROWS[0], "ICULOS": "NaN"}, *NORMAL_ROWS[1:]]),
        "invalid",
        ["ICULOS is missing", "row 0"],
        False,
    ),
    "one-hour stay": (psv(NORMAL_ROWS[:1]), "insufficient", ["1 hour"], False),
    "malformed number": (
        psv([NORMAL_ROWS[0], {**NORMAL_ROWS[1], "Temp": "abc"}, NORMAL_ROWS[2]]),
        "invalid",
        ["Temp is not a number", "row 1"],
        False,
    ),
    "short row": (
        psv(NORMAL_ROWS) + b"80|97\n",
        "invalid",
        ["2 fields", "row 3"],
        False,
    ),
    "empty file": (b"", "invalid", ["empty"], False),
    "blank lines only": (b"\n \n", "invalid", ["empty"], False),
    "header only": (psv([]), "invalid", ["no rows"], False),
    "not text": (b"\xff\xfe\x00\x81HR", "invalid", ["not text"], False),
    "unknown column": (
        psv(NORMAL_ROWS, [*HEADER, "Weight"]),
        "extra-columns",
        ["Weight"],
        True,
    ),
    "gender 2": (psv(NORMAL_ROWS, stay={**STAY, "Gender": "2"}), "implausible", ["Gender"], True),
    "label not 0 or 1": (
        psv([*NORMAL_ROWS[:2], {**NORMAL_ROWS[2], "SepsisLabel": "NaN"}]),
        "invalid",
        ["SepsisLabel", "row 2"],
        False,
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_named_with_the_right_kind(case: str) -> None:
    data, kind, fragments, scorable = BAD_INPUTS[case]
    stay = read_psv("p000123.psv", data)
    assert kind in kinds(stay), messages(stay)
    text = "\n".join(p.message for p in stay.problems if p.kind == kind)
    assert text.startswith("p000123.psv")
    for fragment in fragments:
        assert fragment in text
    assert stay.scorable is scorable


def test_messages_never_repeat_the_value() -> None:
    bad = psv(hourly([{"HR": "917.5", "Temp": "x1y2"}, {"HR": "80"}]))
    stay = read_psv("p5.psv", bad)
    assert {"implausible", "invalid"} <= kinds(stay)
    assert "917" not in messages(stay) and "x1y2" not in messages(stay)


def test_implausible_values_are_dropped_and_the_rest_kept() -> None:
    stay = read_psv("p6.psv", psv(hourly([{"HR": "900", "O2Sat": "96"}, {"HR": "80"}])))
    grid = grid_of(stay)
    np.testing.assert_array_equal(grid.column("hr"), [np.nan, 80])
    np.testing.assert_array_equal(grid.column("spo2"), [96, np.nan])
    assert grid.implausible == {}  # dropped by the reader already, never seen by the grid


def test_negative_age_leaves_birth_date_unknown() -> None:
    stay = read_psv("p7.psv", psv(NORMAL_ROWS, stay={**STAY, "Age": "-1"}))
    assert stay.timeline.birth_date is None


def test_age_100_is_kept_as_coded() -> None:
    stay = read_psv("p8.psv", psv(NORMAL_ROWS, stay={**STAY, "Age": "100"}))
    assert grid_of(stay).age == pytest.approx(100, abs=0.01) and stay.scorable


def test_unsorted_iculos_falls_back_to_row_order() -> None:
    rows = [{**row, "ICULOS": los} for row, los in zip(NORMAL_ROWS, "132", strict=True)]
    stay = read_psv("p9.psv", psv(rows))
    assert stay.hours == 3 and stay.start == ANCHOR + timedelta(hours=1)
    np.testing.assert_array_equal(grid_of(stay).column("hr"), [80, np.nan, 90])


def test_one_hour_stay_is_read() -> None:
    stay = read_psv("p10.psv", psv(NORMAL_ROWS[:1]))
    assert MIN_HOURS == 2 and stay.hours == 1
    assert grid_of(stay).column("hr").tolist() == [80]


def test_mapping_covers_every_signal_once() -> None:
    assert len(set(COLUMN_SIGNALS.values())) == len(COLUMN_SIGNALS) == 34
    assert set(COLUMN_SIGNALS) == set(HEADER[:34])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from(["", "NaN", "1", "-3", "1e400", "abc", "0.5", "2", " 7 "]),
            min_size=0,
            max_size=6,
        ),
        max_size=5,
    ),
    st.lists(st.sampled_from(["HR", "ICULOS", "Age", "Gender", "SepsisLabel", "Zz"]), max_size=6),
)
def test_any_table_gives_a_stay_not_a_crash(rows: list[list[str]], columns: list[str]) -> None:
    lines = ["|".join(row) for row in rows]
    data = "\n".join(["|".join(columns), *lines]).encode()
    stay = read_psv("p11.psv", data)
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines are not rows
    assert stay.hours == (len(lines) if columns else 0)
    assert stay.scorable is False or stay.hours >= MIN_HOURS
    grid = grid_of(stay)
    assert grid.values.shape[0] == stay.hours


# -- sources: directory, .tar.gz, .zip ---------------------------------------------------------


def members() -> dict[str, bytes]:
    later = hourly([{"HR": "101"}, {"HR": "102"}, {"HR": "103"}], first_hour=3)
    return {
        "setA/p000003.psv": psv(later),
        "setA/p000001.psv": psv(NORMAL_ROWS),
        "setA/sub/p000002.psv": psv(NORMAL_ROWS[:2]),
        "setA/README.txt": b"not a stay",
        "__MACOSX/setA/._p000001.psv": b"\x00\x05\x16\x07",
    }


def summary(stays: list[PhysioNetStay]) -> list[tuple]:
    return [(s.stay_id, s.hours, s.start, s.problems, grid_of(s).values.tobytes()) for s in stays]


def test_directory_tar_and_zip_give_the_same_stays(tmp_path: Path) -> None:
    folder = tmp_path / "dir"
    for name, data in members().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    tar = write_tar_gz(tmp_path / "set.tar.gz", members())
    tgz = write_tar_gz(tmp_path / "set.tgz", members())
    zipped = write_zip(tmp_path / "set.zip", members())
    expected = summary(list(read_physionet(folder)))
    assert [row[0] for row in expected] == ["p000001", "p000002", "p000003"]
    for source in (tar, tgz, zipped):
        assert summary(list(read_physionet(source))) == expected
    assert [s.stay_id for s in read_physionet(tar, limit=2)] == ["p000001", "p000002"]


def test_unreadable_paths_raise_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        read_physionet(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a directory of .psv files"):
        read_physionet(tmp_path / "notes.txt")
    (tmp_path / "broken.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a readable .tar.gz"):
        list(read_physionet(tmp_path / "broken.tar.gz"))
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        list(read_physionet(tmp_path / "broken.zip"))


# -- FHIR: one code path whichever the source --------------------------------------------------


def test_fhir_resources_are_valid_and_complete() -> None:
    stay = read_psv("p000042.psv", psv(hourly([{"HR": "900", "O2Sat": "97"}, *NORMAL_ROWS[1:]])))
    resources = stay_to_fhir(stay)
    for resource in resources:
        assert structural_errors(resource, "fast") == [], resource
    types = [r["resourceType"] for r in resources]
    assert types[:2] == ["Patient", "Encounter"]
    assert types.count("Observation") == 6  # the implausible heart rate is not written
    patient = resources[0]
    assert patient == {
        "resourceType": "Patient",
        "id": "p000042",
        "gender": "male",
        "birthDate": stay.timeline.birth_date.isoformat(),
    }
    hr = next(r for r in resources[2:] if r["code"]["coding"][0]["code"] == "8867-4")
    assert hr["effectiveDateTime"] == "2100-01-01T03:00:00Z"  # row 2 of a stay from ICULOS 1
    assert hr["valueQuantity"]["value"] == 90 and hr["valueQuantity"]["code"] == "/min"
    assert hr["subject"] == {"reference": "Patient/p000042"}
    assert hr["encounter"] == {"reference": "Encounter/p000042-icu"}


def store_grid(store: ResourceStore, stay: PhysioNetStay) -> HourlyGrid:
    timeline = build_timeline(stay.stay_id, store.patient_resources(stay.stay_id))
    return grid_from_timeline(timeline, stay.start, stay.hours, stay_id=stay.stay_id)


def assert_same_grid(left: HourlyGrid, right: HourlyGrid) -> None:
    np.testing.assert_array_equal(left.values, right.values)
    assert (left.sex, left.start, left.hours) == (right.sex, right.start, right.hours)
    assert left.age is not None and right.age is not None
    assert math.isclose(left.age, right.age)


def test_stay_through_the_store_gives_the_same_grid(store: ResourceStore) -> None:
    stay = read_psv("p000042.psv", psv(hourly([{"HR": "900", "O2Sat": "97"}, *NORMAL_ROWS[1:]])))
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": resource} for resource in stay_to_fhir(stay)],
    }
    Ingestor(store, IngestOptions(workers=0)).ingest_document(orjson.dumps(bundle), "x")
    grid = store_grid(store, stay)
    assert_same_grid(grid, grid_of(stay))
    assert int(np.count_nonzero(~np.isnan(grid.values))) == 6


def test_ndjson_export_loads_into_the_store_with_the_same_grids(
    store: ResourceStore, tmp_path: Path
) -> None:
    archive = members()
    archive["setA/p000004.psv"] = psv(NORMAL_ROWS, without("ICULOS"))  # invalid: left out
    source = write_tar_gz(tmp_path / "set.tar.gz", archive)
    counts = write_fhir_ndjson(source, tmp_path / "out")
    stays = [s for s in read_physionet(source) if s.stay_id != "p000004"]
    expected_observations = sum(len(stay_to_fhir(s)) - 2 for s in stays)
    assert counts == {
        "Patient": 3,
        "Encounter": 3,
        "Observation": expected_observations,
        "skipped": 1,
    }
    ingestor = Ingestor(store, IngestOptions(workers=0))
    for kind in ("Patient", "Encounter", "Observation"):
        with (tmp_path / "out" / f"{kind}.ndjson").open("rb") as stream:
            report = ingestor.ingest_ndjson(stream, f"{kind}.ndjson")
        assert not report.rejected, report.rejected
    for stay in stays:
        assert_same_grid(store_grid(store, stay), grid_of(stay))
    assert list(store.patient_resources("p000004")) == []


# -- real data -----------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_first_real_stays_of_set_a() -> None:
    source = shared_data("physionet2019/training_setA.tar.gz")
    stays = list(read_physionet(source, limit=50))
    assert len(stays) == 50
    ids = [s.stay_id for s in stays]
    assert ids == sorted(ids) and ids[0] == "p000001"
    raw = _raw_members(source, set(ids[:5]))
    for stay in stays[:5]:
        lines = raw[stay.stay_id].decode().splitlines()
        header, rows = lines[0].split("|"), [line.split("|") for line in lines[1:]]
        assert stay.hours == len(rows)
        label = header.index("SepsisLabel")
        assert stay.labels is not None
        assert stay.labels.tolist() == [int(row[label]) for row in rows]
        hr_column = header.index("HR")
        raw_hr = [float(row[hr_column]) for row in rows]
        np.testing.assert_array_equal(grid_of(stay).column("hr"), raw_hr)
    for stay in stays:
        assert stay.labels is not None and len(stay.labels) == stay.hours
        assert set(stay.labels.tolist()) <= {0, 1}
    assert sum(s.scorable for s in stays) >= 45
    assert any(s.labels is not None and s.labels.any() for s in stays)


def _raw_members(source: Path, wanted: set[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    with tarfile.open(source, "r|gz") as archive:
        for member in archive:
            stem = Path(member.name).stem
            if member.isfile() and stem in wanted:
                handle = archive.extractfile(member)
                assert handle is not None
                found[stem] = handle.read()
    return found
