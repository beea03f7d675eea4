"""Turn an at-least-once, possibly out-of-order stream into effectively-once, in-order processing.

Per person, samples go through a small reorder buffer: a sample is held until the newest sample
seen for that person is `lateness` ahead of it (or it has been held `max_hold_seconds` of wall
time, for a person whose stream went quiet), then handed to the callback in time order. A sample
older than what was already handed over for its person is late: counted and dropped with its
reason, because handing it over would break the order baselines and change detection rely on.
A sample_id already processed, or waiting in the buffer, is a duplicate and is dropped.

Acknowledgement follows processing: a delivery is acknowledged only once its sample went through
the callback (or was judged duplicate, late or invalid), so a crash loses nothing: what was not
acknowledged comes back. What comes back and was processed is recognised by the seen-set, which
`checkpoint()` exports with the per-person processed time; save it in the same transaction as
the callback's own state, and `restore()` it on start, so a replay counts nothing twice.

A callback whose state lives in memory (the monitoring worker) passes `before_ack`: processed
deliveries are then acknowledged only after `before_ack` has saved that state and this
checkpoint, at the end of each batch. A crash before the save loses nothing (the deliveries come
back); a crash after it counts nothing twice (the checkpoint knows them).
"""

from __future__ import annotations

import heapq
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from careloop.monitoring.signals import Sample
from careloop.monitoring.stream import Delivery, SampleStream

logger = logging.getLogger(__name__)

SampleCallback = Callable[[Sample], Awaitable[None] | None]
SaveHook = Callable[[], Awaitable[None] | None]
DropHook = Callable[[Sample, str], None]
CHECKPOINT_VERSION = 1


@dataclass
class Counters:
    processed: int = 0
    duplicates: int = 0
    late: int = 0
    invalid: int = 0  # malformed or future-dated; dead-lettered


@dataclass
class _Held:
    time: datetime
    sample_id: str
    sample: Sample
    deliveries: list[Delivery]
    since: float  # monotonic time it entered the buffer


# A buffer entry: (time, sample_id, held). Sample ids are unique within a buffer, so the heap
# orders by plain tuple comparison and never compares the held objects themselves.
_Entry = tuple[datetime, str, _Held]


class SampleProcessor:
    """Applies `callback` once per distinct sample, per person in time order."""

    def __init__(
        self,
        callback: SampleCallback,
        *,
        lateness: timedelta = timedelta(minutes=5),
        max_hold_seconds: float = 5.0,
        max_buffer_per_person: int = 1_000,
        seen_capacity: int = 200_000,
        checkpoint_seen: int = 50_000,
        max_future: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_drop: DropHook | None = None,
        before_ack: SaveHook | None = None,
        commit_every: int = 1,
        commit_seconds: float = 0.0,
    ) -> None:
        if lateness < timedelta(0) or max_hold_seconds < 0:
            raise ValueError("lateness and max_hold_seconds must not be negative")
        if max_buffer_per_person < 1 or seen_capacity < 1:
            raise ValueError("max_buffer_per_person and seen_capacity must be positive")
        self._callback = callback
        self._lateness = lateness
        self._max_hold = max_hold_seconds
        self._max_buffer = max_buffer_per_person
        self._seen_capacity = seen_capacity
        self._checkpoint_seen = checkpoint_seen
        self._max_future = max_future
        self._clock = clock
        self._on_drop = on_drop
        self._before_ack = before_ack
        self._unacked: list[Delivery] = []  # processed, waiting for `before_ack` to save
        # saving a whole state per batch is costly: save when this many wait, or this old
        self._commit_every = commit_every
        self._commit_seconds = commit_seconds
        self._last_commit = time.monotonic()
        self.counters = Counters()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._processed_until: dict[str, datetime] = {}
        self._newest: dict[str, datetime] = {}
        self._buffers: dict[str, list[_Entry]] = {}
        self._held: dict[str, _Held] = {}
        self._recovered = False
        self._batch_now: datetime | None = None  # one clock reading per fetched batch

    # ------------------------------------------------------------------------- one delivery

    async def handle(self, delivery: Delivery) -> None:
        """Judge one delivery, buffer it, and process whatever it makes ready."""
        sample = delivery.sample
        if sample is None:
            await self._dead_letter(delivery, delivery.error or "malformed message")
            return
        if sample.time > (self._batch_now or self._clock()) + self._max_future:
            await self._dead_letter(delivery, "sample time is in the future")
            return
        if sample.sample_id in self._seen:
            self.counters.duplicates += 1
            await delivery.ack()
            return
        held = self._held.get(sample.sample_id)
        if held is not None:  # re-send or redelivery while waiting: settle with the original
            self.counters.duplicates += 1
            held.deliveries.append(delivery)
            return
        until = self._processed_until.get(sample.person_id)
        if until is not None and sample.time < until:
            await self._drop_late(delivery, sample, until)
            return
        self._hold(sample, delivery)
        await self._release(sample.person_id, force_until=None)

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.counters.invalid += 1
        logger.warning("sample message dead-lettered: %s", reason)
        await delivery.dead_letter(reason)

    async def _drop_late(self, delivery: Delivery, sample: Sample, until: datetime) -> None:
        self.counters.late += 1
        behind = (until - sample.time).total_seconds()
        reason = f"late: {behind:.0f} s older than the person's processed samples"
        logger.info("%s sample dropped, %s", sample.signal.value, reason)
        if self._on_drop is not None:
            self._on_drop(sample, reason)
        await delivery.ack()

    def _hold(self, sample: Sample, delivery: Delivery) -> None:
        held = _Held(sample.time, sample.sample_id, sample, [delivery], time.monotonic())
        entry = (sample.time, sample.sample_id, held)
        heapq.heappush(self._buffers.setdefault(sample.person_id, []), entry)
        self._held[sample.sample_id] = held
        newest = self._newest.get(sample.person_id)
        if newest is None or sample.time > newest:
            self._newest[sample.person_id] = sample.time

    # ------------------------------------------------------------------------------ release

    async def _release(self, person_id: str, force_until: datetime | None) -> None:
        """Process this person's held samples, oldest first, that are due: older than the
        newest by `lateness`, at or before `force_until`, or beyond the buffer's size."""
        buffer = self._buffers.get(person_id)
        if not buffer:
            return
        ready_until = self._newest[person_id] - self._lateness
        if force_until is not None:
            ready_until = max(ready_until, force_until)
        while buffer and (buffer[0][0] <= ready_until or len(buffer) > self._max_buffer):
            await self._process(person_id, heapq.heappop(buffer)[2])
        if not buffer:
            del self._buffers[person_id]

    async def _process(self, person_id: str, held: _Held) -> None:
        try:
            outcome = self._callback(held.sample)
            if outcome is not None and inspect.isawaitable(outcome):  # a sync callback: None
                await outcome
        except BaseException:
            # Give every delivery back (it will come again) and let the caller see the error:
            # a failing callback is a fault to fix, not a sample to drop.
            del self._held[held.sample_id]
            for delivery in held.deliveries:
                await delivery.nak()
            raise
        del self._held[held.sample_id]
        self._remember(held.sample_id)
        until = self._processed_until.get(person_id)
        if until is None or held.time > until:
            self._processed_until[person_id] = held.time
        self.counters.processed += 1
        if self._before_ack is not None:
            self._unacked.extend(held.deliveries)
            return
        for delivery in held.deliveries:
            await delivery.ack()

    async def commit(self, *, force: bool = True) -> None:
        """Save through `before_ack`, then acknowledge what was processed since the last commit
        (unless `force` is False and neither `commit_every` nor `commit_seconds` is reached)."""
        if self._before_ack is None or not self._unacked:
            return
        waited = time.monotonic() - self._last_commit
        if not force and len(self._unacked) < self._commit_every and waited < self._commit_seconds:
            return
        self._last_commit = time.monotonic()
        outcome = self._before_ack()
        if inspect.isawaitable(outcome):
            await outcome
        done, self._unacked = self._unacked, []
        for delivery in done:
            await delivery.ack()

    def _remember(self, sample_id: str) -> None:
        self._seen[sample_id] = None
        if len(self._seen) > self._seen_capacity:
            # the oldest ids go first; a re-send that old is almost surely also older than its
            # person's processed time, so it is still refused (as late) rather than re-processed
            self._seen.popitem(last=False)

    async def release_overdue(self) -> None:
        """Process samples held longer than `max_hold_seconds` (and, to keep order, everything
        of the same person older than them): a person whose device went quiet still gets
        their last samples processed."""
        cutoff = time.monotonic() - self._max_hold
        for person_id in list(self._buffers):
            overdue = [e[2].time for e in self._buffers[person_id] if e[2].since <= cutoff]
            if overdue:
                await self._release(person_id, force_until=max(overdue))

    async def drain(self) -> None:
        """Process everything held, in order (end of a replay or a graceful finish)."""
        for person_id in list(self._buffers):
            await self._release(person_id, force_until=datetime.max.replace(tzinfo=UTC))
        await self.commit()

    async def abandon(self) -> None:
        """Give back everything held without processing it: the stream redelivers it."""
        for buffer in self._buffers.values():
            for _time, _id, held in buffer:
                for delivery in held.deliveries:
                    await delivery.nak()
        self._buffers.clear()
        self._held.clear()
        # processed but unsaved: the state that took them is about to be thrown away too
        for delivery in self._unacked:
            await delivery.nak()
        self._unacked.clear()

    def held_count(self) -> int:
        return len(self._held)

    # -------------------------------------------------------------------------- run loops

    async def run_until_idle(
        self, stream: SampleStream, *, batch_size: int = 500, idle_seconds: float = 0.5
    ) -> Counters:
        """Consume until nothing arrives for `idle_seconds`, then process what is held."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_seconds:
            deliveries = await self._fetch(stream, batch_size, idle_seconds)
            if deliveries:
                quiet_since = time.monotonic()
            await self._handle_all(deliveries)
        await self.drain()
        return self.counters

    async def run_for(
        self, stream: SampleStream, max_deliveries: int, *, batch_size: int = 500
    ) -> int:
        """Handle at most `max_deliveries` deliveries (less if the stream runs dry), then stop
        without draining: what is still held stays unacknowledged. Returns how many came."""
        handled = 0
        while handled < max_deliveries:
            wanted = min(batch_size, max_deliveries - handled)
            deliveries = await self._fetch(stream, wanted, 0.5)
            if not deliveries:
                break
            await self._handle_all(deliveries)
            handled += len(deliveries)
        return handled

    async def _fetch(self, stream: SampleStream, wanted: int, timeout: float) -> list[Delivery]:
        if not self._recovered:  # a previous consumer's unacknowledged samples come first
            await stream.recover()
            self._recovered = True
        if self._held:  # wake in time to release held samples before their ack_wait runs out
            timeout = min(timeout, max(self._max_hold, 0.01))
        return await stream.fetch(wanted, timeout)

    async def _handle_all(self, deliveries: list[Delivery]) -> None:
        done = 0
        self._batch_now = self._clock()  # a batch is handled in milliseconds
        try:
            for delivery in deliveries:
                await self.handle(delivery)
                done += 1
            await self.release_overdue()
            await self.commit(force=False)
        except BaseException:
            # the callback failed: give back the rest of the batch and everything held now,
            # rather than leaving it to come back only after ack_wait
            for delivery in deliveries[done + 1 :]:
                await delivery.nak()
            await self.abandon()
            raise
        finally:
            self._batch_now = None

    # ------------------------------------------------------------------------- checkpoint

    def checkpoint(self) -> dict[str, Any]:
        """What a restarted processor needs so a replay is not counted twice (JSON-able).

        Only the newest `checkpoint_seen` ids are kept: what can come back after a restart is
        what was not yet acknowledged, which is recent; an older re-send is older than its
        person's processed time and refused as late. Saving every id would make each commit
        write the whole seen-set (hundreds of thousands of ids) again."""
        newest = list(islice(reversed(self._seen), self._checkpoint_seen))
        return {
            "version": CHECKPOINT_VERSION,
            "seen": newest[::-1],
            "processed_until": {p: t.isoformat() for p, t in self._processed_until.items()},
            "counters": asdict(self.counters),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a `checkpoint()`; raises ValueError naming the part that is wrong."""
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint: 'version' must be {CHECKPOINT_VERSION}")
        seen = state.get("seen")
        if not isinstance(seen, list) or not all(isinstance(s, str) for s in seen):
            raise ValueError("checkpoint: 'seen' must be a list of sample ids")
        until = _processed_until(state.get("processed_until"))
        counters = state.get("counters", {})
        try:
            restored = Counters(**counters)
        except TypeError:
            raise ValueError("checkpoint: 'counters' has unknown fields") from None
        self._seen = OrderedDict.fromkeys(seen[-self._seen_capacity :])
        self._processed_until = until
        self._newest = dict(until)
        self.counters = restored


def _processed_until(raw: object) -> dict[str, datetime]:
    if not isinstance(raw, dict):
        raise ValueError("checkpoint: 'processed_until' must map person ids to times")
    result: dict[str, datetime] = {}
    for person_id, text in raw.items():
        try:
            when = datetime.fromisoformat(text)
        except (TypeError, ValueError):
            when = None
        if when is None or when.tzinfo is None:
            raise ValueError("checkpoint: 'processed_until' holds a time without a UTC offset")
        result[person_id] = when.astimezone(UTC)
    return result
