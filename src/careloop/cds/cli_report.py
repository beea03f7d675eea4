"""`careloop report overrides`: the override report for the clinical AI team.

Runs as the local operator in the data-scientist role for quality improvement, and is audited
as an export of aggregates: the report holds no patient data (see careloop.cds.overrides), but
the trail still shows who looked at the ledger and when.

Exit codes: 0 the report was written; 2 a usage or configuration error (a bad date, an unknown
dimension, no master key).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import click
import orjson
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from careloop.cds.overrides import DEFAULT_BY, OverrideReport, ReportError, check_dimensions

FORMATS = ("table", "csv", "json")
_MEASURE_HEADERS = (
    "shown",
    "feedback",
    "accepted",
    "overridden",
    "override rate",
    "no feedback",
    "top override reasons",
    "accepted suggestions",
)


@click.group("report")
def report_group() -> None:
    """Reports for the clinical AI team."""


@report_group.command("overrides")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Only cards issued on or after this day (YYYY-MM-DD, UTC).",
)
@click.option(
    "--by",
    default=",".join(DEFAULT_BY),
    show_default=True,
    help="Comma-separated dimensions: service, card, model, unit.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
def overrides_command(since: datetime | None, by: str, fmt: str) -> None:
    """How often each kind of card was accepted or overridden, and why."""
    from careloop.access.principal import Purpose
    from careloop.access.roles import Role
    from careloop.audit.events import AuditAction
    from careloop.cds.overrides import override_report
    from careloop.cli import current_settings
    from careloop.cli_rights import local_context, local_principal, open_access

    dimensions = _dimensions(by)
    start = None if since is None else _start_of(since.date())
    access = open_access(current_settings())
    try:
        report = override_report(access.store, since=start, by=dimensions)
        access.record(
            local_principal(Role.DATA_SCIENTIST),
            local_context(Purpose.QUALITY_IMPROVEMENT),
            AuditAction.EXPORT,
            detail=f"CDS override report by {','.join(dimensions)} ({len(report.rows)} rows)",
        )
    finally:
        access.store.close()
    _print(report, fmt)


def _dimensions(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    try:
        return check_dimensions(names)
    except ReportError as exc:
        raise click.BadParameter(str(exc), param_hint="--by") from None


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _print(report: OverrideReport, fmt: str) -> None:
    if fmt == "json":
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    elif fmt == "csv":
        click.echo(report.to_csv(), nl=False)
    else:
        _print_table(report)


def _print_table(report: OverrideReport) -> None:
    from careloop.cli import stdout

    if not report.rows:
        stdout.print("no CDS cards were issued in this period")
        return
    table = Table(title="CDS card overrides", title_justify="left")
    for name in (*report.by, *_MEASURE_HEADERS):
        text = name in report.by or name == "top override reasons"
        table.add_column(name, justify="left" if text else "right")
    for cells in report.table_rows():
        table.add_row(*cells)
    # A terminal gets a table that fits it; piped output (a file, a pager, a log) keeps every
    # cell on one line, as wide as the table needs (rich never prints wider than its console).
    console = stdout
    if not stdout.is_terminal:
        natural = Measurement.get(stdout, stdout.options.update_width(10_000), table).maximum
        console = Console(width=max(natural, stdout.width), soft_wrap=True)
    console.print(table)
