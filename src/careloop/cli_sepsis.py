"""`careloop train / evaluate / predict sepsis`: the sepsis model from the shell.

These read PhysioNet-layout files directly through the reader (no database), which is public
de-identified research data; data from careloop's store is scored through the access layer.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from careloop.sepsis.evaluate import EvalStay
    from careloop.sepsis.model import SepsisModel

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
@click.option(
    "--holdout/--no-holdout",
    default=True,
    show_default=True,
    help="Keep a fifth of the stays (chosen by a hash of the stay id) out of training, for the "
    "card's held-out figures and fairness tables, the drift reference and the release gate.",
)
@click.option(
    "--params-from",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Reuse the LightGBM settings recorded in this model directory instead of tuning: a "
    "retrain of the same recipe, e.g. a release candidate after a dependency change.",
)
def train_sepsis(
    data: Path,
    out: Path,
    cv_folds: int,
    limit: int | None,
    tune: bool,
    holdout: bool,
    params_from: Path | None,
) -> None:
    """Tune by patient-grouped cross-validation, cross-validate (figures), then train the model
    on the training stays of DATA and write it with its model card to OUT."""
    from careloop.cli import stdout
    from careloop.governance.holdout import HoldoutRule
    from careloop.sepsis.evaluate import cross_validate, load_stays, tune_hyperparameters
    from careloop.sepsis.model import PARAM_CANDIDATES, fingerprint, train, version_of

    stays, summary = load_stays(data, limit=limit)
    _require_labels(stays)
    rule = HoldoutRule() if holdout else None
    training = [s for s in stays if rule is None or not rule.held_out(s.data.stay_id)]
    held = [s for s in stays if rule is not None and rule.held_out(s.data.stay_id)]
    stdout.print(
        f"{summary.stays_scored:,} stays, {summary.hours_scored:,} patient-hours; "
        f"{len(held):,} stays held out",
        highlight=False,
    )
    if params_from is not None:
        params, tuning = _recorded_params(params_from), []
    else:
        params, tuning = tune_hyperparameters(training, PARAM_CANDIDATES) if tune else (None, [])
    cv = cross_validate(training, folds=cv_folds, params=params) if cv_folds >= 2 else None
    if cv is not None:
        cv["tuning"] = tuning
    model, facts = train([s.data for s in training], params=params)
    print_fingerprint = fingerprint(data)
    model.version = version_of(print_fingerprint, model.booster)
    model.trained = {
        **facts,
        "fingerprint": print_fingerprint,
        "data": data.name,
        "stays": len(training),
        "septic_stays": sum(int(s.data.labels.any()) for s in training),  # type: ignore[union-attr]
        "hours": sum(len(s.data.features) for s in training),
        "unscorable": summary.unscorable,
        "holdout": None if rule is None else {**rule.as_dict(), "stays": len(held)},
    }
    _write_artifact(model, cv, training, held, out)
    stdout.print(f"wrote {model.version} to {out}", highlight=False)


def _recorded_params(model_path: Path) -> dict[str, object]:
    """The LightGBM settings a trained model records (its seed aside: training sets its own)."""
    params = _load_model(model_path).trained.get("params")
    if not isinstance(params, dict):
        from careloop.cli import fail

        fail(f"the model in {model_path} records no LightGBM settings")
    return {name: value for name, value in params.items() if name != "seed"}  # type: ignore[union-attr]


def _write_artifact(
    model: SepsisModel,
    cv: dict[str, object] | None,
    training: list[EvalStay],
    held: list[EvalStay],
    out: Path,
) -> None:
    """The model, cv.json, the drift reference, the held-out evaluation with its fairness tables,
    and the card, written whole or not at all."""
    from careloop.governance.artifact import write_artifact
    from careloop.governance.drift import reference_profile, write_reference
    from careloop.governance.model_card import FAIRNESS_FILE, fairness_section
    from careloop.governance.sepsis_adapter import score_stays
    from careloop.sepsis.evaluate import evaluate_all, score_model
    from careloop.sepsis.report import model_card

    def fill(staging: Path) -> None:
        model.save(staging)
        if cv is not None:
            (staging / "cv.json").write_text(json.dumps(cv, indent=2))
        judged = score_stays(model, held) if held else None
        reference = reference_profile(score_stays(model, training), judged=judged)
        write_reference(staging, reference)
        evaluation = fairness = None
        if judged is not None:
            evaluation = evaluate_all(held, score_model(model, held))
            (staging / "holdout.json").write_text(json.dumps(evaluation, indent=2))
            population = (
                f"{len(held):,} stays held out of training (a hash of the stay id), each hour "
                "scored by this model; a patient is a stay, an event a septic stay; TPR, FPR "
                "and alert rate are per hour at the alert policy's state."
            )
            fairness = fairness_section(judged, population)
            (staging / FAIRNESS_FILE).write_text(json.dumps(fairness.to_json(), indent=2))
        meta = json.loads((staging / "model.json").read_text())
        card = model_card(meta, cv, evaluation, fairness and fairness.markdown())
        (staging / "MODEL_CARD.md").write_text(card)

    write_artifact(out, fill)


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
    stays, population = _judged_stays(model, stays, data)
    _require_labels(stays)
    report = evaluate_all(stays, score_model(model, stays))
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "data": str(data),
        "model": model.version,
        "stays_read": summary.stays_read,
        "stays_scored": summary.stays_scored,
        "unscorable": summary.unscorable,
        "judged": population,
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


def _judged_stays(model, stays: list, data: Path) -> tuple[list, str]:  # type: ignore[no-untyped-def]
    """The stays an evaluation may judge: on the file the model was trained on, only the stays
    it held out (none of which it saw); on any other data, every stay."""
    from careloop.governance.holdout import HoldoutRule
    from careloop.sepsis.model import fingerprint

    held = model.trained.get("holdout")
    if model.trained.get("fingerprint") != fingerprint(data):
        return stays, "every scorable stay"
    if not isinstance(held, dict):
        from careloop.cli import fail

        fail(
            f"{model.version} was trained on all of {data.name}: its figures there would flatter it"
        )
    rule = HoldoutRule.from_dict(held)
    return [s for s in stays if rule.held_out(s.data.stay_id)], "stays held out of training"


@predict_group.command("sepsis")
@_data_option
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--model", "model_path", type=click.Path(path_type=Path, file_okay=False))
def predict_sepsis(data: Path, out: Path, model_path: Path | None) -> None:
    """Write patient,hour,prob,alert for every stay-hour of DATA (alert uses rows up to that
    hour only), and beside it FILE.model.json naming the model version. Stays that cannot be
    scored get empty prob and alert, never a made-up score."""
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
    # the version that made every prediction, beside the file (its columns stay as they are)
    note = {"model": model.version, "data": data.name, "policy": model.policy.as_dict()}
    out.with_name(out.name + ".model.json").write_text(json.dumps(note, indent=1) + "\n")
    stdout.print(
        f"wrote {rows:,} stay-hours to {out} ({model.version}); {skipped} stays could not be "
        "scored",
        highlight=False,
    )


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


def _attach_readmission() -> None:
    # the readmission model lives in its own package; `train`, `evaluate` and `predict` are the
    # one place model commands go
    from careloop.readmission.cli import (
        evaluate_readmission,
        predict_readmission,
        train_readmission,
    )

    train_group.add_command(train_readmission)
    evaluate_group.add_command(evaluate_readmission)
    predict_group.add_command(predict_readmission)


_attach_wearables()
_attach_readmission()
