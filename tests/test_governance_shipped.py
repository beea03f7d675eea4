"""CI runs the release gate on the shipped models: each is retrained by the code under test with
the recipe it records, and the retrained candidate must pass the gate against the shipped model,
judged on the patients neither was trained on. A change to features, training or a dependency
that makes a model worse fails here before it can ship."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from careloop.governance.adapters import SHIPPED_MODELS, model_meta
from conftest import shared_data

CARELOOP = str(Path(sys.executable).with_name("careloop"))


def careloop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CARELOOP, *map(str, args)], capture_output=True, text=True, timeout=1800, check=False
    )


def gate_against_shipped(family: str, candidate: Path, data: Path, out: Path) -> dict:
    shipped = str(model_meta(SHIPPED_MODELS / family)["version"])  # resolved by version
    gated = careloop(
        "gate", "--candidate", candidate, "--baseline", shipped, "--data", data, "--out", out
    )
    assert gated.returncode == 0, gated.stdout + gated.stderr
    report = json.loads((out / "gate.json").read_text())
    assert report["passed"] and report["baseline"] == shipped
    assert "held-out patients only" in report["judged_on"]
    return report


@pytest.mark.shared_data
@pytest.mark.slow
def test_a_retrained_readmission_model_passes_the_gate_against_the_shipped_one(
    tmp_path: Path,
) -> None:
    data = shared_data("diabetes130/diabetic_data_dev.csv.gz")
    candidate = tmp_path / "candidate"
    trained = careloop(
        "train", "readmission", "--data", data, "--out", candidate, "--cv-folds", "0"
    )
    assert trained.returncode == 0, trained.stderr
    report = gate_against_shipped("readmission", candidate, data, tmp_path / "gate")
    checks = {(check["name"], check["scope"]) for check in report["checks"]}
    assert ("AUROC", "overall") in checks and any(scope.startswith("race=") for _, scope in checks)


@pytest.mark.shared_data
@pytest.mark.slow
def test_a_retrained_sepsis_model_passes_the_gate_against_the_shipped_one(tmp_path: Path) -> None:
    data = shared_data("physionet2019/training_setA.tar.gz")
    candidate = tmp_path / "candidate"
    trained = careloop(
        "train",
        "sepsis",
        "--data",
        data,
        "--out",
        candidate,
        "--cv-folds",
        "0",
        "--params-from",
        SHIPPED_MODELS / "sepsis",
    )
    assert trained.returncode == 0, trained.stderr
    report = gate_against_shipped("sepsis", candidate, data, tmp_path / "gate")
    assert any(check["name"] == "p95 latency (ms)" for check in report["checks"])
