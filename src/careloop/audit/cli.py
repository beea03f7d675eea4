"""`careloop audit verify` and `careloop audit review`: the auditor's commands.

Exit codes: 0 the log is intact (and the review was written); 1 the log shows tampering (the
review is still written, and says so); 2 usage or configuration error (a bad date, an unknown
time zone, no master key).

Every use of the log from here is itself audited, as an `audit-review` event by
`local:<os user>` in the auditor role.
"""

from __future__ import annotations

import getpass
import os
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import orjson

from careloop.access.principal import Purpose
from careloop.access.roles import Role
from careloop.audit.events import AuditAction, AuditOutcome, AuditRecord
from careloop.audit.log import AuditLog, AuditLogError

_DATE_HELP = "ISO 8601 date or date-time, e.g. 2025-03-01 or 2025-03-01T08:00:00+01:00"


class _Moment(click.ParamType):
    """An ISO 8601 date or date-time; which zone a bare one is in is decided later."""

    name = "DATE"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, date):
            return value
        text = str(value).strip()
        try:
            if len(text) == 10:
                return date.fromisoformat(text)
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"is not an {_DATE_HELP}", param, ctx)


MOMENT = _Moment()


@click.group("audit")
def audit_group() -> None:
    """Verify and review the tamper-evident audit log."""


@audit_group.command("verify")
def verify_command() -> None:
    """Check the audit log's hash chain; exit 1 naming each record tampered with."""
    from careloop.cli import current_settings, open_store  # lazy: careloop.cli imports us

    store = open_store(current_settings())
    try:
        log = AuditLog(store)
        report = log.verify()
        click.echo(report.render())
        _record_use(log, "verify")
    finally:
        store.close()
    sys.exit(0 if report.ok else 1)


@audit_group.command("review")
@click.option("--since", required=True, type=MOMENT, help=f"Start of the period ({_DATE_HELP}).")
@click.option(
    "--until", required=True, type=MOMENT, help="End of the period; a date includes that day."
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of Markdown.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA zone for work hours.")
@click.option("--bulk-threshold", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--work-hours", default="7-19", show_default=True, help="START-END, local hours.")
def review_command(
    since: date | datetime,
    until: date | datetime,
    out: Path | None,
    as_json: bool,
    timezone: str,
    bulk_threshold: int,
    work_hours: str,
) -> None:
    """Write the audit review for a period: access, flags, break-glass, sign-ins, erasures."""
    from careloop.audit.review import review
    from careloop.cli import current_settings, open_store

    zone = _zone(timezone)
    start = _bound(since, zone, end_of_day=False)
    end = _bound(until, zone, end_of_day=True)
    if end <= start:
        raise click.BadParameter("must be after --since", param_hint="--until")
    hours = _hours(work_hours)
    store = open_store(current_settings())
    try:
        log = AuditLog(store)
        report = review(
            log,
            store,
            since=start,
            until=end,
            work_hours=hours,
            bulk_threshold=bulk_threshold,
            timezone=timezone,
        )
        _record_use(log, f"review {start.isoformat()} to {end.isoformat()}")
    finally:
        store.close()
    text = (
        orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode()
        if as_json
        else report.to_markdown()
    )
    if out is None:
        click.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        click.echo(f"audit review written to {out}", err=True)
    if not report.chain.ok:
        click.echo("warning: the audit log failed verification; see the report", err=True)
    sys.exit(0 if report.chain.ok else 1)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(
            "unknown time zone; use an IANA name such as Europe/Paris", param_hint="--timezone"
        ) from None


def _bound(moment: date | datetime, zone: ZoneInfo, *, end_of_day: bool) -> datetime:
    """A bare date is a whole day in `zone` (an --until date includes its day); a date-time
    without an offset is read in `zone`."""
    if isinstance(moment, datetime):
        return moment if moment.tzinfo else moment.replace(tzinfo=zone)
    day = moment + timedelta(days=1) if end_of_day else moment
    return datetime.combine(day, time(0), tzinfo=zone)


def _hours(text: str) -> tuple[int, int]:
    try:
        start, end = (int(part) for part in text.split("-"))
    except ValueError:
        raise click.BadParameter("use START-END, e.g. 7-19", param_hint="--work-hours") from None
    if not 0 <= start < end <= 24:
        raise click.BadParameter("hours run 0-24, start first", param_hint="--work-hours")
    return start, end


def local_agent() -> str:
    """`local:<os user>`: the operator at this machine, as the CLI's principal names them."""
    try:
        name = getpass.getuser()
    except Exception:  # no login name in some containers: the uid still identifies them
        name = str(os.getuid())
    return f"local:{name}"[:128]


def _record_use(log: AuditLog, detail: str) -> None:
    """Audit this use of the log; a log whose head was tampered with refuses the append."""
    record = AuditRecord(
        action=AuditAction.AUDIT_REVIEW,
        outcome=AuditOutcome.SUCCESS,
        agent=local_agent(),
        role=Role.AUDITOR.value,
        agent_kind="local",
        fhir_user=None,
        purpose=Purpose.OPERATIONS.value,
        patient_id=None,
        source_address="cli",
        detail=detail,
    )
    try:
        log.append(record)
    except AuditLogError as exc:
        click.echo(f"warning: this use of the audit log was not recorded: {exc}", err=True)
