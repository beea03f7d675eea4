"""`careloop worklist refresh`: score every patient's latest 48 h with the serving sepsis model
and keep the worklist's snapshot (a RiskAssessment per patient, a review Task per alert
episode), as the local monitor, through the access layer and audited."""

from __future__ import annotations

from pathlib import Path

import click

from careloop.cli_helpers import fail, out

__all__ = ["worklist_group"]


@click.group("worklist")
def worklist_group() -> None:
    """The clinician triage worklist's risk snapshot."""


@worklist_group.command("refresh")
@click.option(
    "--patients",
    type=click.IntRange(1),
    default=None,
    help="Refresh only the first N patients of the store (default: all).",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="The sepsis model directory (default: the one the service runs).",
)
def refresh_command(patients: int | None, model_path: Path | None) -> None:
    """Score each patient's latest 48 h and write the worklist's sepsis snapshot."""
    from careloop.access.errors import AccessDenied
    from careloop.access.principal import Purpose
    from careloop.access.roles import Role
    from careloop.cli import current_settings, serving_sepsis_model
    from careloop.cli_rights import local_context, local_principal, open_access
    from careloop.worklist.snapshot import SnapshotError, refresh_all

    settings = current_settings()
    access = open_access(settings)
    try:
        model_dir = model_path or serving_sepsis_model(settings, access.store)
        if model_dir is None:
            fail("no sepsis model installed; `careloop train sepsis` makes one")
        report = refresh_all(
            access.store,
            model_dir,
            local_principal(Role.MONITOR),
            local_context(Purpose.TREATMENT),
            patients,
            access=access,
        )
    except (AccessDenied, SnapshotError) as exc:
        fail(str(exc))
    finally:
        access.store.close()
    out().print(f"worklist snapshot: {report.summary()}", highlight=False)
