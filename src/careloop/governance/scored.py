"""What every governance tool reads: one model's predictions on a data set, a row per prediction.

A row is the unit the model scores (an encounter at discharge, a patient-hour on the ward). Rows
carry the patient they belong to, because every interval is a bootstrap over patients, never over
rows, and the demographic groups the fairness tables are cut by.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

UNKNOWN = "unknown"  # the group of a row whose demographic field is missing


@dataclass(frozen=True)
class ScoredSet:
    """Predictions of `version` on a data set.

    `labels` is None when the outcomes have not arrived yet (drift can still be judged, performance
    cannot). `alerts` says whether the model's operating point would alert on the row. `features`
    holds the model's inputs (rows x `feature_names`) for input-drift checks; it may be None.
    """

    model: str
    version: str
    unit: str
    patient_ids: np.ndarray
    probs: np.ndarray
    alerts: np.ndarray
    labels: np.ndarray | None
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    features: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()
    row_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        rows = len(self.probs)
        sized = {"patient_ids": self.patient_ids, "alerts": self.alerts}
        if self.labels is not None:
            sized["labels"] = self.labels
        sized.update({f"group {name!r}": values for name, values in self.groups.items()})
        for name, values in sized.items():
            if len(values) != rows:
                raise ValueError(f"{name} has {len(values)} rows, the predictions {rows}")
        if self.features is not None and self.features.shape != (rows, len(self.feature_names)):
            raise ValueError(
                f"features are {self.features.shape}, expected {(rows, len(self.feature_names))}"
            )

    @property
    def rows(self) -> int:
        return len(self.probs)

    @property
    def has_outcomes(self) -> bool:
        return self.labels is not None

    def subset(self, mask: np.ndarray) -> ScoredSet:
        """The rows where `mask` is true, everything else alike."""
        return ScoredSet(
            model=self.model,
            version=self.version,
            unit=self.unit,
            patient_ids=self.patient_ids[mask],
            probs=self.probs[mask],
            alerts=self.alerts[mask],
            labels=None if self.labels is None else self.labels[mask],
            groups={name: values[mask] for name, values in self.groups.items()},
            features=None if self.features is None else self.features[mask],
            feature_names=self.feature_names,
            row_ids=None if self.row_ids is None else self.row_ids[mask],
        )


class GovernedModel(Protocol):
    """A trained model as governance sees it, whatever its kind (see `adapters.load_governed`)."""

    name: str  # the model family: "sepsis", "readmission"
    version: str
    feature_names: tuple[str, ...]
    artifact: Path  # the directory holding the model and its card

    def score_data(
        self,
        data: Path,
        *,
        limit: int | None = None,
        patients: Callable[[str], bool] | None = None,
    ) -> ScoredSet:
        """Score every scorable unit of `data` (the model's own data layout), or only those of
        the patients `patients` accepts (a model may skip the others before any work)."""
        ...

    def timed_predictions(self, data: Path, count: int) -> Sequence[float]:
        """Seconds taken to score each of `count` single units of `data`, one at a time, as the
        service would at the bedside (for the gate's p95 latency)."""
        ...

    def training_holdout(self) -> dict[str, object] | None:
        """The rule that kept patients out of training, if the model was trained with one
        (the gate and the card judge on those patients only), else None."""
        ...
