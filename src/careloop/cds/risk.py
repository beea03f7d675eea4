"""A patient's deterioration picture for `patient-view`: sepsis risk from the shipped model with
its uncertainty, and NEWS2 from the latest vital signs, both as of the latest vital sign.

The uncertainty shown with a probability is what the validation can vouch for: among the
out-of-fold patient-hours whose predictions fell in the same tenth of the scale (the reliability
bins in `cv.json` next to the model), how often sepsis followed, with its 95% Wilson interval.
A probability from a sparse band gets a wide interval, which is the honest answer; a band whose
observed rate differs from the prediction shows the reader the calibration as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from careloop.sepsis.baselines import news2, news2_components
from careloop.sepsis.grid import HOUR, grid_from_timeline
from careloop.sepsis.model import SepsisModel
from careloop.sepsis.scoring import RiskScore, score_timeline
from careloop.sepsis.signals import SIGNALS
from careloop.stats import wilson
from careloop.timeline import PatientTimeline

WINDOW_HOURS = 48
VITAL_CODES = [signal.loinc for signal in SIGNALS if signal.vital]
BANDS = 10


@dataclass(frozen=True)
class Interval:
    """The observed sepsis rate in validation for predictions in [band_low, band_high)."""

    band_low: float
    band_high: float
    observed: float
    low: float  # 95% Wilson interval of `observed`
    high: float
    support: int  # validation patient-hours behind it


@dataclass(frozen=True)
class RiskPicture:
    as_of: datetime | None  # the latest vital sign; None when there is none
    sepsis: RiskScore | None  # None when no model is installed
    interval: Interval | None
    news2: int | None
    news2_parts: dict[str, int]
    alert_threshold: float = 0.0  # the model's alert policy threshold

    @property
    def sepsis_alert(self) -> bool:
        score = self.sepsis
        return bool(score and score.insufficient is None and score.alert_states[-1])


class CalibrationBins:
    """Out-of-fold reliability bins: (mean predicted, observed rate, patient-hours)."""

    def __init__(self, bins: list[tuple[float, float, int]]) -> None:
        self.bins = sorted(bins)

    @classmethod
    def load(cls, model_dir: Path | None) -> CalibrationBins:
        path = model_dir / "cv.json" if model_dir else None
        if path is None or not path.exists():
            return cls([])
        reliability = json.loads(path.read_text())["out_of_fold"]["model"]["reliability"]
        return cls([(float(p), float(o), int(n)) for p, o, n in reliability])

    def interval(self, probability: float) -> Interval | None:
        """The validation band of `probability` (bins are tenths of the scale, as
        `sepsis.metrics.reliability_curve` makes them); None when the band is empty."""
        band = min(int(probability * BANDS), BANDS - 1)
        for mean, observed, count in self.bins:
            if min(int(mean * BANDS), BANDS - 1) == band:
                low, high = wilson(observed, count)
                return Interval(band / BANDS, (band + 1) / BANDS, observed, low, high, count)
        return None


def assess(
    timeline: PatientTimeline, model: SepsisModel | None, bins: CalibrationBins
) -> RiskPicture:
    """Sepsis risk and NEWS2 over the window ending at the latest vital sign."""
    latest = [point.time for code in VITAL_CODES if (point := timeline.latest(code))]
    if not latest:
        return RiskPicture(None, None, None, None, {})
    end = max(latest)
    start = end.replace(minute=0, second=0, microsecond=0) - (WINDOW_HOURS - 1) * HOUR
    sepsis = score_timeline(model, timeline, start, end) if model else None
    interval = None
    if sepsis is not None and sepsis.current is not None:
        interval = bins.interval(sepsis.current)
    grid = grid_from_timeline(timeline, start, WINDOW_HOURS)
    parts = {name: int(values[-1]) for name, values in news2_components(grid).items()}
    threshold = model.policy.threshold if model else 0.0
    return RiskPicture(end, sepsis, interval, int(news2(grid)[-1]), parts, threshold)
