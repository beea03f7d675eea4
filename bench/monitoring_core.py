"""Throughput of the monitoring core, in-process, on one core: samples per second through
`score_one` + `learn_one` + CUSUM + EWMA, on a synthetic stream of heart rate every 5 minutes
(with time-of-day structure and noise) for many persons, and through `PersonState.observe` with
a daily resting heart rate, steps and weight per person added. Also prints the memory per person.

Synthetic on purpose: the figure is about the code path, not any data set; the stream for each
person is built before the clock starts so only monitoring is timed.

    .venv/bin/python -m bench.monitoring_core [--samples 1000000] [--persons 200]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from careloop.monitoring.baseline import SignalBaseline
from careloop.monitoring.detectors import Cusum, Ewma
from careloop.monitoring.signals import Sample, Signal
from careloop.monitoring.state import PersonState

START = datetime(2024, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)
DAILY = (Signal.RESTING_HEART_RATE, Signal.STEPS, Signal.WEIGHT)


def person_stream(person: str, count: int, rng: random.Random, with_daily: bool) -> list[Sample]:
    """`count` samples: heart rate every 5 minutes around a daily rhythm, and optionally one
    resting heart rate, steps and weight value per day in their place."""
    normal = rng.uniform(50, 75)
    stream: list[Sample] = []
    index = 0
    while len(stream) < count:
        when = START + STEP * index
        hour = when.hour + when.minute / 60
        level = normal + 12 * max(0.0, math.sin((hour - 6) / 24 * 2 * math.pi))
        stream.append(Sample(person, Signal.HEART_RATE, when, level + rng.gauss(0, 6), "", "b"))
        if with_daily and when.hour == 7 and when.minute == 0:
            day = [normal - 5 + rng.gauss(0, 1.5), max(0.0, rng.gauss(8000, 2500)), 80.0]
            pairs = zip(DAILY, day, strict=True)
            stream.extend(Sample(person, signal, when, value, "", "b") for signal, value in pairs)
        index += 1
    return stream[:count]


def core_rate(samples: int, persons: int, seed: int) -> float:
    """Samples/s through score_one + learn_one + CUSUM + EWMA, streams built outside the clock."""
    rng = random.Random(seed)
    per_person = samples // persons
    elapsed = 0.0
    for number in range(persons):
        stream = person_stream(f"p{number}", per_person, rng, with_daily=False)
        baseline, cusum, ewma = SignalBaseline(Signal.HEART_RATE), Cusum(), Ewma()
        started = time.perf_counter()
        for sample in stream:
            z = baseline.score_one(sample).z
            baseline.learn_one(sample)
            cusum.update(z, sample.time)
            ewma.update(z, sample.time)
        elapsed += time.perf_counter() - started
    return per_person * persons / elapsed


def state_rate(samples: int, persons: int, seed: int) -> tuple[float, float]:
    """Samples/s through PersonState.observe on a mixed stream, and mean bytes per person."""
    rng = random.Random(seed)
    per_person = samples // persons
    elapsed, total_bytes = 0.0, 0
    for number in range(persons):
        stream = person_stream(f"p{number}", per_person, rng, with_daily=True)
        state = PersonState(f"p{number}")
        started = time.perf_counter()
        for sample in stream:
            state.observe(sample)
        elapsed += time.perf_counter() - started
        total_bytes += state.approximate_bytes()
    return per_person * persons / elapsed, total_bytes / persons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--persons", type=int, default=200)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    if args.persons < 1 or args.samples < args.persons:
        parser.error("need at least one person and one sample per person")
    core = core_rate(args.samples, args.persons, args.seed)
    print(f"core, score + learn + CUSUM + EWMA on every sample: {core:,.0f} samples/s (1 core)")
    rate, memory = state_rate(args.samples, args.persons, args.seed)
    print(f"PersonState.observe, detectors on daily signals:    {rate:,.0f} samples/s (1 core)")
    days = args.samples // args.persons * 5 / 1440
    print(f"memory per person after ~{days:.0f} days:                   {memory / 1024:,.1f} KiB")


if __name__ == "__main__":
    main()
