"""Home monitoring: one summary per day from a wrist tracker (and a scale for heart failure).

Every person gets their own baseline (resting heart rate, HRV, steps with a weekday/weekend
rhythm, sleep, SpO2, weight) and day-to-day noise around it; resting heart rate and weight wander
with day-to-day memory (AR(1)) as real series do. Some people live through one decompensation
episode, and the episode is written down as a ground-truth Flag (see the package docstring).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from careloop.synth import catalog
from careloop.synth._fhir import (
    Measure,
    Resource,
    coding,
    concept,
    new_resource,
    reference_to,
    timestamp,
)
from careloop.synth.context import PatientContext
from careloop.synth.observations import quantity_observation
from careloop.synth.physiology import clamp

HF_DECOMPENSATION = "hf-decompensation"
INFECTION_LIKE = "infection-like"
EPISODE_DISPLAY = {
    HF_DECOMPENSATION: "Heart failure decompensation episode (simulated)",
    INFECTION_LIKE: "Infection-like illness episode (simulated)",
}
MONITORING_DAYS = (60, 90)
# Enough quiet days before any episode for a personal baseline to be learned from the data.
BASELINE_DAYS_BEFORE_EPISODE = 21


@dataclass(frozen=True)
class HomeBaseline:
    resting_hr: float
    resting_hr_sd: float
    hrv_ms: float
    hrv_cv: float
    steps: float
    steps_cv: float
    weekend_steps_factor: float
    sleep_hours: float
    sleep_sd: float
    weekend_extra_sleep: float
    spo2: float


@dataclass(frozen=True)
class Episode:
    kind: str
    start_day: int
    length_days: int
    rise_days: int
    fall_days: int
    resting_hr_rise: float
    hrv_drop: float
    steps_drop: float
    sleep_change_hours: float
    spo2_drop: float
    weight_gain_kg: float


@dataclass
class DailyState:
    """Slowly wandering deviations that carry over from one day to the next."""

    resting_hr: float = 0.0
    weight_kg: float = 0.0


def draw_home_baseline(ctx: PatientContext) -> HomeBaseline:
    rng, age = ctx.rng, ctx.person.age
    # HRV falls with age; steps fall with age and with heart failure.
    frail = 0.6 if ctx.has(catalog.HEART_FAILURE) else 1.0
    median_steps = 8000 * frail * (1 - clamp((age - 40) / 100, 0, 0.45))
    return HomeBaseline(
        resting_hr=clamp(rng.gauss(64, 7), 48, 88),
        resting_hr_sd=rng.uniform(1.2, 3.0),
        hrv_ms=clamp(rng.gauss(62 - 0.5 * age, 8), 12, 110),
        hrv_cv=rng.uniform(0.08, 0.18),
        steps=clamp(median_steps * math.exp(rng.gauss(0, 0.35)), 1200, 16000),
        steps_cv=rng.uniform(0.15, 0.35),
        weekend_steps_factor=rng.uniform(0.65, 1.3),
        sleep_hours=clamp(rng.gauss(7.0, 0.6), 5.0, 9.0),
        sleep_sd=rng.uniform(0.35, 0.8),
        weekend_extra_sleep=rng.uniform(0.1, 0.8),
        spo2=clamp(ctx.physiology.spo2 - rng.uniform(0, 1), 88, 99),
    )


def plan_episode(rng: random.Random, kind: str, days: int) -> Episode:
    if kind == HF_DECOMPENSATION:
        # Fluid builds up over about a week, then clears once diuretics are adjusted.
        length = rng.randint(8, 12)
        rise = round(length * 0.7)
        effects = dict(
            resting_hr_rise=rng.uniform(6, 12),
            hrv_drop=rng.uniform(0.15, 0.3),
            steps_drop=rng.uniform(0.35, 0.6),
            sleep_change_hours=-rng.uniform(0.4, 0.9),  # breathless when lying flat
            spo2_drop=rng.uniform(1.5, 3.0),
            weight_gain_kg=rng.uniform(2.0, 4.0),
        )
    else:
        length = rng.randint(4, 7)
        rise = 1
        effects = dict(
            resting_hr_rise=rng.uniform(5, 10),
            hrv_drop=rng.uniform(0.25, 0.4),
            steps_drop=rng.uniform(0.4, 0.65),
            sleep_change_hours=rng.uniform(0.7, 1.5),  # sick people sleep more
            spo2_drop=rng.uniform(0.5, 1.5),
            weight_gain_kg=0.0,
        )
    start = rng.randint(BASELINE_DAYS_BEFORE_EPISODE, days - length - 5)
    fall = length - rise
    return Episode(kind, start, length, rise, fall, **effects)


def episode_intensity(episode: Episode | None, day: int) -> float:
    """0 outside the episode; climbs over rise_days to 1, then eases off over fall_days."""
    if episode is None:
        return 0.0
    offset = day - episode.start_day
    if offset < 0 or offset >= episode.length_days:
        return 0.0
    if offset < episode.rise_days:
        return (offset + 1) / episode.rise_days
    return (episode.length_days - offset) / (episode.fall_days + 1)


def _device(ctx: PatientContext, name: str, model: str, kind: str) -> Resource:
    device = new_resource("Device", ctx.ids.next("Device"))
    serial = f"{model}-{ctx.person.index + 1:06d}"
    device["identifier"] = [{"system": catalog.DEVICE_ID_SYSTEM, "value": serial}]
    device["status"] = "active"
    device["manufacturer"] = "Careloop Demo Devices"
    device["deviceName"] = [{"name": name, "type": "user-friendly-name"}]
    device["modelNumber"] = model
    device["type"] = {"text": kind}
    device["patient"] = ctx.subject
    return device


def episode_flag(ctx: PatientContext, episode: Episode) -> Resource:
    flag = new_resource("Flag", ctx.ids.next("Flag"), ground_truth=True)
    flag["status"] = "inactive"
    flag["category"] = [concept(coding(catalog.FLAG_CATEGORY, "clinical", "Clinical"))]
    display = EPISODE_DISPLAY[episode.kind]
    flag["code"] = concept(coding(catalog.EPISODE_SYSTEM, episode.kind, display), text=display)
    flag["subject"] = ctx.subject
    first_day = _day_start(ctx, episode.start_day)
    flag["period"] = {
        "start": timestamp(first_day),
        # Exclusive end: the start of the first day back at baseline.
        "end": timestamp(first_day + timedelta(days=episode.length_days)),
    }
    return flag


def _day_start(ctx: PatientContext, day: int) -> datetime:
    midnight = ctx.window_start.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(days=day)


@dataclass(frozen=True)
class EpisodeEffect:
    """How far one day of an episode pushes each signal away from the person's baseline."""

    resting_hr_rise: float = 0.0
    hrv_keep: float = 1.0
    steps_keep: float = 1.0
    sleep_change_hours: float = 0.0
    spo2_drop: float = 0.0
    weight_gain_kg: float = 0.0


def episode_effect(episode: Episode | None, day: int) -> EpisodeEffect:
    strain = episode_intensity(episode, day)
    if episode is None or strain == 0.0:
        return EpisodeEffect()
    return EpisodeEffect(
        resting_hr_rise=episode.resting_hr_rise * strain,
        hrv_keep=1 - episode.hrv_drop * strain,
        steps_keep=1 - episode.steps_drop * strain,
        sleep_change_hours=episode.sleep_change_hours * strain,
        spo2_drop=episode.spo2_drop * strain,
        weight_gain_kg=episode.weight_gain_kg * strain,
    )


def daily_values(
    ctx: PatientContext, baseline: HomeBaseline, state: DailyState, effect: EpisodeEffect, day: int
) -> dict[Measure, float]:
    rng = ctx.rng
    weekend = _day_start(ctx, day).weekday() >= 5
    steps_rhythm = baseline.weekend_steps_factor if weekend else 1.0
    extra_sleep = baseline.weekend_extra_sleep if weekend else 0.0
    resting_hr = baseline.resting_hr + state.resting_hr + effect.resting_hr_rise
    hrv = baseline.hrv_ms * math.exp(rng.gauss(0, baseline.hrv_cv)) * effect.hrv_keep
    steps = baseline.steps * steps_rhythm * math.exp(rng.gauss(0, baseline.steps_cv))
    sleep = baseline.sleep_hours + extra_sleep + rng.gauss(0, baseline.sleep_sd)
    spo2 = baseline.spo2 + rng.gauss(0, 0.6) - effect.spo2_drop
    return {
        catalog.RESTING_HEART_RATE: clamp(resting_hr, 38, 130),
        catalog.HRV_SDNN: clamp(hrv, 5, 200),
        catalog.STEPS: clamp(steps * effect.steps_keep, 0, 40000),
        catalog.SLEEP_DURATION: clamp(sleep + effect.sleep_change_hours, 2.5, 12.5),
        catalog.OXYGEN_SATURATION: clamp(spo2, 82, 100),
        catalog.BODY_WEIGHT: ctx.physiology.weight_kg + state.weight_kg + effect.weight_gain_kg,
    }


# Chance that a worn tracker still fails to report a given signal that day.
SIGNAL_GAP_RATE = {
    catalog.RESTING_HEART_RATE: 0.02,
    catalog.HRV_SDNN: 0.1,
    catalog.STEPS: 0.01,
    catalog.SLEEP_DURATION: 0.07,
    catalog.OXYGEN_SATURATION: 0.25,
}
# Night-derived signals land on waking; steps close at the end of the day.
REPORTED_AT = {
    catalog.RESTING_HEART_RATE: timedelta(hours=7),
    catalog.HRV_SDNN: timedelta(hours=7),
    catalog.SLEEP_DURATION: timedelta(hours=7),
    catalog.OXYGEN_SATURATION: timedelta(hours=7),
    catalog.STEPS: timedelta(hours=23, minutes=59),
    catalog.BODY_WEIGHT: timedelta(hours=7, minutes=30),
}


def _advance(state: DailyState, baseline: HomeBaseline, rng: random.Random) -> None:
    # AR(1) with phi 0.6: innovation scaled so the stationary spread equals the personal SD.
    state.resting_hr = 0.6 * state.resting_hr + rng.gauss(0, baseline.resting_hr_sd * 0.8)
    state.weight_kg = 0.8 * state.weight_kg + rng.gauss(0, 0.25)


def home_monitoring(ctx: PatientContext, episode_kind: str | None) -> list[Resource]:
    """Devices, daily observations over 60-90 days, and the episode Flag if one happened."""
    rng = ctx.rng
    days = rng.randint(*MONITORING_DAYS)
    baseline = draw_home_baseline(ctx)
    episode = plan_episode(rng, episode_kind, days) if episode_kind else None
    tracker = _device(ctx, "Demo wrist tracker", "CL-WT1", "Wrist-worn activity tracker")
    resources = [tracker]
    scale = None
    if ctx.has(catalog.HEART_FAILURE):
        scale = _device(ctx, "Demo bathroom scale", "CL-BS1", "Connected body weight scale")
        resources.append(scale)
    state = DailyState()
    for day in range(days):
        _advance(state, baseline, rng)
        values = daily_values(ctx, baseline, state, episode_effect(episode, day), day)
        worn = rng.random() >= 0.06
        for measure, gap_rate in SIGNAL_GAP_RATE.items():
            if worn and rng.random() >= gap_rate:
                resources.append(_daily_observation(ctx, measure, values[measure], day, tracker))
        if scale is not None and rng.random() >= 0.15:
            weight = values[catalog.BODY_WEIGHT]
            resources.append(_daily_observation(ctx, catalog.BODY_WEIGHT, weight, day, scale))
    if episode is not None:
        resources.append(episode_flag(ctx, episode))
    return resources


def _daily_observation(
    ctx: PatientContext, measure: Measure, value: float, day: int, device: Resource
) -> Resource:
    jitter = timedelta(minutes=ctx.rng.randint(0, 40)) if measure != catalog.STEPS else timedelta()
    moment = _day_start(ctx, day) + REPORTED_AT[measure] + jitter
    return quantity_observation(
        ctx.ids.next("Observation"),
        measure,
        value,
        moment,
        ctx.subject,
        device=reference_to(device),
    )
