"""The sepsis model end to end on real PhysioNet stays: training by stay, calibration, the policy
in the artifact, explanations, scoring a timeline, and the CLI's predictions file."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from careloop.sepsis.evaluate import EvalStay, evaluate_all, load_stays, score_model
from careloop.sepsis.features import FEATURE_NAMES
from careloop.sepsis.model import SepsisModel, split_stays, train
from careloop.sepsis.scoring import score_timeline
from careloop.sources.physionet import read_physionet, read_psv
from conftest import shared_data

CARELOOP = str(Path(sys.executable).with_name("careloop"))


def run_careloop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CARELOOP, *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


STAYS = 400


@pytest.fixture(scope="module")
def set_a() -> Path:
    return shared_data("physionet2019/training_setA.tar.gz")


@pytest.fixture(scope="module")
def stays(set_a: Path) -> list[EvalStay]:
    loaded, summary = load_stays(set_a, limit=STAYS)
    assert summary.stays_read == STAYS and summary.stays_scored >= STAYS - 2
    return loaded


@pytest.fixture(scope="module")
def trained(stays: list[EvalStay], tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, facts = train([s.data for s in stays[:300]])
    model.version = "test-model"
    directory = tmp_path_factory.mktemp("model")
    model.save(directory)
    assert facts["fit_stays"] + facts["tune_stays"] == 300
    return directory


def test_the_training_split_is_by_stay_and_keeps_septic_stays_on_both_sides(
    stays: list[EvalStay],
) -> None:
    fit, tune = split_stays([s.data for s in stays], 0.2, seed=3)
    assert not {s.stay_id for s in fit} & {s.stay_id for s in tune}
    assert len(fit) + len(tune) == len(stays)
    assert any(s.labels.any() for s in tune) and any(s.labels.any() for s in fit)  # type: ignore[union-attr]


def test_a_saved_model_loads_and_predicts_the_same(trained: Path, stays: list[EvalStay]) -> None:
    model = SepsisModel.load(trained)
    again = SepsisModel.load(trained)
    features = stays[-1].data.features
    probs = model.probabilities(features)
    assert probs.shape == (features.shape[0],)
    assert ((probs >= 0) & (probs <= 1)).all()
    assert np.array_equal(probs, again.probabilities(features))
    assert 0 < model.policy.threshold < 1


def test_held_out_stays_rank_septic_hours_above_the_rest(
    trained: Path, stays: list[EvalStay]
) -> None:
    """On the 100 stays the model never saw, it must beat chance and report every metric for
    itself and the baselines side by side."""
    model = SepsisModel.load(trained)
    held_out = stays[300:]
    report = evaluate_all(held_out, score_model(model, held_out))
    assert set(report) == {"model", "qsofa", "sirs", "news2"}
    overall = report["model"]["overall"]
    assert overall["auroc"] is not None and overall["auroc"] > 0.6  # type: ignore[operator]
    assert {"sex=female", "sex=male"} <= set(report["model"]["subgroups"])  # type: ignore[arg-type]
    assert 0 <= overall["ece"] < 0.2  # type: ignore[operator]


def test_explanations_name_the_patient_values(trained: Path, set_a: Path) -> None:
    model = SepsisModel.load(trained)
    stay = next(iter(read_physionet(set_a, limit=1)))
    end = stay.start + timedelta(hours=stay.hours - 1)
    risk = score_timeline(model, stay.timeline, stay.start, end, unit=stay.unit)
    assert risk.insufficient is None and len(risk.probabilities) == stay.hours
    assert risk.factors and all(isinstance(text, str) and text for text in risk.factors)
    assert len(risk.alert_states) == len(risk.notifications) == stay.hours


def test_too_little_data_is_answered_as_insufficient(trained: Path) -> None:
    model = SepsisModel.load(trained)
    header = "HR|O2Sat|Temp|SBP|MAP|DBP|Resp|ICULOS|SepsisLabel\n"
    empty = read_psv("p1.psv", (header + "NaN|NaN|NaN|NaN|NaN|NaN|NaN|1|0\n" * 3).encode())
    end = empty.start + timedelta(hours=2)
    assert "no vital signs" in (
        score_timeline(model, empty.timeline, empty.start, end).insufficient or ""
    )
    assert score_timeline(model, empty.timeline, empty.start, empty.start).insufficient


def test_a_model_trained_on_other_features_is_refused(trained: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    copy.mkdir()
    (copy / "booster.txt").write_bytes((trained / "booster.txt").read_bytes())
    meta = (trained / "model.json").read_text().replace(FEATURE_NAMES[0], "something_else", 1)
    (copy / "model.json").write_text(meta)
    with pytest.raises(ValueError, match="other features"):
        SepsisModel.load(copy)


def test_predict_writes_one_row_per_stay_hour(trained: Path, tmp_path: Path) -> None:
    data = tmp_path / "stays"
    data.mkdir()
    header = "HR|O2Sat|Temp|SBP|MAP|DBP|Resp|Age|Gender|ICULOS|SepsisLabel\n"
    rows = [f"{80 + h}|97|37.0|120|80|60|{16 + h}|60|1|{h + 1}|0\n" for h in range(30)]
    (data / "p100.psv").write_text(header + "".join(rows))
    (data / "p101.psv").write_text(header + "900|97|37|120|80|60|18|60|1|1|0\n")  # one hour only
    out = tmp_path / "pred.csv"
    result = run_careloop(
        "predict",
        "sepsis",
        "--data",
        str(data),
        "--out",
        str(out),
        "--model",
        str(trained),
    )
    assert result.returncode == 0, result.stderr
    with open(out) as handle:
        table = list(csv.DictReader(handle))
    assert [r["hour"] for r in table if r["patient"] == "p100"] == [str(h) for h in range(30)]
    scored = [r for r in table if r["patient"] == "p100"]
    assert all(0 <= float(r["prob"]) <= 1 and r["alert"] in ("0", "1") for r in scored)
    short = [r for r in table if r["patient"] == "p101"]
    assert short == [{"patient": "p101", "hour": "0", "prob": "", "alert": ""}]
    note = json.loads((tmp_path / "pred.csv.model.json").read_text())
    assert note["model"] == "test-model"  # every prediction names the version that made it
    assert "1 stays could not be scored" in result.stdout


def test_a_factor_is_worded_with_the_patients_own_values() -> None:
    from datetime import UTC, datetime

    from careloop.sepsis.grid import SIGNAL_COLUMNS, HourlyGrid
    from careloop.sepsis.model import word

    values = np.full((10, len(SIGNAL_COLUMNS)), np.nan)
    values[:, SIGNAL_COLUMNS["resp"]] = [18, 18, 18, 18, 18, 18, 20, 22, 25, 28]
    grid = HourlyGrid("s", datetime(2100, 1, 1, tzinfo=UTC), values)
    assert word("resp__last", grid, 9) == (
        "respiratory rate 28 /min, 10 above this patient's baseline"
    )
    assert word("resp__slope_6h", grid, 9).endswith("(trend (slope per hour))")
    assert word("lactate__hours_since", grid, 9) == "lactate not measured yet"
    assert word("unit_sicu", grid, 9, 0.0) == "surgical ICU: no"
    assert word("sex_male", grid, 9, 1.0) == "sex: male"
    assert word("shock_index", grid, 9, 0.7123) == "shock index (heart rate / systolic BP): 0.712"
    assert word("shock_index", grid, 9, float("nan")).endswith(": unknown")


def test_the_risk_api_scores_the_stored_record_like_the_files(
    trained: Path, set_a: Path, store
) -> None:
    """One code path: a stay imported into the store as FHIR and scored over HTTP gets the same
    hourly risk as the same stay scored straight from the PhysioNet file."""
    import orjson
    from fastapi.testclient import TestClient

    from api_clients import BASE_URL, auth, bearer_token
    from careloop.access.roles import Role
    from careloop.sources.physionet import stay_to_fhir
    from careloop.web import create_app
    from careloop.web.app import AppSettings

    stay = next(s for s in read_physionet(set_a, limit=20) if s.scorable and s.hours >= 30)
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": resource} for resource in stay_to_fhir(stay)],
    }
    model = SepsisModel.load(trained)
    app = create_app(store, AppSettings(public_url=BASE_URL, sepsis_model=trained))
    with TestClient(app, base_url=BASE_URL) as client:
        writer = auth(bearer_token(client, store, Role.INTEGRATION))
        loaded = client.post(
            "/fhir",
            content=orjson.dumps(bundle),
            headers={"content-type": "application/fhir+json", **writer},
        )
        assert loaded.status_code == 200, loaded.text
        clinician = auth(
            bearer_token(client, store, Role.CLINICIAN, fhir_user="Practitioner/icu-1")
        )
        answer = client.get(
            f"/sepsis/Patient/{stay.stay_id}/risk", params={"hours": 24}, headers=clinician
        )
        assert answer.status_code == 200, answer.text
        assert (
            client.get(
                f"/sepsis/Patient/{stay.stay_id}/risk",
                headers=auth(bearer_token(client, store, Role.AUDITOR)),
            ).status_code
            == 403
        )
    risk = answer.json()
    end = stay.start + timedelta(hours=stay.hours - 1)
    direct = score_timeline(model, stay.timeline, end - timedelta(hours=23), end, unit=None)
    assert risk["insufficient"] is None and len(risk["probabilities"]) == 24
    assert np.allclose(risk["probabilities"], direct.probabilities)
    assert risk["factors"] == direct.factors


def test_train_and_evaluate_from_the_command_line(set_a: Path, tmp_path: Path) -> None:
    import json

    model_dir = tmp_path / "model"
    trained = run_careloop(
        "train",
        "sepsis",
        "--data",
        str(set_a),
        "--out",
        str(model_dir),
        "--cv-folds",
        "2",
        "--limit",
        "400",
    )
    assert trained.returncode == 0, trained.stderr
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "Reyna" in card and "cross-validation" in card and "qsofa" in card
    cv = json.loads((model_dir / "cv.json").read_text())
    assert len(cv["folds"]) == 2
    total = sum(fold["model"]["stays"] for fold in cv["folds"])  # the folds partition the stays
    held = json.loads((model_dir / "model.json").read_text())["trained"]["holdout"]["stays"]
    assert total + held >= 398 and 40 <= held <= 120  # a fifth held out, by stay id
    assert "## Held-out stays" in card and "## Fairness by subgroup" in card
    assert {"reference.json", "fairness.json", "holdout.json"} <= {
        p.name for p in model_dir.iterdir()
    }
    for fold in cv["folds"]:  # and each fold's model was fitted on the other fold only
        training = fold["training"]
        assert fold["model"]["stays"] + training["fit_stays"] + training["tune_stays"] == total
    out = tmp_path / "eval"
    evaluated = run_careloop(
        "evaluate",
        "sepsis",
        "--data",
        str(set_a),
        "--out",
        str(out),
        "--model",
        str(model_dir),
        "--limit",
        "50",
    )
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["results"]) == {"model", "qsofa", "sirs", "news2"}
    assert metrics["judged"] == "stays held out of training"  # set A is its training file
    assert metrics["results"]["model"]["overall"]["stays"] < 25
    assert (out / "reliability.png").stat().st_size > 1000
    assert "## By subgroup" in (out / "report.md").read_text()
    missing = run_careloop(
        "predict",
        "sepsis",
        "--data",
        str(set_a),
        "--out",
        str(tmp_path / "p.csv"),
        "--model",
        str(tmp_path / "nowhere"),
    )
    assert missing.returncode == 2 and "no sepsis model" in missing.stderr


def test_converted_stays_load_into_the_store_with_the_cli(set_a: Path, tmp_path: Path) -> None:
    import os

    out = tmp_path / "fhir"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")}
    env["CARELOOP_HOME"] = str(tmp_path / "home")
    key = tmp_path / "master.key"
    env["CARELOOP_MASTER_KEY_FILE"] = str(key)
    steps = [
        ["keys", "generate", str(key)],
        ["convert", "physionet", "--data", str(set_a), "--out", str(out), "--limit", "3"],
        ["ingest", str(out), "--json"],
    ]
    for step in steps:
        result = run_careloop(*step, env=env)
        assert result.returncode == 0, result.stderr
    import json

    summary = json.loads(result.stdout)
    assert summary["by_type"]["Patient"]["created"] == 3
    assert summary["by_type"]["Observation"]["created"] > 100


def test_batch_scoring_gives_each_patient_what_one_by_one_scoring_gives(
    trained: Path, set_a: Path
) -> None:
    from careloop.sepsis.scoring import score_population

    model = SepsisModel.load(trained)
    windows = [
        (stay.timeline, stay.start, stay.start + timedelta(hours=stay.hours - 1))
        for stay in read_physionet(set_a, limit=5)
        if stay.scorable
    ]
    batch = score_population(model, windows)
    assert [risk.patient_id for risk in batch] == [w[0].patient_id for w in windows]
    for risk, (timeline, start, end) in zip(batch, windows, strict=True):
        assert risk.probabilities == score_timeline(model, timeline, start, end).probabilities
