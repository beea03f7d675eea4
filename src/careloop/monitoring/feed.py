"""Device Observations written to careloop's store (FHIR REST, `careloop ingest` NDJSON) as a
sample stream: the embedded default needs no queue server, the store itself is the durable log.

The feed reads current device Observations in write order after a cursor (`written_after`), and
hands each over as a delivery. The cursor only moves past a row once that row and every row
before it were acknowledged, and it is saved in the worker's checkpoint, so a restart starts
from the first row not yet settled: nothing is lost, and what was processed but not yet saved
is recognised by the processor's seen-set.

Which Observations are device data: a LOINC code monitoring reads, a `device` element (the
gateway or app that measured it), and not careloop's own daily summaries (tagged `derived`),
which would otherwise feed back into the baselines they came from.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from careloop.monitoring.fhir import (
    LOINC,
    ORIGIN_SYSTEM,
    SUMMARY_ORIGIN,
    SampleError,
    observation_to_sample,
)
from careloop.monitoring.signals import BY_LOINC
from careloop.monitoring.stream import DeadLetter, Delivery
from careloop.store.repository import ResourceStore

MONITORED_CODES = tuple(f"{LOINC}|{code}" for code in BY_LOINC)
POLL_SECONDS = 0.2


def is_device_observation(resource: dict) -> bool:
    tags = (resource.get("meta") or {}).get("tag") or []
    derived = any(
        isinstance(tag, dict) and tag.get("system") == ORIGIN_SYSTEM
        and tag.get("code") == SUMMARY_ORIGIN
        for tag in tags
    )  # fmt: skip
    return isinstance(resource.get("device"), dict) and not derived


class _FeedDelivery(Delivery):
    def __init__(self, feed: StoreFeed, pk: int, resource: dict, attempt: int) -> None:
        self._feed, self.pk, self._resource = feed, pk, resource
        self.attempt = attempt
        try:
            self.sample, self.error = observation_to_sample(resource), None
        except SampleError as problem:
            self.sample, self.error = None, f"Observation/{resource.get('id')}: {problem}"

    async def ack(self) -> None:
        self._feed._settle(self.pk)

    async def nak(self, delay_seconds: float = 0.0) -> None:
        self._feed._give_back(self.pk, self._resource, self.attempt)

    async def dead_letter(self, reason: str) -> None:
        self._feed._dead.append(DeadLetter(reason, f"Observation row {self.pk}".encode()))
        self._feed._settle(self.pk)


@dataclass
class _Returned:
    pk: int
    resource: dict
    attempt: int


class StoreFeed:
    """A `SampleStream` over the store's device Observations (read-only: `publish` is the
    FHIR API or `careloop ingest`, which validate, audit and store what devices send)."""

    def __init__(self, store: ResourceStore, cursor: int = 0) -> None:
        self._store = store
        self._read_up_to = cursor  # highest row handed out
        self._in_flight: set[int] = set()
        self._returned: list[_Returned] = []
        self._dead: list[DeadLetter] = []

    @property
    def cursor(self) -> int:
        """The row before the first one not yet settled: where a restart must resume."""
        if not self._in_flight:
            return self._read_up_to
        return min(self._in_flight) - 1

    async def publish(self, sample: object) -> bool:
        raise NotImplementedError("device data enters the store through the FHIR API or ingest")

    async def fetch(self, max_messages: int, timeout_seconds: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout_seconds
        while True:
            batch = self._take_returned(max_messages)
            batch.extend(self._read_new(max_messages - len(batch)))
            if batch or time.monotonic() >= deadline:
                return batch
            await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def _take_returned(self, limit: int) -> list[Delivery]:
        taken, self._returned = self._returned[:limit], self._returned[limit:]
        return [_FeedDelivery(self, r.pk, r.resource, r.attempt + 1) for r in taken]

    def _read_new(self, limit: int) -> list[Delivery]:
        batch: list[Delivery] = []
        while len(batch) < limit:
            rows = self._store.written_after(
                "Observation", self._read_up_to, codes=MONITORED_CODES, limit=limit - len(batch)
            )
            if not rows:
                break
            for pk, stored in rows:
                self._read_up_to = pk
                if is_device_observation(stored.body):
                    self._in_flight.add(pk)
                    batch.append(_FeedDelivery(self, pk, stored.body, 1))
        return batch

    def _settle(self, pk: int) -> None:
        self._in_flight.discard(pk)

    def _give_back(self, pk: int, resource: dict, attempt: int) -> None:
        if pk in self._in_flight:
            self._returned.append(_Returned(pk, resource, attempt))

    async def recover(self) -> int:
        return 0  # a restart resumes from the saved cursor; nothing is in flight yet

    async def dead_letters(self) -> list[DeadLetter]:
        return list(self._dead)

    async def close(self) -> None:
        return None
