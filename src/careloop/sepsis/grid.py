"""One stay as an hourly grid of ICU signals, read from a patient timeline.

This is the single bridge from a `PatientTimeline` (whatever its source: PhysioNet files through
`careloop.sources.physionet`, or FHIR Observations from the store) to the arrays features and
scores are computed on. It asks the timeline only by LOINC code (`careloop.sepsis.signals`).

Row `i` holds what was measured in the hour [start + i h, start + (i + 1) h): the last value
in that hour, or NaN when nothing was. Values outside a signal's plausible range are dropped
and counted, never passed on as if they were measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from careloop.sepsis.signals import SIGNALS
from careloop.timeline import PatientTimeline

HOUR = timedelta(hours=1)
SIGNAL_COLUMNS = {signal.name: index for index, signal in enumerate(SIGNALS)}


@dataclass
class HourlyGrid:
    """A stay's signals by hour, with what the features need to know about the patient."""

    stay_id: str
    start: datetime  # the start of hour 0 (aware UTC)
    values: np.ndarray  # shape (hours, len(SIGNALS)), float64, NaN = not measured that hour
    age: float | None = None  # years at the start of the stay
    sex: str | None = None  # FHIR administrative gender
    unit: str | None = None  # ICU unit, when the source says
    implausible: dict[str, int] = field(default_factory=dict)  # signal name -> values dropped

    @property
    def hours(self) -> int:
        return int(self.values.shape[0])

    def column(self, name: str) -> np.ndarray:
        return self.values[:, SIGNAL_COLUMNS[name]]


def grid_from_timeline(
    timeline: PatientTimeline,
    start: datetime,
    hours: int,
    *,
    stay_id: str | None = None,
    unit: str | None = None,
) -> HourlyGrid:
    """The hourly grid of `hours` hours from `start`, from the timeline's LOINC-coded points."""
    if hours < 0:
        raise ValueError("a stay cannot have a negative number of hours")
    values = np.full((hours, len(SIGNALS)), np.nan)
    end = start + hours * HOUR
    implausible: dict[str, int] = {}
    for column, signal in enumerate(SIGNALS):
        for point in timeline.observations(signal.loinc, start, end):
            if point.value is None:
                continue
            if not signal.low <= point.value <= signal.high:
                implausible[signal.name] = implausible.get(signal.name, 0) + 1
                continue
            row = int((point.time - start) // HOUR)
            values[row, column] = point.value  # points come in time order: the last one wins
    return HourlyGrid(
        stay_id=stay_id or timeline.patient_id,
        start=start,
        values=values,
        age=timeline.age_at(start),
        sex=timeline.sex,
        unit=unit,
        implausible=implausible,
    )
