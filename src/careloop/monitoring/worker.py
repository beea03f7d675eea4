"""The monitoring worker: device samples in (NATS JetStream, the in-process stream, or the store's
device Observations), daily summaries and explained alerts out, through the access layer.

One `SampleProcessor` makes the stream effectively-once and in time order per person; the
`Monitor` keeps baselines, detectors and the alert manager; at each checkpoint the worker writes,
in ONE store transaction, what closed days produced (daily summary Observations; per alert
change a Flag, a DetectedIssue with a chart Media per signal, and a Task for the care team's
queue; engagement-gap Tasks) together with its own state. Only after that commit are the
deliveries acknowledged, so a crash anywhere loses nothing and writes nothing twice (every
resource id is derived from what it describes, so a repeated write rewrites the same resource).

Privacy: the worker is a principal of its own (role `monitor`, purpose treatment). Before a
person's sample is used, the person's consents are checked for that kind of device data
(cached for `consent_ttl`; each check is audited); samples the patient has not consented to are
dropped and counted, never scored. Every write is authorized and audited like any other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select

from careloop.access.errors import AccessDenied
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Permission, Role
from careloop.audit.events import AuditAction
from careloop.fhir.indexing import patient_id_of
from careloop.monitoring.alerts import AlertPolicy, AlertState
from careloop.monitoring.engagement import DEFAULT_GAP_DAYS, engagement_gaps, missed_check_ins
from careloop.monitoring.feed import StoreFeed
from careloop.monitoring.fhir import CATEGORY_SYSTEM, LOINC, summary_observation
from careloop.monitoring.fhir_alerts import (
    alert_detected_issue,
    alert_flag,
    alert_resources,
    baseline_days_of,
    chart_media_id,
    engagement_task,
    task_id,
)
from careloop.monitoring.monitor import DayOutcome, Monitor
from careloop.monitoring.processor import Counters, SampleProcessor
from careloop.monitoring.signals import CATALOGUE, Sample, Signal
from careloop.monitoring.stream import SampleStream
from careloop.store.crypto import Sealer
from careloop.store.repository import ResourceStore
from careloop.store.schema import monitoring_persons, monitoring_workers

logger = logging.getLogger(__name__)

# How far back a sample may arrive and still be put in order. A live device stream is nearly in
# order (`LIVE_REORDER`); the store feed also carries bulk-loaded history, written in whatever
# order the file had (one signal's months, then the next), so it is sorted across a whole
# `BACKFILL_REORDER`: held samples are released, oldest first, once they are that far behind the
# newest, when a person's buffer is full, after a few seconds of wall time, or at the end.
LIVE_REORDER = timedelta(minutes=5)
BACKFILL_REORDER = timedelta(days=400)
REORDER_BUFFER = 20_000  # samples held per person at most: about 2 MB for that person

# Task states that mean someone has taken the alert on
ACKNOWLEDGING = frozenset({"accepted", "in-progress", "completed"})
WORKER_PRINCIPAL = Principal(subject="careloop:monitoring-worker", kind="client", role=Role.MONITOR)
CHECKPOINT_VERSION = 1


# ----- the worker's saved state -----------------------------------------------------------


class MonitoringCheckpoints:
    """The worker's state in the store: a shared row (stream position, alert manager) and one
    row per person (baselines, open day), sealed, and keyed by patient hash so an erasure
    deletes it with the rest of the patient's data."""

    def __init__(self, store: ResourceStore, worker: str = "default") -> None:
        self.store = store
        self.worker = worker
        self._sealer = Sealer(store.service_key("monitoring"))

    def load(self) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
        """(shared state or None when never saved, person id -> person state)."""
        with self.store.engine.connect() as connection:
            shared_row = connection.execute(
                select(monitoring_workers.c.body).where(monitoring_workers.c.worker == self.worker)
            ).scalar_one_or_none()
            person_rows = connection.execute(
                select(monitoring_persons.c.patient_hash, monitoring_persons.c.body).where(
                    monitoring_persons.c.worker == self.worker
                )
            ).all()
        shared = None if shared_row is None else self._open(shared_row, "shared")
        persons = {}
        for patient_hash, body in person_rows:
            saved = self._open(body, patient_hash)
            persons[saved["person_id"]] = saved["state"]
        return shared, persons

    def save(
        self,
        connection: Any,
        shared: dict[str, Any],
        persons: dict[str, dict[str, Any]],
        now: datetime,
    ) -> None:
        """Write within the caller's transaction (the same one as the resources it produced)."""
        connection.execute(
            delete(monitoring_workers).where(monitoring_workers.c.worker == self.worker)
        )
        connection.execute(
            insert(monitoring_workers).values(
                worker=self.worker, body=self._seal(shared, "shared"), updated_at=now
            )
        )
        for person_id, state in persons.items():
            patient_hash = self.store.patient_hash(person_id)
            connection.execute(
                delete(monitoring_persons).where(
                    monitoring_persons.c.worker == self.worker,
                    monitoring_persons.c.patient_hash == patient_hash,
                )
            )
            body = self._seal({"person_id": person_id, "state": state}, patient_hash)
            connection.execute(
                insert(monitoring_persons).values(
                    worker=self.worker, patient_hash=patient_hash, body=body, updated_at=now
                )
            )

    def _seal(self, value: dict[str, Any], row: str) -> bytes:
        packed = zlib.compress(json.dumps(value, separators=(",", ":")).encode(), 6)
        return self._sealer.seal(packed, self._binding(row))

    def _open(self, sealed: bytes, row: str) -> dict[str, Any]:
        return json.loads(zlib.decompress(self._sealer.open(sealed, self._binding(row))))

    def _binding(self, row: str) -> bytes:
        # a sealed state copied onto another worker's or person's row fails to open
        return f"monitoring\x1f{self.worker}\x1f{row}".encode()


# ----- consent ----------------------------------------------------------------------------


class ConsentGate:
    """Does this person's consent let careloop's monitoring use this kind of device data?

    Judged by the access layer on a stand-in Observation of the signal (its LOINC code and
    category, as a real one would carry), so the patient's rules by data class apply. Answers
    are kept `ttl` of wall time (monotonic: it is asked once per sample, so it must be cheap),
    so a consent change takes effect within it."""

    def __init__(self, access: AccessLayer, ttl: timedelta = timedelta(minutes=15)) -> None:
        self.access = access
        self.ttl_seconds = ttl.total_seconds()
        self._answers: dict[tuple[str, Signal], tuple[bool, float]] = {}  # answer, valid until

    def allows(self, person_id: str, signal: Signal) -> bool:
        cached = self._answers.get((person_id, signal))
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        ctx = AccessContext(Purpose.TREATMENT, "monitoring-consent-check", "monitoring-worker")
        released = self.access.screen(WORKER_PRINCIPAL, ctx, person_id, [_probe(person_id, signal)])
        allowed = bool(released)
        self._answers[(person_id, signal)] = (allowed, time.monotonic() + self.ttl_seconds)
        return allowed


def _owner(task: dict) -> str:
    """Who took the alert on, as the Task names them (never a patient's details)."""
    owner = task.get("owner")
    if isinstance(owner, dict):
        named = owner.get("reference") or owner.get("display")
        if isinstance(named, str) and named:
            return named[:128]
    return "care team"


def _probe(person_id: str, signal: Signal) -> dict:
    info = CATALOGUE[signal]
    category = "activity" if signal in (Signal.STEPS, Signal.SLEEP_MINUTES) else "vital-signs"
    return {
        "resourceType": "Observation",
        "id": "monitoring-consent-probe",
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": category}]}],
        "code": {"coding": [{"system": LOINC, "code": info.loinc}]},
        "subject": {"reference": f"Patient/{person_id}"},
    }


# ----- what closed days write -------------------------------------------------------------


def day_resources(
    outcome: DayOutcome, monitor: Monitor, now: datetime, care_team: str | None = None
) -> list[dict]:
    """The FHIR resources one closed person-day produces: its daily summaries, and for every
    alert change the Flag, DetectedIssue, chart Media and Task (owned by `care_team`, the
    patient's CareTeam id, when there is one)."""
    resources = [summary_observation(sample) for sample in outcome.summaries]
    history = monitor.history(outcome.person)
    for change in outcome.changes:
        resources.extend(alert_resources(change.alert, history, now, care_team))
    return resources


# ----- the worker -------------------------------------------------------------------------


@dataclass
class WorkerCounters:
    no_consent: int = 0
    resources_written: int = 0
    commits: int = 0
    engagement_tasks: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class MonitoringWorker:
    """Consumes one stream; see the module doc. `run_until_idle` for a batch or a test,
    `run_forever` for the service (`careloop monitor run`)."""

    def __init__(
        self,
        store: ResourceStore,
        access: AccessLayer,
        *,
        worker: str = "default",
        policy: AlertPolicy | None = None,
        consent: ConsentGate | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        commit_every: int = 10_000,
        commit_seconds: float = 5.0,
        engagement_days: int = DEFAULT_GAP_DAYS,
        reorder: timedelta = LIVE_REORDER,
    ) -> None:
        self.store = store
        self.access = access
        self.monitor = Monitor(policy, clock=clock)
        self.consent = consent if consent is not None else ConsentGate(access)
        self.checkpoints = MonitoringCheckpoints(store, worker)
        self.clock = clock
        self.engagement_days = engagement_days
        self.counters = WorkerCounters()
        self._closed: list[DayOutcome] = []
        self._extra: list[dict] = []  # engagement Tasks, alerts rewritten after care-team actions
        self.cursor: int = 0  # a StoreFeed's position, kept with the checkpoint
        self.processor = SampleProcessor(
            self._on_sample,
            before_ack=self._commit,
            commit_every=commit_every,
            commit_seconds=commit_seconds,
            clock=clock,
            lateness=reorder,
            max_buffer_per_person=REORDER_BUFFER,
        )
        self._feed: StoreFeed | None = None

    # ----- start and run ------------------------------------------------------------------

    def restore(self) -> bool:
        """Load the saved state, if any; True when there was one."""
        shared, persons = self.checkpoints.load()
        if shared is None:
            return False
        if shared.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"monitoring checkpoint: unsupported version {shared.get('version')!r}"
            )
        self.monitor.load(shared["monitor"], persons)
        self.processor.restore(shared["processor"])
        self.cursor = int(shared.get("cursor", 0))
        self._forget_erased()
        return True

    def _forget_erased(self) -> set[str]:
        """Persons whose record was erased since: the erasure deleted their checkpoint rows;
        what this worker holds of them in memory, and in its shared row, goes too (and nothing
        more is written for them, which the store would refuse anyway)."""
        known = set(self.monitor.persons) | self.monitor.manager.persons()
        by_hash = {self.store.patient_hash(person): person for person in known}
        erased = {by_hash[h] for h in self.store.erased_hashes(by_hash)}
        for person in erased:
            self.monitor.forget(person)
        return erased

    def follow(self, feed: StoreFeed) -> None:
        """Keep the store feed's position in the checkpoint."""
        self._feed = feed

    async def run_until_idle(self, stream: SampleStream, idle_seconds: float = 0.5) -> Counters:
        counters = await self.processor.run_until_idle(stream, idle_seconds=idle_seconds)
        await self.tick()
        return counters

    async def run_forever(
        self, stream: SampleStream, stop: asyncio.Event, tick_seconds: float = 60.0
    ) -> None:
        """Consume until `stop` is set; close due days and check engagement every tick."""
        last_tick = time.monotonic()
        while not stop.is_set():
            await self.processor.run_for(stream, 5_000)
            if time.monotonic() - last_tick >= tick_seconds:
                await self.tick()
                last_tick = time.monotonic()
        await self.processor.drain()

    async def tick(self, now: datetime | None = None) -> None:
        """Fold in what the care team did, close days that are over, raise engagement Tasks,
        and save (a timer calls this)."""
        now = now or self.clock()
        self._extra.extend(self._care_team_actions(now))
        self._closed.extend(self.monitor.close_due(now))
        gaps = engagement_gaps(self.monitor.last_seen(), now, self.engagement_days)
        silent = {gap.person_id for gap in gaps}  # a silent person's check-ins are not news
        gaps += [
            gap
            for gap in missed_check_ins(self.monitor.check_ins(), now, self.engagement_days)
            if gap.person_id not in silent
        ]
        self._extra.extend(engagement_task(gap, now) for gap in gaps)
        self.counters.engagement_tasks += len(gaps)
        if self._closed or self._extra:
            await self._commit()

    def _care_team_actions(self, now: datetime) -> list[dict]:
        """Acknowledgements and snoozes made on alert Tasks (through the FHIR API or the web
        pages): a Task set to `accepted` (or in progress, or done) acknowledges the alert, one
        set `on-hold` snoozes it. The alert's Flag and DetectedIssue are rewritten to say so; the
        Task stays as the care team left it."""
        ctx = AccessContext(Purpose.TREATMENT, "monitoring-care-team-sync", "monitoring-worker")
        manager = self.monitor.manager
        rewritten: list[dict] = []
        for alert in manager.open_alerts():
            if alert.state is not AlertState.OPEN:
                continue
            try:
                stored = self.access.read(WORKER_PRINCIPAL, ctx, "Task", task_id(alert))
            except AccessDenied:  # the patient's consent now withholds it: leave the alert be
                continue
            status = None if stored is None else stored.body.get("status")
            if status in ACKNOWLEDGING:
                manager.acknowledge(alert.id, _owner(stored.body), now)
            elif status == "on-hold":
                manager.snooze(alert.id, max(1, manager.policy.ack_snooze_days), now)
            else:
                continue
            history = self.monitor.history(alert.person_id)
            media_ids = [chart_media_id(alert.id, item.signal) for item in alert.evidence]
            rewritten.append(alert_flag(alert))
            rewritten.append(alert_detected_issue(alert, media_ids, baseline_days_of(history)))
        return rewritten

    # ----- per sample and per commit --------------------------------------------------------

    def _on_sample(self, sample: Sample) -> None:
        if not self.consent.allows(sample.person_id, sample.signal):
            self.counters.no_consent += 1
            return
        self._closed.extend(self.monitor.accept(sample))

    async def _commit(self) -> None:
        """Write what closed days produced and the state, in one transaction; audit after."""
        now = self.clock()
        erased = self._forget_erased()
        outcomes = [o for o in self._closed if o.person not in erased]
        extra = [r for r in self._extra if patient_id_of(r) not in erased]
        self._closed, self._extra = [], []
        resources = [
            resource
            for outcome in outcomes
            for resource in day_resources(outcome, self.monitor, now, self._care_team(outcome))
        ]
        resources.extend(extra)
        ctx = AccessContext(Purpose.TREATMENT, "monitoring-commit", "monitoring-worker")
        if resources:
            self.access.authorize(
                WORKER_PRINCIPAL, ctx, Permission.PATIENT_WRITE, action=AuditAction.CREATE
            )
        persons = {pid: self.monitor.person_snapshot(pid) for pid in self.monitor.take_touched()}
        if self._feed is not None:
            self.cursor = self._feed.cursor
        shared = {
            "version": CHECKPOINT_VERSION,
            "monitor": self.monitor.shared_snapshot(),
            "processor": self.processor.checkpoint(),
            "cursor": self.cursor,
        }
        with self.store.transaction() as tx:
            if resources:
                tx.put_resources(resources)
            self.checkpoints.save(tx.connection, shared, persons, now)
        self.counters.commits += 1
        self.counters.resources_written += len(resources)
        for outcome in outcomes:
            for change in outcome.changes:
                self.counters.by_kind[change.kind] = self.counters.by_kind.get(change.kind, 0) + 1
        self._audit(resources, ctx)

    def _care_team(self, outcome: DayOutcome) -> str | None:
        """The patient's active CareTeam, whose queue the alert's Task goes to (read through
        the access layer, only when the day changed an alert); None routes to the nurse queue."""
        if not outcome.changes:
            return None
        ctx = AccessContext(Purpose.TREATMENT, "monitoring-task-routing", "monitoring-worker")
        page, _withheld = self.access.search(
            WORKER_PRINCIPAL,
            ctx,
            "CareTeam",
            lambda patient: self.store.search("CareTeam", patient_id=patient, count=20),
            patient_id=outcome.person,
            query_text="subject=Patient&status=active",
        )
        teams = sorted(
            str(item.body["id"]) for item in page.resources if item.body.get("status") == "active"
        )
        return teams[0] if teams else None

    def _audit(self, resources: Sequence[dict], ctx: AccessContext) -> None:
        """One audit record per patient written to (after the commit: an audit entry for a
        write that then rolled back would be false)."""
        by_patient: dict[str, list[str]] = {}
        for resource in resources:
            entity = f"{resource['resourceType']}/{resource['id']}"
            by_patient.setdefault(patient_id_of(resource) or "", []).append(entity)
        for patient, entities in by_patient.items():
            self.access.record(
                WORKER_PRINCIPAL,
                ctx,
                AuditAction.CREATE,
                patient_id=patient or None,
                entities=tuple(entities),
                detail=f"{len(entities)} remote-monitoring resources",
            )
