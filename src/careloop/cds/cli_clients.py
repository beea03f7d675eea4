"""`careloop cds-clients ...`: register the EHRs allowed to call careloop's CDS Hooks services.

The main CLI registers `cds_clients_group`. An EHR is known by its JWT issuer (`iss`); its keys
come from allow-listed JWK Set URLs (`--jku`), a JWK Set file (`--jwks`), or both. Exit code 2
means the input or configuration was wrong, with a message saying what.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from careloop.cli_helpers import fail, open_configured_store, out


@click.group("cds-clients")
def cds_clients_group() -> None:
    """EHRs that call careloop's CDS Hooks services (signed JWTs checked against their keys)."""


@cds_clients_group.command("register")
@click.option("--issuer", required=True, help="The EHR's JWT issuer (the iss claim).")
@click.option("--name", required=True, help="What the EHR is, e.g. 'main hospital Epic'.")
@click.option(
    "--jku", "jkus", multiple=True, help="An allow-listed JWK Set URL (https); repeat for more."
)
@click.option(
    "--jwks",
    "jwks_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The EHR's public keys as a JWK Set (JSON file).",
)
@click.option(
    "--fhir-server",
    "fhir_servers",
    multiple=True,
    help="A FHIR base URL the EHR may name in its hook calls; repeat for more.",
)
def cds_clients_register(
    issuer: str,
    name: str,
    jkus: tuple[str, ...],
    jwks_path: Path | None,
    fhir_servers: tuple[str, ...],
) -> None:
    """Register an EHR as a CDS client."""
    from careloop.cds.client_auth import CdsClientRegistry

    jwks = None
    if jwks_path is not None:
        try:
            jwks = json.loads(jwks_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            fail(f"{jwks_path} is not a readable JSON file")
            return
    store = open_configured_store()
    try:
        client = CdsClientRegistry(store).register(
            issuer, name, jku_allowlist=jkus, jwks=jwks, fhir_servers=fhir_servers
        )
    except ValueError as exc:
        fail(str(exc))
        return
    finally:
        store.close()
    out().print(f"registered CDS client {client.issuer}", highlight=False, markup=False)


@cds_clients_group.command("list")
def cds_clients_list() -> None:
    """List registered CDS clients and where their keys come from."""
    from rich.table import Table
    from rich.text import Text

    from careloop.cds.client_auth import CdsClientRegistry

    store = open_configured_store()
    try:
        clients = CdsClientRegistry(store).list()
    finally:
        store.close()
    table = Table("issuer", "name", "jku allow-list", "registered keys", "FHIR servers", "status")
    for client in clients:
        kids = "" if client.jwks is None else ", ".join(k["kid"] for k in client.jwks["keys"])
        # values typed by an operator are not rich markup
        table.add_row(
            Text(client.issuer),
            Text(client.name),
            Text("\n".join(client.jku_allowlist)),
            Text(kids),
            Text("\n".join(client.fhir_servers)),
            "disabled" if client.disabled else "active",
        )
    out().print(table)


@cds_clients_group.command("disable")
@click.argument("issuer")
def cds_clients_disable(issuer: str) -> None:
    """Refuse every further call from an EHR."""
    from careloop.cds.client_auth import CdsClientRegistry

    store = open_configured_store()
    try:
        CdsClientRegistry(store).disable(issuer)
    except ValueError as exc:
        fail(str(exc))
        return
    finally:
        store.close()
    out().print(f"disabled {issuer}", highlight=False, markup=False)
