"""A person's device data written by hand for monitoring tests: about 60 bpm resting heart rate
and 8,000 steps a day with a small fixed wobble, optionally with an infection-like episode."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from careloop.monitoring.signals import Sample, Signal

START = date(2024, 3, 1)
EPISODE = range(30, 33)  # day numbers of the injected 3-day rise


def day_start(day: int, start: date = START) -> datetime:
    return datetime.combine(start + timedelta(days=day), datetime.min.time(), UTC)


def daily(person: str, signal: Signal, day: int, value: float, period: int | None = None) -> Sample:
    return Sample(person, signal, day_start(day), value, f"{person}-{signal.value}-{day}", "test",
                  period)  # fmt: skip


def person_stream(
    episode: bool, days: int = 40, heart_hours: int = 0, person: str = "p1"
) -> list[Sample]:
    """With `episode`, resting heart rate up 8 bpm and steps halved on the EPISODE days (the
    infection-like pattern needs a supporting signal). `heart_hours` adds intraday heart rate in
    that many hours of each day, so the day's wear time is known."""
    samples = []
    for day in range(days):
        wobble = (day * 7) % 5 - 2  # -2..2, deterministic
        ill = episode and day in EPISODE
        samples.append(daily(person, Signal.RESTING_HEART_RATE, day, 60 + 0.5 * wobble + 8 * ill))
        steps = (8000 + 150 * wobble) * (0.5 if ill else 1.0)
        samples.append(daily(person, Signal.STEPS, day, steps, 1440))
        for hour in range(heart_hours):
            time = day_start(day) + timedelta(hours=8 + hour, minutes=5)
            samples.append(
                Sample(person, Signal.HEART_RATE, time, 70.0, f"{person}-hr-{day}-{hour}", "test")
            )
    return samples
