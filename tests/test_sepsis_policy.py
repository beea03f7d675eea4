"""The alert policy: rising edges, hysteresis, snooze, and the threshold chosen under a cap."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.sepsis.policy import (
    AlertPolicy,
    alert_states,
    alerts_per_patient_day,
    choose_policy,
    notifications,
)


def test_state_turns_on_at_the_threshold_and_off_below_the_reset_level() -> None:
    probs = np.array([0.1, 0.5, 0.45, 0.39, 0.5, 0.6])
    # on at 0.5; stays on at 0.45 (>= 0.4 = 0.8 x 0.5); off at 0.39; on again at 0.5
    assert alert_states(probs, 0.5, 0.8).tolist() == [0, 1, 1, 0, 1, 1]


def test_a_rising_edge_within_the_snooze_is_not_sent_again() -> None:
    states = np.array([0, 1, 0, 1, 0, 0, 0, 0, 1, 1], dtype=np.int8)
    assert notifications(states, 6).tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    assert notifications(states, 0).tolist() == [0, 1, 0, 1, 0, 0, 0, 0, 1, 0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=60), st.integers(1, 58))
def test_decisions_use_only_the_past(probs: list[float], cut: int) -> None:
    policy = AlertPolicy(threshold=0.6)
    full = np.array(probs)
    cut = min(cut, len(probs))
    assert (policy.states(full)[:cut] == policy.states(full[:cut])).all()
    assert (policy.notifications(full)[:cut] == policy.notifications(full[:cut])).all()


def test_the_chosen_threshold_respects_the_alert_cap() -> None:
    rng = np.random.default_rng(1)
    labels, probs = [], []
    for stay in range(60):
        hours = 48
        y = np.zeros(hours, dtype=np.int8)
        p = rng.uniform(0, 0.3, hours)
        if stay % 5 == 0:  # septic from hour 30; risk rises ahead of the label
            y[30:] = 1
            p[24:] = np.linspace(0.5, 0.95, hours - 24)
        labels.append(y)
        probs.append(p)
    policy, utility = choose_policy(labels, probs, max_alerts_per_patient_day=0.5)
    assert alerts_per_patient_day(probs, policy) <= 0.5
    assert 0.3 < policy.threshold < 0.6  # above the noise, below the septic rise
    assert utility > 0.5
    loose, _ = choose_policy(labels, probs, max_alerts_per_patient_day=24.0)
    assert loose.threshold <= policy.threshold
