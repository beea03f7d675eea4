"""`careloop users ...` and `careloop clients ...`: enrol people and register API clients.

The main CLI registers `users_group` and `clients_group`. Passwords are read with a hidden
prompt (twice) or from standard input, never from an argument, where they would land in the
shell history and the process list. Exit code 2 means the input or configuration was wrong.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from careloop.cli_helpers import fail, open_configured_store, out


@click.group("users")
def users_group() -> None:
    """People who sign in to the web interface (password + authenticator app)."""


@users_group.command("add")
@click.argument("username")
@click.option("--role", required=True, help="clinician, nurse, pharmacist, care-coordinator, ...")
@click.option("--fhir-user", help="Practitioner/<id>, or Patient/<id> for a patient (required).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_add(username: str, role: str, fhir_user: str | None, password_stdin: bool) -> None:
    """Enrol a user and show their TOTP secret once, to load into an authenticator app."""
    from careloop.identity.users import UserDirectory

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    store = open_configured_store()
    try:
        enrolled = UserDirectory(store).add(username, role, password, fhir_user)
    except ValueError as exc:
        fail(str(exc))
        return
    finally:
        store.close()
    console = out()
    console.print(f"enrolled {enrolled.username} as {role}", highlight=False)
    console.print("Load this into the user's authenticator app now; it is not shown again:")
    console.print(f"  secret: {enrolled.totp_secret}", highlight=False)
    console.print(f"  URI:    {enrolled.provisioning_uri}", highlight=False)


@users_group.command("demo-code")
@click.argument("username")
def users_demo_code(username: str) -> None:
    """DEMO ONLY: the current sign-in code of a demo account (`careloop demo` made them; their
    authenticator secrets derive from a public seed, which is why this can print them)."""
    from datetime import UTC, datetime

    from careloop.identity import totp
    from careloop.identity.users import demo_totp_secret

    moment = datetime.now(UTC)
    seconds_left = 30 - int(moment.timestamp()) % 30
    code = totp.code_at(demo_totp_secret(username), moment)
    out().print(f"{code}  (valid for {seconds_left} s more; demo accounts only)", highlight=False)


@users_group.command("list")
def users_list() -> None:
    """List users (no secrets)."""
    from rich.table import Table

    from careloop.identity.users import UserDirectory

    store = open_configured_store()
    try:
        summaries = UserDirectory(store).list()
    finally:
        store.close()
    table = Table("user", "role", "fhirUser", "status", "created")
    for user in summaries:
        status = "disabled" if user.disabled else "active"
        if not user.disabled and user.locked_until is not None:
            status = f"locked until {user.locked_until:%Y-%m-%d %H:%M}Z"
        table.add_row(
            user.username,
            user.role.value,
            user.fhir_user or "",
            status,
            f"{user.created_at:%Y-%m-%d}",
        )
    out().print(table)


@users_group.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """Refuse a user's future sign-ins and end their open sessions."""
    from careloop.identity.users import UserDirectory

    store = open_configured_store()
    try:
        UserDirectory(store).disable(username)
    except ValueError as exc:
        fail(str(exc))
        return
    finally:
        store.close()
    out().print(f"disabled {username}", highlight=False)


@click.group("clients")
def clients_group() -> None:
    """API clients (SMART Backend Services: signed JWT assertions, bearer tokens)."""


@clients_group.command("register")
@click.option("--name", required=True, help="What the client is, e.g. 'lab interface engine'.")
@click.option("--role", required=True, help="A careloop role; usually integration.")
@click.option(
    "--scope", "scopes", multiple=True, required=True, help="A SMART scope; repeat for more."
)
@click.option(
    "--jwks",
    "jwks_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The client's public keys as a JWK Set (JSON file).",
)
@click.option("--fhir-user", help="Practitioner/<id> the client acts as, if any.")
def clients_register(
    name: str, role: str, scopes: tuple[str, ...], jwks_path: Path, fhir_user: str | None
) -> None:
    """Register a client and print its client_id."""
    from careloop.identity.clients import ClientRegistry

    try:
        jwks = json.loads(jwks_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        fail(f"{jwks_path} is not a readable JSON file")
        return
    store = open_configured_store()
    try:
        client_id = ClientRegistry(store).register(name, role, list(scopes), jwks, fhir_user)
    except ValueError as exc:
        fail(str(exc))
        return
    finally:
        store.close()
    out().print(client_id, highlight=False)


@clients_group.command("list")
def clients_list() -> None:
    """List registered clients and their scopes."""
    from rich.table import Table
    from rich.text import Text

    from careloop.identity.clients import ClientRegistry

    store = open_configured_store()
    try:
        clients = ClientRegistry(store).list()
    finally:
        store.close()
    table = Table("client_id", "name", "role", "scopes", "keys", "status")
    for client in clients:
        kids = ", ".join(client.kids)
        table.add_row(
            client.client_id,
            Text(client.name),  # a name typed by an operator is not rich markup
            client.role.value,
            Text(" ".join(client.scopes)),
            Text(kids),
            "disabled" if client.disabled else "active",
        )
    out().print(table)


@clients_group.command("disable")
@click.argument("client_id")
def clients_disable(client_id: str) -> None:
    """Refuse a client's token requests and revoke the tokens it holds."""
    from careloop.identity.clients import ClientRegistry

    store = open_configured_store()
    try:
        ClientRegistry(store).disable(client_id)
    except ValueError as exc:
        fail(str(exc))
        return
    finally:
        store.close()
    out().print(f"disabled {client_id}", highlight=False)
