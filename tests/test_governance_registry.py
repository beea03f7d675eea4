"""The model registry on SQLite and PostgreSQL, with the shipped sepsis model as the artifact:
registration facts, the candidate/active/retired life cycle with its history and audit trail,
tamper detection, the MLflow export and the `careloop models` commands."""

from __future__ import annotations

import getpass
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from careloop.audit.log import AuditLog
from careloop.governance.adapters import SHIPPED_MODELS, resolve_artifact
from careloop.governance.mlflow_export import (
    LOADER_MODULE,
    ExportError,
    _load_pyfunc,
    export_mlflow,
)
from careloop.governance.registry import (
    NO_CONSENT_FILTER,
    ArtifactTampered,
    IllegalStateChange,
    ModelRegistry,
    ModelState,
    RegistryError,
    UnknownVersion,
    artifact_checksum,
)
from careloop.governance.registry_cli import models_group
from careloop.readmission.model import ReadmissionModel
from careloop.sepsis.model import SepsisModel
from careloop.store.repository import ResourceStore

SEPSIS = SHIPPED_MODELS / "sepsis"
ACTOR = "local:tester"


def sepsis_artifact(tmp_path: Path, version: str | None = None) -> Path:
    """A copy of the shipped sepsis model, optionally under another version."""
    target = tmp_path / "artifacts" / (version or "shipped")
    shutil.copytree(SEPSIS, target)
    if version is not None:
        meta = json.loads((target / "model.json").read_text())
        meta["version"] = version
        (target / "model.json").write_text(json.dumps(meta))
    return target


@pytest.fixture
def registry(store: ResourceStore, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(store, tmp_path / "registry")


def admin_details(store: ResourceStore) -> list[str]:
    return [
        event.resource.get("outcomeDesc", "")
        for event in AuditLog(store).events()
        if event.action == "admin"
    ]


def test_register_records_the_artifact_facts(registry, store, tmp_path) -> None:
    source = sepsis_artifact(tmp_path)
    meta = json.loads((source / "model.json").read_text())

    registered = registry.register(source, actor=ACTOR)

    assert registered.version == meta["version"]
    assert registered.name == "sepsis"
    assert registered.state is ModelState.CANDIDATE
    assert registered.artifact_dir == (tmp_path / "registry" / "sepsis" / meta["version"]).resolve()
    assert (registered.artifact_dir / "MODEL_CARD.md").is_file()
    assert registered.artifact_sha256 == artifact_checksum(source)
    assert registered.artifact_sha256 == artifact_checksum(registered.artifact_dir)
    assert registered.data_fingerprint == meta["trained"]["fingerprint"]
    assert registered.consent_filter == NO_CONSENT_FILTER
    assert registered.policy == meta["policy"]
    assert registered.features == tuple(meta["features"])
    assert registered.registered_by == ACTOR
    cv_summary = json.loads((source / "cv.json").read_text())["summary"]
    assert registered.metrics == {"cross_validation": cv_summary}
    assert registered.auroc == pytest.approx(cv_summary["model"]["auroc"]["mean"])
    [change] = registry.history(registered.version)
    assert (change.from_state, change.to_state, change.actor) == (None, "candidate", ACTOR)
    assert admin_details(store) == [f"model register {registered.version}: candidate"]
    assert registry.list() == [registered]
    assert registry.list("readmission") == []


def test_consent_filter_and_metrics_come_from_model_json(registry, tmp_path) -> None:
    source = sepsis_artifact(tmp_path, "sepsis-lgbm-filtered")
    meta = json.loads((source / "model.json").read_text())
    meta["trained"]["consent_filter"] = "opt-out patients excluded (access layer, HOPERAT)"
    meta["metrics"] = {"holdout": {"auroc": 0.71, "ece": 0.01}}
    (source / "model.json").write_text(json.dumps(meta))

    registered = registry.register(source, actor=ACTOR)

    assert registered.consent_filter == "opt-out patients excluded (access layer, HOPERAT)"
    assert registered.metrics == {"holdout": {"auroc": 0.71, "ece": 0.01}}
    assert registered.auroc == 0.71


def test_registering_twice(registry, tmp_path) -> None:
    source = sepsis_artifact(tmp_path)
    first = registry.register(source, actor=ACTOR)

    again = registry.register(source, actor="local:someone-else")

    assert again == first
    assert len(registry.history(first.version)) == 1
    with (source / "MODEL_CARD.md").open("a") as card:
        card.write("\nedited after registration\n")
    with pytest.raises(RegistryError, match=r"already registered with other contents"):
        registry.register(source, actor=ACTOR)
    assert artifact_checksum(first.artifact_dir) == first.artifact_sha256


def test_registration_refuses_what_is_not_a_carded_model(registry, tmp_path) -> None:
    uncarded = sepsis_artifact(tmp_path, "sepsis-lgbm-uncarded")
    (uncarded / "MODEL_CARD.md").unlink()
    with pytest.raises(RegistryError, match=r"no MODEL_CARD\.md"):
        registry.register(uncarded, actor=ACTOR)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RegistryError, match=r"holds no model\.json"):
        registry.register(empty, actor=ACTOR)
    escaping = sepsis_artifact(tmp_path, "../escape")
    with pytest.raises(RegistryError, match=r"must be letters, digits"):
        registry.register(escaping, actor=ACTOR)
    assert registry.list() == []
    assert not (tmp_path / "registry").exists() or not any((tmp_path / "registry").rglob("*.txt"))


def test_promote_rollback_retire_with_history_and_audit(registry, store, tmp_path) -> None:
    a, b, c, d = (
        registry.register(sepsis_artifact(tmp_path, f"sepsis-lgbm-{tag}"), actor=ACTOR).version
        for tag in "abcd"
    )

    registry.promote(a, actor=ACTOR, reason="first approval")
    registry.promote(b, actor=ACTOR, reason="better utility")
    registry.promote(c, actor=ACTOR, reason="newer data")
    assert registry.active("sepsis").version == c
    assert [registry.get(v).state for v in (a, b)] == ["retired", "retired"]

    assert registry.rollback("sepsis", actor=ACTOR, reason="alert storm").version == b
    assert registry.get(c).state is ModelState.RETIRED
    assert registry.rollback("sepsis", actor=ACTOR, reason="still wrong").version == a
    with pytest.raises(IllegalStateChange, match=r"no previously active version"):
        registry.rollback("sepsis", actor=ACTOR, reason="once more")
    assert registry.active("sepsis").version == a

    registry.promote(d, actor=ACTOR, reason="fixed")
    registry.retire(d, actor=ACTOR, reason="withdrawn")  # leaves sepsis with nothing active
    assert registry.active("sepsis") is None
    assert registry.rollback("sepsis", actor=ACTOR, reason="restore").version == a

    history = [(h.from_state, h.to_state, h.reason) for h in registry.history(b)]
    assert history == [
        (None, "candidate", "registered"),
        ("candidate", "active", "better utility"),
        ("active", "retired", "newer data"),
        ("retired", "active", "alert storm"),
        ("active", "retired", "still wrong"),
    ]
    details = admin_details(store)
    assert f"model promote {b}: candidate -> active; {a}: active -> retired" in details
    assert f"model rollback sepsis: {b}: retired -> active; {c}: active -> retired" in details
    assert f"model retire {d}: active -> retired" in details
    assert len(details) == 4 + 4 + 3 + 1  # registrations, promotions, rollbacks, retirement
    assert AuditLog(store).verify().ok  # appended inside the registry's transactions
    states = {model.version: model.state for model in registry.list("sepsis")}
    assert list(states.values()).count(ModelState.ACTIVE) == 1


def test_illegal_moves_are_refused_and_change_nothing(registry, store, tmp_path) -> None:
    a, b = (
        registry.register(sepsis_artifact(tmp_path, f"sepsis-lgbm-{tag}"), actor=ACTOR).version
        for tag in "ab"
    )
    with pytest.raises(UnknownVersion):
        registry.promote("sepsis-lgbm-nope", actor=ACTOR, reason="x")
    with pytest.raises(IllegalStateChange, match=r"no previously active version"):
        registry.rollback("sepsis", actor=ACTOR, reason="nothing to go back to")
    with pytest.raises(UnknownVersion, match=r"no model named"):
        registry.rollback("nosuchmodel", actor=ACTOR, reason="x")
    with pytest.raises(RegistryError, match=r"a reason is required"):
        registry.promote(a, actor=ACTOR, reason="   ")
    registry.promote(a, actor=ACTOR, reason="ok")
    with pytest.raises(IllegalStateChange, match=r"already active"):
        registry.promote(a, actor=ACTOR, reason="again")
    registry.retire(b, actor=ACTOR, reason="not needed")
    with pytest.raises(IllegalStateChange, match=r"returns only through .*rollback sepsis"):
        registry.promote(b, actor=ACTOR, reason="changed my mind")
    with pytest.raises(IllegalStateChange, match=r"already retired"):
        registry.retire(b, actor=ACTOR, reason="twice")
    # b was never active, so a rollback has nothing to go back to
    with pytest.raises(IllegalStateChange):
        registry.rollback("sepsis", actor=ACTOR, reason="x")
    assert registry.active("sepsis").version == a
    assert len(registry.history()) == 2 + 1 + 1
    assert len(admin_details(store)) == 2 + 1 + 1


def test_tampering_is_detected_and_blocks_loading(registry, tmp_path) -> None:
    registered = registry.register(sepsis_artifact(tmp_path), actor=ACTOR)
    assert registry.verify(registered.version).ok
    assert registry.lookup_artifact(registered.version) == registered.artifact_dir
    assert resolve_artifact(registered.version, registry.lookup_artifact) == (
        registered.artifact_dir
    )
    assert registry.lookup_artifact("sepsis-lgbm-unknown") is None

    policy_path = registered.artifact_dir / "model.json"
    meta = json.loads(policy_path.read_text())
    meta["policy"]["threshold"] = 0.5  # a quiet edit of the operating point
    policy_path.write_text(json.dumps(meta))

    result = registry.verify(registered.version)
    assert not result.ok
    assert "TAMPERED" in result.describe()
    with pytest.raises(ArtifactTampered):
        registry.lookup_artifact(registered.version)
    with pytest.raises(ArtifactTampered):
        export_mlflow(registry.get(registered.version), tmp_path / "export")
    assert not (tmp_path / "export").exists()

    shutil.rmtree(registered.artifact_dir)
    gone = registry.verify(registered.version)
    assert not gone.ok and gone.actual_sha256 is None


def test_checksum_covers_names_and_contents(tmp_path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a").write_bytes(b"xy")
    (folder / "b").write_bytes(b"z")
    original = artifact_checksum(folder)
    (folder / "b").rename(folder / "c")
    assert artifact_checksum(folder) != original
    (folder / "c").rename(folder / "b")
    assert artifact_checksum(folder) == original
    (folder / "a").write_bytes(b"x")
    (folder / "b").write_bytes(b"yz")  # same concatenated bytes, other split
    assert artifact_checksum(folder) != original


def test_mlflow_export_matches_the_model(registry, tmp_path) -> None:
    registered = registry.register(sepsis_artifact(tmp_path), actor=ACTOR)
    out = export_mlflow(registered, tmp_path / "mlflow-model")

    document = yaml.safe_load((out / "MLmodel").read_text())
    assert document["artifact_path"] == "model"
    pyfunc = document["flavors"]["python_function"]
    assert pyfunc["loader_module"] == LOADER_MODULE
    assert (out / pyfunc["data"] / "model.json").is_file()
    lightgbm = document["flavors"]["lightgbm"]
    assert (out / lightgbm["data"]).is_file() and lightgbm["lgb_version"]
    assert len(document["model_uuid"]) == 32
    assert document["utc_time_created"]
    inputs = json.loads(document["signature"]["inputs"])
    assert [column["name"] for column in inputs] == list(registered.features)
    assert {column["type"] for column in inputs} == {"double"}
    metadata = document["metadata"]
    assert metadata["model_version"] == registered.version
    assert metadata["state"] == "candidate"
    assert metadata["data_fingerprint"] == registered.data_fingerprint
    assert "careloop_version" in metadata
    assert "lightgbm==" in (out / "requirements.txt").read_text()
    assert artifact_checksum(out / "artifact") == registered.artifact_sha256

    width = len(registered.features)
    rows = np.zeros((4, width))
    rows[1, :] = np.nan
    rows[2, ::3] = np.nan
    rows[3, :] = 1.0
    expected = SepsisModel.load(registered.artifact_dir).probabilities(rows)
    loaded = _load_pyfunc(str(out / pyfunc["data"]))
    np.testing.assert_allclose(loaded.predict(rows), expected, rtol=0, atol=1e-12)
    frame = pd.DataFrame(rows, columns=list(registered.features))
    shuffled = frame[list(reversed(frame.columns))]
    np.testing.assert_allclose(loaded.predict(shuffled), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"lacks 1 of the model's features"):
        loaded.predict(frame.drop(columns=[registered.features[0]]))

    with pytest.raises(ExportError, match=r"not an empty directory"):
        export_mlflow(registered, out)


def test_mlflow_export_of_the_readmission_model_scores_as_careloop_does(registry, tmp_path) -> None:
    # its calibration is Platt scaling, not isotonic knots: the export must not care
    registered = registry.register(SHIPPED_MODELS / "readmission", actor=ACTOR)
    out = export_mlflow(registered, tmp_path / "mlflow-readmission")
    loaded = _load_pyfunc(str(out / "artifact"))
    rows = np.tile(np.arange(len(registered.features), dtype=float), (3, 1))
    rows[1, ::2] = np.nan
    expected = ReadmissionModel.load(registered.artifact_dir).probabilities(rows)
    np.testing.assert_allclose(loaded.predict(rows), expected, rtol=0, atol=1e-12)
    assert loaded.version == registered.version


# -- the CLI ---------------------------------------------------------------------------------------


def run(args: list[str], env: dict[str, str | None]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(models_group, args, env=env, catch_exceptions=False)


def test_cli_round_trip(store, cli_env, tmp_path) -> None:
    first = sepsis_artifact(tmp_path, "sepsis-lgbm-cli-a")
    second = sepsis_artifact(tmp_path, "sepsis-lgbm-cli-b")

    registered = run(["register", str(first)], cli_env)
    assert registered.exit_code == 0, registered.output
    assert "registered: sepsis-lgbm-cli-a (sepsis, candidate)" in registered.output
    assert "already registered" in run(["register", str(first)], cli_env).output
    assert run(["register", str(second)], cli_env).exit_code == 0
    assert (tmp_path / "home" / "models" / "sepsis" / "sepsis-lgbm-cli-a").is_dir()

    missing_reason = run(["promote", "sepsis-lgbm-cli-a"], cli_env)
    assert missing_reason.exit_code == 2 and "--reason" in missing_reason.output
    assert run(["promote", "sepsis-lgbm-cli-a", "--reason", "approved"], cli_env).exit_code == 0
    promoted = run(["promote", "sepsis-lgbm-cli-b", "--reason", "newer"], cli_env)
    assert "sepsis-lgbm-cli-b is now active" in promoted.output
    rolled = run(["rollback", "sepsis", "--reason", "regression seen"], cli_env)
    assert "sepsis-lgbm-cli-a is now active" in rolled.output
    refused = run(["rollback", "sepsis", "--reason", "again"], cli_env)
    assert refused.exit_code == 2 and "no previously active version" in refused.output
    unknown = run(["promote", "nope", "--reason", "x"], cli_env)
    assert unknown.exit_code == 2 and "no registered model version 'nope'" in unknown.output

    listed = run(["list", "--name", "sepsis"], cli_env)
    assert listed.exit_code == 0
    assert "sepsis-lgbm-cli-a" in listed.output and "active" in listed.output
    assert "0.823" in listed.output  # the cross-validated AUROC

    shown = run(["show", "sepsis-lgbm-cli-b"], cli_env)
    assert shown.exit_code == 0
    for expected in ("retired", "consent filter", "none recorded", "candidate -> active"):
        assert expected in shown.output
    assert "regression seen" in shown.output
    operator = f"local:{getpass.getuser()}"
    assert f"by {operator}" in shown.output

    twice = run(["retire", "sepsis-lgbm-cli-b", "--reason", "superseded"], cli_env)
    assert twice.exit_code == 2 and "already retired" in twice.output
    retired = run(["retire", "sepsis-lgbm-cli-a", "--reason", "withdrawn"], cli_env)
    assert "sepsis-lgbm-cli-a is now retired" in retired.output
    assert "intact" in run(["verify", "sepsis-lgbm-cli-a"], cli_env).output

    exported = run(["export-mlflow", "sepsis-lgbm-cli-a", "--out", str(tmp_path / "ml")], cli_env)
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "ml" / "MLmodel").is_file()

    card = tmp_path / "home" / "models" / "sepsis" / "sepsis-lgbm-cli-a" / "MODEL_CARD.md"
    card.write_text("rewritten")
    tampered = run(["verify", "sepsis-lgbm-cli-a"], cli_env)
    assert tampered.exit_code == 1 and "TAMPERED" in tampered.output
    refused_export = run(
        ["export-mlflow", "sepsis-lgbm-cli-a", "--out", str(tmp_path / "m2")], cli_env
    )
    assert refused_export.exit_code == 1 and not (tmp_path / "m2").exists()

    agents = {e.agent for e in AuditLog(store).events() if e.action == "admin"}
    assert agents == {operator}


def test_the_server_runs_the_sepsis_version_the_registry_holds_active(
    store: ResourceStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from careloop.cli import serving_sepsis_model
    from careloop.config import load_settings
    from careloop.governance.registry_cli import registry_root

    monkeypatch.delenv("CARELOOP_SEPSIS_MODEL", raising=False)
    settings = replace(load_settings(), home=tmp_path / "home")
    assert serving_sepsis_model(settings, store) == SEPSIS  # nothing active: the shipped model
    registry = ModelRegistry(store, registry_root(settings.home))
    chosen = registry.register(sepsis_artifact(tmp_path, "sepsis-lgbm-served"), actor=ACTOR)
    assert serving_sepsis_model(settings, store) == SEPSIS  # a candidate does not serve
    registry.promote(chosen.version, actor=ACTOR, reason="approved by the committee")
    assert serving_sepsis_model(settings, store) == chosen.artifact_dir
    (chosen.artifact_dir / "booster.txt").write_text("tampered")
    with pytest.raises(SystemExit):  # a changed artifact never serves
        serving_sepsis_model(settings, store)
