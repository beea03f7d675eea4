"""`careloop models ...`: register, inspect, promote, roll back, retire, verify and export models.

Runs as the local operator (`local:<os user>`), like every administrative command: each state
change names that actor and a reason, and is audited. Artifacts live under
`<careloop home>/models`. Exit code 2 means the input was wrong, 1 a tampered artifact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from careloop.cli_helpers import fail, out

if TYPE_CHECKING:
    from careloop.governance.registry import ModelRegistry, RegisteredModel

REGISTRY_DIR = "models"  # under the careloop home


def registry_root(home: Path) -> Path:
    """Where the registry keeps artifacts for a careloop home."""
    return home / REGISTRY_DIR


def operator() -> str:
    """The actor of a command run from the shell."""
    from careloop.access.roles import Role
    from careloop.cli_rights import local_principal

    return local_principal(Role.ADMIN).subject


@contextmanager
def opened_registry() -> Iterator[ModelRegistry]:
    """The configured store's registry; a registry error becomes a clean exit 2."""
    from careloop.cli import current_settings, open_store
    from careloop.governance.registry import ModelRegistry, RegistryError

    settings = current_settings()
    store = open_store(settings)
    try:
        yield ModelRegistry(store, registry_root(settings.home))
    except RegistryError as exc:
        fail(str(exc))
    finally:
        store.close()


@click.group("models")
def models_group() -> None:
    """The model registry: versions, their state (candidate, active, retired) and history."""


@models_group.command("register")
@click.argument("artifact", type=click.Path(path_type=Path, file_okay=False, exists=True))
def models_register(artifact: Path) -> None:
    """Copy a trained model directory (model.json, MODEL_CARD.md, ...) in as a candidate."""
    with opened_registry() as registry:
        before = registry.get(_version_of(artifact))
        registered = registry.register(artifact, actor=operator())
    verb = "already registered" if before is not None else "registered"
    out().print(
        f"{verb}: {registered.version} ({registered.name}, {registered.state}), "
        f"sha256 {registered.artifact_sha256[:12]}",
        highlight=False,
    )


@models_group.command("list")
@click.option("--name", help="Only this model (e.g. sepsis, readmission).")
def models_list(name: str | None) -> None:
    """Registered versions with their state."""
    from rich.table import Table

    with opened_registry() as registry:
        versions = registry.list(name)
    table = Table()
    # a version is copied into other commands: never fold it across lines
    table.add_column("version", no_wrap=True)
    for heading in ("name", "state", "registered", "sha256", "AUROC"):
        table.add_column(heading)
    for model in versions:
        auroc = model.auroc
        table.add_row(
            model.version,
            model.name,
            model.state.value,
            f"{model.registered_at:%Y-%m-%d %H:%M}Z",
            model.artifact_sha256[:12],
            "" if auroc is None else f"{auroc:.3f}",
        )
    out().print(table)
    if not versions:
        out().print("no models registered (register one with `careloop models register DIR`)")


@models_group.command("show")
@click.argument("version")
def models_show(version: str) -> None:
    """Every recorded fact of a version and its state history."""
    import json

    with opened_registry() as registry:
        model = registry.get(version)
        if model is None:
            fail(f"no registered model version {version!r} (see `careloop models list`)")
        history = registry.history(version)
    assert model is not None
    console = out()
    for label, value in _facts(model):
        console.print(f"{label:<18} {value}", highlight=False)
    console.print(f"{'alert policy':<18} {json.dumps(model.policy, sort_keys=True)}")
    console.print(f"{'metrics':<18} {json.dumps(model.metrics, sort_keys=True)}", highlight=False)
    console.print("history:")
    for change in history:
        moved = f"{change.from_state or '(new)'} -> {change.to_state}"
        console.print(
            f"  {change.changed_at:%Y-%m-%d %H:%M:%S}Z  {moved:<22} by {change.actor}: "
            f"{change.reason or ''}",
            highlight=False,
        )


def _facts(model: RegisteredModel) -> list[tuple[str, str]]:
    auroc = model.auroc
    return [
        ("version", model.version),
        ("name", model.name),
        ("state", model.state.value),
        ("artifact", str(model.artifact_dir)),
        ("artifact sha256", model.artifact_sha256),
        ("data fingerprint", model.data_fingerprint or "none recorded"),
        ("consent filter", model.consent_filter),
        ("features", f"{len(model.features)}"),
        ("AUROC", "" if auroc is None else f"{auroc:.3f}"),
        ("registered", f"{model.registered_at:%Y-%m-%d %H:%M:%S}Z by {model.registered_by}"),
        ("state since", f"{model.state_changed_at:%Y-%m-%d %H:%M:%S}Z"),
    ]


_REASON = click.option("--reason", required=True, help="Why (kept in the history).")


def _change(action: Callable[[ModelRegistry], RegisteredModel], done: str) -> None:
    with opened_registry() as registry:
        changed = action(registry)
    out().print(f"{done}: {changed.version} is now {changed.state}", highlight=False)


@models_group.command("promote")
@click.argument("version")
@_REASON
def models_promote(version: str, reason: str) -> None:
    """Make a candidate active; the version active before is retired (and can be rolled back to)."""
    _change(lambda r: r.promote(version, actor=operator(), reason=reason), "promoted")


@models_group.command("rollback")
@click.argument("name")
@_REASON
def models_rollback(name: str, reason: str) -> None:
    """Retire NAME's active version and re-activate the one active before it."""
    _change(lambda r: r.rollback(name, actor=operator(), reason=reason), "rolled back")


@models_group.command("retire")
@click.argument("version")
@_REASON
def models_retire(version: str, reason: str) -> None:
    """Take a candidate or the active version out of use."""
    _change(lambda r: r.retire(version, actor=operator(), reason=reason), "retired")


@models_group.command("verify")
@click.argument("version")
def models_verify(version: str) -> None:
    """Recompute the artifact's checksum; exit 1 when its files changed since registration."""
    from careloop.cli import fail as fail_with

    with opened_registry() as registry:
        result = registry.verify(version)
    if not result.ok:
        fail_with(result.describe(), code=1)
    out().print(result.describe(), highlight=False)


@models_group.command("export-mlflow")
@click.argument("version")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
def models_export_mlflow(version: str, out_dir: Path) -> None:
    """Write a registered version in MLflow's model format (MLmodel, artifact, requirements)."""
    from careloop.cli import fail as fail_with
    from careloop.governance.mlflow_export import ExportError, export_mlflow
    from careloop.governance.registry import ArtifactTampered

    with opened_registry() as registry:
        model = registry.get(version)
        if model is None:
            fail(f"no registered model version {version!r} (see `careloop models list`)")
        assert model is not None
        try:
            export_mlflow(model, out_dir)
        except ArtifactTampered as exc:
            fail_with(str(exc), code=1)
        except (ExportError, OSError) as exc:
            fail(str(exc))
    out().print(f"wrote {version} in MLflow's format to {out_dir}", highlight=False)


def _version_of(artifact: Path) -> str:
    """The version an artifact names, for telling a fresh registration from a repeated one."""
    from careloop.governance.adapters import UnknownModel, model_meta

    try:
        return str(model_meta(artifact)["version"])
    except UnknownModel as exc:
        fail(str(exc))
    raise AssertionError("unreachable")
