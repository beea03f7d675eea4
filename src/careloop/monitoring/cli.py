"""`careloop convert wearables`: vendor exports to Bulk NDJSON that `careloop ingest` loads.

Files are written under temporary names and renamed only when the whole conversion succeeded,
so a failed run never leaves an NDJSON file that looks complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import orjson

from careloop.monitoring.baseline import resting_heart_rate
from careloop.monitoring.fhir import sample_to_observation
from careloop.monitoring.importers import (
    ExportError,
    ImportReport,
    find_exports,
    read_fitbit,
    read_smartwatch_heart_rate,
    read_smartwatch_steps,
    read_welltory,
    smartwatch_persons,
)
from careloop.monitoring.signals import Sample


def _smartwatch(folder: Path, report: ImportReport, raw: bool, limit: int | None) -> Iterator:
    """Hourly steps and a daily resting heart rate per person (every reading with `raw`)."""
    persons = smartwatch_persons(folder)[:limit]
    for person in persons:
        yield from read_smartwatch_steps(folder, person, report)
        if not (folder / f"{person}_hr.csv.zip").is_file():
            continue
        if raw:
            yield from read_smartwatch_heart_rate(folder, person, report)
        if (folder / f"{person}_steps.csv.zip").is_file():
            minutes = read_smartwatch_steps(folder, person, ImportReport(), period_minutes=1)
            heart = read_smartwatch_heart_rate(folder, person, ImportReport())
            for sample in resting_heart_rate(heart, minutes):
                report.kept(sample)
                yield sample


def write_wearables_ndjson(
    data: Path, out: Path, *, raw_heart_rate: bool = False, limit: int | None = None
) -> dict[str, ImportReport]:
    """Write Patient.ndjson and Observation.ndjson for every export found in DATA."""
    data_sets = find_exports(data)
    if not data_sets:
        raise ExportError(f"{data}: no Fitbit, Welltory or smartwatch export found")
    out.mkdir(parents=True, exist_ok=True)
    reports = {name: ImportReport() for name in data_sets}
    temporary = {kind: out / f".{kind}.ndjson.partial" for kind in ("Patient", "Observation")}
    try:
        with temporary["Observation"].open("wb") as handle:
            for name, folder in data_sets.items():
                for sample in _samples(name, folder, reports[name], raw_heart_rate, limit):
                    handle.write(orjson.dumps(sample_to_observation(sample)) + b"\n")
        persons = sorted(set().union(*(r.persons for r in reports.values())))
        with temporary["Patient"].open("wb") as handle:
            for person_id in persons:
                patient = {"resourceType": "Patient", "id": person_id, "active": True}
                handle.write(orjson.dumps(patient) + b"\n")
    except BaseException:
        for path in temporary.values():
            path.unlink(missing_ok=True)
        raise
    for kind, path in temporary.items():
        path.replace(out / f"{kind}.ndjson")
    return reports


def _samples(
    name: str, folder: Path, report: ImportReport, raw: bool, limit: int | None
) -> Iterator[Sample]:
    if name == "fitbit":
        return read_fitbit(folder, report)
    if name == "welltory":
        return read_welltory(folder, report)
    return _smartwatch(folder, report, raw, limit)


@click.command("wearables")
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="A Fitbit, Welltory or Stanford smartwatch export, or a folder holding several.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--raw-heart-rate", is_flag=True, help="Also every smartwatch heart-rate reading.")
@click.option("--limit", type=click.IntRange(1), help="Only the first N smartwatch persons.")
def convert_wearables_command(
    data: Path, out: Path, raw_heart_rate: bool, limit: int | None
) -> None:
    """Write wearable exports as FHIR NDJSON (Patient, Observation) to OUT; load them with
    `careloop ingest OUT`. Rows left out are counted by reason."""
    try:
        reports = write_wearables_ndjson(data, out, raw_heart_rate=raw_heart_rate, limit=limit)
    except (ExportError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    for name, report in reports.items():
        skipped = ", ".join(f"{why}: {n:,}" for why, n in sorted(report.skipped.items()))
        click.echo(
            f"{name}: {len(report.persons)} persons, {report.total:,} samples"
            + (f"; skipped {skipped}" if skipped else "")
        )
    click.echo(f"wrote Patient.ndjson and Observation.ndjson to {out}")
