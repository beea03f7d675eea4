"""Samples per second through the streaming path: in-process and NATS JetStream on loopback.

Both runs push the same synthetic samples (heart rate each minute for 100 people, our own
numbers) through `publish` and then through `SampleProcessor` with a callback that only counts,
so the figures are the transport's and the processor's own cost. JetStream publishing waits for
each PubAck (the at-least-once guarantee), which is what a producer pays.

    .venv/bin/python -m bench.monitoring_stream [--samples 20000] [--nats nats://127.0.0.1:4222]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from careloop.monitoring.processor import SampleProcessor
from careloop.monitoring.signals import Sample, Signal
from careloop.monitoring.stream import InProcessStream, JetStreamConfig, JetStreamStream

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic(count: int, persons: int = 100) -> list[Sample]:
    return [
        Sample(
            person_id=f"bench-{i % persons}",
            signal=Signal.HEART_RATE,
            time=BASE + timedelta(minutes=i // persons),
            value=60.0 + (i * 7) % 30,
            sample_id=f"bench-{i}",
            source="bench",
        )
        for i in range(count)
    ]


async def measure(stream, samples: list[Sample]) -> tuple[float, float]:
    """(published per second, processed per second)."""
    started = time.perf_counter()
    for item in samples:
        await stream.publish(item)
    published = len(samples) / (time.perf_counter() - started)
    processor = SampleProcessor(lambda _: None, lateness=timedelta(minutes=2))
    started = time.perf_counter()
    counters = await processor.run_until_idle(stream, batch_size=1000, idle_seconds=0.3)
    elapsed = time.perf_counter() - started - 0.3  # the final idle wait is not work
    if counters.processed != len(samples):
        raise SystemExit(f"processed {counters.processed} of {len(samples)}: the bench is broken")
    return published, len(samples) / max(elapsed, 1e-9)


async def main(count: int, url: str) -> None:
    samples = synthetic(count)
    local = await measure(InProcessStream(capacity=count + 1), samples)
    tag = uuid.uuid4().hex[:8]
    config = JetStreamConfig(url=url, stream=f"BENCH_{tag}", prefix=f"bench{tag}.samples")
    remote_stream = await JetStreamStream.connect(config)
    try:
        remote = await measure(remote_stream, samples)
    finally:
        await remote_stream.delete()
        await remote_stream.close()
    print(f"{count} samples, 100 people")
    print(f"{'':12}{'in-process':>14}{'JetStream':>14}{'ratio':>10}")
    for label, mine, theirs in (
        ("published/s", local[0], remote[0]),
        ("processed/s", local[1], remote[1]),
    ):
        print(f"{label:12}{mine:14,.0f}{theirs:14,.0f}{mine / theirs:9.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.samples, arguments.nats))
