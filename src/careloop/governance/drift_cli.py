"""`careloop drift`: the drift monitoring job and its history (see `governance/drift.py`).

    careloop drift reference --model REF --data PATH   # once per model, before registering it
    careloop drift run --model REF --data PATH --windows 7 [--notify-url URL]
    careloop drift history --model REF

`drift run` is meant to run unattended. It exits 0 when every window is ok, 0 with a warning on
stderr when one is at warn, 1 when one is at alert (so cron mails it and CI fails), 2 on bad input.
The AI team's webhook comes from `--notify-url` or CARELOOP_DRIFT_WEBHOOK; the store and master
key from the usual configuration (CARELOOP_DATABASE_URL, CARELOOP_MASTER_KEY_FILE ...).

Scheduling it daily at 02:15 with cron (`crontab -e` as the careloop service user):

    15 2 * * * cd /srv/careloop && CARELOOP_DRIFT_WEBHOOK=https://chat.example/hooks/ai-team \
      .venv/bin/careloop drift run --model readmission-1 --data /exports/discharges-7d.csv.gz \
      --windows 7 >> /var/log/careloop/drift.log 2>&1

or with a systemd timer (`careloop-drift.timer` with `OnCalendar=*-*-* 02:15:00` and
`Persistent=true`, starting a `Type=oneshot` `careloop-drift.service` whose `ExecStart=` is the
command above and whose `EnvironmentFile=/etc/careloop/drift.env` holds the webhook URL, so the
URL and its token stay out of the unit file and the process list).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from careloop.cli_helpers import fail, open_configured_store, out
from careloop.governance.adapters import UnknownModel, load_governed, model_meta, resolve_artifact
from careloop.governance.drift import (
    DriftHistory,
    DriftInputError,
    DriftJob,
    DriftResult,
    DriftThresholds,
    load_reference,
    reference_profile,
    run_drift_job,
    write_reference,
)
from careloop.governance.holdout import HoldoutRule
from careloop.governance.scored import GovernedModel, ScoredSet
from careloop.store.repository import ResourceStore

_DATA = click.Path(exists=True, path_type=Path)


@click.group("drift")
def drift_group() -> None:
    """Drift monitoring: inputs, predicted risk, alert rate, performance and overrides compared
    with what a model saw at training; history kept, the AI team notified."""


def _registry_lookup(store: ResourceStore) -> Callable[[str], Path | None]:
    """Registered versions' artifacts, each verified against its checksum."""
    from careloop.config import load_settings
    from careloop.governance.registry import ModelRegistry
    from careloop.governance.registry_cli import registry_root

    return ModelRegistry(store, registry_root(load_settings().home)).lookup_artifact


def _lookup_errors() -> tuple[type[Exception], ...]:
    """What resolving a reference raises when it names nothing usable (a tampered registered
    artifact included)."""
    from careloop.governance.registry import RegistryError

    return (UnknownModel, LookupError, RegistryError)


def _resolve(reference: str, store: ResourceStore | None) -> Path:
    try:
        lookup = None if store is None else _registry_lookup(store)
        return resolve_artifact(reference, lookup)
    except _lookup_errors() as exc:
        fail(str(exc))


def _load(artifact: Path) -> GovernedModel:
    try:
        return load_governed(artifact)
    except (UnknownModel, ImportError, OSError, ValueError) as exc:
        fail(f"cannot load the model in {artifact}: {exc}")


def _score(model: GovernedModel, data: Path, limit: int | None) -> ScoredSet:
    try:
        return model.score_data(data, limit=limit)
    except (ValueError, KeyError, OSError) as exc:
        fail(f"cannot score {data} with {model.version}: {exc}")


def training_partition(
    model: GovernedModel, scored: ScoredSet
) -> tuple[ScoredSet, ScoredSet | None, str]:
    """The rows of patients the model was trained on, and those of the patients it held out
    (None without a holdout rule: then every row is a training row)."""
    rule = model.training_holdout()
    if not rule:
        return scored, None, "no training holdout recorded: every row used"
    held_out = HoldoutRule.from_dict(rule).mask(scored.patient_ids)
    judged = scored.subset(held_out) if held_out.any() else None
    note = f"{int(held_out.sum())} rows of held-out patients judge performance"
    return scored.subset(~held_out), judged, note


def _unseen_rows(model: GovernedModel, scored: ScoredSet, data: Path) -> ScoredSet:
    """On the model's own training file, only the patients it held out: its training rows
    would show it better than it is."""
    from careloop.governance.gate import data_fingerprints, training_fingerprint

    if training_fingerprint(model) not in data_fingerprints(data):
        return scored
    _, judged, _ = training_partition(model, scored)
    if judged is None:
        fail(f"{data.name} is what {model.version} was trained on, with no patients held out")
    out().print(
        f"{data.name} is the model's training file: only the {judged.rows:,} rows of patients "
        "it held out are checked",
        highlight=False,
    )
    return judged  # type: ignore[return-value]


@drift_group.command("reference")
@click.option("--model", "model_ref", required=True, help="model directory or shipped version")
@click.option("--data", required=True, type=_DATA, help="the data the model was trained on")
@click.option("--bins", default=10, show_default=True, type=click.IntRange(2, 100))
@click.option("--limit", type=click.IntRange(1), default=None, help="score at most N units")
def drift_reference(model_ref: str, data: Path, bins: int, limit: int | None) -> None:
    """Write the model's reference profile (reference.json in its artifact) from its training
    data: per-feature and predicted-risk bins, alert rate, outcome rate and AUROC.

    Run it before registering the model: a registered artifact is sealed by its checksum, so
    only a model directory or a shipped version is accepted here.
    """
    artifact = _resolve(model_ref, None)
    model = _load(artifact)
    scored, judged, note = training_partition(model, _score(model, data, limit))
    try:
        path = write_reference(artifact, reference_profile(scored, bins=bins, judged=judged))
    except DriftInputError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the reference into {artifact}: {exc.strerror}")
    out().print(
        f"reference for {model.version}: {scored.rows} {scored.unit} rows "
        f"({note}) written to {path}",
        highlight=False,
    )


def override_rate(store: ResourceStore, version: str, days: int) -> tuple[float | None, str]:
    """The share of answered CDS cards clinicians overrode in the last `days` days: the cards
    naming this model version when any do, else every card (the feedback report's total)."""
    from careloop.cds.overrides import override_report

    since = datetime.now(UTC) - timedelta(days=days)
    report = override_report(store, since, by=("model",))
    own = [row for row in report.rows if row.group == (version,)]
    if own:
        return own[0].override_rate, f"cards of {version}, last {days} days"
    return report.total.override_rate, f"all cards, last {days} days (none name {version})"


@drift_group.command("run")
@click.option("--model", "model_ref", required=True, help="model directory or version")
@click.option("--data", required=True, type=_DATA, help="recent data, in the model's layout")
@click.option(
    "--windows",
    default=4,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="consecutive time windows to check (rows ordered by encounter id, else file order)",
)
@click.option(
    "--notify-url",
    envvar="CARELOOP_DRIFT_WEBHOOK",
    show_envvar=True,
    default=None,
    help="the AI team's webhook: POSTed a JSON summary (no patient data) on warn or alert",
)
@click.option(
    "--store-feedback/--no-store-feedback",
    default=True,
    show_default=True,
    help="judge the override rate of CDS cards recorded in the store",
)
@click.option("--feedback-days", default=30, show_default=True, type=click.IntRange(1))
@click.option(
    "--thresholds",
    "thresholds_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML or JSON overriding the default thresholds (names as in DriftThresholds)",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="score at most N units")
def drift_run(
    model_ref: str,
    data: Path,
    windows: int,
    notify_url: str | None,
    store_feedback: bool,
    feedback_days: int,
    thresholds_file: Path | None,
    limit: int | None,
) -> None:
    """Check recent data for drift against the model's reference, window by window; record
    each window in the history and notify the AI team when one is beyond a threshold.

    Exit status: 0 ok, 0 with a warning at warn, 1 at alert, 2 on bad input. Schedule it
    daily, e.g. with cron:

    \b
      15 2 * * * cd /srv/careloop && .venv/bin/careloop drift run \\
        --model VERSION --data /exports/last-7-days.csv.gz --windows 7 \\
        >> /var/log/careloop/drift.log 2>&1

    with CARELOOP_DRIFT_WEBHOOK set in the job's environment (or a systemd timer running the
    same command; see `careloop.governance.drift_cli`).
    """
    from careloop.audit.cli import local_agent

    try:
        thresholds = DriftThresholds.load(thresholds_file) if thresholds_file else DriftThresholds()
    except ValueError as exc:
        fail(str(exc))
    store = open_configured_store()
    try:
        artifact = _resolve(model_ref, store)
        model = _load(artifact)
        try:
            reference = load_reference(artifact)
        except DriftInputError as exc:
            fail(str(exc))
        scored = _unseen_rows(model, _score(model, data, limit), data)
        rate, rate_source = (
            override_rate(store, model.version, feedback_days) if store_feedback else (None, "")
        )
        try:
            job = run_drift_job(
                store,
                reference,
                scored,
                windows=windows,
                label=data.name,
                thresholds=thresholds,
                override_rate=rate,
                notify_url=notify_url,
                agent=local_agent(),
            )
        except DriftInputError as exc:
            fail(str(exc))
    finally:
        store.close()
    _print_job(job, rate_source)
    if job.status == "alert":
        sys.exit(1)


def _print_job(job: DriftJob, rate_source: str) -> None:
    console = out()
    for result in job.results:
        console.print(run_line(result, with_run_at=False), highlight=False)
    for result in job.results:
        for line in [*result.breaches, *result.notes]:
            console.print(f"  {result.window}: {line}", highlight=False)
    if rate_source:
        console.print(f"override rate from {rate_source}", highlight=False)
    console.print(job.notification.detail, highlight=False)
    if job.audit:
        console.print(job.audit, highlight=False)
    if job.status == "warn":
        click.echo("warning: drift at warn level; see the breaches above", err=True)
    elif job.status == "alert":
        click.echo("drift ALERT: the model is beyond its alert thresholds", err=True)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run_line(r: DriftResult, *, with_run_at: bool) -> str:
    """One window on one line of plain text (cron mails and logs are read as text)."""
    top = max(r.feature_psi.items(), key=lambda kv: kv[1], default=None)
    status = r.status.upper() if r.judged else f"{r.status.upper()} (too few rows)"
    auroc = "pending" if r.outcomes == "pending" else _fmt(r.auroc, ".3f")
    fields = [f"{r.window:<24}", f"{r.rows:>7} rows", f"{status:<5}"]
    if top is not None:
        fields.append(f"top input PSI {top[1]:.2f} ({top[0]})")
    fields += [
        f"risk PSI {r.risk_psi:.2f}",
        f"alerts {r.alert_rate:.1%} (ref {r.reference_alert_rate:.1%})",
        f"AUROC {auroc}",
        f"overrides {_fmt(r.override_rate, '.0%')}",
        f"notified {'yes' if r.notified else 'no'}",
    ]
    if with_run_at:
        fields.insert(0, r.run_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    return "  ".join(fields)


@drift_group.command("history")
@click.option("--model", "model_ref", required=True, help="model directory or version")
@click.option("--json", "as_json", is_flag=True, help="print the runs as JSON")
def drift_history(model_ref: str, as_json: bool) -> None:
    """The drift checks recorded for a model version, oldest first."""
    store = open_configured_store()
    try:
        version = _version_of(model_ref, store)
        runs = DriftHistory(store).runs(version)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([_run_json(r) for r in runs], indent=1))
        return
    if not runs:
        out().print(f"no drift checks recorded for {version}", highlight=False)
        return
    for run in runs:
        out().print(run_line(run, with_run_at=True), highlight=False)


def _version_of(model_ref: str, store: ResourceStore) -> str:
    """The version a reference names; a version no artifact answers to any more (retired and
    deleted) still has its history, so an unresolvable reference is taken as the version."""
    try:
        lookup = _registry_lookup(store)
        return str(model_meta(resolve_artifact(model_ref, lookup))["version"])
    except _lookup_errors():
        return model_ref


def _run_json(result: DriftResult) -> dict:
    return {
        "id": result.id,
        "version": result.version,
        "model": result.model,
        "window": result.window,
        "run_at": result.run_at.isoformat(),
        "status": result.status,
        "breaches": result.breaches,
        "notified": result.notified,
        **result.metrics_json(),
    }
