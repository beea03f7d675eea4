"""CLI commands for patient rights, retention, de-identified exports and care relationships.

The CLI runs as the local operator, who holds the master key and so could read anything; it is
still bound by the same access layer (role, consent) and every command is audited under
`local:<os user>`, so the trail shows what was done from the shell.
"""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from careloop.access.errors import AccessDenied
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Role
from careloop.config import Settings


def local_principal(role: Role) -> Principal:
    return Principal(subject=f"local:{getpass.getuser()}", kind="local", role=role)


def local_context(purpose: Purpose) -> AccessContext:
    return AccessContext(purpose=purpose, source="cli")


def open_access(settings: Settings) -> AccessLayer:
    from careloop.access.consent import ConsentPolicy, DefaultPolicy
    from careloop.cli import open_store

    store = open_store(settings)
    policy = ConsentPolicy(default=DefaultPolicy(settings.consent_default))
    return AccessLayer(store, consent_policy=policy)


@click.command("export-record")
@click.argument("patient_id")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
def export_record_command(patient_id: str, out: Path) -> None:
    """Write a patient's record as a FHIR Bundle (fulfilling their right of access)."""
    from careloop.access.rights import export_record
    from careloop.cli import current_settings, fail, stdout
    from careloop.rights.export import write_bundle

    access = open_access(current_settings())
    try:
        bundle = export_record(
            access,
            local_principal(Role.CARE_COORDINATOR),
            local_context(Purpose.PATIENT_REQUEST),
            patient_id,
        )
    except AccessDenied as exc:
        fail(str(exc), code=1)
    finally:
        access.store.close()
    write_bundle(bundle, out)
    stdout.print(f"wrote {len(bundle.get('entry', []))} resources to {out}", highlight=False)


@click.command("erase")
@click.argument("patient_id")
@click.option("--yes", is_flag=True, help="Confirm: erasure cannot be undone.")
def erase_command(patient_id: str, yes: bool) -> None:
    """Erase a patient by destroying their data key (crypto-shredding); leaves a tombstone."""
    from careloop.access.rights import erase
    from careloop.cli import current_settings, fail, stdout

    if not yes:
        fail("erasure cannot be undone; repeat with --yes")
    access = open_access(current_settings())
    try:
        result = erase(
            access, local_principal(Role.ADMIN), local_context(Purpose.OPERATIONS), patient_id
        )
    except (AccessDenied, ValueError) as exc:
        fail(str(exc), code=1)
    finally:
        access.store.close()
    if result.already_erased:
        stdout.print("already erased; nothing changed")
    else:
        stdout.print(f"erased: {result.resources_shredded} resources crypto-shredded")


@click.group("retention")
def retention_group() -> None:
    """Retention of records past their retention period."""


@retention_group.command("run")
@click.option("--years", type=click.IntRange(1, 100), help="Retention period (default: config).")
@click.option("--apply", "apply_", is_flag=True, help="Erase; without it, only list.")
def retention_run(years: int | None, apply_: bool) -> None:
    """Find patients with no activity for the retention period; erase them with --apply."""
    from careloop.audit.events import AuditAction
    from careloop.cli import current_settings, stdout
    from careloop.rights.retention import RetentionPolicy, run_retention

    settings = current_settings()
    access = open_access(settings)
    principal = local_principal(Role.ADMIN)
    policy = RetentionPolicy(years=years or settings.retention_years)
    try:
        run = run_retention(access.store, policy, apply=apply_, erased_by=principal.subject)
        access.record(
            principal,
            local_context(Purpose.OPERATIONS),
            AuditAction.RETENTION,
            flags={"erasure"} if apply_ else set(),
            detail=f"{len(run.candidates)} past {policy.years} years; {len(run.erased)} erased",
        )
    finally:
        access.store.close()
    verb = "erased" if apply_ else "would erase (dry run; add --apply)"
    stdout.print(f"{len(run.candidates)} patients past {policy.years} years; {verb}")


@click.group("deid")
def deid_group() -> None:
    """De-identified exports for research and model training."""


@deid_group.command("export")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--purpose",
    type=click.Choice(["research", "model-training"]),
    default="model-training",
    show_default=True,
)
def deid_export(out: Path, purpose: str) -> None:
    """Export consented patients' records de-identified (Safe Harbor, shifted dates,
    pseudonyms) as NDJSON; patients who opted out of the purpose are left out."""
    from careloop.access.rights import deidentified_compartments
    from careloop.cli import current_settings, stdout
    from careloop.deid import export_ndjson

    chosen = Purpose.RESEARCH if purpose == "research" else Purpose.MODEL_TRAINING
    access = open_access(current_settings())
    patients = 0

    def resources():  # type: ignore[no-untyped-def]
        nonlocal patients
        for compartment in deidentified_compartments(
            access, local_principal(Role.DATA_SCIENTIST), local_context(chosen)
        ):
            patients += 1
            yield from compartment

    try:
        counts = export_ndjson(resources(), out)
    finally:
        access.store.close()
    stdout.print(
        f"wrote {sum(counts.values()):,} de-identified resources of {patients} consented "
        f"patients to {out}",
        highlight=False,
    )


@click.group("access")
def access_group() -> None:
    """Care relationships and break-glass review."""


@access_group.command("assign")
@click.option("--practitioner", required=True, help="fhirUser reference, e.g. Practitioner/p1")
@click.option("--patient", "patient_id", required=True)
def access_assign(practitioner: str, patient_id: str) -> None:
    """Record that a practitioner cares for a patient (used by the audit review)."""
    from careloop.audit.events import AuditAction
    from careloop.cli import current_settings, fail, stdout

    if not practitioner.startswith(("Practitioner/", "PractitionerRole/")):
        fail("--practitioner must be a Practitioner/<id> reference")
    access = open_access(current_settings())
    try:
        access.relationships.assign(practitioner, patient_id)
        access.record(
            local_principal(Role.ADMIN),
            local_context(Purpose.OPERATIONS),
            AuditAction.ADMIN,
            patient_id=patient_id,
            detail="care relationship recorded",
        )
    finally:
        access.store.close()
    stdout.print("recorded")


@access_group.command("review-break-glass")
@click.argument("grant_id")
def access_review_break_glass(grant_id: str) -> None:
    """Mark a break-glass grant as reviewed (after reading its reason in `audit review`)."""
    from careloop.audit.events import AuditAction
    from careloop.cli import current_settings, fail, stdout

    access = open_access(current_settings())
    reviewer = local_principal(Role.AUDITOR)
    try:
        if not access.break_glass.mark_reviewed(grant_id, reviewer.subject):
            fail("no such break-glass grant, or it was already reviewed", code=1)
        access.record(
            reviewer,
            local_context(Purpose.OPERATIONS),
            AuditAction.AUDIT_REVIEW,
            detail=f"break-glass grant {grant_id[:32]} reviewed",
        )
    finally:
        access.store.close()
    stdout.print("marked as reviewed")
