"""Per-resource CPU cost of each ingest stage, on one core, side by side in one run.

Where `bench.ingest` measures whole runs, this splits one resource's journey: preparing it in a
worker (parse, validate in each mode, scan, canonical JSON, compress) and writing it in the main
process (keys, hashes, AES-GCM, inserts into a SQLite file). Stages alternate over several rounds
and the median is reported, so the figures can be compared with each other.

    .venv/bin/python -m bench.ingest_stages [--bundles 40] [--rounds 3] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.doc_sections import publish
from bench.ingest import DEFAULT_DATA, REPO_ROOT
from bench.machine import machine_facts
from careloop.ingest.pipeline import Prepared, prepare_document
from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore

SECTION = "ingest-stages"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_stages")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--bundles", type=int, default=40, help="patient bundles to use")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def patient_bundles(archive: Path, count: int) -> list[bytes]:
    bundles = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if (
                member.isfile()
                and member.name.endswith(".json")
                and "Information" not in member.name
            ):
                bundles.append(tar.extractfile(member).read())  # type: ignore[union-attr]
                if len(bundles) == count:
                    break
    return bundles


def prepare_all(bundles: list[bytes], mode: str) -> list[Prepared]:
    return [prepare_document(data, "bench", mode) for data in bundles]  # type: ignore[arg-type]


def write_all(prepared: list[Prepared]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        store = ResourceStore.open(
            f"sqlite:///{scratch}/s.db", MasterKey.from_bytes(os.urandom(32))
        )
        for unit in prepared:
            with store.transaction() as tx:
                tx.put_many(unit.records)  # type: ignore[arg-type]
        store.close()


def microseconds_per_resource(work: Callable[[], object], resources: int) -> float:
    started = time.process_time()
    work()
    return (time.process_time() - started) / resources * 1e6


def measure(bundles: list[bytes], rounds: int) -> tuple[int, dict[str, float]]:
    ready = prepare_all(bundles, "fast")
    resources = sum(len(unit.keys) for unit in ready)
    stages: dict[str, Callable[[], object]] = {
        "prepare, validation off": lambda: prepare_all(bundles, "off"),
        "prepare, fast-path validation": lambda: prepare_all(bundles, "fast"),
        "prepare, fhir.resources for every resource": lambda: prepare_all(bundles, "library"),
        "write (keys, hashes, AES-GCM, SQLite inserts, commit)": lambda: write_all(ready),
    }
    samples: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(rounds):
        for name, work in stages.items():
            samples[name].append(microseconds_per_resource(work, resources))
    return resources, {name: statistics.median(values) for name, values in samples.items()}


def report(args: argparse.Namespace, resources: int, costs: dict[str, float]) -> str:
    machine = machine_facts()
    rows = ["| stage (one core) | CPU µs per resource | resources/s on one core |", "|---|--:|--:|"]
    rows += [f"| {name} | {cost:,.0f} | {1e6 / cost:,.0f} |" for name, cost in costs.items()]
    validation = costs["prepare, fast-path validation"] - costs["prepare, validation off"]
    library = costs["prepare, fhir.resources for every resource"] - costs["prepare, validation off"]
    return "\n".join(
        [
            "## Ingest, stage by stage",
            "",
            f"- **Command**: `.venv/bin/python -m bench.ingest_stages --bundles {args.bundles} "
            f"--rounds {args.rounds}`",
            f"- **Data**: the first {args.bundles} patient bundles of `{args.data.name}` "
            f"({resources:,} resources); CPU time of this process (`time.process_time`), median "
            f"of {args.rounds} interleaved rounds",
            f"- **Machine**: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, Python "
            f"{machine['python']}; {machine['date_utc']}",
            "",
            *rows,
            "",
            f"Validation itself: {validation:,.0f} µs per resource on the fast path, "
            f"{library:,.0f} µs with fhir.resources for every resource "
            f"({library / validation:,.1f}x).",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    bundles = patient_bundles(args.data, args.bundles)
    resources, costs = measure(bundles, args.rounds)
    text = report(args, resources, costs)
    return publish(text, args.out, SECTION, write=not args.no_write)


if __name__ == "__main__":
    raise SystemExit(main())
