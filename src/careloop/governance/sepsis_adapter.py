"""The sepsis model behind the governance interface.

`GovernedSepsis` scores PhysioNet-layout data one row per patient-hour: the stay is the patient,
the alert is the policy's hourly alert state, and the groups are sex, age band and ICU unit.
`careloop train sepsis` holds a fifth of the stays out of training (`HoldoutRule`, recorded in
the model's metadata), so the card, the gate and the committee report judge it on stays it never
saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from careloop.governance.scored import ScoredSet
from careloop.sepsis.evaluate import EvalStay, load_stays
from careloop.sepsis.features import FEATURE_NAMES
from careloop.sepsis.grid import HOUR
from careloop.sepsis.model import SepsisModel
from careloop.sepsis.scoring import MIN_HOURS, score_timeline
from careloop.sources.physionet import read_physionet

UNIT = "patient-hour"
TIMED_HOURS = 24  # the bedside request scores the first day of a stay


@dataclass
class GovernedSepsis:
    """A sepsis model artifact as governance sees it (see `GovernedModel`)."""

    model: SepsisModel
    artifact: Path
    version: str
    name: str = "sepsis"
    feature_names: tuple[str, ...] = field(default=tuple(FEATURE_NAMES))

    @classmethod
    def load(cls, artifact: Path) -> GovernedSepsis:
        model = SepsisModel.load(artifact)
        return cls(model, artifact, model.version)

    def score_data(
        self,
        data: Path,
        *,
        limit: int | None = None,
        patients: Callable[[str], bool] | None = None,
    ) -> ScoredSet:
        """Every patient-hour of the scorable stays in `data` (unscorable stays are left out,
        as in evaluation), of the stays `patients` accepts if given."""
        stays, _summary = load_stays(data, limit=limit, keep=patients)
        if not stays:
            raise ValueError(f"no stay in {data} could be scored")
        return score_stays(self.model, stays)

    def timed_predictions(self, data: Path, count: int) -> Sequence[float]:
        """Seconds to score each of the first `count` stays' first day (features, model,
        policy and explanation: `score_timeline`, what the bedside request runs after reading
        the record)."""
        seconds: list[float] = []
        for stay in read_physionet(data):
            if len(seconds) >= count:
                break
            if not stay.scorable or stay.hours < MIN_HOURS:
                continue
            end = stay.start + (min(stay.hours, TIMED_HOURS) - 1) * HOUR
            began = time.perf_counter()
            score_timeline(self.model, stay.timeline, stay.start, end, unit=stay.unit)
            seconds.append(time.perf_counter() - began)
        return seconds

    def training_holdout(self) -> dict[str, object] | None:
        holdout = self.model.trained.get("holdout")
        return dict(holdout) if isinstance(holdout, dict) else None


def score_stays(model: SepsisModel, stays: Sequence[EvalStay]) -> ScoredSet:
    """Every hour of `stays` scored by `model`, with its alert policy's state."""
    probs = [model.probabilities(stay.data.features) for stay in stays]
    return scored_set(model.version, stays, probs, [model.policy.states(p) for p in probs])


def scored_set(
    version: str,
    stays: Sequence[EvalStay],
    probs: Sequence[np.ndarray],
    alerts: Sequence[np.ndarray],
) -> ScoredSet:
    """The rows of `stays` (one per hour) with their probabilities and alert states."""
    hours = np.array([len(stay.data.features) for stay in stays])
    stay_ids = np.array([stay.data.stay_id for stay in stays])
    has_labels = all(stay.data.labels is not None for stay in stays)
    labels = np.concatenate([stay.data.labels for stay in stays]) if has_labels else None
    hour_in_stay = np.arange(hours.sum()) - np.repeat(np.cumsum(hours) - hours, hours)
    patient_ids = np.repeat(stay_ids, hours)
    return ScoredSet(
        model="sepsis",
        version=version,
        unit=UNIT,
        patient_ids=patient_ids,
        probs=np.concatenate(probs).astype(np.float64),
        alerts=np.concatenate(alerts).astype(np.int8),
        labels=None if labels is None else labels.astype(np.int8),
        groups={
            "sex": np.repeat([stay.sex for stay in stays], hours),
            "age_band": np.repeat([stay.age_band for stay in stays], hours),
            "unit": np.repeat([stay.unit for stay in stays], hours),
        },
        features=np.concatenate([stay.data.features for stay in stays]).astype(np.float32),
        feature_names=tuple(FEATURE_NAMES),
        row_ids=np.char.add(np.char.add(patient_ids.astype(str), "/"), hour_in_stay.astype(str)),
    )
