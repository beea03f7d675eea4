"""The `careloop` command: a thin adapter from the shell to ingest, the store and the server.

Exit codes: 0 success, 1 some input was rejected (nothing of it written), 2 usage or
configuration error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from careloop.config import ConfigError, Settings, load_settings
from careloop.ingest import IngestOptions, Ingestor, IngestReport
from careloop.store.crypto import KeyMaterialError, MasterKey, write_key_file
from careloop.store.repository import ResourceStore, StoreError

if TYPE_CHECKING:
    from careloop.identity.users import DemoAccount
    from careloop.web.app import AppSettings
    from careloop.web.tls import TlsFiles

stdout = Console(soft_wrap=True)  # never break a path or URL across lines
stderr = Console(stderr=True, soft_wrap=True)
DEMO_KEY_NAME = "demo-master.key"


def fail(message: str, code: int = 2) -> None:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


def open_store(settings: Settings, master_key: MasterKey | None = None) -> ResourceStore:
    try:
        return ResourceStore.open(settings.database_url, master_key or settings.master_key())
    except (ConfigError, StoreError) as exc:
        fail(str(exc))
    except Exception as exc:  # a driver error may quote the URL: show only its kind
        fail(f"cannot open the store at {settings.redacted_database_url}: {type(exc).__name__}")
    raise AssertionError("unreachable")


def current_settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="careloop")
def main() -> None:
    """careloop: personal risk and next-best actions from FHIR data, next to the EHR."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--workers", type=click.IntRange(0, 64), help="Validation processes (0: inline).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
def ingest(paths: tuple[Path, ...], workers: int | None, as_json: bool, no_progress: bool) -> None:
    """Load FHIR Bundles and NDJSON (files, directories, .gz, .tar.gz, .zip) into the store.

    Each bundle and each NDJSON file is loaded atomically: one bad entry rejects it whole.
    """
    settings = current_settings()
    store = open_store(settings)
    options = IngestOptions()
    chosen = workers if workers is not None else settings.ingest_workers
    if chosen is not None:
        options = IngestOptions(workers=chosen)
    report = run_ingest(Ingestor(store, options), list(paths), show_progress=not no_progress)
    audit_cli_ingest(store, report)
    store.close()
    if as_json:
        stdout.print_json(orjson.dumps(report.as_dict()).decode())
    else:
        print_report(report)
    sys.exit(0 if report.ok else 1)


def audit_cli_ingest(store: ResourceStore, report: IngestReport) -> None:
    """A load from the shell is audited like one over HTTP: who, when, how much."""
    from careloop.access.principal import AccessContext, Purpose
    from careloop.access.roles import Role
    from careloop.audit.events import AuditAction, AuditOutcome, AuditRecord
    from careloop.audit.log import AuditLog
    from careloop.cli_rights import local_principal

    principal = local_principal(Role.INTEGRATION)
    AuditLog(store).append(
        AuditRecord(
            action=AuditAction.INGEST,
            outcome=AuditOutcome.SUCCESS if report.ok else AuditOutcome.MINOR_FAILURE,
            agent=principal.subject,
            role=principal.role.value,
            agent_kind=principal.kind,
            fhir_user=None,
            purpose=AccessContext(Purpose.OPERATIONS).purpose.value,
            patient_id=None,
            source_address="cli",
            flags=frozenset({"bulk"}),
            detail=f"{report.resources} resources; {len(report.rejected)} units rejected",
        )
    )


def run_ingest(ingestor: Ingestor, paths: list[Path], show_progress: bool) -> IngestReport:
    if not show_progress or not stderr.is_terminal:
        return ingestor.ingest_paths(paths)
    columns = (
        TextColumn("ingest"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[resources]:,} resources"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=True) as progress:
        return ingestor.ingest_paths(paths, progress=_ProgressBar(progress))


class _ProgressBar:
    """Shows bytes read against the planned size, and resources written so far."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task = progress.add_task("ingest", total=None, resources=0)
        self._resources = 0

    def planned(self, total_bytes: int) -> None:
        self._progress.update(self._task, total=total_bytes or None)

    def advanced(self, nbytes: int, resources: int) -> None:
        self._resources += resources
        self._progress.update(self._task, advance=nbytes, resources=self._resources)


def print_report(report: IngestReport) -> None:
    table = Table(title="Ingest summary", show_footer=True)
    table.add_column("resource type", footer="total")
    totals = [sum(report.created.values()), sum(report.updated.values())]
    totals.append(sum(report.unchanged.values()))
    for name, total in zip(("created", "updated", "unchanged"), totals, strict=True):
        table.add_column(name, justify="right", footer=f"{total:,}")
    for resource_type, counts in report.by_type().items():
        table.add_row(
            resource_type, *(f"{counts[k]:,}" for k in ("created", "updated", "unchanged"))
        )
    stdout.print(table)
    stdout.print(
        f"{report.units_loaded:,} units loaded, {len(report.rejected):,} rejected, "
        f"{len(report.skipped):,} files skipped; {report.resources:,} resources in "
        f"{report.seconds:.1f} s ({report.resources_per_second:,.0f} resources/s)",
        highlight=False,
    )
    for problem in report.rejected:
        stderr.print(f"[red]rejected:[/] {problem}", highlight=False)
    if report.warning_count:
        stderr.print(f"{report.warning_count:,} codes look malformed (kept as coded), e.g.:")
        for warning in report.warnings[:5]:
            stderr.print(f"[yellow]warning:[/] {warning}", highlight=False)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8443, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--dev-tls",
    is_flag=True,
    help="Use a self-signed loopback certificate (made under the careloop home) for development.",
)
def serve(host: str, port: int, dev_tls: bool) -> None:
    """Run the API server over HTTPS (certificate from CARELOOP_TLS_CERT_FILE/KEY_FILE)."""
    from careloop.web.tls import TlsFiles, development_certificate, is_loopback

    settings = current_settings()
    if settings.tls_cert_file and settings.tls_key_file:
        tls = TlsFiles(settings.tls_cert_file, settings.tls_key_file)
    elif dev_tls:
        if not is_loopback(host):
            fail("--dev-tls certificates are for loopback only; configure a real certificate")
        tls = development_certificate(settings.home / "tls")
    else:
        fail(
            "careloop serves patient data only over HTTPS: set CARELOOP_TLS_CERT_FILE and "
            "CARELOOP_TLS_KEY_FILE, or pass --dev-tls on loopback"
        )
    public_url = settings.public_url or f"https://{host}:{port}"
    store = open_store(settings)
    serve_store(store, host, port, app_settings(settings, public_url, store=store), tls)


def app_settings(
    settings: Settings, public_url: str, *, demo: bool = False, store: ResourceStore | None = None
) -> AppSettings:
    from datetime import timedelta

    from careloop.access.consent import ConsentPolicy, DefaultPolicy
    from careloop.governance.registry_cli import registry_root
    from careloop.web.app import AppSettings

    return AppSettings(
        sepsis_model=serving_sepsis_model(settings, store),
        public_url=public_url,
        plain_http_allowed=demo,
        consent_policy=ConsentPolicy(default=DefaultPolicy(settings.consent_default)),
        session_idle=timedelta(minutes=settings.session_idle_minutes),
        break_glass_duration=timedelta(minutes=settings.break_glass_minutes),
        ddi_dir=settings.ddi_dir,
        playbook_dirs=settings.playbook_dirs,
        cds_alert_budget=settings.cds_alert_budget,
        cds_cors_origins=settings.cds_cors_origins,
        registry_root=registry_root(settings.home),
    )


def serving_sepsis_model(settings: Settings, store: ResourceStore | None) -> Path | None:
    """The sepsis model the service runs: CARELOOP_SEPSIS_MODEL when set, else the version the
    registry holds active (its checksum verified), else the shipped model, else none."""
    import os

    from careloop.cli_sepsis import model_dir
    from careloop.governance.registry import ModelRegistry, RegistryError
    from careloop.governance.registry_cli import registry_root

    if store is not None and "CARELOOP_SEPSIS_MODEL" not in os.environ:
        registry = ModelRegistry(store, registry_root(settings.home))
        active = registry.active("sepsis")
        if active is not None:
            try:
                return registry.lookup_artifact(active.version)
            except RegistryError as exc:
                fail(f"the active sepsis model cannot be served: {exc}")
    return model_dir() if (model_dir() / "model.json").exists() else None


def serve_store(
    store: ResourceStore,
    host: str,
    port: int,
    settings: AppSettings,
    tls: TlsFiles | None = None,
) -> None:
    import uvicorn

    from careloop.web.app import create_app

    uvicorn.run(
        create_app(store, settings),
        host=host,
        port=port,
        log_level="info",
        access_log=False,  # request lines hold patient ids in paths and queries
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
    )


@main.command()
@click.option("--patients", default=50, show_default=True, type=click.IntRange(0, 100_000))
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--seed", default=7, show_default=True, type=int)
def synth(patients: int, out: Path, seed: int) -> None:
    """Write a synthetic demo population (labelled synthetic) as Bulk Data NDJSON."""
    from careloop.synth import write_population

    counts = write_population(out, patients, seed=seed)
    total = sum(counts.values())
    stdout.print(f"wrote {total:,} synthetic resources for {patients} patients to {out}")
    for resource_type, count in sorted(counts.items()):
        stdout.print(f"  {resource_type:<20} {count:>8,}", highlight=False)


@main.command()
@click.option("--patients", default=40, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--no-serve", is_flag=True, help="Set up and load, then exit.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def demo(patients: int, host: str, port: int, no_serve: bool, paths: tuple[Path, ...]) -> None:
    """Create the embedded store, load data (the synthetic population by default), create demo
    accounts, and serve it over plain HTTP on loopback (the one place that is allowed)."""
    from careloop.web.tls import is_loopback

    settings = current_settings()
    if not is_loopback(host):
        fail("demo mode serves plain HTTP, so only on loopback; use `careloop serve` with TLS")
    master_key = demo_master_key(settings)
    store = open_store(settings, master_key)
    if not paths:
        from careloop.synth import write_population

        population_dir = settings.home / "demo-population"
        write_population(population_dir, patients)
        paths = (population_dir,)
    report = run_ingest(Ingestor(store, IngestOptions()), list(paths), show_progress=True)
    print_report(report)
    if not report.ok:
        fail("the demo data did not load cleanly", code=1)
    accounts = demo_accounts(store)
    print_demo_tour(store, settings, host, port, accounts)
    print_demo_models(store, settings)
    print_demo_risks(store)
    print_demo_monitoring(store)
    print_demo_worklist(store, settings, accounts)
    print_demo_cards(store, app_settings(settings, f"http://{host}:{port}", demo=True, store=store))
    if not no_serve:
        stdout.print(
            f"\ncareloop is ready: open http://{host}:{port}/app/ and sign in with a demo "
            "account above (code: `careloop users demo-code <user>`)",
            highlight=False,
        )
        serve_store(
            store,
            host,
            port,
            app_settings(settings, f"http://{host}:{port}", demo=True, store=store),
        )
    store.close()


def demo_accounts(store: ResourceStore) -> list[DemoAccount]:
    """One account per role, with known passwords and TOTP seeds: demo mode only. The demo
    clinician and nurse care for the first patients, so the audit review has both kinds of
    access to show."""
    from careloop.access.relationships import CareRelationships
    from careloop.identity.users import UserDirectory, ensure_demo_users

    patients = demo_patient_ids(store, 10)
    if not patients:
        fail("the demo needs at least one patient for the demo patient account")
    accounts = ensure_demo_users(UserDirectory(store), f"Patient/{patients[0]}", demo_mode=True)
    relationships = CareRelationships(store)
    for account in accounts:
        if account.fhir_user and account.fhir_user.startswith("Practitioner/"):
            for patient_id in patients[:5]:
                relationships.assign(account.fhir_user, patient_id)
    return accounts


def demo_master_key(settings: Settings) -> MasterKey:
    """The configured master key, or a demo key file made once under the careloop home."""
    if settings.master_key_inline or settings.master_key_file:
        try:
            return settings.master_key()
        except ConfigError as exc:
            fail(str(exc))
    key_path = settings.home / DEMO_KEY_NAME
    try:
        if key_path.exists():
            return MasterKey.from_file(key_path)
        stderr.print(f"demo mode: created master key {key_path} (owner-only); not for real data")
        return write_key_file(key_path)
    except KeyMaterialError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def print_demo_tour(
    store: ResourceStore,
    settings: Settings,
    host: str,
    port: int,
    accounts: list[DemoAccount],
) -> None:
    base = f"http://{host}:{port}"
    example = next(iter(demo_patient_ids(store, 1)), "<id>")
    stdout.print(f"\nstore: {settings.redacted_database_url}", highlight=False)
    stdout.print(
        f"\nOPEN {base}/app/ in a browser: the clinician worklist, the patient portal and the "
        "governance console.",
        highlight=False,
    )
    stdout.print(
        "demo accounts (demo mode only): user name, password, and the code from "
        "`careloop users demo-code <user>` (or an authenticator app loaded with the seed):",
        highlight=False,
    )
    for account in accounts:
        stdout.print(
            f"  {account.username:<18} {account.password:<32} TOTP seed {account.totp_secret}",
            highlight=False,
        )
    stdout.print(
        "  clinician, nurse: the worklist; patient: My care (EN/ES), My data, Sharing, "
        "Messages; ai-committee, data-scientist: models, fairness, drift, alert burden; "
        "auditor: the same and the audit review",
        highlight=False,
    )
    stdout.print("the API (after signing in, or with a bearer token):", highlight=False)
    for path in (
        "/openapi.json",
        "/fhir/metadata",
        "/fhir/Patient?_count=10",
        f"/fhir/Observation?patient={example}&code=http://loinc.org|8867-4&_count=24",
        f"/fhir/Patient/{example}",
        f"/sepsis/Patient/{example}/risk",
    ):
        stdout.print(f"  {base}{path}", highlight=False, soft_wrap=True)


def print_demo_models(store: ResourceStore, settings: Settings) -> None:
    """Register the shipped models and make them active, as a hospital's AI team would after
    its committee approved them (audited), and show the registry."""
    from careloop.governance.adapters import SHIPPED_MODELS
    from careloop.governance.registry import ModelRegistry, ModelState
    from careloop.governance.registry_cli import operator, registry_root

    registry = ModelRegistry(store, registry_root(settings.home))
    actor = operator()
    stdout.print(
        "governed models (`careloop models list`; cards, gate, drift in docs/governance.md):"
    )
    for artifact in sorted(path.parent for path in SHIPPED_MODELS.glob("*/model.json")):
        model = registry.register(artifact, actor=actor)
        if model.state is ModelState.CANDIDATE:  # demo only: the shipped version goes live
            model = registry.promote(model.version, actor=actor, reason="demo: shipped model")
        stdout.print(f"  {model.name}: {model.version} ({model.state})", highlight=False)


def print_demo_risks(store: ResourceStore, patients: int = 5) -> None:
    """Score the first demo patients with the shipped sepsis model, as a clinician would see it
    (through the access layer, audited)."""
    from careloop.access.layer import AccessLayer
    from careloop.access.principal import Purpose
    from careloop.access.roles import Role
    from careloop.cli_rights import local_context, local_principal
    from careloop.cli_sepsis import model_dir
    from careloop.sepsis.model import SepsisModel
    from careloop.sepsis.service import score_patient

    if not (model_dir() / "model.json").exists():
        stdout.print("no sepsis model installed; `careloop train sepsis` makes one")
        return
    model = SepsisModel.load(model_dir())
    access = AccessLayer(store)
    principal, ctx = local_principal(Role.CLINICIAN), local_context(Purpose.TREATMENT)
    stdout.print(f"sepsis risk over each patient's latest 48 h ({model.version}):")
    for patient_id in demo_patient_ids(store, patients):
        risk = score_patient(access, model, principal, ctx, patient_id)
        if risk.insufficient:
            stdout.print(f"  {patient_id}: no score ({risk.insufficient})", highlight=False)
            continue
        alert = "ALERT" if risk.alert_states[-1] else "no alert"
        why = "; ".join(risk.factors[:2])
        stdout.print(f"  {patient_id}: {risk.current:.1%} ({alert}); {why}", highlight=False)


def print_demo_cards(store: ResourceStore, settings: AppSettings, patients: int = 5) -> None:
    """The CDS Hooks cards an EHR would show on opening the first demo patients' charts."""
    from careloop.access.layer import AccessLayer
    from careloop.cds.demo import demo_caller, patient_view_cards
    from careloop.sepsis.model import SepsisModel
    from careloop.web.app import cds_engine

    model = SepsisModel.load(settings.sepsis_model) if settings.sepsis_model else None
    engine = cds_engine(store, AccessLayer(store), settings, model)
    caller = demo_caller(store)
    stdout.print("CDS Hooks patient-view cards (what the EHR shows on opening the chart):")
    for patient_id in demo_patient_ids(store, patients):
        cards = patient_view_cards(engine, caller, patient_id)
        if not cards:
            stdout.print(f"  {patient_id}: no cards", highlight=False)
        for card in cards:
            stdout.print(
                f"  {patient_id}: [{card['indicator']}] {card['summary']}",
                highlight=False,
                markup=False,
            )
    stdout.print(f"  each card's sources: {settings.public_url}/knowledge/cds", highlight=False)


def print_demo_monitoring(store: ResourceStore) -> None:
    """Remote monitoring over the demo population's home-device data, and what it raised."""
    from careloop.access.principal import Purpose
    from careloop.access.roles import Role
    from careloop.cli_rights import local_context, local_principal
    from careloop.monitoring.demo import run_demo_monitoring

    result = run_demo_monitoring(
        store, local_principal(Role.NURSE), local_context(Purpose.TREATMENT)
    )
    stdout.print(
        f"remote monitoring: {result.samples:,} device samples from {result.persons} people, "
        f"{result.person_days:,} person-days judged against each person's own baseline; "
        f"{result.alerts} alerts, {result.engagement_tasks} engagement Tasks (devices silent)",
        highlight=False,
    )
    for text in result.explanations:
        stdout.print(f"  {text}", highlight=False, markup=False)


def print_demo_worklist(
    store: ResourceStore, settings: Settings, accounts: list[DemoAccount]
) -> None:
    """The care team's worklist: every demo patient's risk snapshot, and one synthetic patient
    deteriorating now, so the worklist has a live alert to acknowledge (the synthetic stays
    are all complete)."""
    from careloop.worklist.demo import demo_worklist

    model = serving_sepsis_model(settings, store)
    if model is None:
        return
    team = [
        account.fhir_user
        for account in accounts
        if account.fhir_user and account.fhir_user.startswith("Practitioner/")
    ]
    stdout.print(f"worklist: {demo_worklist(store, model, team).summary()}", highlight=False)


def demo_patient_ids(store: ResourceStore, count: int) -> list[str]:
    """The first demo patients, read as the local clinician through the access layer (so the
    demo's own look-ups are consent-checked and audited like any other read)."""
    from careloop.access.layer import AccessLayer
    from careloop.access.principal import Purpose
    from careloop.access.roles import Role
    from careloop.cli_rights import local_context, local_principal

    page, _withheld = AccessLayer(store).search(
        local_principal(Role.CLINICIAN),
        local_context(Purpose.TREATMENT),
        "Patient",
        lambda _patient: store.search("Patient", count=count),
        patient_id=None,
        query_text=f"_count={count}",
    )
    return [str(item.body["id"]) for item in page.resources]


@main.group()
def keys() -> None:
    """Master key management (envelope encryption at rest)."""


@keys.command("generate")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
def keys_generate(path: Path) -> None:
    """Write a new random 256-bit master key to PATH (mode 0600; never overwrites)."""
    try:
        key = write_key_file(path)
    except FileExistsError:
        fail(f"{path} already exists; refusing to overwrite a key")
    stdout.print(f"wrote master key {key.key_id} to {path}", highlight=False)


@keys.command("rotate")
@click.option("--new-key-file", required=True, type=click.Path(path_type=Path, dir_okay=False))
def keys_rotate(new_key_file: Path) -> None:
    """Re-wrap every data key under the key in NEW_KEY_FILE; the data is not re-encrypted."""
    settings = current_settings()
    try:
        new_key = MasterKey.from_file(new_key_file)
    except KeyMaterialError as exc:
        fail(str(exc))
    store = open_store(settings)
    try:
        count = store.rotate_master_key(new_key)
    except StoreError as exc:
        fail(str(exc))
    store.close()
    stdout.print(
        f"re-wrapped {count} data keys under master key {new_key.key_id}. Point "
        f"CARELOOP_MASTER_KEY_FILE at {new_key_file} now; keep the old key until backups "
        "made before this rotation have expired.",
        highlight=False,
    )


@keys.command("status")
def keys_status() -> None:
    """How many data keys each master key wraps."""
    store = open_store(current_settings())
    for key_id, count in sorted(store.master_key_ids().items()):
        stdout.print(f"master key {key_id}: {count} data keys", highlight=False)
    store.close()


@main.command()
@click.argument("patient_id")
def timeline(patient_id: str) -> None:
    """Print a patient's timeline summary (what features and rules will read), as a clinician
    treating the patient: consent applies and the read is audited."""
    from careloop.access.errors import AccessDenied
    from careloop.access.principal import Purpose
    from careloop.access.roles import Role
    from careloop.cli_rights import local_context, local_principal, open_access
    from careloop.timeline import build_timeline

    access = open_access(current_settings())
    try:
        release = access.patient_compartment(
            local_principal(Role.CLINICIAN), local_context(Purpose.TREATMENT), patient_id
        )
    except AccessDenied as exc:
        fail(str(exc), code=1)
    finally:
        access.store.close()
    resources = [item.body for item in release.resources]
    if not resources:
        fail(f"no patient {patient_id} in the store", code=1)
    patient_timeline = build_timeline(patient_id, resources)
    codes = sorted(patient_timeline.codes_observed())
    stdout.print(
        f"patient {patient_id}: {len(resources)} resources; "
        f"{len(patient_timeline.active_conditions())} active conditions, "
        f"{len(patient_timeline.active_medications())} active medications, "
        f"{len(patient_timeline.active_allergies())} active allergies, "
        f"{len(patient_timeline.encounters())} encounters, {len(codes)} observation codes",
        highlight=False,
    )


def _register_subcommands() -> None:
    from careloop.audit.cli import audit_group
    from careloop.cds.cli_clients import cds_clients_group
    from careloop.cds.cli_playbooks import playbooks_group
    from careloop.cds.cli_report import report_group
    from careloop.cli_rights import (
        access_group,
        deid_group,
        erase_command,
        export_record_command,
        retention_group,
    )
    from careloop.cli_sepsis import convert_group, evaluate_group, predict_group, train_group
    from careloop.governance.committee_report import model_report_command
    from careloop.governance.drift_cli import drift_group
    from careloop.governance.gate_cli import gate_command
    from careloop.governance.registry_cli import models_group
    from careloop.identity.cli import clients_group, users_group
    from careloop.monitoring.worker_cli import monitor_group  # with run and publish attached
    from careloop.worklist.cli import worklist_group

    report_group.add_command(model_report_command)  # `careloop report model`
    for command in (
        worklist_group,
        audit_group,
        users_group,
        clients_group,
        access_group,
        deid_group,
        retention_group,
        erase_command,
        export_record_command,
        train_group,
        evaluate_group,
        predict_group,
        convert_group,
        cds_clients_group,
        playbooks_group,
        report_group,
        monitor_group,
        models_group,
        drift_group,
        gate_command,
    ):
        main.add_command(command)


_register_subcommands()
