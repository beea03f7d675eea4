"""`careloop playbooks check / list`: validate and show the next-best-action playbooks.

`check` is what a clinical informaticist runs before a playbook goes live (and what CI runs on
the shipped ones): with no paths it checks the built-in playbooks and every directory named by
CARELOOP_PLAYBOOKS. Exit code 0: all valid (warnings, such as an overdue review, are printed);
1: at least one error, each naming the file, the path inside it and the line.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from careloop.cds.playbooks import (
    BUILTIN_DIR,
    CheckReport,
    FileCheck,
    Trigger,
    check_playbooks,
)
from careloop.config import ConfigError, load_settings


def _console() -> Console:
    # made per command so output goes to whatever stdout is at the time (tests capture it)
    return Console(soft_wrap=True, highlight=False)


def _default_paths() -> list[Path]:
    """The built-ins and the directories careloop's settings name (CARELOOP_PLAYBOOKS)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return [BUILTIN_DIR, *settings.playbook_dirs]


@click.group("playbooks")
def playbooks_group() -> None:
    """Next-best-action playbooks: reviewed YAML files that say what careloop suggests."""


@playbooks_group.command("check")
@click.argument(
    "paths", nargs=-1, type=click.Path(exists=True, path_type=Path), metavar="[PATH ...]"
)
def playbooks_check(paths: tuple[Path, ...]) -> None:
    """Validate playbook files or directories (default: built-ins and CARELOOP_PLAYBOOKS)."""
    report = check_playbooks(list(paths) or _default_paths())
    console = _console()
    if not report.files:
        console.print("no playbook files found (*.yaml, *.yml)")
        raise SystemExit(1)
    console.print(_check_table(report))
    for error in report.errors:
        console.print(f"[bold red]error:[/] {error}", markup=True)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", markup=True)
    valid = sum(1 for file in report.files if not file.errors)
    console.print(
        f"{valid} of {len(report.files)} playbook files valid, {len(report.errors)} errors, "
        f"{len(report.warnings)} warnings"
    )
    if not report.ok:
        raise SystemExit(1)


def _check_table(report: CheckReport) -> Table:
    table = Table("file", "id", "version", "status", "result")
    for file in report.files:
        table.add_row(file.path.name, *_identity(file), _result(file))
    return table


def _identity(file: FileCheck) -> tuple[str, str, str]:
    if file.playbook is None:
        return ("-", "-", "-")
    return (file.playbook.id, file.playbook.version, file.playbook.status)


def _result(file: FileCheck) -> str:
    if file.errors:
        return f"{len(file.errors)} error{'s' if len(file.errors) > 1 else ''}"
    if file.warnings:
        return f"ok, {len(file.warnings)} warning{'s' if len(file.warnings) > 1 else ''}"
    return "ok"


@playbooks_group.command("list")
def playbooks_list() -> None:
    """Show the playbooks careloop would load: built-ins and CARELOOP_PLAYBOOKS directories."""
    report = check_playbooks(_default_paths())
    console = _console()
    table = Table("id", "version", "status", "trigger", "next review")
    for file in report.files:
        playbook = file.playbook
        if playbook is None:
            continue
        table.add_row(
            playbook.id,
            playbook.version,
            playbook.status,
            _trigger_text(playbook.trigger),
            playbook.review.next_review.isoformat(),
        )
    console.print(table)
    if not report.ok:
        for error in report.errors:
            console.print(f"[bold red]error:[/] {error}", markup=True)
        console.print("fix the files named, then run `careloop playbooks check`")
        raise SystemExit(1)


def _trigger_text(trigger: Trigger) -> str:
    if trigger.kind == "news2":
        upper = f" and < {trigger.below}" if trigger.below is not None else ""
        return f"NEWS2 ≥ {trigger.at_least}{upper}"
    if trigger.kind == "overdue":
        return "overdue: " + ", ".join(
            f"{item.label} every {item.every.days} d" for item in trigger.due
        )
    return trigger.kind
