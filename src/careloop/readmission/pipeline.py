"""Train, score and evaluate the readmission model over an encounters file, side by side with
LACE: the work behind `careloop train / evaluate / predict readmission` and the governance
adapter, kept free of click so tests and other tools call it directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from careloop.governance.holdout import HoldoutRule
from careloop.governance.mitigation import reweighing_weights
from careloop.governance.scored import ScoredSet
from careloop.readmission.card import model_card
from careloop.readmission.data import GROUP_NAMES, Encounters, read_encounters
from careloop.readmission.features import EXCLUDED_INPUTS, FEATURE_NAMES, at_risk, raw_features
from careloop.readmission.lace import fit_lace_calibration, lace_components, lace_probability
from careloop.readmission.metrics import score_summary, subgroup_auroc
from careloop.readmission.model import (
    ALERT_SHARE,
    NAME,
    ReadmissionModel,
    cross_validate,
    fingerprint,
    fit_model,
    version_of,
)

if TYPE_CHECKING:
    from careloop.governance.model_card import FairnessSection

CONSENT_FILTER = "not applicable: public de-identified research data"
CITATION = (
    "Strack B, DeShazo JP, Gennings C, et al. Impact of HbA1c measurement on hospital "
    "readmission rates: analysis of 70,000 clinical database patient records. BioMed Research "
    "International 2014;2014:781670. Data: UCI Machine Learning Repository, CC BY 4.0."
)


@dataclass
class Scored:
    """A model's view of an encounters file: features, matrix, probabilities and alerts."""

    encounters: Encounters
    raw: pd.DataFrame
    matrix: np.ndarray
    probs: np.ndarray
    alerts: np.ndarray


def score(model: ReadmissionModel, encounters: Encounters) -> Scored:
    raw = raw_features(encounters)
    matrix = model.coder.matrix(raw)
    probs = model.probabilities(matrix)
    return Scored(encounters, raw, matrix, probs, model.alerts(probs))


def lace_threshold(scores: np.ndarray) -> int:
    """The LACE cut-off whose alert rate on `scores` is nearest the model's alert budget, so
    both are compared at the same workload."""
    rates = {s: float((scores >= s).mean()) for s in range(0, 20)}
    return min(rates, key=lambda s: (abs(rates[s] - ALERT_SHARE), -s))


def evaluate_rows(
    model: ReadmissionModel, scored: Scored, rows: np.ndarray, *, resamples: int = 500
) -> dict[str, object]:
    """Model and LACE on the selected rows (labels required), with subgroup AUROCs."""
    encounters = scored.encounters.subset(rows)
    labels = encounters.labels
    if labels is None:
        raise ValueError("evaluation needs the readmitted column")
    patients = encounters.patient_ids
    lace = lace_components(encounters)["lace"].to_numpy()
    lace_meta = model.extra.get("lace", {})
    rates = lace_meta.get("rates") or fit_lace_calibration(lace, labels)  # type: ignore[union-attr]
    cut = int(lace_meta.get("threshold", 10))  # type: ignore[union-attr]
    lace_probs = lace_probability(lace, rates)
    probs = scored.probs[rows]
    groups = {name: encounters.groups[name] for name in GROUP_NAMES}
    return {
        "model": score_summary(labels, probs, scored.alerts[rows], patients, resamples=resamples),
        "lace": {
            **score_summary(labels, lace_probs, lace >= cut, patients, resamples=resamples),
            "threshold": cut,
        },
        "subgroups": {
            "model": subgroup_auroc(labels, probs, groups),
            "lace": subgroup_auroc(labels, lace.astype(float), groups),
        },
    }


def train_artifact(
    data: Path,
    out: Path,
    *,
    cv_folds: int = 5,
    reweigh: str | None = None,
    limit: int | None = None,
) -> dict[str, object]:
    """Cross-validate, fit, calibrate and write the artifact (booster, model.json, cv.json,
    MODEL_CARD.md) to `out`, replacing what was there only once everything is written.
    Returns model.json's content."""
    encounters = read_encounters(data, limit=limit)
    if encounters.labels is None:
        raise ValueError(f"{data.name} has no readmitted column: training needs the outcomes")
    if reweigh is not None and reweigh not in GROUP_NAMES:
        raise ValueError(f"--reweigh takes one of {', '.join(GROUP_NAMES)}, not {reweigh!r}")
    rule = HoldoutRule()
    held = rule.mask(encounters.patient_ids)
    risk = at_risk(encounters)
    train_rows = np.flatnonzero(risk & ~held)
    raw = raw_features(encounters)
    lace = lace_components(encounters)["lace"].to_numpy()
    labels = encounters.labels
    patients = encounters.patient_ids
    weights = None
    if reweigh is not None:
        weights = reweighing_weights(encounters.groups[reweigh][train_rows], labels[train_rows])
    train_raw = raw.iloc[train_rows].reset_index(drop=True)
    cv = None
    if cv_folds >= 2:
        cv = cross_validate(
            train_raw,
            labels[train_rows],
            patients[train_rows],
            folds=cv_folds,
            lace_scores=lace[train_rows],
            weights=weights,
        )
    model, facts = fit_model(train_raw, labels[train_rows], patients[train_rows], weights=weights)
    print_ = fingerprint(data)
    model.version = version_of(print_, model.booster)
    model.extra = {
        "holdout": rule.as_dict(),
        "lace": {
            "rates": fit_lace_calibration(lace[train_rows], labels[train_rows]),
            "threshold": lace_threshold(lace[train_rows]),
        },
        "mitigation": {"reweigh": reweigh},
        "inputs_excluded": EXCLUDED_INPUTS,
        "trained": {
            **facts,
            "fingerprint": print_,
            "data": data.name,
            "consent_filter": CONSENT_FILTER,
            "citation": CITATION,
            "encounters_read": len(encounters),
            "expired_excluded": int((~risk).sum()),
            "training_encounters": int(train_rows.size),
            "training_patients": int(np.unique(patients[train_rows]).size),
            "training_events": int(labels[train_rows].sum()),
            "holdout_encounters": int((risk & held).sum()),
            "holdout_patients": int(np.unique(patients[risk & held]).size),
            "trained_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        },
    }
    holdout_rows = np.flatnonzero(risk & held)
    scored = score(model, encounters)
    metrics = evaluate_rows(model, scored, holdout_rows) if holdout_rows.size else {}
    model.extra["metrics"] = {"population": "held-out patients, not discharged dead", **metrics}
    governance = governance_files(model, scored, train_rows, holdout_rows)
    _write_atomically(model, cv, out, governance)
    return model.meta()


@dataclass(frozen=True)
class GovernanceFiles:
    """What the artifact carries for governance: the drift reference (the training rows'
    profile) and the fairness section on held-out patients (None when there are none)."""

    reference: dict[str, object]
    fairness: FairnessSection | None


def governance_files(
    model: ReadmissionModel, scored: Scored, train_rows: np.ndarray, holdout_rows: np.ndarray
) -> GovernanceFiles:
    from careloop.governance.drift import reference_profile
    from careloop.governance.model_card import fairness_section

    judged = scored_set(model, scored, holdout_rows) if holdout_rows.size else None
    reference = reference_profile(scored_set(model, scored, train_rows), judged=judged)
    if judged is None:
        return GovernanceFiles(reference, None)
    patients = np.unique(scored.encounters.patient_ids[holdout_rows]).size
    population = (
        f"{holdout_rows.size:,} discharges of {patients:,} "
        "patients held out of training (a hash of the patient number), those discharged dead "
        "left out; TPR, FPR and alert rate at the alert policy's threshold."
    )
    return GovernanceFiles(reference, fairness_section(judged, population))


def scored_set(model: ReadmissionModel, scored: Scored, rows: np.ndarray) -> ScoredSet:
    """The rows `rows` of a scored file as governance reads them."""
    encounters = scored.encounters.subset(rows)
    return ScoredSet(
        model=NAME,
        version=model.version,
        unit="encounter",
        patient_ids=encounters.patient_ids.astype(str),
        probs=scored.probs[rows],
        alerts=scored.alerts[rows],
        labels=None if encounters.labels is None else encounters.labels.astype(int),
        groups={name: encounters.groups[name].astype(str) for name in GROUP_NAMES},
        features=scored.matrix[rows],
        feature_names=tuple(FEATURE_NAMES),
        row_ids=encounters.encounter_ids.astype(str),
    )


def _write_atomically(
    model: ReadmissionModel, cv: dict[str, object] | None, out: Path, governance: GovernanceFiles
) -> None:
    from careloop.governance.artifact import write_artifact
    from careloop.governance.drift import write_reference
    from careloop.governance.model_card import FAIRNESS_FILE

    def fill(staging: Path) -> None:
        model.save(staging)
        if cv is not None:
            (staging / "cv.json").write_text(json.dumps(cv, indent=2))
        write_reference(staging, governance.reference)
        fairness = governance.fairness
        if fairness is not None:
            (staging / FAIRNESS_FILE).write_text(json.dumps(fairness.to_json(), indent=2))
        card = model_card(model.meta(), cv, fairness and fairness.markdown())
        (staging / "MODEL_CARD.md").write_text(card)

    write_artifact(out, fill)


def evaluation_rows(
    model: ReadmissionModel, encounters: Encounters, data: Path
) -> tuple[np.ndarray, str]:
    """The rows an evaluation may judge on, and why: on the training file, only the held-out
    patients; on any other file, every row. Encounters ending in death are never judged."""
    risk = at_risk(encounters)
    trained = model.extra.get("trained", {})
    holdout = model.extra.get("holdout")
    if isinstance(trained, dict) and holdout and trained.get("fingerprint") == fingerprint(data):
        held = HoldoutRule.from_dict(holdout).mask(encounters.patient_ids)  # type: ignore[arg-type]
        return np.flatnonzero(risk & held), "held-out patients of the training file"
    return np.flatnonzero(risk), "every patient (the file is not the training file)"
