"""Clinical early-warning scores the model is compared with: qSOFA, SIRS and NEWS2.

Each is computed hour by hour on an `HourlyGrid` from that hour's and earlier values only: a
signal's value at hour i is its last measurement in a look-back window ending at hour i
(vitals: the last 4 hours, rows i-3..i; labs and FiO2, charted with blood gases: the last 24
hours). A signal with no value in its window scores 0 points, as a bedside chart would leave the
criterion unmet.

- qSOFA (Singer M et al., JAMA 2016;315(8):801-810, Sepsis-3): respiratory rate >= 22/min,
  systolic BP <= 100 mmHg, altered mentation (GCS < 15). The PhysioNet 2019 data carry no GCS,
  so qSOFA here counts 2 of its 3 criteria: its maximum is 2, and its standard alert (>= 2) fires
  only when both remaining criteria are met.
- SIRS (Bone RC et al., Chest 1992;101(6):1644-1655): temperature > 38 or < 36 Cel; heart rate
  > 90/min; respiratory rate > 20/min or PaCO2 < 32 mmHg; WBC > 12 or < 4 x10^3/uL (the "> 10%
  bands" alternative is not in the data). Alert at >= 2.
- NEWS2 (Royal College of Physicians, National Early Warning Score 2, 2017): respiration rate,
  SpO2 on scale 1 (scale 2, for hypercapnic respiratory failure, cannot be told from the data),
  air or oxygen (FiO2 > 0.21 read as supplemental oxygen: 2 points), systolic BP, pulse,
  consciousness (not in the data: scored 0, alert), temperature. The chart records whole numbers
  (temperature to 0.1 degree), so values are rounded half-up to that precision before banding.
  The standard threshold is the aggregate >= 5 ("urgent response"); the chart's other trigger, a
  single parameter scoring 3, is available from `news2_components` but is not the alert here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from careloop.sepsis.grid import HourlyGrid

VITAL_WINDOW_HOURS = 4
LAB_WINDOW_HOURS = 24


def carry_forward(column: np.ndarray, window: int) -> np.ndarray:
    """Each hour's last value measured within the `window` hours ending at that hour, else NaN."""
    column = np.asarray(column, dtype=float)
    rows = np.arange(column.size)
    measured = np.where(np.isnan(column), -1, rows)
    last = np.maximum.accumulate(measured) if column.size else measured
    fresh = (last >= 0) & (rows - last < window)
    return np.where(fresh, column[np.maximum(last, 0)], np.nan)


def _vital(grid: HourlyGrid, name: str) -> np.ndarray:
    return carry_forward(grid.column(name), VITAL_WINDOW_HOURS)


def _lab(grid: HourlyGrid, name: str) -> np.ndarray:
    return carry_forward(grid.column(name), LAB_WINDOW_HOURS)


def qsofa(grid: HourlyGrid) -> np.ndarray:
    """qSOFA on 2 of 3 criteria (no GCS in the data): 0..2 per hour."""
    # comparisons with NaN are False: a criterion with no recent value is unmet
    tachypnoea = _vital(grid, "resp") >= 22
    hypotension = _vital(grid, "sbp") <= 100
    return tachypnoea.astype(int) + hypotension.astype(int)


def sirs(grid: HourlyGrid) -> np.ndarray:
    """The number of SIRS criteria met (0..4) per hour."""
    temp = _vital(grid, "temp")
    resp = _vital(grid, "resp")
    paco2 = _lab(grid, "paco2")
    wbc = _lab(grid, "wbc")
    criteria = (
        (temp > 38) | (temp < 36),
        _vital(grid, "hr") > 90,
        (resp > 20) | (paco2 < 32),
        (wbc > 12) | (wbc < 4),
    )
    return np.sum(criteria, axis=0).astype(int)


def _round_half_up(values: np.ndarray, decimals: int = 0) -> np.ndarray:
    scale = 10.0**decimals
    return np.floor(values * scale + 0.5) / scale


def _band(values: np.ndarray, upper_edges: list[float], points: list[int]) -> np.ndarray:
    """Points of the first band whose inclusive upper edge holds the value; NaN scores 0.

    `points` has one more entry than `upper_edges`: the last band is open above.
    """
    index = np.searchsorted(np.asarray(upper_edges, dtype=float), values, side="left")
    scored = np.asarray(points)[np.minimum(index, len(points) - 1)]
    return np.where(np.isnan(values), 0, scored).astype(int)


def news2_respiration(resp: np.ndarray) -> np.ndarray:
    """<=8: 3, 9-11: 1, 12-20: 0, 21-24: 2, >=25: 3."""
    return _band(_round_half_up(resp), [8, 11, 20, 24], [3, 1, 0, 2, 3])


def news2_spo2_scale1(spo2: np.ndarray) -> np.ndarray:
    """<=91: 3, 92-93: 2, 94-95: 1, >=96: 0."""
    return _band(_round_half_up(spo2), [91, 93, 95], [3, 2, 1, 0])


def news2_oxygen(fio2: np.ndarray) -> np.ndarray:
    """Supplemental oxygen (FiO2 above room air's 0.21): 2, air or unknown: 0."""
    return np.where(fio2 > 0.21, 2, 0).astype(int)


def news2_systolic(sbp: np.ndarray) -> np.ndarray:
    """<=90: 3, 91-100: 2, 101-110: 1, 111-219: 0, >=220: 3."""
    return _band(_round_half_up(sbp), [90, 100, 110, 219], [3, 2, 1, 0, 3])


def news2_pulse(hr: np.ndarray) -> np.ndarray:
    """<=40: 3, 41-50: 1, 51-90: 0, 91-110: 1, 111-130: 2, >=131: 3."""
    return _band(_round_half_up(hr), [40, 50, 90, 110, 130], [3, 1, 0, 1, 2, 3])


def news2_temperature(temp: np.ndarray) -> np.ndarray:
    """<=35.0: 3, 35.1-36.0: 1, 36.1-38.0: 0, 38.1-39.0: 1, >=39.1: 2."""
    return _band(_round_half_up(temp, 1), [35.0, 36.0, 38.0, 39.0], [3, 1, 0, 1, 2])


def news2_components(grid: HourlyGrid) -> dict[str, np.ndarray]:
    """Each NEWS2 parameter's points per hour (consciousness always 0: not in the data)."""
    return {
        "respiration": news2_respiration(_vital(grid, "resp")),
        "spo2": news2_spo2_scale1(_vital(grid, "spo2")),
        "oxygen": news2_oxygen(_lab(grid, "fio2")),
        "systolic": news2_systolic(_vital(grid, "sbp")),
        "pulse": news2_pulse(_vital(grid, "hr")),
        "consciousness": np.zeros(grid.hours, dtype=int),
        "temperature": news2_temperature(_vital(grid, "temp")),
    }


def news2(grid: HourlyGrid) -> np.ndarray:
    """The NEWS2 aggregate per hour (0..16 here, consciousness being unavailable)."""
    components = news2_components(grid)
    return np.sum(list(components.values()), axis=0).astype(int)


BASELINES: dict[str, tuple[Callable[[HourlyGrid], np.ndarray], int]] = {
    "qsofa": (qsofa, 2),
    "sirs": (sirs, 2),
    "news2": (news2, 5),
}


def alert(name: str, grid: HourlyGrid) -> np.ndarray:
    """Whether the named baseline is at or above its standard alert threshold, per hour."""
    score, threshold = BASELINES[name]
    return score(grid) >= threshold
