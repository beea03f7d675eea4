"""Scoring a patient's timeline (what CDS Hooks and the worklist call) and a population (batch).

A timeline comes from any source: the store through the access layer, or the PhysioNet reader.
The window scored runs hour by hour from `start` to `end`; a window with too little data is
answered as insufficient, never with a made-up risk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from careloop.sepsis.features import stay_features
from careloop.sepsis.grid import HOUR, grid_from_timeline
from careloop.sepsis.model import SepsisModel
from careloop.sepsis.signals import SIGNALS
from careloop.timeline import PatientTimeline

MIN_HOURS = 2
MAX_HOURS = 24 * 60  # a window longer than 60 days is not an ICU stay
VITAL_COLUMNS = [index for index, signal in enumerate(SIGNALS) if signal.vital]


@dataclass
class RiskScore:
    """One patient's hourly risk over a window, the alert decisions and why the last hour."""

    patient_id: str
    model_version: str
    start: datetime
    probabilities: list[float] = field(default_factory=list)
    alert_states: list[int] = field(default_factory=list)
    notifications: list[int] = field(default_factory=list)
    factors: list[str] = field(default_factory=list)  # the last hour's top factors, worded
    insufficient: str | None = None  # why no score was given, when none was

    @property
    def current(self) -> float | None:
        return self.probabilities[-1] if self.probabilities else None


def score_timeline(
    model: SepsisModel,
    timeline: PatientTimeline,
    start: datetime,
    end: datetime,
    *,
    unit: str | None = None,
) -> RiskScore:
    """Hourly risk from `start` up to the hour containing `end`."""
    hours = int((end - start) // HOUR) + 1
    result = RiskScore(timeline.patient_id, model.version, start)
    if hours < MIN_HOURS:
        result.insufficient = f"fewer than {MIN_HOURS} hours of data"
        return result
    if hours > MAX_HOURS:
        result.insufficient = f"the window is longer than {MAX_HOURS // 24} days"
        return result
    grid = grid_from_timeline(timeline, start, hours, unit=unit)
    if np.isnan(grid.values[:, VITAL_COLUMNS]).all():
        result.insufficient = "no vital signs in the window"
        return result
    features = stay_features(grid)
    probabilities = model.probabilities(features)
    result.probabilities = [float(p) for p in probabilities]
    result.alert_states = [int(s) for s in model.policy.states(probabilities)]
    result.notifications = [int(s) for s in model.policy.notifications(probabilities)]
    result.factors = [f.text for f in model.explain(features, grid, hours - 1)]
    return result


def score_population(
    model: SepsisModel, windows: Iterable[tuple[PatientTimeline, datetime, datetime]]
) -> list[RiskScore]:
    """Batch scoring: each (timeline, start, end) as `score_timeline` would."""
    return [score_timeline(model, timeline, start, end) for timeline, start, end in windows]
