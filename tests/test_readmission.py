"""The readmission model: reader errors, LACE points, past-only features, patient-grouped splits,
the CLI (train, evaluate, predict), explanations and the governance adapter."""

from __future__ import annotations

import csv
import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careloop.governance.holdout import HoldoutRule
from careloop.readmission.cli import evaluate_readmission, predict_readmission, train_readmission
from careloop.readmission.data import (
    DEMOGRAPHIC_COLUMNS,
    DRUG_COLUMNS,
    REQUIRED_COLUMNS,
    ReadmissionDataError,
    read_encounters,
)
from careloop.readmission.features import FEATURE_NAMES, raw_features
from careloop.readmission.governed import GovernedReadmission
from careloop.readmission.icd9 import chapter, charlson_index
from careloop.readmission.lace import lace_components
from careloop.readmission.model import ReadmissionModel, grouped_folds, word
from careloop.readmission.pipeline import score
from conftest import shared_data

COLUMNS = [*REQUIRED_COLUMNS, *DEMOGRAPHIC_COLUMNS, "weight", "readmitted"]


def encounter(encounter_id: int, patient: int, **values: object) -> dict[str, object]:
    """One encounter row with plausible defaults."""
    row: dict[str, object] = {name: "No" for name in DRUG_COLUMNS}
    row.update(
        encounter_id=encounter_id,
        patient_nbr=patient,
        race="Caucasian",
        gender="Female",
        age="[70-80)",
        weight="?",
        admission_type_id="1",
        discharge_disposition_id="1",
        admission_source_id="7",
        time_in_hospital=3,
        payer_code="MC",
        medical_specialty="InternalMedicine",
        num_lab_procedures=40,
        num_procedures=1,
        num_medications=12,
        number_outpatient=0,
        number_emergency=0,
        number_inpatient=0,
        diag_1="428",
        diag_2="250.01",
        diag_3="401",
        number_diagnoses=7,
        max_glu_serum="None",
        A1Cresult="None",
        change="No",
        diabetesMed="Yes",
        readmitted="NO",
    )
    row.update(values)
    return row


def write_csv(path: Path, rows: list[dict[str, object]], columns: list[str] = COLUMNS) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def synthetic_rows(count: int, seed: int = 3) -> list[dict[str, object]]:
    """Encounters whose readmission depends on prior inpatient stays and the discharge."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        inpatient = int(rng.poisson(0.8))
        disposition = str(rng.choice(["1", "3", "6", "11"], p=[0.6, 0.2, 0.17, 0.03]))
        risk = 1 / (1 + np.exp(-(-2.6 + 0.8 * inpatient + (0.7 if disposition == "3" else 0))))
        rows.append(
            encounter(
                1000 + index,
                int(rng.integers(0, count // 2)),
                number_inpatient=inpatient,
                discharge_disposition_id=disposition,
                time_in_hospital=int(rng.integers(1, 15)),
                num_medications=int(rng.integers(1, 40)),
                race=str(rng.choice(["Caucasian", "AfricanAmerican", "?"])),
                readmitted="<30" if rng.random() < risk else str(rng.choice(["NO", ">30"])),
            )
        )
    return rows


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained through the CLI on synthetic encounters (fast; not for figures)."""
    folder = tmp_path_factory.mktemp("readmission")
    data = write_csv(folder / "train.csv", synthetic_rows(3000))
    out = folder / "model"
    result = CliRunner().invoke(
        train_readmission, ["--data", str(data), "--out", str(out), "--cv-folds", "2"]
    )
    assert result.exit_code == 0, result.output
    return out


# ---- reader -----------------------------------------------------------------------------------


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReadmissionDataError, match="does not exist"):
        read_encounters(tmp_path / "absent.csv")


def test_empty_file_and_header_only_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ReadmissionDataError, match="is empty"):
        read_encounters(empty)
    with pytest.raises(ReadmissionDataError, match="no encounters"):
        read_encounters(write_csv(tmp_path / "header.csv", []))


def test_missing_columns_are_listed(tmp_path: Path) -> None:
    columns = [c for c in COLUMNS if c not in ("num_medications", "diag_2")]
    path = write_csv(tmp_path / "short.csv", [encounter(1, 1)], columns)
    with pytest.raises(ReadmissionDataError, match="num_medications, diag_2"):
        read_encounters(path)


def test_unreadable_value_names_line_and_column(tmp_path: Path) -> None:
    rows = [encounter(1, 1), encounter(2, 1, time_in_hospital="three")]
    with pytest.raises(ReadmissionDataError, match="line 3, column time_in_hospital"):
        read_encounters(write_csv(tmp_path / "bad.csv", rows))
    rows = [encounter(1, 1, readmitted="maybe")]
    with pytest.raises(ReadmissionDataError, match="line 2, column readmitted"):
        read_encounters(write_csv(tmp_path / "label.csv", rows))
    rows = [encounter(1, 1), encounter(1, 2)]
    with pytest.raises(
        ReadmissionDataError, match="line 3, column encounter_id: repeats .* line 2"
    ):
        read_encounters(write_csv(tmp_path / "twice.csv", rows))


def test_missing_demographics_become_unknown_groups(tmp_path: Path) -> None:
    rows = [
        encounter(1, 1, race="?", gender="Unknown/Invalid", age="?", payer_code="?"),
        encounter(2, 2, gender="Male"),
    ]
    encounters = read_encounters(write_csv(tmp_path / "demo.csv", rows))
    assert len(encounters) == 2
    assert encounters.groups["race"].tolist() == ["unknown", "Caucasian"]
    assert encounters.groups["sex"].tolist() == ["unknown", "male"]
    assert encounters.groups["age_band"].tolist() == ["unknown", "[70-80)"]
    assert encounters.groups["payer"].tolist() == ["unknown", "MC"]


def test_a_file_without_demographic_columns_is_scored_and_judged_as_unknown(
    tiny_model: Path, tmp_path: Path
) -> None:
    rows = [encounter(i, i, readmitted="<30" if i % 3 == 0 else "NO") for i in range(1, 13)]
    kept = [c for c in COLUMNS if c not in ("race", "payer_code")]
    data = write_csv(tmp_path / "no-race.csv", rows, kept)
    encounters = read_encounters(data)
    assert encounters.absent_demographics == ("race", "payer_code")
    assert set(encounters.groups["race"]) == {"unknown"} == set(encounters.groups["payer"])
    assert set(encounters.groups["sex"]) == {"female"}  # the columns present still count
    out = tmp_path / "p.csv"
    arguments = ["--data", str(data), "--out", str(out), "--model", str(tiny_model)]
    predicted = CliRunner().invoke(predict_readmission, arguments)
    assert predicted.exit_code == 0, predicted.output
    assert len(out.read_text().splitlines()) == 13
    evaluated = CliRunner().invoke(
        evaluate_readmission, [*arguments[:2], "--out", str(tmp_path / "e"), *arguments[4:]]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "has no race, payer_code column" in evaluated.output


def test_gzip_without_outcome_column_reads_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "x.csv.gz"
    columns = [c for c in COLUMNS if c != "readmitted"]
    write_csv(tmp_path / "x.csv", [encounter(1, 1)], columns)
    path.write_bytes(gzip.compress((tmp_path / "x.csv").read_bytes()))
    encounters = read_encounters(path)
    assert encounters.labels is None and len(encounters) == 1


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=st.text(max_size=12))
def test_junk_in_a_numeric_column_is_an_error_or_a_score(tiny_model: Path, junk: str) -> None:
    model = ReadmissionModel.load(tiny_model)
    with tempfile.TemporaryDirectory() as folder:
        path = write_csv(Path(folder) / "j.csv", [encounter(1, 1, num_medications=junk)])
        try:
            encounters = read_encounters(path)
        except ReadmissionDataError as exc:
            assert "line 2, column num_medications" in str(exc)
            return
    probs = score(model, encounters).probs
    assert probs.shape == (1,) and np.isfinite(probs).all()


# ---- ICD-9 and LACE ---------------------------------------------------------------------------


def test_icd9_chapters_and_charlson() -> None:
    assert [chapter(c) for c in ("250.83", "428", "786", "996", "V57", "")] == [
        "diabetes",
        "circulatory",
        "respiratory",
        "injury",
        "supplementary",
        "missing",
    ]
    assert charlson_index(["250.4", "250.01"]) == 2  # complicated diabetes supersedes plain
    assert charlson_index(["174", "197"]) == 6  # metastatic supersedes the primary tumour
    assert charlson_index(["428", "585", "?"]) == 3


def test_lace_points_match_hand_computation(tmp_path: Path) -> None:
    rows = [
        # L 5 days: 4; A emergency: 3; C heart failure 1 + renal 2 + complicated diabetes 2 = 5
        # points 5; E 2 visits: 2 -> 14
        encounter(
            1, 1, time_in_hospital=5, diag_1="428", diag_2="585", diag_3="250.4", number_emergency=2
        ),
        # L 1 day: 1; elective from referral: 0; no Charlson condition: 0; no visits: 0 -> 1
        encounter(
            2,
            2,
            time_in_hospital=1,
            admission_type_id="3",
            admission_source_id="1",
            diag_1="V27",
            diag_2="?",
            diag_3="",
        ),
        # L 14 days: 7; A via the emergency room: 3; C metastatic 6: 5; E 6 visits capped: 4 -> 19
        encounter(
            3,
            3,
            time_in_hospital=14,
            admission_type_id="3",
            diag_1="197",
            diag_2="174",
            diag_3="V45",
            number_emergency=6,
        ),
    ]
    points = lace_components(read_encounters(write_csv(tmp_path / "lace.csv", rows)))
    assert points[["L", "A", "C", "E"]].values.tolist() == [
        [4, 3, 5, 2],
        [1, 0, 0, 0],
        [7, 3, 5, 4],
    ]
    assert points["lace"].tolist() == [14, 1, 19]


# ---- features and splits ----------------------------------------------------------------------


def test_history_features_use_only_earlier_encounters(tmp_path: Path) -> None:
    rows = [
        encounter(30, 7, time_in_hospital=2),
        encounter(10, 7, time_in_hospital=5),
        encounter(20, 8),
        encounter(20_000, 7, time_in_hospital=4, admission_type_id="3", admission_source_id="1"),
    ]
    before = raw_features(read_encounters(write_csv(tmp_path / "a.csv", rows)))
    assert before["prior_encounters"].tolist() == [1, 0, 0, 2]
    assert before["prior_days_in_hospital"].tolist() == [5, 0, 0, 7]
    later = [*rows, encounter(40_000, 7, time_in_hospital=9, number_inpatient=5)]
    after = raw_features(read_encounters(write_csv(tmp_path / "b.csv", later)))
    # a later encounter changes nothing of the earlier ones
    assert after.iloc[:4].equals(before)
    assert after["prior_acute_admissions"].tolist() == [1, 0, 0, 2, 2]  # 20,000 was elective


def test_grouped_folds_never_share_a_patient() -> None:
    rng = np.random.default_rng(1)
    patients = rng.integers(0, 300, size=2000).astype(str)
    labels = (rng.random(2000) < 0.15).astype(int)
    for train, test in grouped_folds(labels, patients, 5, seed=4):
        assert not set(patients[train]) & set(patients[test])


# ---- training, artifact, CLI --------------------------------------------------------------------


def test_artifact_records_policy_holdout_and_provenance(tiny_model: Path) -> None:
    meta = json.loads((tiny_model / "model.json").read_text())
    assert meta["name"] == "readmission"
    assert meta["version"].startswith("readmission-lgbm-")
    assert meta["features"] == list(FEATURE_NAMES)
    assert "race" not in meta["features"] and "payer_code" not in meta["features"]
    assert 0 < meta["policy"]["threshold"] < 1
    assert meta["holdout"] == HoldoutRule().as_dict()
    assert meta["trained"]["consent_filter"].startswith("not applicable")
    assert len(meta["trained"]["fingerprint"]) == 64
    assert meta["mitigation"] == {"reweigh": None}
    assert set(meta["metrics"]) >= {"model", "lace", "subgroups"}
    card = (tiny_model / "MODEL_CARD.md").read_text()
    assert "## Fairness by subgroup" in card and "not yet computed" not in card
    fairness = json.loads((tiny_model / "fairness.json").read_text())
    assert fairness["version"] == meta["version"]
    reference = json.loads((tiny_model / "reference.json").read_text())
    assert reference["version"] == meta["version"]
    assert meta["version"] in card and (tiny_model / "cv.json").exists()


def test_training_fits_only_patients_outside_the_holdout(tiny_model: Path, tmp_path: Path) -> None:
    meta = json.loads((tiny_model / "model.json").read_text())
    rows = [r for r in synthetic_rows(3000) if r["discharge_disposition_id"] != "11"]
    held = HoldoutRule().mask(np.array([str(r["patient_nbr"]) for r in rows]))
    assert meta["trained"]["training_encounters"] == int((~held).sum())
    assert meta["trained"]["holdout_encounters"] == int(held.sum())


def test_predict_writes_every_encounter_even_odd_ones(tiny_model: Path, tmp_path: Path) -> None:
    rows = [
        encounter(1, 1),
        encounter(2, 1, admission_type_id="99", discharge_disposition_id="?", diag_1="XYZ"),
        encounter(3, 2, num_lab_procedures="?", number_inpatient=-1, medical_specialty="Novel"),
        encounter(4, 3, discharge_disposition_id="11", race="?", age="?"),
    ]
    columns = [c for c in COLUMNS if c != "readmitted"]
    data = write_csv(tmp_path / "new.csv", rows, columns)
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(
        predict_readmission, ["--data", str(data), "--out", str(out), "--model", str(tiny_model)]
    )
    assert result.exit_code == 0, result.output
    with open(out) as handle:
        written = list(csv.DictReader(handle))
    version = json.loads((tiny_model / "model.json").read_text())["version"]
    assert list(written[0]) == ["encounter_id", "prob"]
    assert [r["encounter_id"] for r in written] == ["1", "2", "3", "4"]
    assert all(0 <= float(r["prob"]) <= 1 for r in written)
    note = json.loads((tmp_path / "predictions.csv.model.json").read_text())
    assert note["model"] == version and note["encounters"] == 4


def test_predict_refuses_a_bad_file_without_writing(tiny_model: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "bad.csv", [encounter(1, 1), encounter(2, 2, num_procedures="x")])
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(
        predict_readmission, ["--data", str(data), "--out", str(out), "--model", str(tiny_model)]
    )
    assert result.exit_code != 0
    assert "line 3, column num_procedures" in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [data]


def test_evaluate_refuses_without_labels_and_reports_with_them(
    tiny_model: Path, tmp_path: Path
) -> None:
    columns = [c for c in COLUMNS if c != "readmitted"]
    unlabelled = write_csv(tmp_path / "u.csv", synthetic_rows(50), columns)
    args = ["--out", str(tmp_path / "eval"), "--model", str(tiny_model)]
    result = CliRunner().invoke(evaluate_readmission, ["--data", str(unlabelled), *args])
    assert result.exit_code != 0 and "no readmitted column" in result.output
    labelled = write_csv(tmp_path / "l.csv", synthetic_rows(800, seed=9))
    result = CliRunner().invoke(evaluate_readmission, ["--data", str(labelled), *args])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["population"].startswith("every patient")
    assert metrics["model"]["rows"] == metrics["lace"]["rows"] > 700
    low, high = metrics["model"]["auroc_ci"]
    assert low <= metrics["model"]["auroc"] <= high
    assert "| AUROC (95% CI) |" in (tmp_path / "eval" / "report.md").read_text()


def test_train_refuses_unknown_reweigh_attribute(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "t.csv", synthetic_rows(20))
    result = CliRunner().invoke(
        train_readmission, ["--data", str(data), "--out", str(tmp_path / "m"), "--reweigh", "eye"]
    )
    assert result.exit_code != 0 and not (tmp_path / "m").exists()


# ---- explanations and governance --------------------------------------------------------------


def test_factors_are_worded_with_the_encounters_values(tiny_model: Path, tmp_path: Path) -> None:
    assert word("number_inpatient", {"number_inpatient": 3.0}) == (
        "3 inpatient stays in the prior year"
    )
    assert word("number_inpatient", {"number_inpatient": 1.0}) == (
        "1 inpatient stay in the prior year"
    )
    assert word("discharge_disposition_id", {"discharge_disposition_id": "3"}) == (
        "discharged to a skilled nursing facility"
    )
    assert word("A1Cresult", {"A1Cresult": ">8"}) == "HbA1c >8"
    model = ReadmissionModel.load(tiny_model)
    risky = encounter(1, 1, number_inpatient=6, discharge_disposition_id="3")
    scored = score(model, read_encounters(write_csv(tmp_path / "r.csv", [risky])))
    factors = model.explain(scored.matrix, scored.raw, 0)
    assert factors and all(f.contribution > 0 for f in factors)
    texts = [f.text for f in factors]
    assert "6 inpatient stays in the prior year" in texts
    assert not set(texts) & set(FEATURE_NAMES)


def test_governed_readmission_scores_encounters(tiny_model: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "g.csv", synthetic_rows(200, seed=5))
    governed = GovernedReadmission.load(tiny_model)
    assert governed.name == "readmission" and governed.training_holdout() == HoldoutRule().as_dict()
    scored = governed.score_data(data)
    assert scored.unit == "encounter" and scored.labels is not None
    assert set(scored.groups) == {"sex", "age_band", "race", "payer"}
    assert "unknown" in set(scored.groups["race"])
    assert scored.features is not None and scored.feature_names == tuple(FEATURE_NAMES)
    assert scored.rows == sum(r["discharge_disposition_id"] != "11" for r in synthetic_rows(200, 5))
    assert governed.score_data(data, limit=10).rows == 10
    assert len(governed.timed_predictions(data, 3)) == 3


@pytest.mark.shared_data
@pytest.mark.slow
def test_train_on_real_sample_gives_loadable_versioned_artifact(tmp_path: Path) -> None:
    data = shared_data("diabetes130/diabetic_data_dev.csv.gz")
    out = tmp_path / "model"
    runner = CliRunner()
    trained = runner.invoke(
        train_readmission,
        ["--data", str(data), "--out", str(out), "--cv-folds", "2", "--limit", "4000"],
    )
    assert trained.exit_code == 0, trained.output
    model = ReadmissionModel.load(out)
    sample = tmp_path / "sample.csv"
    with gzip.open(data, "rt") as source:
        sample.write_text("".join(next(source) for _ in range(201)))
    predictions = tmp_path / "p.csv"
    predicted = runner.invoke(
        predict_readmission, ["--data", str(sample), "--out", str(predictions), "--model", str(out)]
    )
    assert predicted.exit_code == 0, predicted.output
    with open(predictions) as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == 200
    assert json.loads((tmp_path / "p.csv.model.json").read_text())["model"] == model.version
    assert model.extra["metrics"]["model"]["auroc"] > 0.55  # real signal, even from 4,000 rows
