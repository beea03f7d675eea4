"""Alert quality of remote monitoring on the real wearable exports: the issue's alert-quality
table (false alerts per person-month where nothing happened, sensitivity and lead time on
injected episodes, Welltory onsets, beside population thresholds at equal burden).

It runs the same evaluation as `careloop evaluate monitoring` (and writes its report.md,
metrics.json and episodes.csv to --report-dir), times it, and publishes the summary tables into
docs/benchmarks.md.

    .venv/bin/python -m bench.monitoring_quality [--starts-per-person 4] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.doc_sections import publish
from bench.ingest import REPO_ROOT
from bench.machine import machine_facts
from careloop.monitoring.evaluation import (
    PERSONAL,
    STARTS_PER_PERSON,
    EvaluationOptions,
    evaluate_monitoring,
)
from careloop.monitoring.evaluation_report import (
    EPISODE_COLUMNS,
    burden_table,
    detection_cells,
    episode_cells,
    verdict_lines,
    watch_methods,
    write_evaluation,
)
from careloop.monitoring.importers import ExportError

SECTION = "monitoring-quality"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "wearables"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.monitoring_quality")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--starts-per-person", type=int, default=STARTS_PER_PERSON)
    parser.add_argument("--report-dir", type=Path, default=Path("/tmp/careloop-monitoring-eval"))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def _table(header: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "--:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render(args: argparse.Namespace, metrics: Mapping[str, Any], seconds: float) -> str:
    facts = machine_facts()
    injected = metrics["injected"]
    methods = watch_methods(metrics)
    sizes = list(injected["by_size"][PERSONAL]) if injected.get("episodes") else []
    lines = [
        "## Remote monitoring: alert quality on real wearable data",
        "",
        "Reproduce: `.venv/bin/python -m bench.monitoring_quality` (the same evaluation as "
        f"`careloop evaluate monitoring --data ../shared/data/wearables --out DIR "
        f"--starts-per-person {args.starts_per_person}`), on `../shared/data/wearables`: Fitbit "
        "Fitabase 2016 (33 people), Welltory COVID-19 (daily summaries, symptom onsets), Stanford "
        "smartwatch (heart rate and steps, no labels). Personal method with the default alert "
        "policy, nothing tuned to these figures; definitions in "
        "`src/careloop/monitoring/evaluation.py`.",
        "",
        *verdict_lines(metrics),
        "",
        "**False alerts per person-month where nothing is known to have happened** (Fitbit; "
        "Welltory without onset or more than 14 days before it):",
        "",
        *burden_table({m: v["all"] for m, v in metrics["no_event"].items()}, "method"),
        "",
        "**Smartwatch participants** (had COVID-19 at unknown dates: an alert rate, not a "
        "false-alert rate):",
        "",
        *burden_table(
            {m: metrics["smartwatch_observed"]["by_method"][m] for m in methods}, "method"
        ),
        "",
        f"**Injected episodes** ({injected.get('episodes', 0)} on the smartwatch streams; rise "
        "3-10 bpm over 2-5 days, activity down; detected from ramp start to onset + 2 days; lead "
        "= onset minus first alert):",
        "",
        *_table(
            ("size (bpm)", "method", *EPISODE_COLUMNS),
            [
                [size, m, *episode_cells(injected["by_size"][m][size])]
                for size in sizes
                for m in methods
            ],
        ),
        "",
        "**Welltory participants with data before their onset** (alerted on day -7..0):",
        "",
        *_table(
            ("method", "alerted", "share (95%)", "median lead (days)"),
            [
                [m, *detection_cells(o["with_data_before_onset"])]
                for m, o in metrics["welltory_onsets"].get("by_method", {}).items()
            ],
        ),
        "",
        f"Whole run: {seconds:.0f} s wall on a {facts['logical_cpus']}-CPU machine "
        f"({facts['cpu']}, Python {facts['python']}; load average at start "
        f"{facts['load_average_at_start']}; {facts['date_utc']}). Full report: "
        "`report.md`, `metrics.json` and `episodes.csv` in the run's --out folder.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    options = EvaluationOptions(starts_per_person=args.starts_per_person)
    started = time.perf_counter()
    try:
        evaluation = evaluate_monitoring(args.data, options, progress=print)
    except ExportError as error:
        print(f"{error}; the benchmark needs ../shared/data/wearables", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    command = (
        "careloop evaluate monitoring --data ../shared/data/wearables --out "
        f"{args.report_dir} --starts-per-person {args.starts_per_person}"
    )
    write_evaluation(evaluation, args.report_dir, command)
    return publish(render(args, evaluation.metrics, seconds), args.out, SECTION,
                   write=not args.no_write)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
