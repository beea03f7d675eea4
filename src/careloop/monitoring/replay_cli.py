"""`careloop monitor replay`: the monitoring path over a whole export, one CSV row per person-day.

The CSV is written under a temporary name next to the target and renamed only when the whole
replay succeeded, so a failed run never leaves a file that looks complete.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import click

from careloop.monitoring.importers import ExportError
from careloop.monitoring.replay import ReplayCounters, replay

HEADER = ("person", "date", "score", "alert")


def write_replay_csv(data: Path, out: Path, *, limit_persons: int | None = None) -> ReplayCounters:
    """Replay DATA into OUT (person,date,score,alert); the run's counters."""
    counters = ReplayCounters()
    rows = replay(data, limit_persons=limit_persons, counters=counters)
    partial = out.with_name(f".{out.name}.partial")
    try:
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            for row in rows:
                writer.writerow((row.person, row.date.isoformat(), f"{row.score:.4f}", row.alert))
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    return counters


@click.group("monitor")
def monitor_group() -> None:
    """Remote monitoring of wearable and home-device data."""


@monitor_group.command("replay")
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path),
    help="A Fitbit or Welltory export, or a folder holding several.",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=Path, dir_okay=False), help="CSV to write."
)
@click.option("--limit-persons", type=click.IntRange(1), help="Only the first N persons.")
def replay_command(data: Path, out: Path, limit_persons: int | None) -> None:
    """Run every person's data through quality checks, baselines, detectors and alerting, day
    by day, and write one row per person-day: person,date,score,alert."""
    try:
        counters = write_replay_csv(data, out, limit_persons=limit_persons)
    except (ExportError, OSError, UnicodeDecodeError, csv.Error) as error:
        click.echo(f"Error: {export_error_message(error)}", err=True)
        raise SystemExit(2) from None
    click.echo(
        f"{counters.persons} persons, {counters.person_days} person-days, "
        f"{counters.alerts} alerts; wrote {out}"
    )
    held = ", ".join(f"{why}: {n}" for why, n in sorted(counters.suppressed.items()) if n)
    click.echo(f"suppressed: {held or 'none'}")
    refused = ", ".join(f"{why}: {n}" for why, n in sorted(counters.refused.items()))
    if refused:
        click.echo(f"refused samples: {refused}")


def export_error_message(error: Exception) -> str:
    """What went wrong reading an export, and where, without a traceback or any data value."""
    if isinstance(error, UnicodeDecodeError):
        return f"the data set is not UTF-8 text ({error.reason})"
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    return str(error)
