"""The sepsis model: LightGBM on hourly features, isotonic calibration, the alert policy, and
per-prediction explanations from tree SHAP contributions.

Training splits by stay (patient), never by row: the trees are fitted on 80% of the training
stays, and the remaining 20% serve for early stopping, the calibration map and the choice of the
alert threshold, so nothing that decides the operating point has been fitted on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
from sklearn.isotonic import IsotonicRegression

from careloop.governance.artifact import model_version
from careloop.sepsis.features import FEATURE_NAMES, describe_feature
from careloop.sepsis.grid import HourlyGrid
from careloop.sepsis.policy import AlertPolicy, choose_policy
from careloop.sepsis.signals import SIGNAL_BY_NAME

MODEL_FILE = "booster.txt"
META_FILE = "model.json"
LGB_PARAMS: dict[str, object] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 200,
    "feature_fraction": 0.5,
    "bagging_fraction": 0.5,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_bin": 63,
    "verbose": -1,
    "num_threads": 0,
    "seed": 7,
}
# The candidates `careloop train sepsis` chooses among by patient-grouped cross-validation: tree
# size against leaf size, and how many features each tree may see.
PARAM_CANDIDATES: tuple[dict[str, object], ...] = (
    {"num_leaves": 31, "min_data_in_leaf": 200, "feature_fraction": 0.5},
    {"num_leaves": 63, "min_data_in_leaf": 100, "feature_fraction": 0.5},
    {"num_leaves": 15, "min_data_in_leaf": 400, "feature_fraction": 0.5},
    {"num_leaves": 31, "min_data_in_leaf": 200, "feature_fraction": 0.25},
)
MAX_ROUNDS = 600
EARLY_STOPPING = 40


@dataclass
class StayData:
    """One stay ready for training or scoring."""

    stay_id: str
    features: np.ndarray  # (hours, features) float32
    labels: np.ndarray | None  # (hours,) int8
    grid: HourlyGrid | None = None  # kept when explanations are wanted


@dataclass
class Calibration:
    """Isotonic map from raw scores to probabilities, stored as its knots."""

    x: list[float]
    y: list[float]

    @classmethod
    def fit(cls, raw: np.ndarray, labels: np.ndarray) -> Calibration:
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(raw, labels)
        return cls([float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_])

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)


@dataclass
class Factor:
    feature: str
    contribution: float  # log-odds the factor adds
    text: str  # worded for a clinician


@dataclass
class SepsisModel:
    booster: lgb.Booster
    calibration: Calibration
    policy: AlertPolicy
    version: str
    trained: dict[str, object] = field(default_factory=dict)

    def raw_scores(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(features, raw_score=True), dtype=np.float64)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return self.calibration.apply(self.raw_scores(features))

    def explain(
        self, features: np.ndarray, grid: HourlyGrid, hour: int, top: int = 3
    ) -> list[Factor]:
        """The factors that raised this hour's risk most, worded with the patient's own values."""
        contributions = self.booster.predict(features[hour : hour + 1], pred_contrib=True)[0][:-1]
        order = np.argsort(-contributions)
        factors = []
        for index in order[:top]:
            if contributions[index] <= 0:
                break
            name = FEATURE_NAMES[index]
            value = float(features[hour, index])
            factors.append(Factor(name, float(contributions[index]), word(name, grid, hour, value)))
        return factors

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / MODEL_FILE))
        meta = {
            "name": "sepsis",
            "version": self.version,
            "features": list(FEATURE_NAMES),
            "calibration": {"x": self.calibration.x, "y": self.calibration.y},
            "policy": self.policy.as_dict(),
            "trained": self.trained,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> SepsisModel:
        meta = json.loads((directory / META_FILE).read_text())
        if list(meta["features"]) != list(FEATURE_NAMES):
            raise ValueError(
                f"the model in {directory} was trained on other features than this careloop "
                "computes; retrain it with `careloop train sepsis`"
            )
        booster = lgb.Booster(model_file=str(directory / MODEL_FILE))
        calibration = Calibration(meta["calibration"]["x"], meta["calibration"]["y"])
        return cls(
            booster, calibration, AlertPolicy(**meta["policy"]), meta["version"], meta["trained"]
        )


MEASUREMENT_KINDS = frozenset(
    {
        "hours since last measured",
        "measurements so far",
        "measurements in the last 24 h",
        "not measured this hour",
    }
)
# context features that are 0/1 flags, read as yes or no
FLAG_DISPLAYS = {
    describe_feature(name).display: name
    for name in FEATURE_NAMES
    if describe_feature(name).kind == "context" and name.startswith(("sex_", "unit_"))
}
VALUE_KINDS = frozenset(
    {"last value", "previous value", "personal baseline (median of first hours)"}
)


def word(feature: str, grid: HourlyGrid, hour: int, value: float | None = None) -> str:
    """A factor as a clinician reads it, with this patient's values, e.g. "respiratory rate
    28 /min, 10 above this patient's baseline (trend (slope per hour))". `value` is the
    feature's own value, shown for composites and context (a flag reads yes or no)."""
    info = describe_feature(feature)
    if info.signal is None or info.signal not in SIGNAL_BY_NAME:
        return _worded_value(info.display, value)
    signal = SIGNAL_BY_NAME[info.signal]
    column = grid.column(signal.name)[: hour + 1]
    measured = np.flatnonzero(~np.isnan(column))
    if measured.size == 0:
        return f"{signal.display} not measured yet"
    if info.kind in MEASUREMENT_KINDS:
        ago = hour - int(measured[-1])
        return f"{signal.display} last measured {ago} h ago ({measured.size} measurements)"
    observed = column[measured]
    last = float(observed[-1])
    text = f"{signal.display} {last:g} {signal.unit}"
    early = observed[: min(observed.size, 6)]
    if observed.size > early.size:
        change = last - float(np.median(early))
        if abs(change) >= 1e-9:
            direction = "above" if change > 0 else "below"
            text += f", {abs(change):.3g} {direction} this patient's baseline"
    return text if info.kind in VALUE_KINDS else f"{text} ({info.kind})"


def _worded_value(display: str, value: float | None) -> str:
    if value is None:
        return display
    if np.isnan(value):
        return f"{display}: unknown"
    flag = FLAG_DISPLAYS.get(display)
    if flag == "sex_male":
        return f"sex: {'male' if value >= 0.5 else 'female'}"
    if flag is not None:
        return f"{display}: {'yes' if value >= 0.5 else 'no'}"
    return f"{display}: {value:.3g}"


def train(
    stays: Sequence[StayData],
    *,
    seed: int = 7,
    max_alerts_per_patient_day: float = 1.0,
    params: dict[str, object] | None = None,
) -> tuple[SepsisModel, dict[str, object]]:
    """Fit on 80% of the stays; early-stop, calibrate and choose the policy on the other 20%.
    `params` override LightGBM's settings (e.g. a tuned candidate)."""
    fit, tune = split_stays(stays, 0.2, seed)
    x_fit, y_fit = stack(fit)
    x_tune, y_tune = stack(tune)
    booster = lgb.train(
        {**LGB_PARAMS, **(params or {}), "seed": seed},
        lgb.Dataset(x_fit, y_fit, feature_name=list(FEATURE_NAMES), free_raw_data=True),
        num_boost_round=MAX_ROUNDS,
        valid_sets=[lgb.Dataset(x_tune, y_tune, feature_name=list(FEATURE_NAMES))],
        callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False)],
    )
    model = SepsisModel(booster, Calibration([0.0, 1.0], [0.0, 1.0]), AlertPolicy(0.5), "")
    model.calibration = Calibration.fit(model.raw_scores(x_tune), y_tune)
    tune_probs = [model.probabilities(stay.features) for stay in tune]
    tune_labels = [stay.labels for stay in tune]
    model.policy, tune_utility = choose_policy(
        tune_labels, tune_probs, max_alerts_per_patient_day=max_alerts_per_patient_day
    )
    facts = {
        "fit_stays": len(fit),
        "tune_stays": len(tune),
        "fit_hours": int(len(y_fit)),
        "rounds": int(booster.best_iteration or booster.current_iteration()),
        "tune_normalized_utility": float(tune_utility),
        "params": {**LGB_PARAMS, **(params or {}), "seed": seed},
    }
    return model, facts


def split_stays(
    stays: Sequence[StayData], share: float, seed: int
) -> tuple[list[StayData], list[StayData]]:
    """A split by stay, stratified on whether the stay is septic."""
    rng = np.random.default_rng(seed)
    septic = [s for s in stays if s.labels is not None and s.labels.any()]
    other = [s for s in stays if not (s.labels is not None and s.labels.any())]
    held: list[StayData] = []
    kept: list[StayData] = []
    for group in (septic, other):
        order = rng.permutation(len(group))
        cut = int(round(len(group) * share))
        held += [group[i] for i in order[:cut]]
        kept += [group[i] for i in order[cut:]]
    return kept, held


def stack(stays: Sequence[StayData]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([stay.features for stay in stays]).astype(np.float32, copy=False)
    y = np.concatenate([stay.labels for stay in stays if stay.labels is not None])
    return x, y


def version_of(data_fingerprint: str, booster: lgb.Booster) -> str:
    return model_version("sepsis", data_fingerprint, booster.model_to_string())


def fingerprint(path: Path) -> str:
    """SHA-256 of the training input (a file, or every file under a directory in name order)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
