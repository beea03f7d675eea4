"""The sepsis model's figures: patient-grouped cross-validation on set A (from the shipped
model's `cv.json`, written by `careloop train sepsis`), single-patient scoring latency, and batch
throughput.

- **Latency**: `score_timeline` on one patient's last 48 hours (grid, features, calibrated
  risk, alert policy, SHAP explanation of the last hour), over many real stays.
- **Throughput**: from each stay's timeline to its hourly alert decisions (grid, features,
  calibrated risk, policy), in patient-hours per second on one process, the stays read first.

    .venv/bin/python -m bench.sepsis [--stays 500]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.doc_sections import publish
from bench.ingest import REPO_ROOT
from bench.machine import machine_facts
from careloop.sepsis.features import stay_features
from careloop.sepsis.grid import grid_from_timeline
from careloop.sepsis.model import SepsisModel
from careloop.sepsis.report import metric_table
from careloop.sepsis.scoring import score_timeline
from careloop.sources.physionet import read_physionet

SECTION = "sepsis"
DEFAULT_SET_A = REPO_ROOT.parent / "shared" / "data" / "physionet2019" / "training_setA.tar.gz"
WINDOW_HOURS = 48


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sepsis")
    parser.add_argument("--data", type=Path, default=DEFAULT_SET_A)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "sepsis")
    parser.add_argument("--stays", type=int, default=500)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def latencies(model: SepsisModel, data: Path, stays: int) -> list[float]:
    seconds = []
    for stay in read_physionet(data, limit=stays):
        if not stay.scorable:
            continue
        end = stay.start + timedelta(hours=stay.hours - 1)
        start = max(stay.start, end - timedelta(hours=WINDOW_HOURS - 1))
        began = time.perf_counter()
        score_timeline(model, stay.timeline, start, end, unit=stay.unit)
        seconds.append(time.perf_counter() - began)
    return seconds


def throughput(model: SepsisModel, data: Path, stays: int) -> tuple[int, float]:
    """Patient-hours per second from timeline to alert decision; the stays are read first, so
    the archive's decompression (a one-off per file) is not counted."""
    ready = [stay for stay in read_physionet(data, limit=stays) if stay.scorable]
    hours = 0
    began = time.perf_counter()
    for stay in ready:
        grid = grid_from_timeline(stay.timeline, stay.start, stay.hours, unit=stay.unit)
        probabilities = model.probabilities(stay_features(grid))
        model.policy.states(probabilities)
        hours += stay.hours
    return hours, time.perf_counter() - began


def report(
    args: argparse.Namespace,
    model: SepsisModel,
    cv: dict | None,
    holdout: dict | None,
    seconds: list[float],
    hours: int,
    elapsed: float,
) -> str:
    machine = machine_facts()
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    lines = [
        "## Sepsis model",
        "",
        f"- **Model**: `{model.version}` (`models/sepsis`, trained on set A's stays outside "
        "the holdout)",
        f"- **Machine**: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, Python "
        f"{machine['python']}; {machine['date_utc']}",
    ]
    if cv is not None:
        lines += [
            "",
            f"### Patient-grouped {len(cv['folds'])}-fold cross-validation on set A "
            "(mean ± sd over folds)",
            "",
            "Command: `careloop train sepsis --data ../shared/data/physionet2019/"
            "training_setA.tar.gz --out models/sepsis --cv-folds 5`. Each fold's model is fitted "
            "and calibrated, and its alert threshold chosen, on the other folds' stays only; the "
            "baselines are scored on the same held-out stays at their standard thresholds.",
            "",
            *metric_table(cv["summary"]),
        ]
    if holdout is not None:
        held = model.trained.get("holdout") or {}
        lines += [
            "",
            f"### Held-out stays of set A ({held.get('stays', '?')} stays never used in training)",
            "",
            "From the model's `holdout.json`, written by the same command: the shipped model "
            "and the baselines on the stays its holdout rule kept out of training, tuning and "
            "calibration.",
            "",
            *metric_table({name: entry["overall"] for name, entry in holdout.items()}),
        ]
    lines += [
        "",
        "### Scoring speed",
        "",
        f"Command: `.venv/bin/python -m bench.sepsis --stays {args.stays}`; the first "
        f"{args.stays} stays of `{args.data.name}`.",
        "",
        "| what | figure |",
        "|---|--:|",
        f"| one patient, last {WINDOW_HOURS} h (features, risk, policy, explanation): p50 | "
        f"{statistics.median(seconds) * 1e3:.1f} ms |",
        f"| same: p95 | {p95 * 1e3:.1f} ms |",
        f"| batch, {hours:,} patient-hours: grid, features, risk, alert policy | "
        f"{hours / elapsed:,.0f} patient-hours/s |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    model = SepsisModel.load(args.model)
    cv_path = args.model / "cv.json"
    cv = json.loads(cv_path.read_text()) if cv_path.exists() else None
    holdout_path = args.model / "holdout.json"
    holdout = json.loads(holdout_path.read_text()) if holdout_path.exists() else None
    seconds = latencies(model, args.data, args.stays)
    hours, elapsed = throughput(model, args.data, args.stays)
    text = report(args, model, cv, holdout, seconds, hours, elapsed)
    return publish(text, args.out, SECTION, write=not args.no_write)


if __name__ == "__main__":
    raise SystemExit(main())
