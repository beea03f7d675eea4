"""`careloop train / evaluate / predict readmission`: the readmission model from the shell.

The commands read encounter files in the Diabetes 130-US hospitals layout directly (public
de-identified research data, so no consent filter applies); the lead attaches them to the
`train`, `evaluate` and `predict` groups.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

import click
import numpy as np

from careloop.readmission.data import GROUP_NAMES, ReadmissionDataError

DEFAULT_MODEL = Path(__file__).resolve().parents[3] / "models" / "readmission"
MODEL_ENV = "CARELOOP_READMISSION_MODEL"


def model_dir() -> Path:
    return Path(os.environ.get(MODEL_ENV, DEFAULT_MODEL))


def _data_option(function):  # type: ignore[no-untyped-def]
    return click.option(
        "--data",
        "data",
        required=True,
        type=click.Path(path_type=Path),
        help="Encounters as CSV (.csv, .csv.gz) in the Diabetes 130-US hospitals layout.",
    )(function)


def _model_option(function):  # type: ignore[no-untyped-def]
    return click.option(
        "--model",
        "model_path",
        type=click.Path(path_type=Path, file_okay=False),
        help=f"Model directory (default: ${MODEL_ENV} or models/readmission).",
    )(function)


@click.command("readmission")
@_data_option
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--cv-folds", default=5, show_default=True, type=click.IntRange(0, 10))
@click.option(
    "--reweigh",
    type=click.Choice(GROUP_NAMES),
    help="Mitigation: reweigh training rows so this group and the outcome are independent.",
)
@click.option("--limit", type=click.IntRange(1), help="Use only the first N encounters (testing).")
def train_readmission(
    data: Path, out: Path, cv_folds: int, reweigh: str | None, limit: int | None
) -> None:
    """Cross-validate by patient (figures), fit on the patients the holdout rule does not keep
    aside, calibrate, and write the model with its card to OUT."""
    from careloop.cli import fail, stdout
    from careloop.readmission.pipeline import train_artifact

    try:
        meta = train_artifact(data, out, cv_folds=cv_folds, reweigh=reweigh, limit=limit)
    except (ReadmissionDataError, ValueError) as exc:
        fail(str(exc))
        return
    model = meta.get("metrics", {}).get("model", {})  # type: ignore[union-attr]
    figure = f"; held-out AUROC {model['auroc']:.3f}" if model.get("auroc") else ""
    stdout.print(f"wrote {meta['version']} to {out}{figure}", highlight=False)


@click.command("readmission")
@_data_option
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False))
@_model_option
def evaluate_readmission(data: Path, out: Path, model_path: Path | None) -> None:
    """Score DATA with the model and LACE side by side; write metrics.json and report.md to OUT.
    On the training file only the held-out patients are judged."""
    from careloop.cli import fail, stdout
    from careloop.readmission.card import evaluation_report
    from careloop.readmission.data import read_encounters
    from careloop.readmission.pipeline import evaluate_rows, evaluation_rows, score

    model = _load_model(model_path)
    try:
        encounters = read_encounters(data)
    except ReadmissionDataError as exc:
        fail(str(exc))
        return
    if encounters.labels is None:
        fail(f"{data.name} has no readmitted column: evaluation needs the outcomes")
        return
    _note_absent_demographics(encounters)
    rows, population = evaluation_rows(model, encounters, data)
    if rows.size == 0:
        fail(f"no encounter of {data.name} can be judged ({population})", code=1)
        return
    results = evaluate_rows(model, score(model, encounters), rows)
    metrics = {"data": data.name, "model": model.version, "population": population, **results}
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    _write_text(out / "report.md", evaluation_report(results, data.name, model.version, population))
    ours, lace = results["model"], results["lace"]
    stdout.print(
        f"AUROC {ours['auroc']:.3f} (LACE {lace['auroc']:.3f}) on {ours['rows']:,} encounters "  # type: ignore[index]
        f"of {population}; report in {out}",
        highlight=False,
    )


@click.command("readmission")
@_data_option
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@_model_option
def predict_readmission(data: Path, out: Path, model_path: Path | None) -> None:
    """Write encounter_id,prob for every encounter of DATA (the outcome column is not needed),
    and beside it FILE.model.json naming the model version and the encounters it would flag.
    A file with a value that cannot be read is refused whole, saying where."""
    from careloop.cli import fail, stdout
    from careloop.readmission.data import read_encounters
    from careloop.readmission.pipeline import score

    model = _load_model(model_path)
    try:
        scored = score(model, read_encounters(data))
    except ReadmissionDataError as exc:
        fail(str(exc))
        return
    unscorable = np.flatnonzero(~np.isfinite(scored.probs))
    if unscorable.size:
        fail(
            f"{unscorable.size} encounters could not be scored (first on line {unscorable[0] + 2})"
        )
        return
    ids = scored.encounters.encounter_ids
    rows = zip(ids, scored.probs, strict=True)
    # the file is exactly encounter_id,prob so anyone can score it; the version that made every
    # prediction, and which rows its operating point alerts on, go in the file beside it
    _write_text(out.with_name(out.name + ".model.json"), predictions_note(model, scored, data))
    _write_csv(out, ["encounter_id", "prob"], ([i, f"{p:.6f}"] for i, p in rows))
    stdout.print(f"wrote {ids.size:,} encounters to {out} ({model.version})", highlight=False)


def predictions_note(model, scored, data: Path) -> str:  # type: ignore[no-untyped-def]
    """What stands behind a predictions file: the model version, its alert threshold, and the
    encounters its operating point would flag."""
    note = {
        "model": model.version,
        "data": data.name,
        "encounters": int(scored.encounters.encounter_ids.size),
        "policy": model.meta().get("policy"),
        "alerted_encounters": [
            str(i) for i, a in zip(scored.encounters.encounter_ids, scored.alerts, strict=True) if a
        ],
    }
    return json.dumps(note, indent=1) + "\n"


def _note_absent_demographics(encounters) -> None:  # type: ignore[no-untyped-def]
    """Say which demographic columns the file lacks: its rows fall in the group "unknown"."""
    from careloop.cli import stderr

    if encounters.absent_demographics:
        stderr.print(
            f"note: {encounters.source.name} has no {', '.join(encounters.absent_demographics)} "
            "column: every encounter is in the group 'unknown' for it (not a model input)",
            highlight=False,
        )


def _load_model(model_path: Path | None):  # type: ignore[no-untyped-def]
    from careloop.cli import fail
    from careloop.readmission.model import ReadmissionModel

    path = model_path or model_dir()
    if not (path / "model.json").exists():
        fail(f"no readmission model in {path}; train one with `careloop train readmission`")
    try:
        return ReadmissionModel.load(path)
    except (ValueError, OSError, KeyError) as exc:
        fail(f"the model in {path} cannot be loaded: {exc}")


def _temporary_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    return Path(name)


def _write_text(path: Path, text: str) -> None:
    temporary = _temporary_beside(path)
    temporary.write_text(text)
    temporary.replace(path)


def _write_csv(path: Path, header: list[str], rows) -> None:  # type: ignore[no-untyped-def]
    temporary = _temporary_beside(path)
    try:
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
