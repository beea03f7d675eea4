"""The readmission model behind governance's `GovernedModel` interface: score an encounters file
into a `ScoredSet` (one row per encounter at discharge) for fairness, drift and the release gate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from careloop.governance.scored import ScoredSet
from careloop.readmission.data import read_encounters
from careloop.readmission.features import FEATURE_NAMES, at_risk, raw_features
from careloop.readmission.model import NAME, ReadmissionModel
from careloop.readmission.pipeline import score, scored_set


@dataclass
class GovernedReadmission:
    model: ReadmissionModel
    artifact: Path
    name: str = NAME
    # the encounters' features read for timing, per file: the gate times in several rounds, and
    # reading and coding the file again for each round is not what is being timed
    _timing_rows: dict[Path, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(FEATURE_NAMES)

    @classmethod
    def load(cls, artifact: Path) -> GovernedReadmission:
        return cls(ReadmissionModel.load(artifact), artifact)

    def score_data(
        self,
        data: Path,
        *,
        limit: int | None = None,
        patients: Callable[[str], bool] | None = None,
    ) -> ScoredSet:
        """Every encounter after which the patient could be readmitted (those ending in death are
        left out, as in training and the card), of the patients `patients` accepts if given, the
        first `limit` of them if given. History features see the whole file."""
        scored = score(self.model, read_encounters(data))
        wanted = at_risk(scored.encounters)
        if patients is not None:
            wanted &= np.array([patients(str(p)) for p in scored.encounters.patient_ids])
        return scored_set(self.model, scored, np.flatnonzero(wanted)[:limit])

    def timed_predictions(self, data: Path, count: int) -> Sequence[float]:
        """Seconds to code and score each of the first `count` encounters one at a time (their
        history features are computed beforehand, as the service keeps them)."""
        raw = self._timing_rows.get(data)
        if raw is None or len(raw) < count:
            raw = self._timing_rows[data] = raw_features(read_encounters(data, limit=count))
        seconds = []
        for row in range(min(count, len(raw))):
            started = time.perf_counter()
            self.model.probabilities(self.model.coder.matrix(raw.iloc[row : row + 1]))
            seconds.append(time.perf_counter() - started)
        return seconds

    def training_holdout(self) -> dict[str, object] | None:
        holdout = self.model.extra.get("holdout")
        return dict(holdout) if isinstance(holdout, dict) else None
