"""Per-hour features of one ICU stay, each computed from that hour and the hours before it only.

`stay_features(grid)` turns an `HourlyGrid` (hours x signals) into an hours x features matrix
whose columns are named by `FEATURE_NAMES`. Row `h` depends on grid rows `0..h` only: every
window looks backward, every running quantity is a prefix (cumulative sums, forward fill), so a
model trained on these rows never sees the future. NaN means "undefined" (nothing measured yet,
too few points for a slope); LightGBM routes NaN itself, so nothing is imputed here.

Feature names are `<signal>__<kind>` for per-signal features (`resp__dev_baseline`) and bare
names for composites, scores and context (`shock_index`, `sofa_coag`, `news2_pulse`, `age`);
NEWS2 points come from `careloop.sepsis.baselines.news2_components`, so the model and the
baseline score share one definition. `describe_feature` turns a
name back into something an explanation can show a clinician.

Everything is vectorized over hours and signals with numpy; the only Python loops run over the
handful of window lengths and the first six baseline hours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import numpy as np

from careloop.sepsis.baselines import LAB_WINDOW_HOURS, VITAL_WINDOW_HOURS, news2_components
from careloop.sepsis.grid import SIGNAL_COLUMNS, HourlyGrid
from careloop.sepsis.signals import SIGNAL_BY_NAME, SIGNALS

WINDOWS: Final = (6, 12, 24)  # hours of the rolling statistics on vital signs
TREND_HOURS: Final = 6  # least-squares slope and last-minus-earlier delta
BASELINE_HOURS: Final = 6  # the stay's first hours that define the personal baseline
COUNT_HOURS: Final = 24  # recent measurement count (how closely the patient is watched)
MAD_TO_SD: Final = 1.4826  # MAD x this estimates the standard deviation of a normal sample

# The smallest spread a baseline deviation is divided by, in the signal's unit: a stable first
# six hours (MAD ~ 0) must not turn an ordinary change into a huge z-score. Roughly the
# measurement noise of each vital at the bedside.
SPREAD_FLOOR: Final = {
    "hr": 5.0,
    "spo2": 1.0,
    "temp": 0.3,
    "sbp": 5.0,
    "map": 4.0,
    "dbp": 4.0,
    "resp": 2.0,
    "etco2": 2.0,
}

_NAMES: Final = tuple(signal.name for signal in SIGNALS)
_VITALS: Final = tuple(signal.name for signal in SIGNALS if signal.vital)
_LABS: Final = tuple(signal.name for signal in SIGNALS if not signal.vital)
_VITAL_COLS: Final = np.array([SIGNAL_COLUMNS[name] for name in _VITALS])
_LAB_COLS: Final = np.array([SIGNAL_COLUMNS[name] for name in _LABS])

# SpO2/FiO2 cut-offs standing in for the SOFA PaO2/FiO2 ones (400, 300, 200, 100 mmHg), from the
# linear relation SpO2/FiO2 = 64 + 0.84 x PaO2/FiO2 (Rice et al., Chest 2007;132:410-417).
SF_CUTOFFS: Final = (400.0, 316.0, 232.0, 148.0)


@dataclass(frozen=True, slots=True)
class FeatureInfo:
    signal: str | None  # the signal the feature is about, None for context features
    kind: str  # "deviation from baseline", "rolling mean", ...
    window_hours: int | None  # how far back it looks, None when it is unbounded or instant
    display: str  # for a clinician: "respiratory rate, deviation from baseline"


# kind suffix -> (description, window in hours or None); rolling kinds are added below.
_SIGNAL_KINDS: dict[str, tuple[str, int | None]] = {
    "last": ("last value", None),
    "hours_since": ("hours since last measured", None),
    "count": ("measurements so far", None),
    f"count_{COUNT_HOURS}h": (f"measurements in the last {COUNT_HOURS} h", COUNT_HOURS),
    "missing": ("not measured this hour", 1),
    f"slope_{TREND_HOURS}h": ("trend (slope per hour)", TREND_HOURS),
    f"delta_{TREND_HOURS}h": (f"change over {TREND_HOURS} h", TREND_HOURS),
    "baseline": ("personal baseline (median of first hours)", BASELINE_HOURS),
    "dev_baseline": ("deviation from baseline", None),
    "dev_baseline_z": ("deviation from baseline in robust SDs", None),
    "prev": ("previous value", None),
    "change": ("change since previous value", None),
}
for _w in WINDOWS:
    for _stat, _word in (("mean", "mean"), ("min", "minimum"), ("max", "maximum"), ("std", "SD")):
        _SIGNAL_KINDS[f"{_stat}_{_w}h"] = (f"rolling {_word}", _w)

# composite / context name -> (signal or None, kind, window, display)
_OTHER: Final[dict[str, tuple[str | None, str, int | None, str]]] = {
    "shock_index": (None, "composite", None, "shock index (heart rate / systolic BP)"),
    "pulse_pressure": (None, "composite", None, "pulse pressure (systolic - diastolic BP)"),
    "spo2_fio2": (None, "composite", None, "SpO2/FiO2 ratio"),
    "bun_creatinine": (None, "composite", None, "BUN/creatinine ratio"),
    "sofa_resp": ("spo2", "SOFA points", None, "SOFA respiratory points (SpO2/FiO2 proxy)"),
    "sofa_coag": ("platelets", "SOFA points", None, "SOFA coagulation points (platelets)"),
    "sofa_liver": ("bili_total", "SOFA points", None, "SOFA liver points (bilirubin)"),
    "sofa_cardio": ("map", "SOFA points", None, "SOFA cardiovascular points (MAP < 70)"),
    "sofa_renal": ("creatinine", "SOFA points", None, "SOFA renal points (creatinine)"),
    "sofa_partial": (None, "SOFA points", None, "partial SOFA score (5 of 6 organs, no GCS)"),
    "sofa_partial__rise_24h": (
        None,
        "SOFA points",
        24,
        "partial SOFA rise above its 24 h minimum",
    ),
    "news2_total": (None, "NEWS2 points", None, "NEWS2 score (without consciousness)"),
    "age": (None, "context", None, "age (years)"),
    "sex_male": (None, "context", None, "sex (1 male, 0 female)"),
    "unit_micu": (None, "context", None, "medical ICU"),
    "unit_sicu": (None, "context", None, "surgical ICU"),
    "hour": (None, "context", None, "hours since the start of the ICU stay"),
}


# NEWS2 component -> the signal it scores and the look-back `news2_components` uses for it.
# Consciousness is left out: the data have no GCS, so it is always 0.
_NEWS2_SIGNALS: Final = {
    "respiration": ("resp", VITAL_WINDOW_HOURS),
    "spo2": ("spo2", VITAL_WINDOW_HOURS),
    "oxygen": ("fio2", LAB_WINDOW_HOURS),
    "systolic": ("sbp", VITAL_WINDOW_HOURS),
    "pulse": ("hr", VITAL_WINDOW_HOURS),
    "temperature": ("temp", VITAL_WINDOW_HOURS),
}
for _part, (_signal, _hours) in _NEWS2_SIGNALS.items():
    _OTHER[f"news2_{_part}"] = (
        _signal,
        "NEWS2 points",
        _hours,
        f"NEWS2 points for {SIGNAL_BY_NAME[_signal].display}",
    )


class _Columns:
    """Collects feature blocks with their names, so names and columns cannot drift apart."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.blocks: list[np.ndarray] = []

    def add(self, names: Sequence[str], block: np.ndarray) -> None:
        block = block.reshape(block.shape[0], -1)
        assert block.shape[1] == len(names)
        self.names.extend(names)
        self.blocks.append(block)

    def per_signal(self, signals: Sequence[str], kind: str, block: np.ndarray) -> None:
        self.add([f"{name}__{kind}" for name in signals], block)


def _last_index(measured: np.ndarray) -> np.ndarray:
    """Row of the latest measurement at or before each row, per column (-1 when none yet)."""
    rows = np.arange(measured.shape[0])[:, None]
    return np.maximum.accumulate(np.where(measured, rows, -1), axis=0)


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index[h, c], c], NaN where index is -1."""
    taken = np.take_along_axis(values, np.maximum(index, 0), axis=0)
    return np.where(index >= 0, taken, np.nan)


def _window_sum(cumulative: np.ndarray, hours: int) -> np.ndarray:
    """Sum over rows h-hours+1..h from a cumulative sum (a prefix quantity: no look-ahead)."""
    lagged = np.zeros_like(cumulative)
    if hours < cumulative.shape[0]:
        lagged[hours:] = cumulative[:-hours]
    return cumulative - lagged


def _window_extreme(values: np.ndarray, hours: int, reduce: Callable, fill: float) -> np.ndarray:
    """Running min or max over the last `hours` rows, NaN-free input padded with `fill`."""
    padded = np.concatenate([np.full((hours - 1, values.shape[1]), fill), values])
    windows = np.lib.stride_tricks.sliding_window_view(padded, hours, axis=0)
    return reduce(windows, axis=-1)


def _prefix_median(values: np.ndarray) -> np.ndarray:
    """Median of the observed values in each column, NaN-aware, without empty-slice warnings."""
    ordered = np.sort(values, axis=0)  # NaN sorts last
    count = np.sum(~np.isnan(values), axis=0)
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[None, :], axis=0)[0]
    high = np.take_along_axis(ordered, np.maximum(count // 2, 0)[None, :], axis=0)[0]
    return np.where(count > 0, (low + high) / 2, np.nan)


def _baseline(vitals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-hour baseline median and MAD of the first BASELINE_HOURS rows seen so far."""
    hours = vitals.shape[0]
    medians = np.full(vitals.shape, np.nan)
    mads = np.full(vitals.shape, np.nan)
    for row in range(min(hours, BASELINE_HOURS)):
        early = vitals[: row + 1]
        medians[row] = _prefix_median(early)
        mads[row] = _prefix_median(np.abs(early - medians[row]))
    if hours > BASELINE_HOURS:  # after the early hours the baseline is fixed
        medians[BASELINE_HOURS:] = medians[BASELINE_HOURS - 1]
        mads[BASELINE_HOURS:] = mads[BASELINE_HOURS - 1]
    return medians, mads


def _rolling(cols: _Columns, vitals: np.ndarray, measured: np.ndarray) -> None:
    """Rolling mean, min, max, SD over observed values, and the least-squares 6 h slope."""
    # Centring on each column's first observed value (known from that hour on) keeps the
    # sum-of-squares variance from cancelling catastrophically; it does not change any result.
    first = _take(vitals, np.argmax(measured, axis=0)[None, :])[0]
    centre = np.where(np.isnan(first), 0.0, first)
    x = np.where(measured, vitals - centre, 0.0)
    n_cum = np.cumsum(measured, axis=0, dtype=float)
    s_cum = np.cumsum(x, axis=0)
    q_cum = np.cumsum(x * x, axis=0)
    for hours in WINDOWS:
        n = _window_sum(n_cum, hours)
        total = _window_sum(s_cum, hours)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, total / n, np.nan)
            var = np.maximum(_window_sum(q_cum, hours) / n - mean * mean, 0.0)
        low = _window_extreme(np.where(measured, vitals, np.inf), hours, np.min, np.inf)
        high = _window_extreme(np.where(measured, vitals, -np.inf), hours, np.max, -np.inf)
        cols.per_signal(_VITALS, f"mean_{hours}h", mean + centre)
        cols.per_signal(_VITALS, f"min_{hours}h", np.where(n > 0, low, np.nan))
        cols.per_signal(_VITALS, f"max_{hours}h", np.where(n > 0, high, np.nan))
        cols.per_signal(_VITALS, f"std_{hours}h", np.where(n >= 2, np.sqrt(var), np.nan))
    # Slope over (row index, value) pairs; row indices are integers, so the denominator is exact.
    t = np.arange(vitals.shape[0], dtype=float)[:, None] * measured
    n = _window_sum(n_cum, TREND_HOURS)
    st = _window_sum(np.cumsum(t, axis=0), TREND_HOURS)
    stt = _window_sum(np.cumsum(t * t, axis=0), TREND_HOURS)
    sv = _window_sum(s_cum, TREND_HOURS)
    stv = _window_sum(np.cumsum(t * x, axis=0), TREND_HOURS)
    denominator = n * stt - st * st
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(denominator > 0, (n * stv - st * sv) / denominator, np.nan)
    cols.per_signal(_VITALS, f"slope_{TREND_HOURS}h", slope)


def _points(value: np.ndarray, cutoffs: Sequence[float], *, below: bool) -> np.ndarray:
    """SOFA-style points: one per cut-off crossed (`< cut` when below, else `>= cut`)."""
    crossed = [value < cut if below else value >= cut for cut in cutoffs]
    return np.where(np.isnan(value), np.nan, np.sum(crossed, axis=0, dtype=float))


def _composites(cols: _Columns, last: dict[str, np.ndarray]) -> None:
    """Shock index, pulse pressure, ratios and the partial SOFA score from the last values."""
    with np.errstate(invalid="ignore", divide="ignore"):
        spo2_fio2 = last["spo2"] / last["fio2"]
        cols.add(["shock_index"], last["hr"] / last["sbp"])
        cols.add(["pulse_pressure"], last["sbp"] - last["dbp"])
        cols.add(["spo2_fio2"], spo2_fio2)
        cols.add(["bun_creatinine"], last["bun"] / last["creatinine"])
    # SOFA (Vincent et al., Intensive Care Med 1996;22:707-710). Respiratory points from the
    # SpO2/FiO2 proxy; the 3- and 4-point grades normally need ventilation, which the grid
    # cannot tell, so recorded FiO2 is taken as respiratory support. Cardiovascular scores only
    # MAP < 70 (1 point): vasopressor doses are not in the data. No GCS, so no CNS points.
    sofa = {
        "sofa_resp": _points(spo2_fio2, SF_CUTOFFS, below=True),
        "sofa_coag": _points(last["platelets"], (150.0, 100.0, 50.0, 20.0), below=True),
        "sofa_liver": _points(last["bili_total"], (1.2, 2.0, 6.0, 12.0), below=False),
        "sofa_cardio": _points(last["map"], (70.0,), below=True),
        "sofa_renal": _points(last["creatinine"], (1.2, 2.0, 3.5, 5.0), below=False),
    }
    for name, points in sofa.items():
        cols.add([name], points)
    stacked = np.stack(list(sofa.values()), axis=1)
    known = ~np.all(np.isnan(stacked), axis=1)
    # An organ never measured counts as normal (0), the usual SOFA convention.
    total = np.where(known, np.nansum(stacked, axis=1), np.nan)
    cols.add(["sofa_partial"], total)
    floor = _window_extreme(np.where(known, total, np.inf)[:, None], 24, np.min, np.inf)[:, 0]
    cols.add(["sofa_partial__rise_24h"], np.where(known, total - floor, np.nan))


def _news2(cols: _Columns, grid: HourlyGrid) -> None:
    """NEWS2 points per parameter and in total, from `careloop.sepsis.baselines` (causal)."""
    parts = news2_components(grid)
    for part in _NEWS2_SIGNALS:
        cols.add([f"news2_{part}"], parts[part].astype(float))
    cols.add(["news2_total"], np.sum(list(parts.values()), axis=0).astype(float))


def _context(cols: _Columns, grid: HourlyGrid) -> None:
    hours = grid.hours
    sex = {"male": 1.0, "female": 0.0}.get((grid.sex or "").lower(), np.nan)
    unit = (grid.unit or "").upper()
    cols.add(["age"], np.full(hours, np.nan if grid.age is None else float(grid.age)))
    cols.add(["sex_male"], np.full(hours, sex))
    cols.add(["unit_micu"], np.full(hours, float(unit == "MICU")))
    cols.add(["unit_sicu"], np.full(hours, float(unit == "SICU")))
    cols.add(["hour"], np.arange(hours, dtype=float))


def _build(grid: HourlyGrid) -> _Columns:
    values = np.asarray(grid.values, dtype=float)
    hours = values.shape[0]
    measured = ~np.isnan(values)
    rows = np.arange(hours, dtype=float)[:, None]
    index = _last_index(measured)
    last = _take(values, index)
    cols = _Columns()

    # Every signal: last value, recency, how often and whether measured now.
    count = np.cumsum(measured, axis=0, dtype=float)
    cols.per_signal(_NAMES, "last", last)
    cols.per_signal(_NAMES, "hours_since", np.where(index >= 0, rows - index, np.nan))
    cols.per_signal(_NAMES, "count", count)
    cols.per_signal(_NAMES, f"count_{COUNT_HOURS}h", _window_sum(count, COUNT_HOURS))
    cols.per_signal(_NAMES, "missing", (~measured).astype(float))

    # Vitals: rolling statistics, trend, personal baseline.
    vitals = values[:, _VITAL_COLS]
    _rolling(cols, vitals, measured[:, _VITAL_COLS])
    last_vitals = last[:, _VITAL_COLS]
    earlier = np.full_like(last_vitals, np.nan)
    if hours > TREND_HOURS:
        earlier[TREND_HOURS:] = last_vitals[:-TREND_HOURS]
    cols.per_signal(_VITALS, f"delta_{TREND_HOURS}h", last_vitals - earlier)
    median, mad = _baseline(vitals)
    floor = np.array([SPREAD_FLOOR[name] for name in _VITALS])
    spread = np.maximum(MAD_TO_SD * np.nan_to_num(mad, nan=0.0), floor)
    cols.per_signal(_VITALS, "baseline", median)
    cols.per_signal(_VITALS, "dev_baseline", last_vitals - median)
    cols.per_signal(_VITALS, "dev_baseline_z", (last_vitals - median) / spread)

    # Labs: the previous result and the change to the latest one.
    lab_index = index[:, _LAB_COLS]
    before = np.vstack([np.full((1, len(_LAB_COLS)), -1), lab_index[:-1]])  # index at row - 1
    prev_index = np.where(lab_index >= 0, _take_int(before, lab_index), -1)
    prev = _take(values[:, _LAB_COLS], prev_index)
    cols.per_signal(_LABS, "prev", prev)
    cols.per_signal(_LABS, "change", last[:, _LAB_COLS] - prev)

    _composites(cols, {name: last[:, SIGNAL_COLUMNS[name]] for name in _NAMES})
    _news2(cols, grid)
    _context(cols, grid)
    return cols


def _take_int(index_rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    """index_rows[index[h, c], c] for integer tables (index >= 0 where used)."""
    return np.take_along_axis(index_rows, np.maximum(index, 0), axis=0)


def stay_features(grid: HourlyGrid) -> np.ndarray:
    """The (hours, len(FEATURE_NAMES)) float32 feature matrix of one stay; NaN = undefined."""
    if grid.hours == 0:
        return np.empty((0, len(FEATURE_NAMES)), dtype=np.float32)
    return np.hstack(_build(grid).blocks).astype(np.float32)


def describe_feature(name: str) -> FeatureInfo:
    """What a feature name means, for explanations; KeyError for a name we do not produce."""
    if name in _OTHER:
        signal, kind, window, display = _OTHER[name]
        return FeatureInfo(signal, kind, window, display)
    signal_name, _, kind = name.partition("__")
    if signal_name not in SIGNAL_BY_NAME or kind not in _SIGNAL_KINDS:
        raise KeyError(name)
    description, window = _SIGNAL_KINDS[kind]
    where = f" over {window} h" if kind.startswith(("mean_", "min_", "max_", "std_")) else ""
    kind_text = description if not where else f"{description}{where}"
    display = f"{SIGNAL_BY_NAME[signal_name].display}, {kind_text}"
    return FeatureInfo(signal_name, description, window, display)


def _feature_names() -> tuple[str, ...]:
    """The column names, read off a one-hour empty stay so they always match the columns."""
    empty = HourlyGrid(
        "names", datetime(2000, 1, 1, tzinfo=UTC), np.full((1, len(SIGNALS)), np.nan)
    )
    return tuple(_build(empty).names)


FEATURE_NAMES: Final[tuple[str, ...]] = _feature_names()
