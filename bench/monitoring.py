"""Remote monitoring throughput and memory, on real smartwatch data, side by side in one run.

The same samples (the Stanford smartwatch heart rate, every few seconds, and minute steps of the
first persons who have both, over their first days) go through:

1. the baselines and detectors alone (`PersonState.observe`), the innermost stage;
2. the whole monitoring path in memory (`Monitor.accept`: quality checks, flood and unit checks,
   baselines, detectors, day totals, derived resting heart rate, alert manager);
3. the worker on the in-process stream: stream, reorder buffer and idempotence
   (`SampleProcessor`), consent check, the monitoring path, and commits to SQLite (daily
   summaries, alerts as Flag/DetectedIssue/Media/Task, the sealed checkpoint, audit);
4. the same worker consuming from NATS JetStream on loopback (durable consumer, explicit acks
   sent only after each commit).

Publishing is timed apart from consuming (a JetStream producer waits for each PubAck). Memory
per person is the monitoring state after the run (baselines, detectors, 14 days of history)
and the size of its sealed, compressed checkpoint row.

    .venv/bin/python -m bench.monitoring [--persons 3] [--days 10] [--nats URL] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import sys
import tempfile
import time
import uuid
import zlib
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.doc_sections import publish
from bench.machine import machine_facts
from careloop.access.layer import AccessLayer
from careloop.monitoring.importers import (
    read_smartwatch_heart_rate,
    read_smartwatch_steps,
    smartwatch_persons,
)
from careloop.monitoring.monitor import Monitor, bucket_time
from careloop.monitoring.signals import Sample
from careloop.monitoring.state import PersonState
from careloop.monitoring.stream import InProcessStream, JetStreamConfig, JetStreamStream
from careloop.monitoring.worker import MonitoringWorker
from careloop.store.crypto import MasterKey, generate_key_text
from careloop.store.repository import ResourceStore

ROOT = Path(__file__).resolve().parents[1]
SECTION = "monitoring"
SMARTWATCH = Path("wearables/stanford_covid")
REPEATS = 3


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--persons", type=int, default=3)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.persons < 1 or args.days < 1:
        parser.error("--persons and --days must be at least 1")
    return args


def load_streams(folder: Path, persons: int, days: int) -> dict[str, list[Sample]]:
    """Each chosen person's heart rate and minute steps over their first `days`, time-ordered."""
    codes = [
        code
        for code in smartwatch_persons(folder)
        if (folder / f"{code}_hr.csv.zip").is_file()
        and (folder / f"{code}_steps.csv.zip").is_file()
    ][:persons]
    streams: dict[str, list[Sample]] = {}
    for code in codes:
        merged = heapq.merge(
            read_smartwatch_heart_rate(folder, code),
            read_smartwatch_steps(folder, code, period_minutes=1),
            key=bucket_time,
        )
        samples: list[Sample] = []
        for sample in merged:
            if samples and bucket_time(sample) - bucket_time(samples[0]) > timedelta(days=days):
                break
            samples.append(sample)
        streams[f"stanford-{code}"] = samples
    return streams


def stage_state(streams: dict[str, list[Sample]]) -> float:
    elapsed = 0.0
    for person, samples in streams.items():
        state = PersonState(person)
        started = time.perf_counter()
        for sample in samples:
            state.observe(sample)
        elapsed += time.perf_counter() - started
    return sum(map(len, streams.values())) / elapsed


def stage_monitor(streams: dict[str, list[Sample]]) -> tuple[float, Monitor]:
    monitor = Monitor()
    started = time.perf_counter()
    for samples in streams.values():
        for sample in samples:
            monitor.accept(sample)
    elapsed = time.perf_counter() - started
    return sum(map(len, streams.values())) / elapsed, monitor


def memory_per_person(monitor: Monitor) -> tuple[float, float]:
    """(KiB of live state, KiB of the compressed checkpoint row) per person, with the day each
    person has open (the run ends mid-day, as a live worker always is)."""
    live = [monitor.person_bytes(pid) for pid in monitor.persons]
    saved = [
        len(zlib.compress(json.dumps(monitor.person_snapshot(pid)).encode(), 6))
        for pid in monitor.persons
    ]
    return sum(live) / len(live) / 1024, sum(saved) / len(saved) / 1024


async def stage_worker(samples: list[Sample], stream, store: ResourceStore) -> dict[str, float]:
    started = time.perf_counter()
    for sample in samples:
        await stream.publish(sample)
    published = len(samples) / (time.perf_counter() - started)
    worker = MonitoringWorker(store, AccessLayer(store), worker=uuid.uuid4().hex[:12])
    idle = 0.5
    started = time.perf_counter()
    counters = await worker.processor.run_until_idle(stream, batch_size=1000, idle_seconds=idle)
    elapsed = time.perf_counter() - started - idle  # the closing idle wait is not work
    if counters.processed != len(samples):
        raise SystemExit(f"processed {counters.processed} of {len(samples)}: the bench is broken")
    return {
        "published": published,
        "processed": len(samples) / elapsed,
        "commits": worker.counters.commits,
        "resources": worker.counters.resources_written,
    }


async def stage_workers(samples: list[Sample], url: str, nats_url: str, key: MasterKey) -> dict:
    results = {}
    store = ResourceStore.open(url, key)
    try:
        # the in-process figure is the one the aim is about, and this machine is noisy: run it
        # REPEATS times and report the median run, with the range
        runs = [
            await stage_worker(samples, InProcessStream(capacity=len(samples) + 1), store)
            for _ in range(REPEATS)
        ]
        runs.sort(key=lambda run: run["processed"])
        results["in-process"] = {**runs[len(runs) // 2], "range": [r["processed"] for r in runs]}
        tag = uuid.uuid4().hex[:8]
        config = JetStreamConfig(url=nats_url, stream=f"BENCH_{tag}", prefix=f"bench{tag}.s",
                                 max_ack_pending=50_000)  # fmt: skip
        remote = await JetStreamStream.connect(config)
        try:
            results["jetstream"] = await stage_worker(samples, remote, store)
        finally:
            await remote.delete()
            await remote.close()
    finally:
        store.close()
    return results


def render(args: argparse.Namespace, figures: dict) -> str:
    facts = machine_facts()
    local = figures["workers"]["in-process"]
    base = figures["monitor"]
    rows = [
        ("baselines + detectors only (`PersonState.observe`)", figures["state"], "-"),
        ("whole monitoring path in memory (`Monitor.accept`)", base, "-"),
        ("worker, in-process stream, SQLite commits", figures["workers"]["in-process"]["processed"],
         f"{figures['workers']['in-process']['published']:,.0f}"),
        ("worker, NATS JetStream, SQLite commits", figures["workers"]["jetstream"]["processed"],
         f"{figures['workers']['jetstream']['published']:,.0f}"),
    ]  # fmt: skip
    lines = [
        "## Remote monitoring: throughput and memory",
        "",
        "Command: `.venv/bin/python -m bench.monitoring` (part of `make bench`). Data: the "
        f"Stanford smartwatch export in `../shared/data/{SMARTWATCH}`, the first "
        f"{figures['persons']} persons with heart rate and steps, their first {args.days} days: "
        f"{figures['samples']:,} real samples (heart rate every few seconds, steps per minute). "
        "Every row runs the same samples in the same process, one after another; samples/s "
        "on one core (the worker is one asyncio task).",
        "",
        "| path | samples/s consumed | vs whole path in memory | published/s |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {rate:,.0f} | {rate / base:.2f}x | {pub} |" for label, rate, pub in rows),
        "",
        f"- **Aim: at least 50,000 samples/s per core in-process.** The whole path in memory "
        f"runs {base:,.0f}/s (met). The in-process worker, with its stream, reorder buffer, "
        f"consent check and commits, runs {local['processed']:,.0f}/s, the median of "
        f"{REPEATS} runs ({min(local['range']):,.0f} to {max(local['range']):,.0f}): "
        f"{'met' if local['processed'] >= 50_000 else 'not met'}.",
        f"- The worker committed {figures['workers']['in-process']['commits']} times and wrote "
        f"{figures['workers']['in-process']['resources']} resources (daily summaries, alerts, "
        "engagement Tasks) per run; commits come every 10,000 samples or 5 s.",
        "- JetStream publishing waits for each PubAck one at a time, which is what one "
        "gateway connection pays for at-least-once delivery; many gateways publish in parallel.",
        f"- **Memory per monitored person:** {figures['live_kib']:,.1f} KiB of live state "
        "(baselines with their time-of-day histograms, detectors, 14 days of daily history, "
        "and the open day with its minute heart rate) "
        f"and {figures['saved_kib']:,.1f} KiB compressed in the checkpoint; so about "
        f"{1024 * 1024 / figures['live_kib']:,.0f} persons per GiB.",
        "",
        f"Machine: {facts['cpu']}, {facts['logical_cpus']} logical CPUs, {facts['ram_gib']} GiB, "
        f"Python {facts['python']}, SQLite {facts['sqlite']}; load average at start "
        f"{facts['load_average_at_start']}; {facts['date_utc']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    folder = args.data / SMARTWATCH
    if not folder.is_dir():
        print(f"{folder} is not present; the benchmark needs ../shared/data", file=sys.stderr)
        return 2
    streams = load_streams(folder, args.persons, args.days)
    samples = [sample for stream in streams.values() for sample in stream]
    figures: dict = {"persons": len(streams), "samples": len(samples)}
    figures["state"] = stage_state(streams)
    figures["monitor"], monitor = stage_monitor(streams)
    figures["live_kib"], figures["saved_kib"] = memory_per_person(monitor)
    key = MasterKey.from_text(generate_key_text(), origin="benchmark")
    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite:///{home}/bench.db"
        figures["workers"] = asyncio.run(stage_workers(samples, url, args.nats, key))
    return publish(render(args, figures), args.out, SECTION, write=not args.no_write)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
