"""The audit review: the periodic report an auditor reads, checks and signs.

It answers the questions a privacy officer asks of an access log (HIPAA §164.308(a)(1)(ii)(D)
"information system activity review", GDPR art. 32): is the log intact; who accessed which
patients; which accesses lacked a care relationship; who touched many patients in a day; who
worked outside working hours; every break-glass use, its stated reason and whether it has been
reviewed; consent denials; failed sign-ins; erasures.

The auditor is entitled to patient ids, not to clinical content, so the report never shows what
was read (entity references, search queries) — only who, when, about whom, and why. The one
free text it shows is a break-glass reason, because judging that reason is the point of the
review.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select

from careloop.access.relationships import BreakGlass
from careloop.audit.events import AuditAction, outcome_description, patient_of
from careloop.audit.log import AuditLog, StoredAuditEvent, VerifyReport
from careloop.store.repository import ResourceStore
from careloop.store.schema import break_glass_grants

MAX_IDS_LISTED = 200  # patient ids per agent in the Markdown; the JSON has them all
MAX_TEXT = 300  # characters of a reason or detail shown
_GRANT_ID = re.compile(r"\bgrant ([0-9a-f]{32})\b")
_FAILED_SIGN_IN = frozenset({AuditAction.LOGIN.value, AuditAction.TOKEN.value})
_ERASURE = frozenset({AuditAction.ERASURE.value, AuditAction.RETENTION.value})
NO_PATIENT = "-"
UNREADABLE = "(unreadable event)"


@dataclass
class AgentAccess:
    agent: str
    roles: set[str] = field(default_factory=set)
    events: int = 0
    patients: set[str] = field(default_factory=set)


@dataclass
class PatientSpan:
    """Events of one agent about one patient: how many, first and last (local time)."""

    agent: str
    patient: str
    events: int
    first: datetime
    last: datetime


@dataclass(frozen=True)
class BulkDay:
    agent: str
    day: date
    patients: int


@dataclass(frozen=True)
class EventLine:
    """One event worth listing on its own."""

    seq: int
    recorded: datetime  # local time
    agent: str
    patient: str
    action: str
    outcome: str
    detail: str


@dataclass(frozen=True)
class BreakGlassUse:
    seq: int
    recorded: datetime
    agent: str
    patient: str
    action: str
    reason: str
    grant_id: str | None
    reviewed_by: str | None
    reviewed_at: datetime | None


@dataclass(frozen=True)
class FailedSignIns:
    agent: str
    failures: int
    first: datetime
    last: datetime


@dataclass
class AuditReview:
    since: datetime
    until: datetime
    timezone: str
    work_hours: tuple[int, int]
    bulk_threshold: int
    generated_at: datetime
    events_reviewed: int
    chain: VerifyReport
    agents: list[AgentAccess]
    no_relationship: list[PatientSpan]
    bulk: list[BulkDay]
    after_hours: list[PatientSpan]
    break_glass: list[BreakGlassUse]
    consent_denials: list[EventLine]
    failed_sign_ins: list[FailedSignIns]
    erasures: list[EventLine]

    def to_markdown(self) -> str:
        return _Markdown(self).render()

    def to_json(self) -> dict:
        return {
            "period": {"since": _iso(self.since), "until": _iso(self.until)},
            "timezone": self.timezone,
            "work_hours": list(self.work_hours),
            "bulk_threshold": self.bulk_threshold,
            "generated_at": _iso(self.generated_at),
            "events_reviewed": self.events_reviewed,
            "chain": {
                "ok": self.chain.ok,
                "events_checked": self.chain.events_checked,
                "head_seq": self.chain.head_seq,
                "head_hash": self.chain.head_hash,
                "counts": self.chain.counts,
                "findings": [vars(finding) for finding in self.chain.findings],
            },
            "agents": [
                {
                    "agent": a.agent,
                    "roles": sorted(a.roles),
                    "events": a.events,
                    "patients": sorted(a.patients),
                }
                for a in self.agents
            ],
            "no_care_relationship": [_span_json(span) for span in self.no_relationship],
            "bulk_access": [
                {"agent": b.agent, "day": b.day.isoformat(), "patients": b.patients}
                for b in self.bulk
            ],
            "after_hours": [_span_json(span) for span in self.after_hours],
            "break_glass": [_break_glass_json(use) for use in self.break_glass],
            "consent_denials": [_line_json(line) for line in self.consent_denials],
            "failed_sign_ins": [
                {
                    "agent": f.agent,
                    "failures": f.failures,
                    "first": _iso(f.first),
                    "last": _iso(f.last),
                }
                for f in self.failed_sign_ins
            ],
            "erasures": [_line_json(line) for line in self.erasures],
        }


def review(
    log: AuditLog,
    store: ResourceStore,
    *,
    since: datetime,
    until: datetime,
    work_hours: tuple[int, int] = (7, 19),
    bulk_threshold: int = 50,
    timezone: str = "UTC",
) -> AuditReview:
    """Review the events with since <= recorded < until; the chain is verified whole."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("the review period needs time-zone-aware bounds")
    if until <= since:
        raise ValueError("the review period must end after it starts")
    start, end = work_hours
    if not 0 <= start < end <= 24:
        raise ValueError("work hours must be two hours 0-24, the first before the second")
    if bulk_threshold < 1:
        raise ValueError("the bulk threshold must be at least 1")
    zone = _zone(timezone)
    tally = _Tally(zone, work_hours)
    for event in log.events(since=since, until=until):
        tally.add(event)
    return AuditReview(
        since=since,
        until=until,
        timezone=timezone,
        work_hours=work_hours,
        bulk_threshold=bulk_threshold,
        generated_at=datetime.now(UTC),
        events_reviewed=tally.count,
        chain=log.verify(),
        agents=sorted(tally.agents.values(), key=lambda a: a.agent),
        no_relationship=_spans(tally.no_relationship),
        bulk=tally.bulk(bulk_threshold),
        after_hours=_spans(tally.after_hours),
        break_glass=_break_glass_uses(store, tally.break_glass, zone),
        consent_denials=tally.consent_denials,
        failed_sign_ins=tally.failed_sign_ins(),
        erasures=tally.erasures,
    )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone; use an IANA name such as Europe/Paris") from None


class _Tally:
    """One pass over the period's events; memory grows with agents and patients, not events."""

    def __init__(self, zone: ZoneInfo, work_hours: tuple[int, int]) -> None:
        self.zone = zone
        self.work_hours = work_hours
        self.count = 0
        self.agents: dict[str, AgentAccess] = {}
        self.no_relationship: dict[tuple[str, str], list[datetime]] = {}
        self.after_hours: dict[tuple[str, str], list[datetime]] = {}
        self.daily_patients: dict[tuple[str, date], set[str]] = defaultdict(set)
        self.break_glass: list[tuple[StoredAuditEvent, datetime, str]] = []
        self.consent_denials: list[EventLine] = []
        self.erasures: list[EventLine] = []
        self.failures: dict[str, list] = {}  # agent -> [first, last, count]

    def add(self, event: StoredAuditEvent) -> None:
        self.count += 1
        local = event.recorded.astimezone(self.zone)
        patient = _patient(event)
        access = self.agents.setdefault(event.agent, AgentAccess(event.agent))
        access.roles.add(event.role)
        access.events += 1
        if patient != NO_PATIENT:
            access.patients.add(patient)
            self.daily_patients[(event.agent, local.date())].add(patient)
            if self._after_hours(local):
                _widen(self.after_hours, (event.agent, patient), local)
        if "no-care-relationship" in event.flags:
            _widen(self.no_relationship, (event.agent, patient), local)
        if "break-glass" in event.flags:
            self.break_glass.append((event, local, patient))
        if "consent-denied" in event.flags:
            self.consent_denials.append(_line(event, local, patient))
        if event.action in _FAILED_SIGN_IN and event.outcome != "0":
            _widen(self.failures, event.agent, local)
        if event.action in _ERASURE:
            self.erasures.append(_line(event, local, patient))

    def _after_hours(self, local: datetime) -> bool:
        start, end = self.work_hours
        return local.weekday() >= 5 or not start <= local.hour < end

    def bulk(self, threshold: int) -> list[BulkDay]:
        days = [
            BulkDay(agent, day, len(patients))
            for (agent, day), patients in self.daily_patients.items()
            if len(patients) > threshold
        ]
        return sorted(days, key=lambda b: (b.day, b.agent))

    def failed_sign_ins(self) -> list[FailedSignIns]:
        rows = [
            FailedSignIns(agent, count, first, last)
            for agent, (first, last, count) in self.failures.items()
        ]
        return sorted(rows, key=lambda f: (-f.failures, f.agent))


def _widen(spans: dict, key: object, moment: datetime) -> None:
    """Keep [first, last, count] per key."""
    span = spans.get(key)
    if span is None:
        spans[key] = [moment, moment, 1]
    else:
        span[0], span[1], span[2] = min(span[0], moment), max(span[1], moment), span[2] + 1


def _spans(spans: dict[tuple[str, str], list]) -> list[PatientSpan]:
    rows = [
        PatientSpan(agent, patient, count, first, last)
        for (agent, patient), (first, last, count) in spans.items()
    ]
    return sorted(rows, key=lambda s: (s.agent, s.first))


def _patient(event: StoredAuditEvent) -> str:
    if not event.readable:
        return UNREADABLE if event.patient_hash else NO_PATIENT
    return patient_of(event.resource) or NO_PATIENT


def _line(event: StoredAuditEvent, local: datetime, patient: str) -> EventLine:
    return EventLine(
        seq=event.seq,
        recorded=local,
        agent=event.agent,
        patient=patient,
        action=event.action,
        outcome=event.outcome,
        detail=_short(outcome_description(event.resource) or ""),
    )


def _break_glass_uses(
    store: ResourceStore, uses: list[tuple[StoredAuditEvent, datetime, str]], zone: ZoneInfo
) -> list[BreakGlassUse]:
    reasons = _GrantReasons(store)
    result = []
    for event, local, patient in uses:
        detail = outcome_description(event.resource) or ""
        grant = reasons.grant_for(event, detail)
        reason = reasons.reason(grant.grant_id) if grant is not None else None
        reviewed_at = grant.reviewed_at if grant is not None else None
        result.append(
            BreakGlassUse(
                seq=event.seq,
                recorded=local,
                agent=event.agent,
                patient=patient,
                action=event.action,
                reason=_short(reason or detail or "(no reason recorded)"),
                grant_id=grant.grant_id if grant is not None else None,
                reviewed_by=grant.reviewed_by if grant is not None else None,
                reviewed_at=reviewed_at.astimezone(zone) if reviewed_at else None,
            )
        )
    return result


class _GrantReasons:
    """Break-glass grants (and their sealed stated reasons), looked up once each."""

    def __init__(self, store: ResourceStore) -> None:
        self.store = store
        self._break_glass: BreakGlass | None = None
        self._reasons: dict[str, str | None] = {}

    def grant_for(self, event: StoredAuditEvent, detail: str):  # type: ignore[no-untyped-def]
        """The grant an event names in its detail, else the agent's grant for that patient
        in force when the event was recorded."""
        named = _GRANT_ID.search(detail)
        condition = (
            [break_glass_grants.c.grant_id == named.group(1)]
            if named
            else [
                break_glass_grants.c.agent == event.agent,
                break_glass_grants.c.patient_hash == event.patient_hash,
                break_glass_grants.c.granted_at <= event.recorded + timedelta(seconds=5),
                break_glass_grants.c.expires_at > event.recorded,
            ]
        )
        if not named and event.patient_hash is None:
            return None
        with self.store.engine.connect() as connection:
            return connection.execute(
                select(
                    break_glass_grants.c.grant_id,
                    break_glass_grants.c.reviewed_by,
                    break_glass_grants.c.reviewed_at,
                )
                .where(*condition)
                .order_by(break_glass_grants.c.granted_at.desc())
            ).first()

    def reason(self, grant_id: str) -> str | None:
        if grant_id not in self._reasons:
            try:
                if self._break_glass is None:
                    self._break_glass = BreakGlass(self.store, timedelta(hours=1))
                self._reasons[grant_id] = self._break_glass.reason(grant_id)
            except Exception:  # an unreadable reason is reported as such, never fatal
                self._reasons[grant_id] = "(stated reason unreadable)"
        return self._reasons[grant_id]


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_TEXT else flat[: MAX_TEXT - 1] + "…"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _span_json(span: PatientSpan) -> dict:
    return {
        "agent": span.agent,
        "patient": span.patient,
        "events": span.events,
        "first": _iso(span.first),
        "last": _iso(span.last),
    }


def _line_json(line: EventLine) -> dict:
    return {
        "seq": line.seq,
        "recorded": _iso(line.recorded),
        "agent": line.agent,
        "patient": line.patient,
        "action": line.action,
        "outcome": line.outcome,
        "detail": line.detail,
    }


def _break_glass_json(use: BreakGlassUse) -> dict:
    return {
        "seq": use.seq,
        "recorded": _iso(use.recorded),
        "agent": use.agent,
        "patient": use.patient,
        "action": use.action,
        "reason": use.reason,
        "grant_id": use.grant_id,
        "reviewed_by": use.reviewed_by,
        "reviewed_at": _iso(use.reviewed_at) if use.reviewed_at else None,
    }


# -- Markdown ---------------------------------------------------------------------------------


class _Markdown:
    def __init__(self, report: AuditReview) -> None:
        self.r = report
        self.lines: list[str] = []

    def render(self) -> str:
        r = self.r
        self.lines = ["# careloop audit review", ""]
        self._table(
            ["", ""],
            [
                ["Period", f"{_iso(r.since)} to {_iso(r.until)} (until excluded)"],
                ["Time zone", r.timezone],
                ["Generated", _iso(r.generated_at)],
                ["Events reviewed", str(r.events_reviewed)],
                ["Audit chain", _chain_status(r.chain)],
            ],
        )
        self._chain()
        self._agents()
        self._section(
            "3. Access without a care relationship",
            ["Agent", "Patient", "Events", "First", "Last"],
            [_span_cells(s) for s in r.no_relationship],
        )
        self._section(
            f"4. Bulk access (more than {r.bulk_threshold} distinct patients in a day)",
            ["Agent", "Day", "Patients"],
            [[b.agent, b.day.isoformat(), str(b.patients)] for b in r.bulk],
        )
        start, end = r.work_hours
        self._section(
            f"5. After-hours access (outside {start:02d}:00-{end:02d}:00 {r.timezone}, "
            "or at weekends)",
            ["Agent", "Patient", "Events", "First", "Last"],
            [_span_cells(s) for s in r.after_hours],
        )
        self._section(
            "6. Break-glass use",
            ["Seq", "Time", "Agent", "Patient", "Action", "Stated reason", "Grant", "Reviewed"],
            [_break_glass_cells(use) for use in r.break_glass],
        )
        self._section(
            "7. Consent denials",
            ["Seq", "Time", "Agent", "Patient", "Action", "Detail"],
            [_line_cells(x, x.detail) for x in r.consent_denials],
        )
        self._section(
            "8. Failed sign-ins",
            ["Agent", "Failures", "First", "Last"],
            [[f.agent, str(f.failures), _iso(f.first), _iso(f.last)] for f in r.failed_sign_ins],
        )
        self._section(
            "9. Erasures",
            ["Seq", "Time", "Agent", "Patient", "Kind", "Outcome"],
            [_line_cells(x, _outcome(x.outcome)) for x in r.erasures],
        )
        self.lines += [
            "## Sign-off",
            "",
            "I have reviewed this report and followed up every finding above.",
            "",
            "Reviewed by: ________________________________",
            "",
            "Date: ________________________________",
            "",
            "Signature: ________________________________",
            "",
        ]
        return "\n".join(self.lines)

    def _chain(self) -> None:
        chain = self.r.chain
        self.lines += ["## 1. Audit chain verification", ""]
        self.lines.append(f"{_chain_status(chain)}.")
        if chain.head_seq is not None:
            self.lines += ["", f"Head: seq {chain.head_seq}, hash `{chain.head_hash}`."]
        if chain.findings:
            self.lines.append("")
            self._table(
                ["Seq", "Kind", "Finding"],
                [
                    ["head" if f.seq is None else str(f.seq), f.kind, f.detail]
                    for f in chain.findings
                ],
            )
        else:
            self.lines.append("")

    def _agents(self) -> None:
        rows = []
        for access in self.r.agents:
            ids = sorted(access.patients)
            listed = ", ".join(ids[:MAX_IDS_LISTED])
            if len(ids) > MAX_IDS_LISTED:
                listed += f" ... and {len(ids) - MAX_IDS_LISTED} more (see the JSON report)"
            roles = ", ".join(sorted(access.roles))
            rows.append([access.agent, roles, str(len(ids)), str(access.events), listed or "-"])
        self._section(
            "2. Who accessed which patients",
            ["Agent", "Role", "Patients", "Events", "Patient ids"],
            rows,
        )

    def _section(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        self.lines += [f"## {title}", ""]
        if rows:
            self._table(header, rows)
        else:
            self.lines += ["None.", ""]

    def _table(self, header: list[str], rows: list[list[str]]) -> None:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "---|" * len(header))
        for row in rows:
            self.lines.append("| " + " | ".join(_cell(value) for value in row) + " |")
        self.lines.append("")


def _chain_status(chain: VerifyReport) -> str:
    if chain.ok:
        return f"INTACT: {chain.events_checked} events verified, no finding"
    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(chain.counts.items()))
    return f"TAMPERED: {chain.events_checked} events checked; findings: {counts}"


def _span_cells(span: PatientSpan) -> list[str]:
    return [span.agent, span.patient, str(span.events), _iso(span.first), _iso(span.last)]


def _break_glass_cells(use: BreakGlassUse) -> list[str]:
    if use.grant_id is None:
        reviewed = "no grant on record"
    elif use.reviewed_by:
        when = _iso(use.reviewed_at) if use.reviewed_at else "?"
        reviewed = f"yes, by {use.reviewed_by} at {when}"
    else:
        reviewed = "NOT REVIEWED"
    return [
        str(use.seq),
        _iso(use.recorded),
        use.agent,
        use.patient,
        use.action,
        use.reason,
        use.grant_id or "-",
        reviewed,
    ]


def _line_cells(line: EventLine, last: str) -> list[str]:
    return [str(line.seq), _iso(line.recorded), line.agent, line.patient, line.action, last]


_OUTCOMES = {"0": "success", "4": "minor failure", "8": "serious failure", "12": "major failure"}


def _outcome(code: str) -> str:
    return _OUTCOMES.get(code, "unknown")


def _cell(value: str) -> str:
    """Table-safe: no pipe or line break can break out of the cell."""
    return " ".join(value.split()).replace("|", "\\|") or " "
