"""Small statistics every evaluation needs: an interval for a proportion, and a bootstrap by group.

Kept apart from any model so an evaluation of one part (remote monitoring, a CDS card's
confidence, a fairness table) does not pull in another part's model code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")
Z95 = 1.959964


def wilson(rate: float, count: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion observed over `count` trials."""
    if count <= 0:
        return 0.0, 1.0
    z2 = Z95 * Z95
    centre = (rate + z2 / (2 * count)) / (1 + z2 / count)
    spread = Z95 * math.sqrt(rate * (1 - rate) / count + z2 / (4 * count * count))
    spread /= 1 + z2 / count
    return max(0.0, centre - spread), min(1.0, centre + spread)


def bootstrap_ci(
    metric: Callable[[Sequence[T]], float],
    groups: Sequence[T],
    n: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(point estimate, low, high): percentile interval resampling whole groups (patients).

    Resampling patients, not rows, keeps each person's correlated values together. Resamples on
    which the metric is undefined (NaN, e.g. one class only) are left out of the interval.
    """
    point = metric(groups)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        picks = rng.integers(0, len(groups), size=len(groups))
        values.append(metric([groups[i] for i in picks]))
    finite = np.array([v for v in values if not math.isnan(v)])
    if finite.size == 0:
        return point, float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return point, float(low), float(high)
