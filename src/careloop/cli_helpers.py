"""What command groups living outside cli.py need from it, imported lazily: cli.py imports
those groups to register them, so they cannot import cli.py at module level."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from rich.console import Console

    from careloop.store.repository import ResourceStore


def open_configured_store() -> ResourceStore:
    """The store the configuration names, opened with the configured master key."""
    from careloop.cli import current_settings, open_store

    return open_store(current_settings())


def fail(message: str) -> NoReturn:
    """Print `message` as an error and exit 2."""
    from careloop.cli import fail as cli_fail

    cli_fail(message)
    raise AssertionError("unreachable")


def out() -> Console:
    from careloop.cli import stdout

    return stdout
