"""`careloop evaluate monitoring`: the alert-quality evaluation of remote monitoring.

The evaluation itself is imported when the command runs, so the CLI starts fast.
"""

from __future__ import annotations

import csv
import shlex
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from careloop.monitoring.importers import ExportError
from careloop.monitoring.replay_cli import export_error_message

if TYPE_CHECKING:
    from careloop.monitoring.evaluation import EvaluationOptions


@click.command("monitoring")
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path),
    help="The wearables folder (Fitbit, Welltory, smartwatch exports), or one export.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for report.md, metrics.json and episodes.csv.",
)
@click.option(
    "--watch-persons",
    type=click.IntRange(1),
    help="Only the first N smartwatch persons with heart rate (all by default).",
)
@click.option(
    "--starts-per-person",
    type=click.IntRange(1),
    help="Random episode starts per smartwatch person, each tried with every size and ramp "
    "(default 4).",
)
@click.option("--seed", type=int, help="Seed of the episode starts (default fixed).")
def evaluate_monitoring_command(
    data: Path,
    out: Path,
    watch_persons: int | None,
    starts_per_person: int | None,
    seed: int | None,
) -> None:
    """False alerts per person-month where nothing happened (Fitbit, Welltory), sensitivity
    and lead time on injected episodes (smartwatch), Welltory onsets, all beside population
    thresholds; write report.md, metrics.json and episodes.csv to OUT."""
    from careloop.monitoring.evaluation import EvaluationOptions, evaluate_monitoring
    from careloop.monitoring.evaluation_report import write_evaluation

    options = EvaluationOptions(watch_persons=watch_persons)
    if starts_per_person is not None:
        options = replace(options, starts_per_person=starts_per_person)
    if seed is not None:
        options = replace(options, seed=seed)
    started = time.perf_counter()
    try:
        evaluation = evaluate_monitoring(data, options, progress=_progress)
    except (ExportError, OSError, UnicodeDecodeError, csv.Error) as error:
        click.echo(f"Error: {export_error_message(error)}", err=True)
        raise SystemExit(2) from None
    command = _command(data, out, options)
    written = write_evaluation(evaluation, out, command)
    verdict = evaluation.metrics["verdict"]
    click.echo(
        f"{len(evaluation.trials)} injected episodes; personal baselines win at equal burden: "
        f"{verdict.get('wins')}; {time.perf_counter() - started:.0f} s; wrote "
        + ", ".join(str(path) for path in written)
    )


def _command(data: Path, out: Path, options: EvaluationOptions) -> str:
    """The command line that reproduces this run, for the report."""
    words = ["careloop", "evaluate", "monitoring", "--data", str(data), "--out", str(out)]
    if options.watch_persons is not None:
        words += ["--watch-persons", str(options.watch_persons)]
    words += ["--starts-per-person", str(options.starts_per_person), "--seed", str(options.seed)]
    return shlex.join(words)


def _progress(message: str) -> None:
    click.echo(message, err=True)
