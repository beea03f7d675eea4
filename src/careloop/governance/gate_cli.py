"""`careloop gate`: block a candidate model that regresses against the baseline it would replace.

    careloop gate --candidate V --baseline V --data PATH [--tolerances FILE] [--out DIR]

V is a model directory, a registered version (when a store is configured) or a shipped model's
version. Prints the readable report and writes gate.json, gate.md and gate.html to --out.

Exit codes: 0 the candidate passes every gated check; 1 it regresses (the report names the
failed checks); 2 bad input (unknown model, data the models cannot score or were trained on,
different model families, a bad tolerances file).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from careloop.cli_helpers import fail, out

if TYPE_CHECKING:
    from careloop.governance.gate import GateReport
    from careloop.store.repository import ResourceStore

EXIT_PASSED, EXIT_REGRESSED = 0, 1


@click.command("gate")
@click.option("--candidate", required=True, help="The model that would ship (directory/version).")
@click.option("--baseline", required=True, help="The model it would replace (directory/version).")
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path, exists=True),
    help="Labelled data both models score (their own layout).",
)
@click.option(
    "--tolerances",
    "tolerances_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="YAML or JSON overriding the default tolerances (see careloop.governance.gate).",
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--limit", type=click.IntRange(1), help="Score only the first N units (testing).")
@click.option(
    "--latency-samples",
    default=200,
    show_default=True,
    type=click.IntRange(0),
    help="Single-unit scoring timings per model for the p95 latency check (0: skip).",
)
def gate_command(
    candidate: str,
    baseline: str,
    data: Path,
    tolerances_file: Path | None,
    out_dir: Path | None,
    limit: int | None,
    latency_samples: int,
) -> None:
    """Compare CANDIDATE with BASELINE on DATA; exit 1 when it regresses beyond tolerance."""
    from careloop.governance.gate import GateTolerances, run_gate

    try:
        tolerances = GateTolerances.load(tolerances_file) if tolerances_file else GateTolerances()
    except ValueError as exc:
        fail(str(exc))
    lookup, closing = registry_lookup()
    try:
        models = [load_model(reference, lookup) for reference in (candidate, baseline)]
        report = run_gate(
            models[0],
            models[1],
            data,
            tolerances,
            limit=limit,
            latency_samples=latency_samples,
        )
    except ValueError as exc:  # GateRefused, or data a model produced nonsense from
        fail(f"the gate cannot judge these models: {exc}")
    finally:
        closing()
    out().print(report.text(), highlight=False, markup=False, end="")
    if out_dir is not None:
        written = write_gate_files(report, out_dir)
        out().print(f"wrote {', '.join(str(path) for path in written)}", highlight=False)
    sys.exit(EXIT_PASSED if report.passed else EXIT_REGRESSED)


def load_model(reference: str, lookup: Callable[[str], Path | None] | None):  # type: ignore[no-untyped-def]
    """The governed model `reference` names; GateRefused (exit 2) when there is none."""
    from careloop.governance.adapters import UnknownModel, load_governed, resolve_artifact
    from careloop.governance.gate import GateRefused

    try:
        return load_governed(resolve_artifact(reference, lookup))
    except UnknownModel as exc:
        raise GateRefused(str(exc)) from None
    except (OSError, ValueError, KeyError) as exc:
        raise GateRefused(f"{reference!r} cannot be loaded as a model: {exc}") from None


# -- the optional store --------------------------------------------------------------------------


def configured_store() -> ResourceStore | None:
    """The configured store when one exists and its key is at hand, else None: the gate and the
    committee report work from a fresh clone, and reading never creates a database."""
    from sqlalchemy.engine import make_url

    from careloop.config import ConfigError, load_settings
    from careloop.store.repository import ResourceStore

    try:
        settings = load_settings()
        url = make_url(settings.database_url)
        if url.get_backend_name() == "sqlite" and not _sqlite_file_exists(url.database):
            return None
        return ResourceStore.open(settings.database_url, settings.master_key())
    except ConfigError:
        return None
    except Exception:  # an unreachable server: the registry is optional here, say nothing more
        return None


def _sqlite_file_exists(database: str | None) -> bool:
    return bool(database) and database != ":memory:" and os.path.isfile(database)  # type: ignore[arg-type]


def registry_lookup() -> tuple[Callable[[str], Path | None] | None, Callable[[], None]]:
    """(the registry's artifact lookup or None, a function closing what was opened)."""
    store = configured_store()
    if store is None:
        return None, lambda: None
    from careloop.config import load_settings
    from careloop.governance.gate import GateRefused
    from careloop.governance.registry import ModelRegistry, RegistryError
    from careloop.governance.registry_cli import registry_root

    registry = ModelRegistry(store, registry_root(load_settings().home))

    def lookup(version: str) -> Path | None:
        try:
            return registry.lookup_artifact(version)
        except RegistryError as exc:  # a tampered artifact is refused, not handed out
            raise GateRefused(str(exc)) from None

    return lookup, store.close


# -- output files --------------------------------------------------------------------------------


def write_gate_files(report: GateReport, out_dir: Path) -> list[Path]:
    """gate.json, gate.md and gate.html in `out_dir`, each written whole or not at all."""
    from careloop.governance.committee_report import gate_page

    out_dir.mkdir(parents=True, exist_ok=True)
    contents = {
        "gate.json": json.dumps(report.to_json(), indent=2) + "\n",
        "gate.md": report.markdown(),
        "gate.html": gate_page(report),
    }
    written = []
    for name, text in contents.items():
        target = out_dir / name
        write_atomically(target, text)
        written.append(target)
    return written


def write_atomically(target: Path, text: str) -> None:
    """`text` to `target` via a temporary file beside it, with the permissions a plain write
    would give (mkstemp's are owner-only, and these reports are meant to be shared)."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
