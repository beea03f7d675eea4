"""Drift monitoring: PSI and KS per input, predicted-risk and alert-rate drift, performance once
outcomes arrive, the history on both backends, and the AI team's webhook (a real local server)."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from careloop.audit.log import AuditLog
from careloop.governance import drift_cli
from careloop.governance.drift import (
    PSI_EPSILON,
    REFERENCE_FILE,
    DriftHistory,
    DriftInputError,
    DriftThresholds,
    check_drift,
    column_profile,
    current_shares,
    load_reference,
    psi,
    redacted_url,
    reference_profile,
    reference_shares,
    run_drift_job,
    split_windows,
    write_reference,
)
from careloop.governance.scored import ScoredSet
from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore
from conftest import shared_data

DIABETES = "diabetes130/diabetic_data_dev.csv.gz"
FEATURES = (
    "number_inpatient",
    "time_in_hospital",
    "num_medications",
    "num_lab_procedures",
    "number_emergency",
    "admission_type_id",
    "race",
)
VERSION = "readmission-drifttest"


# -- building predictions --------------------------------------------------------------------------


def diabetes_scored(frame: pd.DataFrame, *, intercept: float = -2.6) -> ScoredSet:
    """A stand-in readmission model over real encounters: a fixed logistic score of prior
    inpatient stays, length of stay and emergency visits."""
    z = (
        intercept
        + 0.35 * frame["number_inpatient"]
        + 0.03 * frame["time_in_hospital"]
        + 0.1 * frame["number_emergency"]
    )
    probs = 1.0 / (1.0 + np.exp(-z.to_numpy(dtype=float)))
    labels = None
    if "readmitted" in frame:
        labels = (frame["readmitted"] == "<30").to_numpy().astype(int)
    return ScoredSet(
        model="readmission",
        version=VERSION,
        unit="encounter",
        patient_ids=frame["patient_nbr"].astype(str).to_numpy(),
        probs=probs,
        alerts=probs >= 0.2,
        labels=labels,
        features=frame[list(FEATURES)].to_numpy(dtype=object),
        feature_names=FEATURES,
        row_ids=frame["encounter_id"].astype(str).to_numpy(),
    )


def synthetic_scored(
    rows: int = 2000,
    *,
    seed: int = 1,
    shift: float = 0.0,
    labels: bool = True,
    features: tuple[str, ...] = ("age", "lactate"),
) -> ScoredSet:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(features))) + shift
    probs = 1.0 / (1.0 + np.exp(-(x[:, 0] - 2.0)))
    outcome = (rng.random(rows) < probs).astype(int)
    return ScoredSet(
        model="sepsis",
        version="sepsis-drifttest",
        unit="patient-hour",
        patient_ids=np.array([f"patient-{i:06d}" for i in range(rows)]),
        probs=probs,
        alerts=probs >= 0.3,
        labels=outcome if labels else None,
        features=x,
        feature_names=features,
        row_ids=np.array([str(1000 + i) for i in range(rows)]),
    )


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    columns = ["encounter_id", "patient_nbr", "readmitted", *FEATURES]
    return pd.read_csv(shared_data(DIABETES), usecols=columns)


@pytest.fixture(scope="module")
def halves(diabetes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two halves of the encounters split by patient, the first as training data."""
    first = diabetes["patient_nbr"] % 2 == 0
    return diabetes[first], diabetes[~first]


@pytest.fixture(scope="module")
def diabetes_reference(halves: tuple[pd.DataFrame, pd.DataFrame]) -> dict:
    return reference_profile(diabetes_scored(halves[0]))


# -- PSI and input drift ---------------------------------------------------------------------------


def test_psi_by_hand_with_the_epsilon_floor() -> None:
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    reference = np.array([0.5, 0.5, 0.0])
    current = np.array([0.25, 0.25, 0.5])
    expected = 2 * (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.5 - PSI_EPSILON) * np.log(
        0.5 / PSI_EPSILON
    )
    assert psi(reference, current) == pytest.approx(expected)
    assert np.isfinite(psi(reference, current))


@pytest.mark.shared_data
def test_identical_distributions_have_psi_near_zero(
    halves: tuple[pd.DataFrame, pd.DataFrame], diabetes_reference: dict
) -> None:
    same = check_drift(diabetes_reference, diabetes_scored(halves[0]))
    assert max(same.feature_psi.values()) < 1e-9
    assert same.risk_psi < 1e-9
    assert max(same.feature_ks.values()) < 1e-9

    other_patients = check_drift(diabetes_reference, diabetes_scored(halves[1]))
    assert other_patients.status == "ok", other_patients.breaches
    assert max(other_patients.feature_psi.values()) < 0.01
    assert other_patients.risk_psi < 0.01
    assert other_patients.outcomes == "complete"
    assert other_patients.auroc is not None and other_patients.reference_auroc is not None
    assert abs(other_patients.auroc - other_patients.reference_auroc) < 0.02


@pytest.mark.shared_data
def test_shifted_number_inpatient_is_an_input_alert(
    halves: tuple[pd.DataFrame, pd.DataFrame], diabetes_reference: dict
) -> None:
    shifted = halves[1].copy()
    some = shifted.index[: len(shifted) // 3]
    shifted.loc[some, "number_inpatient"] += 3
    result = check_drift(diabetes_reference, diabetes_scored(shifted))

    assert result.feature_psi["number_inpatient"] > 0.25
    assert result.feature_ks["number_inpatient"] > 0.2
    untouched = {k: v for k, v in result.feature_psi.items() if k != "number_inpatient"}
    assert max(untouched.values()) < 0.1
    assert result.status == "alert"
    sentence = next(b for b in result.breaches if "number_inpatient" in b)
    assert sentence.startswith("input 'number_inpatient' PSI ")
    assert sentence.endswith("(alert above 0.25)")
    # the model leans on prior stays: its risk moves too, and it alerts far more often
    assert result.risk_psi > 0.25
    assert result.alert_rate > 2 * result.reference_alert_rate


@pytest.mark.shared_data
def test_risk_drift_without_input_drift(
    halves: tuple[pd.DataFrame, pd.DataFrame], diabetes_reference: dict
) -> None:
    """The same patients scored by a model whose risk runs higher (a broken calibration)."""
    result = check_drift(diabetes_reference, diabetes_scored(halves[1], intercept=-1.9))
    assert max(result.feature_psi.values()) < 0.01
    assert result.risk_psi > 0.25
    assert any(b.startswith("predicted risk PSI") for b in result.breaches)
    assert any(b.startswith("observed outcome rate") for b in result.breaches)


def test_reference_performance_comes_from_patients_the_model_never_saw() -> None:
    training = synthetic_scored(seed=1)
    # a model on its own training rows: outcomes follow its scores more closely than anywhere
    flattering = ScoredSet(**{**training.__dict__, "labels": (training.probs > 0.5).astype(int)})
    unseen = synthetic_scored(seed=2)
    in_sample = reference_profile(flattering)
    honest = reference_profile(flattering, judged=unseen)
    assert honest["features"] == in_sample["features"]  # inputs describe the training rows
    assert in_sample["performance"]["auroc"] == 1.0
    assert honest["performance"]["auroc"] < 0.9
    assert honest["performance_basis"] == "held-out patients"
    assert "flatters" in in_sample["performance_basis"]
    # new data like the unseen patients is no performance drop against the honest reference
    assert check_drift(honest, synthetic_scored(seed=3)).status == "ok"
    assert check_drift(in_sample, synthetic_scored(seed=3)).status == "alert"


def test_alert_rate_change_warn_and_alert() -> None:
    base = synthetic_scored()
    reference = reference_profile(base)
    rate = float(np.mean(base.alerts))
    order = np.argsort(-base.probs)

    def with_alert_rate(share: float) -> ScoredSet:
        alerts = np.zeros(base.rows, dtype=bool)
        alerts[order[: int(round(share * base.rows))]] = True
        return ScoredSet(**{**base.__dict__, "alerts": alerts})

    warn = check_drift(reference, with_alert_rate(rate * 1.35))
    assert warn.status == "warn"
    assert warn.alert_rate_change == pytest.approx(0.35, abs=0.02)
    assert any("warn beyond ±25%" in b for b in warn.breaches)

    alert = check_drift(reference, with_alert_rate(rate * 2))
    assert alert.status == "alert"
    assert any(b.startswith("alert rate") and "alert beyond ±50%" in b for b in alert.breaches)

    fewer = check_drift(reference, with_alert_rate(rate * 0.4))
    assert fewer.status == "alert"
    assert fewer.alert_rate_change == pytest.approx(-0.6, abs=0.02)


def test_outcomes_pending_is_not_an_error() -> None:
    reference = reference_profile(synthetic_scored())
    pending = check_drift(reference, synthetic_scored(seed=2, labels=False))
    assert pending.outcomes == "pending"
    assert pending.auroc is None and pending.ece is None and pending.observed_rate is None
    assert pending.status == "ok"
    assert "outcomes pending: performance not judged yet" in pending.notes

    base = synthetic_scored(seed=3)
    all_missing = ScoredSet(**{**base.__dict__, "labels": np.full(base.rows, np.nan)})
    assert check_drift(reference, all_missing).outcomes == "pending"

    some = base.labels.astype(float)
    some[: base.rows // 2] = np.nan
    partial = check_drift(reference, ScoredSet(**{**base.__dict__, "labels": some}))
    assert partial.outcomes == "partial"
    assert partial.labelled_rows == base.rows - base.rows // 2
    assert partial.auroc is not None


def test_performance_drop_is_an_alert() -> None:
    reference = reference_profile(synthetic_scored(rows=4000))
    base = synthetic_scored(rows=4000, seed=4)
    scrambled = np.random.default_rng(0).permutation(base.labels)
    result = check_drift(reference, ScoredSet(**{**base.__dict__, "labels": scrambled}))
    assert result.auroc is not None and result.auroc < 0.6
    assert result.status == "alert"
    assert any(b.startswith("AUROC") for b in result.breaches)


def test_override_rate_breach_is_a_warning() -> None:
    reference = reference_profile(synthetic_scored())
    result = check_drift(reference, synthetic_scored(seed=2), override_rate=0.7)
    assert result.status == "warn"
    assert "clinicians overrode 70% of the model's cards (warn above 50%)" in result.breaches
    assert check_drift(reference, synthetic_scored(seed=2), override_rate=None).status == "ok"


def test_categorical_missing_and_unseen_values() -> None:
    training = np.array(["a", "b", "a", None, "b", "a", "", "c"], dtype=object)
    profile = column_profile(training)
    assert profile["kind"] == "categorical"
    assert profile["values"] == ["a", "b", "c"]
    assert profile["missing"] == pytest.approx(2 / 8)
    now = current_shares(profile, np.array(["a", "z", None, "z"], dtype=object))
    assert now.tolist() == [0.25, 0.0, 0.0, 0.5, 0.25]  # a, b, c, unseen, missing
    assert reference_shares(profile).sum() == pytest.approx(1.0)
    assert psi(reference_shares(profile), now) > 0.25

    numeric = np.array([1.0, 2.0, np.nan, 3.0] * 50)
    assert column_profile(numeric)["values"] == ["1", "2", "3"]  # few values: categories
    continuous = column_profile(np.random.default_rng(0).normal(size=500))
    assert continuous["kind"] == "continuous"
    assert len(continuous["edges"]) == 9
    assert sum(continuous["shares"]) == pytest.approx(1.0)


# -- bad input -------------------------------------------------------------------------------------


def test_reference_from_another_feature_set_names_the_features() -> None:
    reference = reference_profile(synthetic_scored(features=("age", "lactate")))
    other = synthetic_scored(features=("age", "heart_rate"))
    with pytest.raises(DriftInputError) as caught:
        check_drift(reference, other)
    message = str(caught.value)
    assert "missing from the data: lactate" in message
    assert "not in the reference: heart_rate" in message


def test_empty_batch_and_too_small_window() -> None:
    base = synthetic_scored()
    reference = reference_profile(base)
    with pytest.raises(DriftInputError, match="no predictions"):
        check_drift(reference, base.subset(np.zeros(base.rows, dtype=bool)))

    shifted = synthetic_scored(seed=5, shift=2.0)
    small = shifted.subset(np.arange(shifted.rows) < 50)
    result = check_drift(reference, small)
    assert not result.judged
    assert result.status == "ok" and result.breaches == []
    assert result.feature_psi["age"] > 0.25  # computed and shown, not judged
    assert any("only 50 rows: too few to judge drift (needs 200)" in n for n in result.notes)

    with pytest.raises(DriftInputError, match="reference needs at least"):
        reference_profile(small.subset(np.arange(50) < 10))


def test_reference_written_atomically_and_without_patient_data(tmp_path: Path) -> None:
    scored = synthetic_scored()
    with pytest.raises(DriftInputError, match="drift reference"):
        load_reference(tmp_path)
    path = write_reference(tmp_path, reference_profile(scored))
    assert [p.name for p in tmp_path.iterdir()] == [REFERENCE_FILE]
    text = path.read_text()
    assert not any(patient in text for patient in scored.patient_ids)
    loaded = load_reference(tmp_path)
    assert loaded["feature_names"] == ["age", "lactate"]
    assert loaded["rows"] == scored.rows
    (tmp_path / REFERENCE_FILE).write_text("{not json")
    with pytest.raises(DriftInputError, match="cannot be read"):
        load_reference(tmp_path)


def test_windows_follow_encounter_ids_not_file_order() -> None:
    base = synthetic_scored(rows=900)
    shuffled = base.subset(np.ones(base.rows, dtype=bool))
    order = np.random.default_rng(0).permutation(base.rows)
    shuffled = ScoredSet(
        **{
            **base.__dict__,
            "patient_ids": base.patient_ids[order],
            "probs": base.probs[order],
            "alerts": base.alerts[order],
            "labels": base.labels[order],
            "features": base.features[order],
            "row_ids": base.row_ids[order],
        }
    )
    windows = split_windows(shuffled, 3)
    assert [w.rows for w in windows] == [300, 300, 300]
    spans = [(min(map(int, w.row_ids)), max(map(int, w.row_ids))) for w in windows]
    assert spans == [(1000, 1299), (1300, 1599), (1600, 1899)]
    with pytest.raises(DriftInputError, match="windows"):
        split_windows(shuffled, 0)


# -- history, notification, audit ------------------------------------------------------------------


def test_history_round_trip(store: ResourceStore) -> None:
    reference = reference_profile(synthetic_scored())
    history = DriftHistory(store)
    first = check_drift(reference, synthetic_scored(seed=2, labels=False), window="1/2 week")
    second = check_drift(reference, synthetic_scored(seed=3, shift=1.0), window="2/2 week")
    other = check_drift(reference, synthetic_scored(seed=4), window="all")
    other.version = "sepsis-other"
    for result in (first, second, other):
        history.record(result)

    runs = history.runs("sepsis-drifttest")
    assert [r.window for r in runs] == ["1/2 week", "2/2 week"]  # newest last
    assert [r.status for r in runs] == ["ok", "alert"]
    back = runs[1]
    assert back.breaches == second.breaches
    assert back.feature_psi == pytest.approx(second.feature_psi)
    assert back.risk_psi == pytest.approx(second.risk_psi)
    assert back.auroc == pytest.approx(second.auroc)
    assert back.run_at == second.run_at.replace(microsecond=back.run_at.microsecond)
    assert runs[0].outcomes == "pending" and runs[0].auroc is None
    assert len(history.runs()) == 3


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 204

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, "body": body.decode()})
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "status": 204})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/ai-team?token=s3cret", handler
    server.shutdown()
    server.server_close()


def _drifting_batch() -> ScoredSet:
    """Rows in time order: the first half as at training, the second half shifted."""
    calm = synthetic_scored(rows=1000, seed=7)
    drifted = synthetic_scored(rows=1000, seed=8, shift=1.5)
    return ScoredSet(
        model=calm.model,
        version=calm.version,
        unit=calm.unit,
        patient_ids=np.concatenate([calm.patient_ids, drifted.patient_ids]),
        probs=np.concatenate([calm.probs, drifted.probs]),
        alerts=np.concatenate([calm.alerts, drifted.alerts]),
        labels=None,
        features=np.concatenate([calm.features, drifted.features]),
        feature_names=calm.feature_names,
        row_ids=np.array([str(731_000_000 + i) for i in range(2000)]),
    )


def test_webhook_receives_a_summary_without_patient_data(
    store: ResourceStore, webhook: tuple[str, type[_Hook]]
) -> None:
    url, hook = webhook
    reference = reference_profile(synthetic_scored(rows=3000, seed=6))
    batch = _drifting_batch()
    job = run_drift_job(store, reference, batch, windows=2, label="ward.csv", notify_url=url)

    assert [r.status for r in job.results] == ["ok", "alert"]
    assert job.status == "alert"
    assert job.notification.sent
    assert "s3cret" not in job.notification.detail and "hooks" not in job.notification.detail
    assert len(hook.received) == 1
    body = hook.received[0]["body"]
    payload = json.loads(body)
    assert payload["event"] == "careloop.model-drift"
    assert payload["status"] == "alert"
    assert [w["window"] for w in payload["windows"]] == ["2/2 ward.csv"]
    assert any(b.startswith("input 'age' PSI") for b in payload["windows"][0]["breaches"])
    assert not any(patient in body for patient in batch.patient_ids)
    assert not any(row_id in body for row_id in batch.row_ids)

    runs = DriftHistory(store).runs("sepsis-drifttest")
    assert [(r.window, r.status, r.notified) for r in runs] == [
        ("1/2 ward.csv", "ok", False),
        ("2/2 ward.csv", "alert", True),
    ]
    assert job.audit == "drift alert audited"
    event = list(AuditLog(store).events())[-1]
    assert event.action == "admin"
    assert event.patient_hash is None
    assert "model drift alert raised for sepsis-drifttest" in json.dumps(event.resource)


def test_failing_webhook_still_records_the_run(
    store: ResourceStore, webhook: tuple[str, type[_Hook]]
) -> None:
    url, hook = webhook
    hook.status = 500
    reference = reference_profile(synthetic_scored(rows=3000, seed=6))
    job = run_drift_job(store, reference, _drifting_batch(), windows=2, notify_url=url)
    assert len(hook.received) == 1
    assert not job.notification.sent
    assert "HTTP 500" in job.notification.detail
    runs = DriftHistory(store).runs()
    assert [(r.status, r.notified) for r in runs] == [("ok", False), ("alert", False)]

    # nothing listening: refused, reported without the URL's secrets
    closed = "http://user:pw@127.0.0.1:9/hook?token=s3cret"
    refused = run_drift_job(store, reference, _drifting_batch(), notify_url=closed)
    assert not refused.notification.sent
    assert "s3cret" not in refused.notification.detail and "pw" not in refused.notification.detail
    assert len(DriftHistory(store).runs()) == 3
    assert redacted_url(closed) == "http://127.0.0.1:9/…"


def test_no_notification_when_all_is_well(
    store: ResourceStore, webhook: tuple[str, type[_Hook]]
) -> None:
    url, hook = webhook
    reference = reference_profile(synthetic_scored(rows=3000, seed=6))
    job = run_drift_job(store, reference, synthetic_scored(seed=9), windows=2, notify_url=url)
    assert job.status == "ok"
    assert hook.received == []
    assert not job.notification.attempted


# -- the CLI, with a stand-in model over the real diabetes data ------------------------------------


class StandInReadmission:
    """The GovernedModel protocol over a diabetes CSV (the real adapter lives elsewhere)."""

    name = "readmission"
    version = VERSION
    feature_names = FEATURES

    def __init__(self, artifact: Path) -> None:
        self.artifact = artifact

    def score_data(self, data: Path, *, limit: int | None = None) -> ScoredSet:
        return diabetes_scored(pd.read_csv(data, nrows=limit))

    def timed_predictions(self, data: Path, count: int) -> list[float]:
        return [0.0] * count

    def training_holdout(self) -> dict[str, object] | None:
        return {"salt": "drift-test", "share": 0.2}


@pytest.fixture
def cli_env(tmp_path: Path, master_key: MasterKey) -> dict[str, str | None]:
    return {
        "CARELOOP_HOME": str(tmp_path / "home"),
        "CARELOOP_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "CARELOOP_MASTER_KEY": base64.b64encode(master_key.secret).decode(),
        "CARELOOP_MASTER_KEY_FILE": None,
        "CARELOOP_CONFIG": None,
        "CARELOOP_DRIFT_WEBHOOK": None,
    }


@pytest.mark.shared_data
def test_cli_reference_run_and_history(
    tmp_path: Path,
    diabetes: pd.DataFrame,
    cli_env: dict[str, str | None],
    monkeypatch: pytest.MonkeyPatch,
    webhook: tuple[str, type[_Hook]],
) -> None:
    url, hook = webhook
    artifact = tmp_path / "model"
    artifact.mkdir()
    (artifact / "model.json").write_text(json.dumps({"name": "readmission", "version": VERSION}))
    monkeypatch.setattr(drift_cli, "load_governed", StandInReadmission)
    ordered = diabetes.sort_values("encounter_id")
    training, recent = ordered.iloc[:20000], ordered.iloc[20000:26000].copy()
    training.to_csv(tmp_path / "training.csv", index=False)
    later = recent.index[len(recent) // 2 :]  # the second half in time drifts
    recent.loc[later, "number_inpatient"] += 3
    recent.sample(frac=1.0, random_state=0).to_csv(tmp_path / "recent.csv", index=False)
    runner = CliRunner()

    made = runner.invoke(
        drift_cli.drift_group,
        ["reference", "--model", str(artifact), "--data", str(tmp_path / "training.csv")],
        env=cli_env,
        catch_exceptions=False,
    )
    assert made.exit_code == 0, made.output
    assert "rows of held-out patients judge performance" in made.output
    reference = load_reference(artifact)
    assert 14000 < reference["rows"] < 18000  # about 80 % of the 20000 encounters

    args = ["run", "--model", str(artifact), "--data", str(tmp_path / "recent.csv")]
    ran = runner.invoke(
        drift_cli.drift_group,
        [*args, "--windows", "2", "--notify-url", url],
        env=cli_env,
        catch_exceptions=False,
    )
    assert ran.exit_code == 1, ran.output  # an alert: cron and CI see it
    assert "input 'number_inpatient' PSI" in ran.output
    assert "override rate from all cards" in ran.output
    assert "s3cret" not in ran.output
    assert len(hook.received) == 1

    calm = runner.invoke(
        drift_cli.drift_group,
        ["run", "--model", str(artifact), "--data", str(tmp_path / "training.csv")],
        env=cli_env,
        catch_exceptions=False,
    )
    assert calm.exit_code == 0, calm.output

    shown = runner.invoke(
        drift_cli.drift_group,
        ["history", "--model", str(artifact), "--json"],
        env=cli_env,
        catch_exceptions=False,
    )
    assert shown.exit_code == 0, shown.output
    runs = json.loads(shown.stdout)
    early, late = runs[:2]
    assert (early["window"], late["window"]) == ("1/2 recent.csv", "2/2 recent.csv")
    # the injected shift shows in the later window only; the earlier one may carry the data's
    # own drift over the years (lab procedures, admission types) at warn level
    assert early["status"] != "alert"
    assert early["feature_psi"]["number_inpatient"] < 0.1
    assert (late["status"], late["notified"]) == ("alert", True)
    assert late["feature_psi"]["number_inpatient"] > 0.25
    assert len(runs) == 6  # 2 windows, then the default 4
    table = runner.invoke(
        drift_cli.drift_group, ["history", "--model", VERSION], env=cli_env, catch_exceptions=False
    )
    assert "recent.csv" in table.output


def test_cli_bad_input(tmp_path: Path, cli_env: dict[str, str | None]) -> None:
    runner = CliRunner()
    data = tmp_path / "x.csv"
    data.write_text("a\n1\n")
    missing = runner.invoke(
        drift_cli.drift_group, ["run", "--model", "no-such-model", "--data", str(data)], env=cli_env
    )
    assert missing.exit_code == 2
    assert "no model 'no-such-model'" in missing.output
    artifact = tmp_path / "model"
    artifact.mkdir()
    (artifact / "model.json").write_text(json.dumps({"name": "sepsis", "version": "sepsis-x"}))
    nothing = runner.invoke(
        drift_cli.drift_group, ["history", "--model", str(artifact)], env=cli_env
    )
    assert nothing.exit_code == 0
    assert "no drift checks recorded for sepsis-x" in nothing.output


def test_thresholds_are_documented_defaults() -> None:
    t = DriftThresholds()
    assert (t.psi_warn, t.psi_alert, t.alert_rate_change, t.auroc_drop, t.override_rate) == (
        0.1,
        0.25,
        0.5,
        0.05,
        0.5,
    )


def test_thresholds_from_a_file_and_their_errors(tmp_path: Path) -> None:
    chosen = tmp_path / "drift.yaml"
    chosen.write_text("psi_alert: 0.4\nmin_rows: 50\n")
    loaded = DriftThresholds.load(chosen)
    assert (loaded.psi_alert, loaded.min_rows, loaded.psi_warn) == (0.4, 50, 0.1)
    for text, said in (
        ("psi_alrt: 0.4\n", "unknown threshold(s) psi_alrt"),
        ("psi_alert: -1\n", "psi_alert must be a number >= 0"),
        ("- 0.4\n", "mapping of threshold names"),
    ):
        chosen.write_text(text)
        with pytest.raises(ValueError, match=re.escape(said)):
            DriftThresholds.load(chosen)


@pytest.mark.slow
@pytest.mark.shared_data
def test_shipped_sepsis_model_through_its_adapter(tmp_path: Path) -> None:
    """The real sepsis adapter: its reference describes its inputs, an input shift alerts."""
    from careloop.governance.adapters import SHIPPED_MODELS, load_governed

    data = shared_data("physionet2019/training_setA.tar.gz")
    model = load_governed(SHIPPED_MODELS / "sepsis")
    scored = model.score_data(data, limit=100)
    reference = reference_profile(scored)
    assert reference["feature_names"] == list(model.feature_names)
    path = write_reference(tmp_path, reference)  # not into the shipped artifact
    assert not any(stay in path.read_text() for stay in np.unique(scored.patient_ids)[:50])

    same = check_drift(load_reference(tmp_path), scored)
    assert same.status == "ok" and same.risk_psi < 1e-9 and same.outcomes == "complete"

    column = model.feature_names.index("temp__last")
    warmer = scored.features.copy()
    warmer[: scored.rows // 2, column] += 1.5  # half the hours a fever the training never saw
    shifted = check_drift(reference, ScoredSet(**{**scored.__dict__, "features": warmer}))
    assert shifted.feature_psi["temp__last"] > 0.25
    assert any(b.startswith("input 'temp__last' PSI") for b in shifted.breaches)


@pytest.mark.shared_data
def test_drift_on_the_training_file_checks_only_the_held_out_patients(
    cli_env: dict[str, str | None],
) -> None:
    data = shared_data(DIABETES)
    model = str(Path(__file__).resolve().parents[1] / "models" / "readmission")
    ran = CliRunner().invoke(
        drift_cli.drift_group,
        ["run", "--model", model, "--data", str(data), "--windows", "2", "--no-store-feedback"],
        env=cli_env,
        catch_exceptions=False,
    )
    assert ran.exit_code in (0, 1), ran.output  # ok/warn or alert: this data does drift in time
    assert "is the model's training file: only the 14,341 rows" in ran.output
    # judged on patients it never saw, each window's AUROC sits near the card's 0.666
    aurocs = re.findall(r"AUROC (0\.\d+)", ran.output)
    assert len(aurocs) == 2 and all(0.6 < float(value) < 0.73 for value in aurocs)
