"""The readmission model: LightGBM on discharge-time features, a Platt calibration, an
alert policy, and per-encounter explanations from tree SHAP contributions.

Every split is by patient, never by encounter. Of the training patients, 80% fit the trees and
20% (the tuning split) serve for early stopping, the calibration map and the alert threshold, so
nothing that sets the probabilities or the operating point has been fitted on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from careloop.governance.artifact import model_version
from careloop.readmission.features import (
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    FeatureCoder,
    categorical_indices,
)
from careloop.readmission.metrics import auprc, auroc
from careloop.sepsis.model import Factor  # one shape for every model's explanations

MODEL_FILE = "booster.txt"
META_FILE = "model.json"
NAME = "readmission"
LGB_PARAMS: dict[str, object] = {
    "objective": "binary",
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.7,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 5.0,
    "max_bin": 63,
    "cat_smooth": 20.0,
    "cat_l2": 10.0,
    "min_data_per_group": 100,
    "verbose": -1,
    "num_threads": 1,  # the machine is shared; one thread keeps training predictable
    "seed": 7,
}
MAX_ROUNDS = 1500
EARLY_STOPPING = 50
TUNE_SHARE_FOLDS = 5  # one fold of five: 20% of the training patients tune
ALERT_SHARE = 0.20  # the alert budget: flag the riskiest fifth of discharges


@dataclass
class Calibration:
    """Platt scaling: probability = sigmoid(slope * raw score + intercept).

    Strictly increasing, unlike an isotonic map, whose plateaus tie thousands of discharges at
    one probability so that no threshold can hold an alert budget of a fifth of them."""

    slope: float
    intercept: float

    @classmethod
    def fit(cls, raw: np.ndarray, labels: np.ndarray) -> Calibration:
        fitted = LogisticRegression(C=1e6, max_iter=1000).fit(raw.reshape(-1, 1), labels)
        return cls(float(fitted.coef_[0, 0]), float(fitted.intercept_[0]))

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.slope * raw + self.intercept)))


@dataclass
class ReadmissionModel:
    booster: lgb.Booster
    coder: FeatureCoder
    calibration: Calibration
    policy: dict[str, object]
    version: str
    extra: dict[str, object] = field(default_factory=dict)  # trained, holdout, metrics, ...

    @property
    def threshold(self) -> float:
        return float(self.policy["threshold"])  # type: ignore[arg-type]

    def raw_scores(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(matrix, raw_score=True), dtype=np.float64)

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        return self.calibration.apply(self.raw_scores(matrix))

    def alerts(self, probs: np.ndarray) -> np.ndarray:
        return probs >= self.threshold

    def explain(
        self, matrix: np.ndarray, raw: pd.DataFrame, row: int, top: int = 3
    ) -> list[Factor]:
        """The factors that raised this encounter's risk most, worded with its own values."""
        contributions = self.booster.predict(matrix[row : row + 1], pred_contrib=True)[0][:-1]
        factors = []
        for index in np.argsort(-contributions)[:top]:
            if contributions[index] <= 0:
                break
            name = FEATURE_NAMES[index]
            factors.append(Factor(name, float(contributions[index]), word(name, raw.iloc[row])))
        return factors

    def meta(self) -> dict[str, object]:
        return {
            **self.extra,
            "name": NAME,
            "version": self.version,
            "features": list(FEATURE_NAMES),
            "categories": self.coder.vocabularies,
            "calibration": {
                "method": "platt",
                "slope": self.calibration.slope,
                "intercept": self.calibration.intercept,
            },
            "policy": self.policy,
        }

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / MODEL_FILE))
        (directory / META_FILE).write_text(json.dumps(self.meta(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> ReadmissionModel:
        try:
            meta = json.loads((directory / META_FILE).read_text())
        except FileNotFoundError:
            raise ValueError(f"{directory} holds no readmission model ({META_FILE})") from None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{directory / META_FILE} cannot be read: {exc}") from None
        if meta.get("name") != NAME:
            raise ValueError(f"{directory} holds a {meta.get('name')!r} model, not {NAME!r}")
        if list(meta["features"]) != list(FEATURE_NAMES):
            raise ValueError(
                f"the model in {directory} was trained on other features than this careloop "
                "computes; retrain it with `careloop train readmission`"
            )
        booster = lgb.Booster(model_file=str(directory / MODEL_FILE))
        known = ("name", "version", "features", "categories", "calibration", "policy")
        return cls(
            booster=booster,
            coder=FeatureCoder(meta["categories"]),
            calibration=Calibration(meta["calibration"]["slope"], meta["calibration"]["intercept"]),
            policy=meta["policy"],
            version=meta["version"],
            extra={k: v for k, v in meta.items() if k not in known},
        )


def grouped_folds(
    labels: np.ndarray, patient_ids: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) per fold; a patient's encounters are all on one side."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(labels.size), labels, patient_ids))


def fit_model(
    raw: pd.DataFrame,
    labels: np.ndarray,
    patient_ids: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    seed: int = 7,
) -> tuple[ReadmissionModel, dict[str, object]]:
    """Fit on 80% of the patients; early-stop, calibrate and set the threshold on the other 20%.
    `weights` (one per row) weigh the fitting rows, e.g. a reweighing mitigation."""
    fit, tune = grouped_folds(labels, patient_ids, TUNE_SHARE_FOLDS, seed)[0]
    coder = FeatureCoder.fit(raw.iloc[fit])
    matrix = coder.matrix(raw)
    categorical = categorical_indices()
    params = {**LGB_PARAMS, "seed": seed}
    booster = lgb.train(
        params,
        lgb.Dataset(
            matrix[fit],
            labels[fit],
            weight=None if weights is None else weights[fit],
            feature_name=list(FEATURE_NAMES),
            categorical_feature=categorical,
        ),
        num_boost_round=MAX_ROUNDS,
        valid_sets=[
            lgb.Dataset(
                matrix[tune],
                labels[tune],
                feature_name=list(FEATURE_NAMES),
                categorical_feature=categorical,
            )
        ],
        callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False)],
    )
    model = ReadmissionModel(booster, coder, Calibration(1.0, 0.0), {}, "")
    model.calibration = Calibration.fit(model.raw_scores(matrix[tune]), labels[tune])
    tune_probs = model.probabilities(matrix[tune])
    model.policy = choose_policy(tune_probs, labels[tune])
    facts = {
        "fit_rows": int(fit.size),
        "tune_rows": int(tune.size),
        "fit_patients": int(np.unique(patient_ids[fit]).size),
        "tune_patients": int(np.unique(patient_ids[tune]).size),
        "rounds": int(booster.best_iteration or booster.current_iteration()),
        "tune_auroc": auroc(labels[tune], tune_probs),
        "params": params,
    }
    return model, facts


def choose_policy(probs: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    """The threshold flagging the riskiest ALERT_SHARE of the tuning discharges, and what it did
    there (an alert budget, because alert volume is the nurses' and pharmacists' time)."""
    threshold = float(np.quantile(probs, 1.0 - ALERT_SHARE))
    alerts = probs >= threshold
    caught = int((alerts & (labels == 1)).sum())
    return {
        "threshold": threshold,
        "rule": f"flag the riskiest {ALERT_SHARE:.0%} of discharges (threshold set on the "
        "tuning patients, who were not used to fit the trees)",
        "target_alert_rate": ALERT_SHARE,
        "tune_alert_rate": float(alerts.mean()),
        "tune_sensitivity": caught / max(int(labels.sum()), 1),
        "tune_ppv": caught / max(int(alerts.sum()), 1),
    }


def cross_validate(
    raw: pd.DataFrame,
    labels: np.ndarray,
    patient_ids: np.ndarray,
    *,
    folds: int,
    lace_scores: np.ndarray,
    weights: np.ndarray | None = None,
    seed: int = 7,
) -> dict[str, object]:
    """Patient-grouped cross-validation of the whole procedure (fit, early stopping,
    calibration, threshold inside each fold's training patients), with LACE on the same folds."""
    results = []
    for number, (train_rows, test_rows) in enumerate(
        grouped_folds(labels, patient_ids, folds, seed + 1), start=1
    ):
        model, facts = fit_model(
            raw.iloc[train_rows].reset_index(drop=True),
            labels[train_rows],
            patient_ids[train_rows],
            weights=None if weights is None else weights[train_rows],
            seed=seed,
        )
        probs = model.probabilities(model.coder.matrix(raw.iloc[test_rows]))
        y = labels[test_rows]
        results.append(
            {
                "fold": number,
                "rows": int(test_rows.size),
                "patients": int(np.unique(patient_ids[test_rows]).size),
                "events": int(y.sum()),
                "auroc": auroc(y, probs),
                "auprc": auprc(y, probs),
                "lace_auroc": auroc(y, lace_scores[test_rows].astype(float)),
                "alert_rate": float(model.alerts(probs).mean()),
                "rounds": facts["rounds"],
            }
        )
    summary = {
        f"{name}_{stat}": float(getattr(np, stat)([r[name] for r in results]))
        for name in ("auroc", "auprc", "lace_auroc")
        for stat in ("mean", "std")
    }
    return {"folds": folds, "grouping": "patient_nbr", "results": results, **summary}


def version_of(data_fingerprint: str, booster: lgb.Booster) -> str:
    return model_version(NAME, data_fingerprint, booster.model_to_string())


def fingerprint(path: Path) -> str:
    """SHA-256 of the training file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- wording factors for a clinician --------------------------------------------------------

DISPOSITIONS = {
    "1": "discharged home",
    "2": "transferred to another short-term hospital",
    "3": "discharged to a skilled nursing facility",
    "4": "discharged to an intermediate care facility",
    "5": "transferred to another inpatient care institution",
    "6": "discharged home with home health service",
    "7": "left against medical advice",
    "8": "discharged home under a home IV provider",
    "9": "admitted as an inpatient to this hospital",
    "10": "neonate discharged to another hospital",
    "11": "died in hospital",
    "12": "still a patient or expected back for outpatient services",
    "13": "discharged to hospice at home",
    "14": "discharged to a hospice facility",
    "15": "transferred to a swing bed in this institution",
    "16": "referred to another institution for outpatient services",
    "17": "referred to this institution for outpatient services",
    "22": "discharged to a rehabilitation facility",
    "23": "discharged to a long-term care hospital",
    "24": "discharged to a Medicaid-certified nursing facility",
    "27": "transferred to a federal health care facility",
    "28": "transferred to a psychiatric hospital or unit",
    "29": "transferred to a critical access hospital",
    "30": "transferred to another type of health care institution",
}
ADMISSION_TYPES = {
    "1": "emergency admission",
    "2": "urgent admission",
    "3": "elective admission",
    "4": "newborn admission",
    "7": "admission through a trauma center",
}
ADMISSION_SOURCES = {
    "1": "admitted on physician referral",
    "2": "admitted on clinic referral",
    "3": "admitted on HMO referral",
    "4": "transferred in from another hospital",
    "5": "transferred in from a skilled nursing facility",
    "6": "transferred in from another health care facility",
    "7": "admitted through the emergency room",
    "8": "admitted by court or law enforcement",
}
COUNT_WORDS = {
    "time_in_hospital": ("day in hospital this stay", "days in hospital this stay"),
    "num_lab_procedures": ("lab test this stay", "lab tests this stay"),
    "num_procedures": ("procedure this stay", "procedures this stay"),
    "num_medications": ("distinct medication this stay", "distinct medications this stay"),
    "number_outpatient": (
        "outpatient visit in the prior year",
        "outpatient visits in the prior year",
    ),
    "number_emergency": ("emergency visit in the prior year", "emergency visits in the prior year"),
    "number_inpatient": ("inpatient stay in the prior year", "inpatient stays in the prior year"),
    "number_diagnoses": ("diagnosis recorded", "diagnoses recorded"),
    "prior_year_visits": (
        "visit of any kind in the prior year",
        "visits of any kind in the prior year",
    ),
    "drugs_used": ("diabetes medication at discharge", "diabetes medications at discharge"),
    "drugs_changed": ("diabetes medication dose changed", "diabetes medication doses changed"),
    "prior_encounters": ("earlier encounter on record", "earlier encounters on record"),
    "prior_days_in_hospital": (
        "day in hospital in earlier encounters",
        "days in hospital in earlier encounters",
    ),
    "prior_acute_admissions": ("earlier emergency admission", "earlier emergency admissions"),
}
DOSE_WORDS = {
    "Up": "dose raised",
    "Down": "dose lowered",
    "Steady": "dose unchanged",
    "No": "not prescribed",
}
LAB_WORDS = {"A1Cresult": "HbA1c", "max_glu_serum": "maximum serum glucose"}


def word(feature: str, values: Mapping[str, object]) -> str:
    """A factor as a clinician reads it, with the encounter's own value, e.g. "3 inpatient stays
    in the prior year" or "discharged to a skilled nursing facility"."""
    value = values[feature]
    if feature in COUNT_WORDS:
        return _count(value, *COUNT_WORDS[feature])
    if feature == "charlson_index":
        return f"Charlson comorbidity index {_number(value)} (from the recorded diagnoses)"
    text = str(value) if value is not None else ""
    if feature == "discharge_disposition_id":
        return DISPOSITIONS.get(text, "discharge disposition not recorded")
    if feature == "admission_type_id":
        return ADMISSION_TYPES.get(text, "admission type not recorded")
    if feature == "admission_source_id":
        return ADMISSION_SOURCES.get(text, "admission source not recorded")
    if feature == "medical_specialty":
        return f"admitting specialty: {text}" if text else "admitting specialty not recorded"
    if feature.endswith("_chapter"):
        which = {"diag_1": "primary", "diag_2": "secondary", "diag_3": "additional"}[feature[:6]]
        shown = text.replace("_", " ")
        return f"{which} diagnosis: {shown}" if text != "missing" else f"no {which} diagnosis"
    if feature == "diag_1_code":
        return f"primary diagnosis ICD-9 {text}" if text else "primary diagnosis not recorded"
    if feature in LAB_WORDS:
        lab = LAB_WORDS[feature]
        return f"{lab} not measured" if text in ("", "None") else f"{lab} {text}"
    if feature in ("insulin", "metformin"):
        return f"{feature} {DOSE_WORDS.get(text, 'not recorded')}"
    if feature == "change":
        return "diabetes medication changed this stay" if text == "Ch" else "no medication change"
    if feature == "diabetesMed":
        return "on diabetes medication" if text == "Yes" else "no diabetes medication prescribed"
    assert feature in CATEGORICAL_FEATURES or feature in FEATURE_NAMES, feature
    return f"{feature.replace('_', ' ')}: {text}"


def _number(value: object) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "unknown"
    return "unknown" if np.isnan(number) else f"{number:g}"


def _count(value: object, singular: str, plural: str) -> str:
    shown = _number(value)
    if shown == "unknown":
        return f"{plural} not recorded"
    return f"{shown} {singular if shown == '1' else plural}"
