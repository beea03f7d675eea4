"""Alarm-fatigue control: budget, de-duplication, hysteresis, snooze and escalation, quality
gating, explanations, FHIR Flag and Task, engagement gaps, and state round-trips."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.monitoring.alerts import (
    ESCALATED,
    RAISED,
    RERAISED,
    RESOLVED,
    UPDATED,
    AlertManager,
    AlertPolicy,
    AlertState,
    DayQuality,
    Suppressed,
    Tier,
)
from careloop.monitoring.detectors import (
    FALLING_SPO2,
    HEART_FAILURE,
    INFECTION,
    Evidence,
    Finding,
)
from careloop.monitoring.engagement import engagement_gaps, missed_check_ins
from careloop.monitoring.fhir_alerts import alert_flag, alert_task, engagement_task
from careloop.monitoring.signals import Signal

DAY0 = date(2024, 3, 1)
ALL = frozenset(Signal)


def at(day: int) -> datetime:
    return datetime(2024, 3, 1, 9, tzinfo=UTC) + timedelta(days=day)


def good(day: int) -> DayQuality:
    return DayQuality(DAY0 + timedelta(days=day), 20.0, ALL)


def infection(day: int, rise: float = 6.0, z: float = 3.0, since: int | None = None) -> Finding:
    start = DAY0 + timedelta(days=day if since is None else since)
    return Finding(INFECTION, start, (
        Evidence(Signal.RESTING_HEART_RATE, 58 + rise, 58.0, rise, z, "/min", start),
        Evidence(Signal.HRV_RMSSD, 32.0, 50.0, -18.0, -2.1, "ms", start),
    ))  # fmt: skip


def spo2(day: int, value: float) -> Finding:
    start = DAY0 + timedelta(days=day - 1)
    return Finding(FALLING_SPO2, start, (
        Evidence(Signal.SPO2, value, 97.0, value - 97.0, (value - 97.0) / 1.0, "%", start),
    ))  # fmt: skip


def weight_gain(day: int, gain: float, over_days: int) -> Finding:
    start = DAY0 + timedelta(days=day - over_days)
    return Finding(HEART_FAILURE, start, (
        Evidence(Signal.WEIGHT, 80 + gain, 80.0, gain, 2.5, "kg", start),
    ))  # fmt: skip


def kinds(changes) -> list[str]:
    return [change.kind for change in changes]


# ----- budget ---------------------------------------------------------------------------------


def test_budget_suppresses_the_fifth_review_in_a_month_but_never_an_urgent_one():
    manager = AlertManager(AlertPolicy(clear_days=1, rearm_days=0))
    raised = 0
    for episode in range(5):  # each episode: present one day, gone the next (clears)
        changes = manager.consider(
            "p1", [infection(2 * episode)], good(2 * episode), at(2 * episode)
        )
        raised += kinds(changes).count(RAISED)
        assert kinds(manager.consider("p1", [], good(2 * episode + 1), at(2 * episode + 1))) == [
            RESOLVED
        ] * kinds(changes).count(RAISED)
    assert raised == 4
    assert manager.suppressed[Suppressed.BUDGET] == 1
    urgent = manager.consider("p1", [spo2(11, 90.0)], good(11), at(11))
    assert kinds(urgent) == [RAISED] and urgent[0].alert.tier is Tier.URGENT
    assert manager.suppressed[Suppressed.BUDGET] == 1
    # a new month gives a new budget (and the SpO2 alert, gone that day, clears)
    april = manager.consider("p1", [infection(31)], good(31), at(31))
    assert kinds(april) == [RAISED, RESOLVED]


def test_urgent_uses_up_the_review_budget_and_budgets_are_per_person():
    manager = AlertManager(AlertPolicy(monthly_budget={Tier.NURSE_REVIEW: 1}))
    assert kinds(manager.consider("p1", [spo2(1, 90.0)], good(1), at(1))) == [RAISED]
    assert manager.consider("p1", [infection(1)], good(1), at(1)) == []
    assert manager.suppressed[Suppressed.BUDGET] == 1
    assert kinds(manager.consider("p2", [infection(1)], good(1), at(1))) == [RAISED]


# ----- de-duplication, hysteresis -------------------------------------------------------------


def test_a_pattern_still_active_is_one_alert_updated():
    manager = AlertManager()
    first = manager.consider("p1", [infection(0)], good(0), at(0))
    later = [manager.consider("p1", [infection(d, rise=6 + d)], good(d), at(d)) for d in (1, 2)]
    assert kinds(first) == [RAISED]
    assert [kinds(c) for c in later] == [[UPDATED], [UPDATED]]
    assert later[-1][0].alert.id == first[0].alert.id
    assert later[-1][0].alert.evidence[0].change == 8
    assert manager.suppressed[Suppressed.DUPLICATE] == 2
    assert len(manager.open_alerts("p1")) == 1


def test_evidence_hovering_at_the_threshold_does_not_flap():
    manager = AlertManager()
    notices = []
    for day in range(30):  # present on alternate days, just over the detector's threshold
        findings = [infection(day, z=2.1)] if day % 2 == 0 else []
        notices += [c for c in manager.consider("p1", findings, good(day), at(day)) if c.notify]
    assert len(notices) == 1


def test_a_new_episode_soon_after_clearing_needs_stronger_evidence():
    manager = AlertManager(AlertPolicy(clear_days=2))
    manager.consider("p1", [infection(0)], good(0), at(0))
    resolved = [manager.consider("p1", [], good(d), at(d)) for d in (1, 2)]
    assert kinds(resolved[-1]) == [RESOLVED]
    weak = manager.consider("p1", [infection(3, z=2.1)], good(3), at(3))
    assert weak == [] and manager.suppressed[Suppressed.HYSTERESIS] == 1
    strong = manager.consider("p1", [infection(4, z=3.0)], good(4), at(4))
    assert kinds(strong) == [RAISED]
    assert strong[0].alert.id != resolved[-1][0].alert.id


def test_the_same_day_evaluated_twice_counts_once_towards_clearing():
    manager = AlertManager(AlertPolicy(clear_days=2))
    manager.consider("p1", [infection(0)], good(0), at(0))
    for _ in range(3):
        assert manager.consider("p1", [], good(1), at(1)) == []
    assert kinds(manager.consider("p1", [], good(2), at(2))) == [RESOLVED]


# ----- snooze and escalation ------------------------------------------------------------------


def test_acknowledged_pattern_is_silent_until_the_snooze_ends_then_reraised():
    manager = AlertManager(AlertPolicy(ack_snooze_days=3))
    alert = manager.consider("p1", [infection(0)], good(0), at(0))[0].alert
    manager.acknowledge(alert.id, "nurse-7", at(0))
    assert alert.state is AlertState.ACKNOWLEDGED
    for day in (1, 2):
        assert manager.consider("p1", [infection(day)], good(day), at(day)) == []
    assert manager.suppressed[Suppressed.SNOOZED] == 2
    again = manager.consider("p1", [infection(3)], good(3), at(3))
    assert kinds(again) == [RERAISED] and again[0].alert.state is AlertState.OPEN


def test_escalation_breaks_through_a_snooze():
    manager = AlertManager()
    alert = manager.consider("p1", [spo2(1, 93.0)], good(1), at(1))[0].alert
    assert alert.tier is Tier.NURSE_REVIEW
    manager.snooze(alert.id, 7, at(1))
    assert manager.consider("p1", [spo2(2, 93.0)], good(2), at(2)) == []
    worse = manager.consider("p1", [spo2(3, 91.0)], good(3), at(3))
    assert kinds(worse) == [ESCALATED]
    assert worse[0].alert.tier is Tier.URGENT and worse[0].alert.state is AlertState.OPEN


def test_snooze_and_acknowledge_refuse_unknown_or_bad_requests():
    manager = AlertManager()
    alert = manager.consider("p1", [infection(0)], good(0), at(0))[0].alert
    with pytest.raises(ValueError, match="at least 1 day"):
        manager.snooze(alert.id, 0, at(0))
    with pytest.raises(KeyError, match="no alert"):
        manager.acknowledge("alert-missing", "nurse-7", at(0))
    with pytest.raises(ValueError, match="timezone-aware"):
        manager.acknowledge(alert.id, "nurse-7", datetime(2024, 3, 1))


@pytest.mark.parametrize(
    ("finding", "tier"),
    [
        (weight_gain(5, 2.3, 3), Tier.URGENT),  # > 2 kg in 3 days (ESC 2021)
        (weight_gain(5, 2.6, 7), Tier.NURSE_REVIEW),  # slower gain
        (spo2(5, 92.0), Tier.URGENT),
        (spo2(5, 94.0), Tier.NURSE_REVIEW),
        (infection(5, rise=2.5), Tier.INFORMATION),
        (infection(5, rise=6.0), Tier.NURSE_REVIEW),
    ],
)
def test_tiers_follow_the_pattern_and_its_size(finding, tier):
    changes = AlertManager().consider("p1", [finding], good(5), at(5))
    assert changes[0].alert.tier is tier


# ----- quality gating -------------------------------------------------------------------------


def test_no_alert_from_a_day_with_too_little_wear_or_off_the_wrist():
    manager = AlertManager()
    day = DAY0 + timedelta(days=4)
    short = DayQuality(day, 4.0, ALL)
    off = DayQuality(day, 20.0, ALL, off_wrist=True)
    no_spo2 = DayQuality(day, 20.0, ALL - {Signal.SPO2})
    assert manager.consider("p1", [infection(4)], short, at(4)) == []
    assert manager.consider("p1", [infection(4)], off, at(4)) == []
    assert manager.consider("p1", [spo2(4, 90.0)], no_spo2, at(4)) == []
    assert manager.suppressed[Suppressed.QUALITY] == 3
    # weight comes from a scale: the watch being off does not matter
    assert kinds(manager.consider("p1", [weight_gain(4, 2.6, 7)], off, at(4))) == [RAISED]


def test_unusable_support_is_dropped_and_a_bad_day_does_not_clear_an_alert():
    manager = AlertManager(AlertPolicy(clear_days=1))
    no_hrv = DayQuality(DAY0, 20.0, ALL - {Signal.HRV_RMSSD})
    assert manager.consider("p1", [infection(0)], no_hrv, at(0)) == []  # no support left
    manager.consider("p1", [infection(1)], good(1), at(1))
    bad = DayQuality(DAY0 + timedelta(days=2), 2.0, ALL)
    assert manager.consider("p1", [], bad, at(2)) == []
    assert kinds(manager.consider("p1", [], good(3), at(3))) == [RESOLVED]


# ----- explanation and FHIR -------------------------------------------------------------------


def test_explanation_gives_the_numbers_against_the_baseline():
    alert = AlertManager().consider("p1", [infection(2, rise=7.0, z=3.5)], good(2), at(2))[0].alert
    text = alert.explain()
    assert text.startswith("Nurse review: signs like an infection starting since 3 Mar 2024.")
    assert "Resting heart rate up 7 bpm to 65 bpm (usual 58 bpm, +3.5 SD)" in text
    assert "Heart rate variability down 18 ms to 32 ms (usual 50 ms, -2.1 SD)" in text
    weight = AlertManager().consider("p1", [weight_gain(5, 2.3, 3)], good(5), at(5))[0].alert
    assert "Weight up 2.3 kg to 82.3 kg (usual 80.0 kg" in weight.explain()
    low = AlertManager().consider("p1", [spo2(5, 90.0)], good(5), at(5))[0].alert
    assert "Oxygen saturation down 7 points to 90% (usual 97%" in low.explain()


def validate(resource: dict) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_alerts_become_a_valid_flag_and_task():
    manager = AlertManager(AlertPolicy(clear_days=1))
    alert = manager.consider("p1", [spo2(3, 90.0)], good(3), at(3))[0].alert
    flag, task = alert_flag(alert), alert_task(alert, care_team="ct-1")
    validate(flag)
    validate(task)
    assert flag["status"] == "active" and flag["period"]["start"] == "2024-03-03"
    assert task["priority"] == "stat" and task["status"] == "requested"
    assert task["restriction"]["period"]["end"] == "2024-03-04T10:00:00Z"  # due in an hour
    assert task["focus"]["reference"] == f"Flag/{flag['id']}"
    manager.consider("p1", [], good(4), at(4))
    closed_flag, closed_task = alert_flag(alert), alert_task(alert)
    validate(closed_flag)
    validate(closed_task)
    assert closed_flag["status"] == "inactive" and closed_task["status"] == "cancelled"


def test_engagement_gaps_and_their_task():
    now = at(10)
    gaps = engagement_gaps({"a": at(9), "b": at(5), "c": None, "d": at(2), "e": at(11)}, now)
    assert [(g.person_id, g.days_silent) for g in gaps] == [("c", None), ("d", 8), ("b", 5)]
    task = engagement_task(gaps[1], now)
    validate(task)
    assert task["priority"] == "routine" and "8 days" in task["description"]
    assert engagement_task(gaps[1], at(11))["id"] == task["id"]
    with pytest.raises(ValueError, match="at least 1"):
        engagement_gaps({}, now, days=0)


def test_a_check_in_that_was_a_habit_and_stopped_is_a_gap():
    now = at(10)
    check_ins = {
        "habit": {Signal.WEIGHT: (7, at(6)), Signal.GLUCOSE: (5, at(9))},
        "once": {Signal.WEIGHT: (2, at(1))},  # never a habit: its absence is not news
    }
    (gap,) = missed_check_ins(check_ins, now)
    assert (gap.person_id, gap.signal, gap.days_silent) == ("habit", Signal.WEIGHT, 4)
    task = engagement_task(gap, now)
    validate(task)
    assert "No weight reading for 4 days" in task["description"]
    silent = engagement_gaps({"habit": at(6)}, now)[0]
    assert engagement_task(silent, now)["id"] != task["id"]  # a different gap, a different Task


# ----- persistence and the budget property ----------------------------------------------------


def test_state_round_trips_through_json_and_carries_on_identically():
    manager = AlertManager()
    first = manager.consider("p1", [infection(0)], good(0), at(0))[0].alert
    manager.acknowledge(first.id, "nurse-7", at(0))
    manager.consider("p2", [spo2(1, 90.0)], good(1), at(1))
    manager.consider("p3", [infection(1)], DayQuality(DAY0, 1.0, ALL), at(1))
    restored = AlertManager.from_dict(json.loads(json.dumps(manager.to_dict())))
    assert restored.to_dict() == manager.to_dict()
    step = [infection(5)], good(5), at(5)
    assert kinds(restored.consider("p1", *step)) == kinds(manager.consider("p1", *step))


def test_corrupt_state_is_refused_with_a_reason():
    saved = AlertManager().to_dict()
    del saved["tally"]
    with pytest.raises(ValueError, match="invalid alert state: missing field 'tally'"):
        AlertManager.from_dict(saved)


PATTERN_MAKERS = [
    lambda day, size: infection(day, rise=1 + size * 8, z=2 + size * 2),
    lambda day, size: spo2(day, 95.5 - size * 5),
    lambda day, size: weight_gain(day, 2.1 + size, 3 if size > 0.5 else 7),
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sets(st.integers(0, 2), max_size=3), st.floats(0, 1), st.booleans()),
        min_size=1,
        max_size=70,
    ),
    st.integers(0, 3),
)
def test_random_finding_sequences_never_exceed_the_non_urgent_budget(days, ack_every):
    policy = AlertPolicy(clear_days=1, rearm_days=1, ack_snooze_days=1)
    manager = AlertManager(policy)
    sent: dict[tuple[str, Tier], int] = {}
    for day, (patterns, size, wear) in enumerate(days):
        quality = DayQuality(DAY0 + timedelta(days=day), 20.0 if wear else 3.0, ALL)
        findings = [PATTERN_MAKERS[p](day, size) for p in sorted(patterns)]
        for change in manager.consider("p1", findings, quality, at(day)):
            if change.notify:
                key = (f"{at(day):%Y-%m}", change.alert.tier)
                sent[key] = sent.get(key, 0) + 1
            if ack_every and day % (ack_every + 1) == 0 and change.alert.state is AlertState.OPEN:
                manager.acknowledge(change.alert.id, "nurse", at(day))
    for (_, tier), count in sent.items():
        if tier is not Tier.URGENT:
            assert count <= policy.monthly_budget[tier]
