"""`careloop train / evaluate / predict sepsis`: the sepsis model from the shell.

These read PhysioNet-layout files directly through the reader (no database), which is public
de-identified research data; data from careloop's store is scored through the access layer.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import click

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "sepsis"


def model_dir() -> Path:
    return Path(os.environ.get("CARELOOP_SEPSIS_MODEL", DEFAULT_MODEL))


@click.group("train")
def train_group() -> None:
    """Train models."""


@click.group("evaluate")
def evaluate_group() -> None:
    """Evaluate models against the baselines."""


@click.group("predict")
def predict_group() -> None:
    """Write predictions anyone can score."""


def _data_option(function):  # type: ignore[no-untyped-def]
    return click.option(
        "--data",
        "data",
        required=True,
        type=click.Path(path_type=Path, exists=True),
        help="A directory of .psv files, or a .tar.gz / .zip of them.",
    )(function)


@train_group.command("sepsis")
@_data_option
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--cv-folds", default=5, show_default=True, type=click.IntRange(0, 10))
@click.option("--limit", type=click.IntRange(1), help="Use only the first N stays (testing).")
@click.option(
    "--tune/--no-tune",
    default=True,
    show_default=True,
    help="Choose LightGBM settings by 3-fold patient-grouped cross-validation.",
)
def train_sepsis(data: Path, out: Path, cv_folds: int, limit: int | None, tune: bool) -> None:
    """Tune by patient-grouped cross-validation, cross-validate (figures), then train the model
    on all of DATA and write it with its model card to OUT."""
    from careloop.cli import stdout
    from careloop.sepsis.evaluate import cross_validate, load_stays, tune_hyperparameters
    from careloop.sepsis.model import PARAM_CANDIDATES, fingerprint, train, version_of
    from careloop.sepsis.report import model_card

    stays, summary = load_stays(data, limit=limit)
    _require_labels(stays)
    stdout.print(f"{summary.stays_scored:,} stays, {summary.hours_scored:,} patient-hours")
    params, tuning = tune_hyperparameters(stays, PARAM_CANDIDATES) if tune else (None, [])
    cv = cross_validate(stays, folds=cv_folds, params=params) if cv_folds >= 2 else None
    if cv is not None:
        cv["tuning"] = tuning
    model, facts = train([s.data for s in stays], params=params)
    print_fingerprint = fingerprint(data)
    model.version = version_of(print_fingerprint)
    model.trained = {
        **facts,
        "fingerprint": print_fingerprint,
        "data": data.name,
        "stays": summary.stays_scored,
        "septic_stays": sum(int(s.data.labels.any()) for s in stays),  # type: ignore[union-attr]
        "hours": summary.hours_scored,
        "unscorable": summary.unscorable,
    }
    model.save(out)
    meta = json.loads((out / "model.json").read_text())
    if cv is not None:
        (out / "cv.json").write_text(json.dumps(cv, indent=2))
    (out / "MODEL_CARD.md").write_text(model_card(meta, cv))
    stdout.print(f"wrote {model.version} to {out}", highlight=False)


@evaluate_group.command("sepsis")
@_data_option
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--model", "model_path", type=click.Path(path_type=Path, file_okay=False))
@click.option("--limit", type=click.IntRange(1))
def evaluate_sepsis(data: Path, out: Path, model_path: Path | None, limit: int | None) -> None:
    """Score DATA with the model and the qSOFA/SIRS/NEWS2 baselines; write metrics.json and
    report.md (with the reliability plot) to OUT."""
    from careloop.cli import stdout
    from careloop.sepsis.evaluate import evaluate_all, load_stays, score_model
    from careloop.sepsis.report import evaluation_report, write_reliability_plot

    model = _load_model(model_path)
    stays, summary = load_stays(data, limit=limit)
    _require_labels(stays)
    report = evaluate_all(stays, score_model(model, stays))
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "data": str(data),
        "model": model.version,
        "stays_read": summary.stays_read,
        "stays_scored": summary.stays_scored,
        "unscorable": summary.unscorable,
        "results": report,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_reliability_plot(report["model"]["reliability"], out / "reliability.png")  # type: ignore[arg-type]
    (out / "report.md").write_text(evaluation_report(report, str(data), model.version))
    overall = report["model"]["overall"]
    stdout.print(
        f"utility {overall['normalized_utility']:.3f}, AUROC {overall['auroc']:.3f} "  # type: ignore[index]
        f"on {summary.stays_scored:,} stays; report in {out}",
        highlight=False,
    )


@predict_group.command("sepsis")
@_data_option
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--model", "model_path", type=click.Path(path_type=Path, file_okay=False))
def predict_sepsis(data: Path, out: Path, model_path: Path | None) -> None:
    """Write patient,hour,prob,alert for every stay-hour of DATA (alert uses rows up to that
    hour only). Stays that cannot be scored get empty prob and alert, never a made-up score."""
    from careloop.cli import stdout
    from careloop.sepsis.features import stay_features
    from careloop.sepsis.grid import grid_from_timeline
    from careloop.sources.physionet import read_physionet

    model = _load_model(model_path)
    rows = skipped = 0
    temporary = out.with_name(out.name + ".partial")
    with open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient", "hour", "prob", "alert"])
        for stay in read_physionet(data):
            if not stay.scorable:
                skipped += 1
                writer.writerows([stay.stay_id, hour, "", ""] for hour in range(stay.hours))
                rows += stay.hours
                continue
            grid = grid_from_timeline(
                stay.timeline, stay.start, stay.hours, stay_id=stay.stay_id, unit=stay.unit
            )
            probs = model.probabilities(stay_features(grid))
            states = model.policy.states(probs)
            writer.writerows(
                [stay.stay_id, hour, f"{prob:.6f}", int(state)]
                for hour, (prob, state) in enumerate(zip(probs, states, strict=True))
            )
            rows += stay.hours
    temporary.replace(out)
    stdout.print(f"wrote {rows:,} stay-hours to {out}; {skipped} stays could not be scored")


def _load_model(model_path: Path | None):  # type: ignore[no-untyped-def]
    from careloop.cli import fail
    from careloop.sepsis.model import SepsisModel

    path = model_path or model_dir()
    if not (path / "model.json").exists():
        fail(f"no sepsis model in {path}; train one with `careloop train sepsis`")
    try:
        return SepsisModel.load(path)
    except (ValueError, OSError) as exc:
        fail(str(exc))


def _require_labels(stays: list) -> None:  # type: ignore[type-arg]
    from careloop.cli import fail

    if not stays:
        fail("no stay could be scored in this data", code=1)
    if any(stay.data.labels is None for stay in stays):
        fail("training and evaluation need the SepsisLabel column in every file")


@click.group("convert")
def convert_group() -> None:
    """Convert other data layouts to FHIR for `careloop ingest`."""


@convert_group.command("physionet")
@_data_option
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--limit", type=click.IntRange(1), help="Only the first N stays.")
def convert_physionet(data: Path, out: Path, limit: int | None) -> None:
    """Write PhysioNet 2019 stays as FHIR NDJSON (Patient, Encounter, LOINC Observations) to
    OUT; load them with `careloop ingest OUT`. Stays with invalid data are left out."""
    from careloop.cli import stdout
    from careloop.sources.physionet import write_fhir_ndjson

    counts = write_fhir_ndjson(data, out, limit=limit)
    summary = ", ".join(f"{name}: {count:,}" for name, count in sorted(counts.items()))
    stdout.print(f"wrote {summary} to {out}", highlight=False)


def _attach_wearables() -> None:
    # the device importers live with remote monitoring; `convert` is the one place converters go
    from careloop.monitoring.cli import convert_wearables_command
    from careloop.monitoring.evaluate_cli import evaluate_monitoring_command

    convert_group.add_command(convert_wearables_command)
    evaluate_group.add_command(evaluate_monitoring_command)


_attach_wearables()
