"""Fairness by subgroup and the mitigations, on synthetic predictions whose truth is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from careloop.governance.fairness import (
    OUTCOMES_UNKNOWN,
    Tolerances,
    _sums,
    _weighted_metrics,
    fairness_markdown,
    fairness_report,
)
from careloop.governance.mitigation import (
    held_out_tradeoff,
    mitigation_tradeoff,
    per_group_thresholds,
    reweighing_weights,
    split_patients,
    tradeoff_markdown,
)
from careloop.governance.scored import UNKNOWN, ScoredSet
from careloop.sepsis.metrics import expected_calibration_error


def calibrated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and outcomes drawn from them: calibrated, with a fair AUROC."""
    probs = rng.beta(1.2, 4.0, n)
    return probs, (rng.random(n) < probs).astype(int)


def scored_set(
    probs: np.ndarray,
    labels: np.ndarray | None,
    groups: dict[str, np.ndarray],
    patient_ids: np.ndarray | None = None,
    alerts: np.ndarray | None = None,
) -> ScoredSet:
    return ScoredSet(
        model="toy",
        version="toy-1",
        unit="encounter",
        patient_ids=np.arange(len(probs)).astype(str) if patient_ids is None else patient_ids,
        probs=probs,
        alerts=(probs >= 0.3).astype(int) if alerts is None else alerts,
        labels=labels,
        groups=groups,
    )


def by_name(report, attribute: str, group: str):  # type: ignore[no-untyped-def]
    return next(g for g in report.groups if g.attribute == attribute and g.group == group)


def test_a_group_the_model_serves_worse_is_flagged_and_fair_groups_are_not() -> None:
    rng = np.random.default_rng(1)
    probs, labels = calibrated(rng, 6000)
    site = np.array(["north", "south", "east"])[np.arange(6000) % 3]
    # at "east" the outcome ignores the model half the time: worse ranking, same base rate
    east = site == "east"
    shuffled = rng.permutation(np.flatnonzero(east))
    noisy = shuffled[: shuffled.size // 2]
    labels[noisy] = (rng.random(noisy.size) < probs[east].mean()).astype(int)
    report = fairness_report(scored_set(probs, labels, {"site": site}), resamples=100)

    east_row = by_name(report, "site", "east")
    assert east_row.judgeable
    assert any(flag.startswith("AUROC") and "below overall" in flag for flag in east_row.flags)
    assert east_row.auroc.value < report.overall.auroc.value - 0.03  # type: ignore[operator]
    for fair in ("north", "south"):
        assert by_name(report, "site", fair).flags == ()
    assert [f"{g.attribute}={g.group}" for g in report.flagged()] == ["site=east"]


def test_miscalibration_and_rate_gaps_are_worded() -> None:
    rng = np.random.default_rng(2)
    probs, labels = calibrated(rng, 4000)
    sex = np.array(["female", "male"])[np.arange(4000) % 2]
    shown = np.where(sex == "male", np.clip(probs + 0.15, 0, 1), probs)  # men over-predicted
    report = fairness_report(scored_set(shown, labels, {"sex": sex}), resamples=50)
    flags = " ".join(by_name(report, "sex", "male").flags)
    assert "calibration in the large -0.1" in flags and "overestimated" in flags
    assert "ECE" in flags
    assert "FPR" in flags and "above overall" in flags


def test_a_tiny_group_is_too_small_to_judge_and_its_interval_is_wide() -> None:
    rng = np.random.default_rng(3)
    probs, labels = calibrated(rng, 3030)
    race = np.array(["a"] * 3000 + ["b"] * 30)
    labels[-30:] = 1 - labels[-30:]  # the model is wrong for b: would be flagged if judged
    report = fairness_report(scored_set(probs, labels, {"race": race}), resamples=200)

    tiny, big = by_name(report, "race", "b"), by_name(report, "race", "a")
    assert not tiny.judgeable and tiny.flags == ()
    assert tiny.note == f"too small to judge: 30 patients, {tiny.events} events"
    assert tiny.auroc.value is not None and tiny.auroc.low is not None
    tiny_width = tiny.auroc.high - tiny.auroc.low  # type: ignore[operator]
    big_width = big.auroc.high - big.auroc.low  # type: ignore[operator]
    assert tiny_width > 4 * big_width
    assert "too small to judge: 30 patients" in fairness_markdown(report)


def test_the_bootstrap_resamples_patients_not_rows() -> None:
    rng = np.random.default_rng(4)
    probs, labels = calibrated(rng, 500)
    group = {"all": np.array(["x"] * 500)}
    once = fairness_report(scored_set(probs, labels, group), resamples=200, seed=5)
    # the same patients, each row copied ten times: no new information
    copies = np.repeat(np.arange(500), 10)
    ten = {"all": np.array(["x"] * 5000)}
    grouped = fairness_report(
        scored_set(probs[copies], labels[copies], ten, patient_ids=copies.astype(str)),
        resamples=300,
        seed=5,
    )
    as_rows = fairness_report(scored_set(probs[copies], labels[copies], ten), resamples=200)

    def width(report):  # type: ignore[no-untyped-def]
        return report.overall.auroc.high - report.overall.auroc.low

    assert grouped.overall.patients == 500 and grouped.overall.rows == 5000
    assert grouped.overall.auroc.value == pytest.approx(once.overall.auroc.value)
    assert width(grouped) > 0.75 * width(once)  # a patient-level interval does not shrink
    assert width(as_rows) < 0.5 * width(once)  # rows taken as patients would (by ~sqrt 10)


def test_missing_demographics_are_the_unknown_group_and_counted() -> None:
    rng = np.random.default_rng(6)
    probs, labels = calibrated(rng, 1000)
    raw = np.array(["female", "male", None, float("nan"), ""], dtype=object)[np.arange(1000) % 5]
    report = fairness_report(scored_set(probs, labels, {"sex": raw}), resamples=20)
    assert report.missing == {"sex": 600}
    unknown = by_name(report, "sex", UNKNOWN)
    assert unknown.rows == 600
    assert [g.group for g in report.groups] == ["female", "male", UNKNOWN]
    assert "600 rows have no sex" in fairness_markdown(report)


def test_without_outcomes_only_the_alert_rate_is_measured() -> None:
    rng = np.random.default_rng(7)
    probs, _labels = calibrated(rng, 1000)
    sex = np.array(["female", "male"])[np.arange(1000) % 2]
    report = fairness_report(scored_set(probs, None, {"sex": sex}), resamples=50)
    for row in (report.overall, *report.groups):
        assert row.events is None and row.flags == ()
        assert OUTCOMES_UNKNOWN in (row.note or "")
        assert row.auroc.value is None and row.tpr.value is None and row.ece.value is None
        assert row.alert_rate.value is not None and row.alert_rate.low is not None
    assert report.overall.alert_rate.value == pytest.approx(np.mean(probs >= 0.3))
    json.dumps(report.to_json())


def test_per_group_figures_agree_with_a_direct_computation() -> None:
    rng = np.random.default_rng(8)
    probs, labels = calibrated(rng, 3000)
    probs = np.round(probs, 2)  # ties, which the weighted AUROC must count as halves
    unit = np.array(["icu", "ward", "ed"])[rng.integers(0, 3, 3000)]
    alerts = (probs >= 0.25).astype(int)
    patients = np.arange(3000) // 3  # three rows per patient
    scored = scored_set(
        probs, labels, {"unit": unit}, patient_ids=patients.astype(str), alerts=alerts
    )
    report = fairness_report(scored, resamples=10)
    for name in ("icu", "ward", "ed"):
        rows = unit == name
        y, p, a = labels[rows], probs[rows], alerts[rows]
        got = by_name(report, "unit", name)
        assert got.auroc.value == pytest.approx(roc_auc_score(y, p))
        assert got.tpr.value == pytest.approx(a[y == 1].mean())
        assert got.fpr.value == pytest.approx(a[y == 0].mean())
        assert got.alert_rate.value == pytest.approx(a.mean())
        assert got.calibration_in_large.value == pytest.approx(y.mean() - p.mean())
        assert got.ece.value == pytest.approx(expected_calibration_error(y, p))
        # the bootstrap's weighted metrics, with every patient drawn once, are the same figures
        part = _sums(np.flatnonzero(rows), patients, scored, alerts.astype(float))
        weighted = _weighted_metrics(part, np.ones(part.patients.size))
        for metric in ("auroc", "tpr", "fpr", "alert_rate", "calibration_in_large", "ece"):
            assert weighted[metric] == pytest.approx(getattr(got, metric).value)


def test_markdown_has_a_table_per_attribute_and_the_tolerances() -> None:
    rng = np.random.default_rng(9)
    probs, labels = calibrated(rng, 800)
    groups = {"sex": np.array(["f", "m"] * 400), "age_band": np.array(["young", "old"] * 400)}
    tolerances = Tolerances(auroc_gap=0.02, min_patients=50, min_events=10)
    text = fairness_markdown(
        fairness_report(scored_set(probs, labels, groups), tolerances=tolerances, resamples=20)
    )
    assert text.count("| group | patients | events | AUROC [CI] |") == 2
    assert "**sex**" in text and "**age_band**" in text
    assert "more than 0.02 below overall" in text and "fewer than 50 patients or 10 events" in text


def test_bad_predictions_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fairness_report(scored_set(np.array([0.2, 1.4]), np.array([0, 1]), {}))
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        fairness_report(scored_set(np.array([0.2, 0.4]), np.array([0, 2]), {}))


# --------------------------------------------------------------------------------------------
# Mitigations
# --------------------------------------------------------------------------------------------


def shifted_scores(seed: int, n: int) -> ScoredSet:
    """Group b's risk is under-scored: at one threshold its TPR is far below a's."""
    rng = np.random.default_rng(seed)
    probs, labels = calibrated(rng, n)
    group = np.array(["a", "b"])[np.arange(n) % 2]
    shown = np.where(group == "b", probs * 0.5, probs)
    return scored_set(shown, labels, {"group": group}, alerts=(shown >= 0.3).astype(int))


def test_per_group_thresholds_equalize_tpr_and_the_tradeoff_shows_the_cost() -> None:
    tuning, judged = shifted_scores(10, 8000), shifted_scores(11, 8000)
    thresholds = per_group_thresholds(tuning, "group")
    assert {t.group for t in thresholds} == {"a", "b"}
    cut = {t.group: t.threshold for t in thresholds}
    assert cut["b"] < cut["a"]  # type: ignore[operator]

    tradeoff = mitigation_tradeoff(judged, "group", thresholds=thresholds)
    a, b = tradeoff.groups
    assert abs(a.tpr_before - b.tpr_before) > 0.2  # type: ignore[operator]
    assert abs(a.tpr_after - b.tpr_after) < 0.05  # type: ignore[operator]
    # the cost: b's alerts and false alarms rise
    assert b.alert_rate_after > b.alert_rate_before  # type: ignore[operator]
    assert b.fpr_after > b.fpr_before  # type: ignore[operator]
    assert tradeoff.overall.ppv_before is not None and tradeoff.overall.ppv_after is not None
    assert not tradeoff.chosen_on_same_data
    text = tradeoff_markdown(tradeoff)
    assert "→" in text and "not applied to any decision" in text and "optimistic" not in text
    # chosen on the rows they are judged on: said so
    assert "optimistic" in tradeoff_markdown(mitigation_tradeoff(judged, "group"))
    # the predictions themselves are untouched
    assert np.array_equal(judged.alerts, (judged.probs >= 0.3).astype(int))


def test_thresholds_can_target_fpr_and_leave_small_groups_alone() -> None:
    scored = shifted_scores(12, 4000)
    group = scored.groups["group"].copy()
    group[:40] = "c"  # 40 patients: too small to adjust
    scored = scored_set(scored.probs, scored.labels, {"group": group}, alerts=scored.alerts)
    thresholds = {t.group: t for t in per_group_thresholds(scored, "group", target="fpr")}
    assert thresholds["c"].threshold is None and "too small" in (thresholds["c"].note or "")
    tradeoff = mitigation_tradeoff(scored, "group", target="fpr")
    after = {g.group: g.fpr_after for g in tradeoff.groups}
    assert abs(after["a"] - after["b"]) < 0.02  # type: ignore[operator]


def test_thresholds_need_outcomes_and_a_known_attribute() -> None:
    scored = shifted_scores(13, 200)
    with pytest.raises(ValueError, match="no attribute 'race'"):
        per_group_thresholds(scored, "race")
    with pytest.raises(ValueError, match="target must be one of"):
        per_group_thresholds(scored, "group", target="ppv")
    blind = scored_set(scored.probs, None, scored.groups)
    with pytest.raises(ValueError, match="need outcomes"):
        mitigation_tradeoff(blind, "group")


def test_reweighing_makes_group_and_outcome_independent() -> None:
    rng = np.random.default_rng(14)
    groups = rng.choice(["a", "b", "c"], 5000, p=[0.6, 0.3, 0.1])
    rates = {"a": 0.1, "b": 0.3, "c": 0.5}
    labels = (rng.random(5000) < np.vectorize(rates.get)(groups)).astype(int)
    weights = reweighing_weights(groups, labels)
    total = weights.sum()
    assert total == pytest.approx(5000)
    for group in ("a", "b", "c"):
        for label in (0, 1):
            joint = weights[(groups == group) & (labels == label)].sum() / total
            marginal = weights[groups == group].sum() / total * weights[labels == label].sum()
            assert joint == pytest.approx(marginal / total)


def test_held_out_tradeoff_chooses_on_one_half_of_the_patients_and_judges_on_the_other() -> None:
    scored = shifted_scores(15, 6000)
    patients = np.repeat(np.arange(3000), 2).astype(str)  # two rows per patient
    scored = scored_set(
        scored.probs, scored.labels, scored.groups, patient_ids=patients, alerts=scored.alerts
    )
    tuning, judging = split_patients(scored)
    assert not set(tuning.patient_ids) & set(judging.patient_ids)
    assert tuning.rows + judging.rows == scored.rows
    tradeoff = held_out_tradeoff(scored, "group")
    assert not tradeoff.chosen_on_same_data
    assert tradeoff.overall.patients == len(set(judging.patient_ids))
    a, b = tradeoff.groups
    assert abs(a.tpr_after - b.tpr_after) < abs(a.tpr_before - b.tpr_before)  # type: ignore[operator]
