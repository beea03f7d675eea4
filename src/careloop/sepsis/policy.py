"""The alert policy: hourly risk to alerts a nurse can live with.

Two series come out of a stay's hourly probabilities:

- the **alert state** (0/1 per hour): on from a rising edge of risk over the threshold, off once
  risk falls below `reset_ratio` × threshold (hysteresis, so risk hovering at the threshold does
  not flap). This is what the PhysioNet utility scores hour by hour, and the `alert` column of
  `careloop predict sepsis`.
- **notifications**: the hours a new alert reaches a person. A rising edge notifies unless one
  was sent less than `snooze_hours` before (in batch evaluation the alert is taken as
  acknowledged when it is sent). Notifications are what count against the alert budget.

The threshold is chosen on out-of-fold validation data to maximize the normalized utility under
a cap on notifications per patient-day, and the policy travels inside the model artifact.
Everything here uses only rows up to the hour being decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from careloop.sepsis.utility import normalized_utility


@dataclass(frozen=True)
class AlertPolicy:
    threshold: float
    reset_ratio: float = 0.8
    snooze_hours: int = 6
    max_alerts_per_patient_day: float = 1.0

    def states(self, probabilities: np.ndarray) -> np.ndarray:
        return alert_states(probabilities, self.threshold, self.reset_ratio)

    def notifications(self, probabilities: np.ndarray) -> np.ndarray:
        return notifications(self.states(probabilities), self.snooze_hours)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def alert_states(probabilities: np.ndarray, threshold: float, reset_ratio: float) -> np.ndarray:
    """0/1 per hour: on at a crossing of `threshold`, off below `reset_ratio` × threshold."""
    states = np.zeros(len(probabilities), dtype=np.int8)
    on = False
    reset = threshold * reset_ratio
    for hour, probability in enumerate(probabilities):
        if not on and probability >= threshold:
            on = True
        elif on and probability < reset:
            on = False
        states[hour] = on
    return states


def notifications(states: np.ndarray, snooze_hours: int) -> np.ndarray:
    """0/1 per hour: rising edges of the state, less those within `snooze_hours` of the last."""
    sent = np.zeros(len(states), dtype=np.int8)
    last = -(10**9)
    previous = 0
    for hour, state in enumerate(states):
        if state and not previous and hour - last >= snooze_hours:
            sent[hour] = 1
            last = hour
        previous = state
    return sent


def alerts_per_patient_day(probabilities: Sequence[np.ndarray], policy: AlertPolicy) -> float:
    hours = sum(len(p) for p in probabilities)
    sent = sum(int(policy.notifications(p).sum()) for p in probabilities)
    return sent / (hours / 24) if hours else 0.0


def choose_policy(
    labels: Sequence[np.ndarray],
    probabilities: Sequence[np.ndarray],
    *,
    max_alerts_per_patient_day: float = 1.0,
    reset_ratio: float = 0.8,
    snooze_hours: int = 6,
    candidates: int = 40,
) -> tuple[AlertPolicy, float]:
    """The threshold with the best normalized utility whose notification rate stays within the
    cap, searched over quantiles of the validation probabilities; (policy, its utility)."""
    pooled = np.concatenate(probabilities)
    grid = np.unique(np.quantile(pooled, np.linspace(0.80, 0.999, candidates)))
    best: tuple[AlertPolicy, float] | None = None
    for threshold in grid:
        policy = AlertPolicy(
            float(threshold), reset_ratio, snooze_hours, max_alerts_per_patient_day
        )
        if alerts_per_patient_day(probabilities, policy) > max_alerts_per_patient_day:
            continue
        utility = normalized_utility(
            (y, policy.states(p)) for y, p in zip(labels, probabilities, strict=True)
        )
        if best is None or utility > best[1]:
            best = (policy, utility)
    if best is None:  # even the highest candidate alerts too often: take the strictest
        policy = AlertPolicy(float(grid[-1]), reset_ratio, snooze_hours, max_alerts_per_patient_day)
        utility = normalized_utility(
            (y, policy.states(p)) for y, p in zip(labels, probabilities, strict=True)
        )
        best = (policy, utility)
    return best
