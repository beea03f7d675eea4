"""Export a registered model in MLflow's model format, without depending on MLflow.

The export is a directory MLflow reads as it is:

    MLmodel            flavors, signature and careloop's metadata (YAML)
    artifact/          the registered artifact, byte for byte (model.json, booster, card, ...)
    requirements.txt   what loading it needs
    python_env.yaml    the same, in the form `mlflow models serve` builds environments from

Two flavors are declared. `python_function` names this module as its loader, so
`mlflow.pyfunc.load_model(path).predict(frame)` returns careloop's calibrated probabilities (the
booster's raw score through the model's own calibration, exactly what careloop serves).
`lightgbm` points at the booster file, so `mlflow.lightgbm.load_model` returns the bare booster;
its output is uncalibrated, which the metadata says.
"""

from __future__ import annotations

import json
import platform
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import yaml

import careloop
from careloop.governance.registry import ArtifactTampered, RegisteredModel, artifact_checksum

MLMODEL_FILE = "MLmodel"
ARTIFACT_DIR = "artifact"
REQUIREMENTS_FILE = "requirements.txt"
PYTHON_ENV_FILE = "python_env.yaml"
LOADER_MODULE = "careloop.governance.mlflow_export"
DEFAULT_BOOSTER = "booster.txt"
META_FILE = "model.json"


class ExportError(Exception):
    """The model cannot be exported as asked; the message says why."""


def export_mlflow(registered: RegisteredModel, out_dir: Path) -> Path:
    """Write `registered` to `out_dir` in MLflow's model format; returns `out_dir`.

    The artifact is checked against its registered checksum first, and the export is assembled
    in a temporary directory beside `out_dir` and renamed into place, so `out_dir` is either
    complete or absent.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} already exists and is not an empty directory")
    source = registered.artifact_dir
    if not source.is_dir() or artifact_checksum(source) != registered.artifact_sha256:
        raise ArtifactTampered(
            f"{registered.version}: the artifact in {source} no longer matches its registered "
            "checksum; it is not exported (run `careloop models verify`)"
        )
    booster = _booster_file(source)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.incoming-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, staging / ARTIFACT_DIR)
        (staging / MLMODEL_FILE).write_text(
            yaml.safe_dump(mlmodel(registered, booster), sort_keys=False)
        )
        (staging / REQUIREMENTS_FILE).write_text("\n".join(_requirements()) + "\n")
        (staging / PYTHON_ENV_FILE).write_text(yaml.safe_dump(_python_env(), sort_keys=False))
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def mlmodel(registered: RegisteredModel, booster: str) -> dict:
    """The MLmodel document for `registered`; `booster` is the booster file in the artifact."""
    return {
        "artifact_path": "model",
        "flavors": {
            "python_function": {
                "loader_module": LOADER_MODULE,
                "data": ARTIFACT_DIR,
                "env": {"virtualenv": PYTHON_ENV_FILE},
                "python_version": platform.python_version(),
            },
            "lightgbm": {
                "data": f"{ARTIFACT_DIR}/{booster}",
                "lgb_version": lgb.__version__,
                "model_class": "lightgbm.basic.Booster",
                "code": None,
            },
        },
        "model_uuid": uuid.uuid4().hex,
        "utc_time_created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "signature": {
            # MLflow keeps both schemas as JSON text inside the YAML
            "inputs": json.dumps(
                [{"type": "double", "name": name, "required": True} for name in registered.features]
            ),
            "outputs": json.dumps(
                [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]
            ),
            "params": None,
        },
        "metadata": {
            "careloop_version": careloop.__version__,
            "model_name": registered.name,
            "model_version": registered.version,
            "state": registered.state.value,
            "artifact_sha256": registered.artifact_sha256,
            "data_fingerprint": registered.data_fingerprint,
            "consent_filter": registered.consent_filter,
            "registered_at": registered.registered_at.isoformat(),
            "registered_by": registered.registered_by,
            "alert_policy": registered.policy,
            "output": "calibrated probability (python_function); raw booster output (lightgbm)",
        },
    }


def _booster_file(artifact: Path) -> str:
    """The artifact's LightGBM model file: named by model.json's "booster", else booster.txt."""
    try:
        named = json.loads((artifact / META_FILE).read_text()).get("booster")
    except (OSError, ValueError, AttributeError) as exc:
        raise ExportError(f"{artifact / META_FILE} cannot be read: {exc}") from None
    booster = named if isinstance(named, str) else DEFAULT_BOOSTER
    if not (artifact / booster).is_file():
        raise ExportError(f"{artifact} holds no LightGBM model file {booster!r} to export")
    return booster


def _requirements() -> list[str]:
    return [
        f"careloop=={careloop.__version__}",
        f"lightgbm=={lgb.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"PyYAML=={yaml.__version__}",
    ]


def _python_env() -> dict:
    return {
        "python": platform.python_version(),
        "build_dependencies": ["pip"],
        "dependencies": [f"-r {REQUIREMENTS_FILE}"],
    }


# -- the python_function loader -------------------------------------------------------------------


@dataclass
class CareloopPyfuncModel:
    """What MLflow's python_function flavor calls: predict(inputs) -> probabilities."""

    probabilities: Callable[[np.ndarray], np.ndarray]  # the model family's own, calibrated
    feature_names: tuple[str, ...]
    version: str

    def predict(self, model_input: object, params: dict | None = None) -> np.ndarray:
        """Calibrated probabilities, one per row of a DataFrame (columns by name) or a 2-D
        array (columns in the model's feature order). `params` is accepted for MLflow's
        calling convention and unused."""
        return np.asarray(self.probabilities(self._matrix(model_input)), dtype=np.float64)

    def _matrix(self, model_input: object) -> np.ndarray:
        if isinstance(model_input, pd.DataFrame):
            missing = [name for name in self.feature_names if name not in model_input.columns]
            if missing:
                shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                raise ValueError(f"the input lacks {len(missing)} of the model's features: {shown}")
            model_input = model_input.loc[:, list(self.feature_names)]
        matrix = np.asarray(model_input, dtype=np.float64)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected rows of {len(self.feature_names)} features, got shape {matrix.shape}"
            )
        return matrix


def _load_pyfunc(path: str) -> CareloopPyfuncModel:
    """MLflow's entry point: `path` is the artifact directory the python_function flavor names.
    The model is loaded by its family's own code, so the export scores exactly as careloop
    serves (the same calibration, whatever its kind)."""
    from careloop.governance.adapters import load_governed

    governed = load_governed(Path(path))
    return CareloopPyfuncModel(
        probabilities=governed.model.probabilities,  # type: ignore[attr-defined]
        feature_names=tuple(governed.feature_names),
        version=governed.version,
    )
