"""The audit log: append-only, hash-chained, keyed, and sealed.

Storage. Each row of `audit_events` holds the columns a review filters on (time, action, outcome,
agent, role, purpose, the patient's blind-index hash, flags) and the FHIR AuditEvent itself,
zlib-compressed and sealed with AES-256-GCM under a key derived from the "audit" service key,
with the row's seq as associated data. The database therefore holds no readable patient
reference, and a body copied onto another row fails to open.

Chain. `entry_hash = HMAC-SHA256(chain_key, prev_hash || seq || recorded || action || outcome ||
agent || role || purpose || patient_hash || flags || body)`, every field length-prefixed so no
two rows encode alike; `prev_hash` of seq 1 is `GENESIS`. The chain key is derived from the same
service key with HKDF under a second label, so neither key reveals the other. Without the key a
row cannot be forged, and editing any column breaks its own hash.

Head. `audit_head` (id 1) holds `last_seq`, `last_hash` and `mac = HMAC(chain_key, "head" ||
last_seq || last_hash)`, updated in the same transaction as every append, so a deleted tail
shows as rows ending before the head says they do. Appends are serialized: on PostgreSQL by
`SELECT ... FOR UPDATE` of the head row (created on first use with ON CONFLICT DO NOTHING); on
SQLite by `BEGIN IMMEDIATE`, which takes the write lock before the head is read. Seq is the
head's last seq + 1, so it is gap-free and a deletion shows as a gap.

Fail closed. An append checks the head's MAC first and refuses (`AuditIntegrityError`) when it
fails or when the head is missing while events exist: continuing would re-seal a tampered head
and hide the tampering. The access layer then releases nothing until an operator has run
`careloop audit verify` and dealt with it.

Verification walks the rows by seq in batches inside one read snapshot (constant memory) and
names each finding: `modified` (the row's hash does not verify but the chain continues from it),
`deleted` (a gap in seq), `inserted` (a forged row: its hash cannot be recomputed and nothing
continues from it, a row beyond the head, or a second row at one seq), `reordered` (a row whose
hash verifies at another seq: rows moved or swapped), `truncated` (rows end before the head, or
the head is edited, missing or older than the rows), `unreadable` (intact hash, body does not
open with the audit key).

Limit: an attacker who deletes the tail and restores an older copy of the head leaves a shorter
log that verifies. `verify` prints the head (seq and hash); recording it outside the database
(a ticket, a signed review) is what catches that.
"""

from __future__ import annotations

import hmac
import re
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from careloop.audit.events import AuditAction, AuditOutcome, AuditRecord, audit_event_resource
from careloop.audit.events import fhir_instant as _instant
from careloop.store.crypto import Sealer
from careloop.store.repository import ResourceStore
from careloop.store.schema import audit_events, audit_head

GENESIS = "0" * 64  # prev_hash of seq 1
HEAD_ID = 1
BATCH = 1000  # rows per query when reading or verifying
LISTED_PER_KIND = 5  # findings listed per kind; the rest are counted
RECENT_WINDOW = 1 << 15  # entry hashes remembered to place moved rows
MAX_PENDING = 4096  # suspect rows kept open while looking for where they belong
FINDING_KINDS = ("modified", "deleted", "inserted", "reordered", "truncated", "unreadable")
_FLAG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_LIMITS = {"agent": 128, "role": 32, "purpose": 32, "flags": 128}
_SEAL_LABEL = b"careloop audit event seal v1"
_CHAIN_LABEL = b"careloop audit chain mac v1"


class AuditLogError(Exception):
    """An event cannot be recorded as given; the message names the field, never its value."""


class AuditIntegrityError(AuditLogError):
    """The head is missing or fails its MAC: appending would hide tampering, so it is refused."""


@dataclass(frozen=True)
class StoredAuditEvent:
    seq: int
    recorded: datetime
    action: str
    outcome: str
    agent: str
    role: str
    purpose: str | None
    patient_hash: str | None
    flags: frozenset[str]
    resource: dict  # the AuditEvent; {} when the body does not open (see `readable`)
    readable: bool = True


@dataclass(frozen=True)
class TamperFinding:
    seq: int | None  # the record concerned; None for the head or the log as a whole
    kind: str  # one of FINDING_KINDS
    detail: str


@dataclass
class VerifyReport:
    ok: bool
    events_checked: int
    findings: list[TamperFinding]
    counts: dict[str, int] = field(default_factory=dict)  # findings per kind, listed or not
    head_seq: int | None = None
    head_hash: str | None = None

    def render(self) -> str:
        verdict = "INTACT" if self.ok else "TAMPERED"
        lines = [f"audit log: {verdict} ({self.events_checked} events checked)"]
        if self.head_seq is not None:
            lines.append(f"head: seq {self.head_seq}, hash {self.head_hash}")
            lines.append("  (record the head elsewhere: it is what reveals a rolled-back tail)")
        for finding in self.findings:
            where = "head" if finding.seq is None else f"seq {finding.seq}"
            lines.append(f"  {finding.kind:<10} {where}: {finding.detail}")
        for kind, count in sorted(self.counts.items()):
            listed = sum(1 for finding in self.findings if finding.kind == kind)
            if count > listed:
                lines.append(f"  ... and {count - listed} more {kind} findings not listed")
        if self.counts:
            summary = ", ".join(f"{kind} {n}" for kind, n in sorted(self.counts.items()))
            lines.append(f"findings: {summary}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A record turned into column values and a compressed body, before the lock is taken."""

    recorded: datetime
    recorded_text: str
    action: str
    outcome: str
    agent: str
    role: str
    purpose: str | None
    patient_hash: str | None
    flags: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Row:
    """One stored row as the database returns it, normalized for hashing."""

    seq: int
    recorded: str | None  # canonical instant text; None when the stored value does not parse
    action: str | None
    outcome: str | None
    agent: str | None
    role: str | None
    purpose: str | None
    patient_hash: str | None
    flags: str | None
    body: bytes
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True, slots=True)
class _Head:
    last_seq: int
    last_hash: str
    mac: str


class AuditLog:
    """The audit trail of one store. Safe to share between threads."""

    def __init__(self, store: ResourceStore) -> None:
        self._store = store
        self._engine = store.engine
        self._is_postgres = store.engine.dialect.name == "postgresql"
        service_key = store.service_key("audit")
        self._sealer = Sealer(_derive(service_key, _SEAL_LABEL))
        self._chain_key = _derive(service_key, _CHAIN_LABEL)

    # -- writing ---------------------------------------------------------------------------------

    def append(self, record: AuditRecord, *, connection: Connection | None = None) -> int:
        """Record one event; returns its seq."""
        return self.append_many([record], connection=connection)[0]

    def append_many(
        self, records: Sequence[AuditRecord], *, connection: Connection | None = None
    ) -> list[int]:
        """Record events in one transaction, in order; returns their seqs.

        With `connection`, the events join the caller's open transaction (committed or rolled
        back with it); on SQLite that transaction must already hold the write lock.
        """
        if not records:
            return []
        prepared = [self._prepare(record) for record in records]  # outside the lock
        with self._writing(connection) as conn:
            last_seq, last_hash = self._lock_head(conn)
            rows = []
            for item in prepared:
                last_seq += 1
                row = self._row(item, last_seq, last_hash)
                rows.append(row)
                last_hash = row["entry_hash"]
            conn.execute(insert(audit_events), rows)
            conn.execute(
                update(audit_head)
                .where(audit_head.c.id == HEAD_ID)
                .values(
                    last_seq=last_seq,
                    last_hash=last_hash,
                    mac=self._head_mac(last_seq, last_hash),
                )
            )
        return [row["seq"] for row in rows]

    def _prepare(self, record: AuditRecord) -> _Prepared:
        recorded = record.recorded or datetime.now(UTC)
        if recorded.tzinfo is None:
            raise AuditLogError("an audit event's recorded time must be time-zone aware")
        recorded = recorded.astimezone(UTC)
        role = str(record.role)
        purpose = None if record.purpose is None else str(record.purpose)
        flags = ",".join(sorted(_checked_flags(record.flags)))
        _check_lengths(agent=record.agent, role=role, purpose=purpose, flags=flags)
        resource = audit_event_resource(record, str(uuid.uuid4()), recorded)
        patient = record.patient_id
        return _Prepared(
            recorded=recorded,
            recorded_text=_instant(recorded),
            action=AuditAction(record.action).value,
            outcome=AuditOutcome(record.outcome).value,
            agent=record.agent,
            role=role,
            purpose=purpose,
            patient_hash=self._store.patient_hash(patient) if patient else None,
            flags=flags,
            payload=zlib.compress(orjson.dumps(resource), 1),
        )

    def _row(self, item: _Prepared, seq: int, prev_hash: str) -> dict:
        body = self._sealer.seal(item.payload, _binding(seq))
        entry_hash = _entry_mac(
            self._chain_key,
            prev_hash,
            seq,
            item.recorded_text,
            item.action,
            item.outcome,
            item.agent,
            item.role,
            item.purpose,
            item.patient_hash,
            item.flags,
            body,
        )
        return {
            "seq": seq,
            "recorded": item.recorded,
            "action": item.action,
            "outcome": item.outcome,
            "agent": item.agent,
            "role": item.role,
            "purpose": item.purpose,
            "patient_hash": item.patient_hash,
            "flags": item.flags,
            "body": body,
            "prev_hash": prev_hash,
            "entry_hash": entry_hash,
        }

    @contextmanager
    def _writing(self, connection: Connection | None) -> Iterator[Connection]:
        if connection is not None:
            yield connection
            return
        with self._engine.connect() as conn:
            if not self._is_postgres:
                # take SQLite's write lock now: a deferred transaction that read the head and
                # then tried to write would fail under concurrency instead of waiting
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _lock_head(self, conn: Connection) -> tuple[int, str]:
        head = self._read_head_for_update(conn)
        if head is None:
            # Create it first, then look for events: on PostgreSQL another first appender may
            # have written both since our read, and then our insert is the one that does nothing.
            created = self._create_head(conn)
            if created and conn.execute(select(func.max(audit_events.c.seq))).scalar() is not None:
                raise AuditIntegrityError(
                    "the audit head is missing while the log holds events; "
                    "run `careloop audit verify`"
                )
            head = self._read_head_for_update(conn)
            assert head is not None
        if not hmac.compare_digest(head.mac, self._head_mac(head.last_seq, head.last_hash)):
            raise AuditIntegrityError(
                "the audit head fails its integrity check; run `careloop audit verify`"
            )
        return head.last_seq, head.last_hash

    def _read_head_for_update(self, conn: Connection) -> _Head | None:
        row = conn.execute(
            select(audit_head.c.last_seq, audit_head.c.last_hash, audit_head.c.mac)
            .where(audit_head.c.id == HEAD_ID)
            .with_for_update()
        ).first()
        return None if row is None else _Head(row.last_seq, row.last_hash, row.mac)

    def _create_head(self, conn: Connection) -> bool:
        """Insert the empty head; False when another appender's head got there first."""
        values = {
            "id": HEAD_ID,
            "last_seq": 0,
            "last_hash": GENESIS,
            "mac": self._head_mac(0, GENESIS),
        }
        if self._is_postgres:
            # two first appenders may both find no head; the second waits, then does nothing
            statement = pg_insert(audit_head).values(values).on_conflict_do_nothing()
            return conn.execute(statement.returning(audit_head.c.id)).first() is not None
        conn.execute(insert(audit_head).values(values))  # under BEGIN IMMEDIATE: no race
        return True

    def _head_mac(self, last_seq: int, last_hash: str) -> str:
        message = b"careloop-audit-head\x00%d\x00%s" % (last_seq, last_hash.encode())
        return hmac.digest(self._chain_key, message, "sha256").hex()

    # -- reading ---------------------------------------------------------------------------------

    def events(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        patient_id: str | None = None,
        agent: str | None = None,
        limit: int | None = None,
    ) -> Iterator[StoredAuditEvent]:
        """Events with since <= recorded < until, decrypted, in seq order, read in batches."""
        for bound in (since, until):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("audit event bounds must be time-zone aware")
        conditions = []
        if since is not None:
            conditions.append(audit_events.c.recorded >= since)
        if until is not None:
            conditions.append(audit_events.c.recorded < until)
        if patient_id is not None:
            conditions.append(audit_events.c.patient_hash == self._store.patient_hash(patient_id))
        if agent is not None:
            conditions.append(audit_events.c.agent == agent)
        after: int | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            size = BATCH if remaining is None else min(BATCH, remaining)
            page = select(audit_events).where(*conditions).order_by(audit_events.c.seq)
            if after is not None:
                page = page.where(audit_events.c.seq > after)
            with self._engine.connect() as conn:  # not held while the caller works
                rows = conn.execute(page.limit(size)).all()
            for row in rows:
                yield self._stored(row)
            if len(rows) < size:
                return
            after = rows[-1].seq
            remaining = None if remaining is None else remaining - len(rows)

    def _stored(self, row) -> StoredAuditEvent:  # type: ignore[no-untyped-def]
        try:
            resource = orjson.loads(zlib.decompress(self._sealer.open(row.body, _binding(row.seq))))
            readable = True
        except (InvalidTag, zlib.error, orjson.JSONDecodeError, ValueError):
            resource, readable = {}, False
        return StoredAuditEvent(
            seq=row.seq,
            recorded=row.recorded,
            action=row.action,
            outcome=row.outcome,
            agent=row.agent,
            role=row.role,
            purpose=row.purpose,
            patient_hash=row.patient_hash,
            flags=frozenset(flag for flag in (row.flags or "").split(",") if flag),
            resource=resource,
            readable=readable,
        )

    # -- verifying -------------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Walk the whole chain in one read snapshot and name every kind of tampering found."""
        with self._engine.connect() as conn:
            if self._is_postgres:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            else:
                conn.exec_driver_sql("BEGIN")  # the snapshot starts at the first read
            try:
                head = _read_raw_head(conn)
                head_ok = head is not None and hmac.compare_digest(
                    head.mac, self._head_mac(head.last_seq, head.last_hash)
                )
                walker = _ChainWalker(self, head, head_ok)
                for group in _seq_groups(_raw_rows(conn, walker)):
                    walker.feed(group)
                total = conn.execute(select(func.count()).select_from(audit_events)).scalar_one()
                return walker.report(int(total))
            finally:
                conn.rollback()

    def _mac_at(self, row: _Row, seq: int) -> str:
        return _entry_mac(
            self._chain_key,
            row.prev_hash,
            seq,
            row.recorded,
            row.action,
            row.outcome,
            row.agent,
            row.role,
            row.purpose,
            row.patient_hash,
            row.flags,
            row.body,
        )

    def _opens(self, row: _Row) -> bool:
        try:
            self._sealer.open(row.body, _binding(row.seq))
        except (InvalidTag, ValueError):
            return False
        return True


@dataclass(eq=False)
class _Suspect:
    """A row whose hash does not verify at its own seq, until we know why."""

    row: _Row
    computed: str  # its hash recomputed at its own seq
    followed: bool = False  # the next row (or the head) continues the chain from it
    done: bool = False


class _ChainWalker:
    """Classifies rows fed in seq order; keeps bounded state, whatever the log's size."""

    def __init__(self, log: AuditLog, head: _Head | None, head_ok: bool) -> None:
        self._log = log
        self._head = head
        self._head_ok = head_ok
        self._listed: dict[str, list[TamperFinding]] = {kind: [] for kind in FINDING_KINDS}
        self._counts: Counter[str] = Counter()
        self._checked = 0
        self._prev_seq = 0
        self._prev_hash = GENESIS
        self._prev_ok = True
        self._last_suspect: _Suspect | None = None  # the previous row, if it was suspect
        self._last_row: _Row | None = None
        self._first_beyond_head: int | None = None
        # where genuine entry hashes were written (bounded), to place moved rows
        self._recent: dict[str, int] = {}
        self._recent_order: deque[str] = deque()
        self._suspects_by_prev: dict[str, list[_Suspect]] = {}
        self._suspect_order: deque[_Suspect] = deque()

    def finding(self, kind: str, seq: int | None, detail: str) -> None:
        self._counts[kind] += 1
        if len(self._listed[kind]) < LISTED_PER_KIND:
            self._listed[kind].append(TamperFinding(seq, kind, detail))

    def unparseable(self) -> None:
        self._checked += 1
        self.finding("modified", None, "a row's seq is not a whole number")

    def feed(self, group: list[_Row]) -> None:
        """The rows of one seq: one, unless a second row was forced into the same position."""
        self._checked += len(group)
        keep = group[0]
        if len(group) > 1:
            genuine = [row for row in group if self._verifies(row, row.seq)]
            keep = genuine[0] if genuine else group[0]
            for row in group:
                if row is not keep:
                    self.finding("inserted", row.seq, "a second row claims this seq position")
        self._feed_row(keep)

    def _feed_row(self, row: _Row) -> None:
        seq = row.seq
        gap = seq - self._prev_seq - 1
        if self._last_suspect is not None and gap == 0:
            suspect = self._last_suspect
            suspect.followed = row.prev_hash in (suspect.row.entry_hash, suspect.computed)
        self._last_suspect = None
        if gap > 0:
            self._gap(seq)
        computed = self._log._mac_at(row, seq)
        ok = hmac.compare_digest(computed, row.entry_hash)
        beyond_head = self._head_ok and self._head is not None and seq > self._head.last_seq
        if ok:
            self._genuine(row, gap, beyond_head)
        elif beyond_head:
            if not self._placed_by_prev(_Suspect(row, computed)):
                self.finding(
                    "inserted",
                    seq,
                    "after the head's last seq, and its hash does not verify: a forged row",
                )
        else:
            self._last_suspect = self._suspect(row, computed)
        self._prev_seq, self._prev_hash, self._prev_ok = seq, row.entry_hash, ok
        self._last_row = row

    def _gap(self, seq: int) -> None:
        """Seqs skipped before `seq` were deleted, up to the head: none were written past it."""
        last_missing = seq - 1
        if self._head_ok and self._head is not None:
            last_missing = min(last_missing, self._head.last_seq)
        if last_missing > self._prev_seq:
            self._missing("deleted", self._prev_seq + 1, last_missing, "missing from the chain")

    def _genuine(self, row: _Row, gap: int, beyond_head: bool) -> None:
        if beyond_head and self._first_beyond_head is None:
            self._first_beyond_head = row.seq
        if not self._log._opens(row):
            self.finding("unreadable", row.seq, "its hash verifies but its body does not open")
        if gap == 0 and self._prev_ok and row.prev_hash != self._prev_hash:
            where = f"does not continue the chain from seq {row.seq - 1}: rows out of order"
            self.finding("reordered", row.seq, where)
        self._register(row.entry_hash, row.seq)

    def _suspect(self, row: _Row, computed: str) -> _Suspect:
        suspect = _Suspect(row, computed)
        if self._placed_by_prev(suspect):
            return suspect
        self._suspects_by_prev.setdefault(row.prev_hash, []).append(suspect)
        self._suspect_order.append(suspect)
        if len(self._suspect_order) > MAX_PENDING:
            self._settle(self._suspect_order.popleft())
        return suspect

    def _placed_by_prev(self, suspect: _Suspect) -> bool:
        """Whether the row follows a genuine entry seen recently and verifies right after it."""
        prev_hash = suspect.row.prev_hash
        origin = 1 if prev_hash == GENESIS else None
        if prev_hash in self._recent:
            origin = self._recent[prev_hash] + 1
        if origin is None or not self._place(suspect, origin):
            return False
        self._register(suspect.row.entry_hash, origin)
        return True

    def _place(self, suspect: _Suspect, origin: int) -> bool:
        """True (and reported) when the suspect row verifies at `origin`: it was moved there."""
        row = suspect.row
        if suspect.done or origin == row.seq or not self._verifies(row, origin):
            return False
        suspect.done = True
        self.finding("reordered", row.seq, f"holds the event written as seq {origin}")
        return True

    def _register(self, entry_hash: str, seq: int) -> None:
        """Remember where a genuine entry hash belongs, and place suspects that follow it."""
        work = [(entry_hash, seq)]
        while work:
            known_hash, known_seq = work.pop()
            self._recent[known_hash] = known_seq
            self._recent_order.append(known_hash)
            if len(self._recent_order) > RECENT_WINDOW:
                self._recent.pop(self._recent_order.popleft(), None)
            for suspect in self._suspects_by_prev.pop(known_hash, ()):
                if self._place(suspect, known_seq + 1):
                    work.append((suspect.row.entry_hash, known_seq + 1))

    def _settle(self, suspect: _Suspect) -> None:
        """No other place fits: modified in place, or a forged row nothing continues from."""
        if suspect.done:
            return
        suspect.done = True
        waiting = self._suspects_by_prev.get(suspect.row.prev_hash)
        if waiting and suspect in waiting:
            waiting.remove(suspect)
        if suspect.followed:
            why = "its content no longer matches its hash (a column or the body was changed)"
            self.finding("modified", suspect.row.seq, why)
        else:
            why = "its hash does not verify and the chain does not continue from it: forged"
            self.finding("inserted", suspect.row.seq, why)

    def _verifies(self, row: _Row, seq: int) -> bool:
        return hmac.compare_digest(self._log._mac_at(row, seq), row.entry_hash)

    def _missing(self, kind: str, first: int, last: int, why: str) -> None:
        span = f"seq {first}" if first == last else f"seq {first} to {last}"
        count = last - first + 1
        self.finding(kind, first, f"{span} ({count} event{'s' if count > 1 else ''}) {why}")

    def report(self, total_rows: int) -> VerifyReport:
        self._close_tail()
        while self._suspect_order:
            self._settle(self._suspect_order.popleft())
        self._check_head()
        if total_rows > self._checked:
            extra = total_rows - self._checked
            self.finding("inserted", None, f"{extra} row(s) exactly duplicate another row")
        findings = [finding for kind in FINDING_KINDS for finding in self._listed[kind]]
        findings.sort(key=lambda f: (f.seq is None, f.seq or 0, f.kind))
        return VerifyReport(
            ok=not self._counts,
            events_checked=self._checked,
            findings=findings,
            counts=dict(self._counts),
            head_seq=self._head.last_seq if self._head else None,
            head_hash=self._head.last_hash if self._head else None,
        )

    def _close_tail(self) -> None:
        """Whether the chain continues from the last row: the head says so, or cannot tell."""
        suspect = self._last_suspect
        if suspect is None:
            return
        if self._head_ok and self._head is not None and self._head.last_seq == suspect.row.seq:
            suspect.followed = self._head.last_hash in (suspect.row.entry_hash, suspect.computed)
        else:
            suspect.followed = True  # no trustworthy head to judge by: assume edited in place

    def _check_head(self) -> None:
        head = self._head
        if head is None:
            if self._checked:
                why = f"the audit head is missing while the log holds {self._checked} events"
                self.finding("truncated", None, why)
            return
        if not self._head_ok:
            why = f"the audit head fails its MAC: it was edited (claims last seq {head.last_seq})"
            self.finding("truncated", None, why)
            return
        if self._prev_seq < head.last_seq:
            why = f"missing at the end: the head says the log ends at seq {head.last_seq}"
            self._missing("truncated", self._prev_seq + 1, head.last_seq, why)
        elif self._first_beyond_head is not None:
            why = f"genuine events run past the head's last seq {head.last_seq}: an older head"
            self.finding("truncated", self._first_beyond_head, why)
        elif (
            self._last_row is not None
            and self._prev_ok
            and self._last_row.seq == head.last_seq
            and self._last_row.entry_hash != head.last_hash
        ):
            self.finding("truncated", None, "the head's hash does not match the last event")


# -- raw reading for verification ------------------------------------------------------------

_ROW_COLUMNS = (
    "seq, recorded, action, outcome, agent, role, purpose, patient_hash, flags, body, "
    "prev_hash, entry_hash"
)
_FIRST_PAGE = text(f"SELECT {_ROW_COLUMNS} FROM audit_events ORDER BY seq, entry_hash LIMIT :n")
# keyset on (seq, entry_hash): a second row forced into one seq is still read once
_NEXT_PAGE = text(
    f"SELECT {_ROW_COLUMNS} FROM audit_events WHERE seq >= :s AND (seq > :s OR entry_hash > :h) "
    "ORDER BY seq, entry_hash LIMIT :n"
)


def _raw_rows(conn: Connection, walker: _ChainWalker) -> Iterator[_Row]:
    """Every row in (seq, entry_hash) order, BATCH at a time, as the driver returns it: no
    type processing, so a value an attacker made unparseable cannot stop the walk."""
    raw = conn.execute(_FIRST_PAGE, {"n": BATCH}).all()
    while raw:
        for values in raw:
            try:
                yield _normalized(values)
            except (TypeError, ValueError):  # SQLite stores whatever it is given
                walker.unparseable()
        if len(raw) < BATCH:
            return
        last = raw[-1]
        raw = conn.execute(_NEXT_PAGE, {"s": last[0], "h": last[11], "n": BATCH}).all()


def _seq_groups(rows: Iterator[_Row]) -> Iterator[list[_Row]]:
    group: list[_Row] = []
    for row in rows:
        if group and row.seq != group[0].seq:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def _normalized(values: Sequence) -> _Row:  # type: ignore[type-arg]
    seq, recorded, *texts, body, prev_hash, entry_hash = values
    return _Row(
        int(seq),
        _canonical_time(recorded),
        *(None if value is None else str(value) for value in texts),
        body=bytes(body) if isinstance(body, bytes | bytearray | memoryview) else b"",
        prev_hash=str(prev_hash),
        entry_hash=str(entry_hash),
    )


def _canonical_time(value: object) -> str | None:
    """The instant text the hash was computed over, from either backend's stored form."""
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _instant(moment)


def _read_raw_head(conn: Connection) -> _Head | None:
    row = conn.execute(
        text("SELECT last_seq, last_hash, mac FROM audit_head WHERE id = :id"), {"id": HEAD_ID}
    ).first()
    if row is None:
        return None
    try:
        return _Head(int(row[0]), str(row[1]), str(row[2]))
    except (TypeError, ValueError):
        return _Head(-1, str(row[1]), "")  # an unparseable head fails its MAC


# -- keys and hashes -------------------------------------------------------------------------


def _derive(service_key: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=label).derive(service_key)


def _binding(seq: int) -> bytes:
    """Associated data of a sealed body: it opens only at the seq it was written for."""
    return b"careloop-audit-event|%d" % seq


def _entry_mac(
    key: bytes,
    prev_hash: str,
    seq: int,
    recorded: str | None,
    action: str | None,
    outcome: str | None,
    agent: str | None,
    role: str | None,
    purpose: str | None,
    patient_hash: str | None,
    flags: str | None,
    body: bytes,
) -> str:
    message = bytearray(b"careloop-audit-entry")
    parts = (prev_hash, str(seq), recorded, action, outcome, agent, role, purpose, patient_hash)
    for part in (*parts, flags):
        if part is None:
            message += b"\x00"  # distinct from the empty string
        else:
            data = part.encode("utf-8", "surrogatepass")
            message += b"\x01" + len(data).to_bytes(4, "big") + data
    message += len(body).to_bytes(8, "big") + body
    return hmac.digest(key, bytes(message), "sha256").hex()


def _check_lengths(**values: str | None) -> None:
    """The columns' sizes (PostgreSQL enforces them; SQLite would silently store more)."""
    if not values["agent"]:
        raise AuditLogError("an audit event needs an agent")
    for name, value in values.items():
        if value is not None and len(value) > _LIMITS[name]:
            raise AuditLogError(f"audit {name} is longer than {_LIMITS[name]} characters")


def _checked_flags(flags: frozenset[str]) -> frozenset[str]:
    for flag in flags:
        if not isinstance(flag, str) or not _FLAG.fullmatch(flag):
            raise AuditLogError("audit flags are lower-case words joined by hyphens")
    return frozenset(flags)
