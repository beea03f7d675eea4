"""How device samples travel from whatever receives them to the processor.

Delivery is at least once: a sample can arrive twice (a device retry, a redelivery after a
consumer died before acknowledging), late, or out of order; `processor.SampleProcessor` makes
that harmless. Two implementations of `SampleStream` share the same semantics:

- `InProcessStream`, the embedded default: a bounded in-memory queue in this process, with
  acknowledgement, redelivery of what was not acknowledged in time, a duplicate window and a
  dead-letter list. It needs no server and does NOT survive a crash of the process: what was
  queued or unacknowledged is gone with it.
- `JetStreamStream`, on NATS JetStream: a file-backed stream on subjects
  `<prefix>.<person>`, a durable pull consumer with explicit acknowledgement (what a killed
  consumer did not acknowledge is redelivered to the next one with the same durable name), and
  publishing with `Nats-Msg-Id` = sample_id so the server's duplicate window drops re-sends.

Messages carry a `Sample` as JSON (`encode_sample` / `decode_sample`). A message that does not
decode is acknowledged and dead-lettered on `<prefix>.invalid` with the reason, so it is neither
retried forever nor able to stop the consumer.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from careloop.monitoring.signals import Sample, Signal

DEFAULT_PREFIX = "careloop.samples"
INVALID_TOKEN = "invalid"  # `<prefix>.invalid` holds dead letters; no person maps to it
REASON_HEADER = "Careloop-Invalid-Reason"
MSG_ID_HEADER = "Nats-Msg-Id"
FORMAT_VERSION = 1
REDELIVERY_MARGIN = 0.25  # of ack_wait, for the server's redelivery timer to have fired
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class InvalidSample(ValueError):
    """A message that is not a well-formed Sample. The reason names the field, never a value:
    values are patient data and the reason is logged and stored with the dead letter."""


# ---------------------------------------------------------------------------------- the wire


def encode_sample(sample: Sample) -> bytes:
    """One Sample as compact JSON; times as ISO 8601 in UTC so any consumer can read them."""
    return orjson.dumps(
        {
            "v": FORMAT_VERSION,
            "person_id": sample.person_id,
            "signal": sample.signal.value,
            "time": sample.time.astimezone(UTC).isoformat(),
            "value": sample.value,
            "sample_id": sample.sample_id,
            "source": sample.source,
            "period_minutes": sample.period_minutes,
        }
    )


def decode_sample(data: bytes) -> Sample:
    """The Sample in a message, or `InvalidSample` saying which field is wrong."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidSample("message is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidSample("message is not a JSON object")
    if body.get("v") != FORMAT_VERSION:
        raise InvalidSample(f"field 'v' must be {FORMAT_VERSION}")
    return Sample(
        person_id=_text(body, "person_id"),
        signal=_signal(body),
        time=_time(body),
        value=_value(body),
        sample_id=_text(body, "sample_id"),
        source=_text(body, "source"),
        period_minutes=_period(body),
    )


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise InvalidSample(f"field '{field}' must be a non-empty string of at most 256 characters")
    return value


def _signal(body: dict[str, Any]) -> Signal:
    try:
        return Signal(body.get("signal"))
    except ValueError:
        raise InvalidSample("field 'signal' is not a known signal") from None


def _time(body: dict[str, Any]) -> datetime:
    raw = body.get("time")
    try:
        when = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise InvalidSample("field 'time' must be an ISO 8601 date-time with a UTC offset")
    return when.astimezone(UTC)


def _value(body: dict[str, Any]) -> float:
    value = body.get("value")
    # bool is an int in Python; a true/false "reading" is a producer bug, not a value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSample("field 'value' must be a finite number")
    return float(value)


def _period(body: dict[str, Any]) -> int | None:
    value = body.get("period_minutes")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidSample("field 'period_minutes' must be a positive integer or null")
    return value


def person_token(person_id: str) -> str:
    """The subject token for a person: the id when it is made of letters, digits, '_' and '-',
    else with every other byte written as ~XX (FHIR ids may hold '.', which NATS reads as a
    token separator). Injective, and never equal to the dead-letter token."""
    if person_id == INVALID_TOKEN:
        return "~" + INVALID_TOKEN  # '~' is always escaped otherwise, so this cannot collide
    if all(char in _SAFE for char in person_id):
        return person_id
    return "".join(
        chr(byte) if chr(byte) in _SAFE else f"~{byte:02X}" for byte in person_id.encode()
    )


# ----------------------------------------------------------------------- the stream protocol


class Delivery(ABC):
    """One delivery of one message. Exactly one of `sample` and `error` is set.

    The consumer must end every delivery with `ack` (done with it), `nak` (give it back for
    redelivery) or `dead_letter` (keep it aside with a reason, then ack)."""

    sample: Sample | None
    error: str | None
    attempt: int  # 1 on first delivery, higher on redelivery

    @abstractmethod
    async def ack(self) -> None: ...

    @abstractmethod
    async def nak(self, delay_seconds: float = 0.0) -> None: ...

    @abstractmethod
    async def dead_letter(self, reason: str) -> None: ...


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    payload: bytes  # the message as it arrived, for a person to inspect


class SampleStream(Protocol):
    async def publish(self, sample: Sample) -> bool:
        """Queue one sample; False when the stream recognised it as a re-send and dropped it."""
        ...

    async def fetch(self, max_messages: int, timeout_seconds: float) -> list[Delivery]:
        """Up to `max_messages` deliveries; an empty list when none came within the timeout."""
        ...

    async def recover(self) -> int:
        """Wait until what a previous consumer left unacknowledged is due again, so it is
        redelivered before newer messages (which would otherwise overtake it and make it
        late). Returns how many such messages there were."""
        ...

    async def dead_letters(self) -> list[DeadLetter]: ...

    async def close(self) -> None: ...


def _decoded(data: bytes) -> tuple[Sample | None, str | None]:
    try:
        return decode_sample(data), None
    except InvalidSample as problem:
        return None, str(problem)
    except ValueError:  # Sample's own checks; the message text could quote a value
        return None, "message does not describe a valid sample"


# ------------------------------------------------------------------------ in-process stream


# In memory a sample needs no wire format: it is queued as the Sample itself. Raw bytes (what an
# outside producer would send) are queued as bytes and decoded on delivery, as on JetStream.
Message = Sample | bytes


@dataclass
class _Pending:
    payload: Message
    attempt: int
    due: float  # monotonic time from which it is redelivered if not acknowledged


class _InProcessDelivery(Delivery):
    def __init__(self, stream: InProcessStream, seq: int, payload: Message, attempt: int) -> None:
        self._stream, self._seq, self._payload = stream, seq, payload
        if isinstance(payload, Sample):
            self.sample, self.error = payload, None
        else:
            self.sample, self.error = _decoded(payload)
        self.attempt = attempt

    async def ack(self) -> None:
        self._stream._settle(self._seq)

    async def nak(self, delay_seconds: float = 0.0) -> None:
        self._stream._give_back(self._seq, delay_seconds)

    async def dead_letter(self, reason: str) -> None:
        if self._stream._settle(self._seq):
            payload = self._payload
            raw = encode_sample(payload) if isinstance(payload, Sample) else payload
            self._stream._dead.append(DeadLetter(reason, raw))


class InProcessStream:
    """The embedded default: everything in this process's memory; lost if the process dies.

    `publish` waits while `capacity` messages are queued (back-pressure on the producer rather
    than unbounded memory). A delivery not acknowledged within `ack_wait_seconds` is delivered
    again, as JetStream would after a consumer died. Re-sends of a sample_id seen among the
    last `duplicate_window` published are dropped."""

    def __init__(
        self,
        capacity: int = 10_000,
        ack_wait_seconds: float = 30.0,
        duplicate_window: int = 100_000,
    ) -> None:
        if capacity < 1 or ack_wait_seconds <= 0 or duplicate_window < 0:
            raise ValueError("capacity and ack_wait_seconds must be positive")
        self._queue: asyncio.Queue[tuple[int, Message]] = asyncio.Queue(capacity)
        self._in_flight: dict[int, _Pending] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._window = duplicate_window
        self._ack_wait = ack_wait_seconds
        self._dead: list[DeadLetter] = []
        self._seq = 0
        self._closed = False

    async def publish(self, sample: Sample) -> bool:
        return await self._enqueue(sample, sample.sample_id)

    async def publish_bytes(
        self, payload: bytes, message_id: str | None = None, person_id: str = "unrouted"
    ) -> bool:
        """Queue a raw message, as a producer outside careloop would send it (`person_id`
        routes on JetStream; here there is one queue)."""
        return await self._enqueue(payload, message_id)

    async def _enqueue(self, payload: Message, message_id: str | None) -> bool:
        if self._closed:
            raise RuntimeError("the stream is closed")
        if message_id is not None:
            if message_id in self._recent:
                return False
            self._recent[message_id] = None
            if len(self._recent) > self._window:
                self._recent.popitem(last=False)
        self._seq += 1
        await self._queue.put((self._seq, payload))
        return True

    async def fetch(self, max_messages: int, timeout_seconds: float) -> list[Delivery]:
        batch = self._redeliveries(max_messages)
        if not batch and self._queue.empty() and timeout_seconds > 0:
            await self._wait_for_work(timeout_seconds)
            batch = self._redeliveries(max_messages)
        now = time.monotonic()
        while len(batch) < max_messages and not self._queue.empty():
            seq, payload = self._queue.get_nowait()
            self._in_flight[seq] = _Pending(payload, 1, now + self._ack_wait)
            batch.append(_InProcessDelivery(self, seq, payload, 1))
        return batch

    async def _wait_for_work(self, timeout_seconds: float) -> None:
        """Sleep until something is queued or an unacknowledged delivery falls due."""
        deadline = time.monotonic() + timeout_seconds
        while self._queue.empty() and time.monotonic() < deadline:
            due = min((p.due for p in self._in_flight.values()), default=math.inf)
            if due <= time.monotonic():
                return
            await asyncio.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    def _redeliveries(self, limit: int) -> list[Delivery]:
        now = time.monotonic()
        batch: list[Delivery] = []
        for seq, pending in self._in_flight.items():
            if len(batch) >= limit:
                break
            if pending.due <= now:
                pending.attempt += 1
                pending.due = now + self._ack_wait
                batch.append(_InProcessDelivery(self, seq, pending.payload, pending.attempt))
        return batch

    def _settle(self, seq: int) -> bool:
        return self._in_flight.pop(seq, None) is not None

    def _give_back(self, seq: int, delay_seconds: float) -> None:
        pending = self._in_flight.get(seq)
        if pending is not None:
            pending.due = time.monotonic() + max(0.0, delay_seconds)

    async def recover(self) -> int:
        if self._in_flight:
            due = max(pending.due for pending in self._in_flight.values())
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        return len(self._in_flight)

    def pending_count(self) -> int:
        """Messages queued or delivered and not yet acknowledged."""
        return self._queue.qsize() + len(self._in_flight)

    async def dead_letters(self) -> list[DeadLetter]:
        return list(self._dead)

    async def close(self) -> None:
        self._closed = True


# --------------------------------------------------------------------------------- JetStream


@dataclass(frozen=True)
class JetStreamConfig:
    url: str = "nats://127.0.0.1:4222"
    stream: str = "CARELOOP_SAMPLES"
    prefix: str = DEFAULT_PREFIX
    durable: str = "careloop-processor"
    ack_wait_seconds: float = 30.0  # longer than the processor holds a sample for reordering
    duplicate_window_seconds: float = 600.0
    max_age_seconds: float = 7 * 86_400  # replay horizon if a checkpoint is lost
    max_ack_pending: int = 20_000

    @property
    def invalid_subject(self) -> str:
        return f"{self.prefix}.{INVALID_TOKEN}"

    def subject_for(self, person_id: str) -> str:
        return f"{self.prefix}.{person_token(person_id)}"


class _JetStreamDelivery(Delivery):
    def __init__(self, owner: JetStreamStream, message: Any) -> None:
        self._owner, self._message = owner, message
        self.sample, self.error = _decoded(message.data)
        self.attempt = message.metadata.num_delivered

    async def ack(self) -> None:
        await self._message.ack()

    async def nak(self, delay_seconds: float = 0.0) -> None:
        await self._message.nak(delay=delay_seconds or None)

    async def dead_letter(self, reason: str) -> None:
        """Publish the payload with its reason to the dead-letter subject, then ack. The
        message id is the original's stream sequence, so a redelivery dead-letters once."""
        sequence = self._message.metadata.sequence.stream
        await self._owner._js.publish(
            self._owner.config.invalid_subject,
            self._message.data,
            headers={REASON_HEADER: reason, MSG_ID_HEADER: f"invalid-{sequence}"},
        )
        await self._message.ack()


class JetStreamStream:
    """Samples on NATS JetStream. Create with `await JetStreamStream.connect(config)`.

    Dead letters live in the same stream on `<prefix>.invalid` (JetStream forbids two streams
    with overlapping subjects); the consumer acknowledges them without processing."""

    def __init__(self, config: JetStreamConfig, connection: Any, js: Any) -> None:
        self.config, self._nc, self._js = config, connection, js
        self._subscription: Any = None

    @classmethod
    async def connect(cls, config: JetStreamConfig | None = None) -> JetStreamStream:
        import nats  # imported here so the embedded default never needs the client

        config = config or JetStreamConfig()
        connection = await nats.connect(config.url, connect_timeout=2, max_reconnect_attempts=3)
        stream = cls(config, connection, connection.jetstream())
        try:
            await stream._ensure_stream()
        except BaseException:
            await connection.close()
            raise
        return stream

    async def _ensure_stream(self) -> None:
        from nats.js.api import StreamConfig
        from nats.js.errors import NotFoundError

        try:
            await self._js.stream_info(self.config.stream)
        except NotFoundError:
            await self._js.add_stream(
                StreamConfig(
                    name=self.config.stream,
                    subjects=[f"{self.config.prefix}.*"],
                    duplicate_window=self.config.duplicate_window_seconds,
                    max_age=self.config.max_age_seconds,
                )
            )

    async def publish(self, sample: Sample) -> bool:
        return await self.publish_bytes(encode_sample(sample), sample.sample_id, sample.person_id)

    async def publish_bytes(
        self, payload: bytes, message_id: str | None = None, person_id: str = "unrouted"
    ) -> bool:
        """Publish a raw message, as a producer outside careloop would send it."""
        headers = {MSG_ID_HEADER: message_id} if message_id is not None else None
        acknowledgement = await self._js.publish(
            self.config.subject_for(person_id), payload, headers=headers
        )
        return not acknowledgement.duplicate

    async def _consumer(self) -> Any:
        if self._subscription is None:
            from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

            self._subscription = await self._js.pull_subscribe(
                f"{self.config.prefix}.*",
                durable=self.config.durable,
                stream=self.config.stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self.config.ack_wait_seconds,
                    max_deliver=-1,  # never give up on a sample: losing it is worse than waiting
                    max_ack_pending=self.config.max_ack_pending,
                ),
            )
        return self._subscription

    async def recover(self) -> int:
        """The server redelivers due messages before new ones; we cannot know when the dead
        consumer fetched its messages, so wait one whole ack_wait when any are pending, plus a
        margin: the server's redelivery timer fires a little after ack_wait, and a fetch that
        beats it gets newer samples first, which can push a redelivered one past the lateness
        window (a CI run lost one sample to late that way)."""
        from nats.js.errors import NotFoundError

        try:
            info = await self._js.consumer_info(self.config.stream, self.config.durable)
        except NotFoundError:
            return 0
        if info.num_ack_pending:
            await asyncio.sleep(self.config.ack_wait_seconds * (1 + REDELIVERY_MARGIN))
        return info.num_ack_pending

    async def fetch(self, max_messages: int, timeout_seconds: float) -> list[Delivery]:
        from nats.errors import TimeoutError as FetchTimeout

        subscription = await self._consumer()
        try:
            messages = await subscription.fetch(max_messages, timeout=max(timeout_seconds, 0.05))
        except (TimeoutError, FetchTimeout):
            # nats-py raises its own TimeoutError, or asyncio's when the deadline passed
            # between its own checks: either way nothing came in time
            return []
        batch: list[Delivery] = []
        for message in messages:
            if message.subject == self.config.invalid_subject:
                await message.ack()  # our own dead letter: kept in the stream, not processed
            else:
                batch.append(_JetStreamDelivery(self, message))
        return batch

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter still in the stream, oldest first (read without a consumer)."""
        from nats.js.errors import NotFoundError

        found: list[DeadLetter] = []
        sequence = 1
        while True:
            try:
                raw = await self._js.get_msg(
                    self.config.stream, seq=sequence, subject=self.config.invalid_subject, next=True
                )
            except NotFoundError:
                return found
            found.append(DeadLetter((raw.headers or {}).get(REASON_HEADER, ""), raw.data or b""))
            sequence = raw.seq + 1

    async def flush(self) -> None:
        """Wait until the server has everything sent so far (acks included)."""
        await self._nc.flush()

    async def delete(self) -> None:
        """Remove the stream and its consumer (tests and teardown)."""
        await self._js.delete_stream(self.config.stream)

    async def close(self) -> None:
        """Drop the connection without acknowledging anything outstanding: what this consumer
        held comes back to the next one with the same durable name after ack_wait."""
        if not self._nc.is_closed:
            await self._nc.close()


__all__ = [
    "DEFAULT_PREFIX",
    "DeadLetter",
    "Delivery",
    "InProcessStream",
    "InvalidSample",
    "JetStreamConfig",
    "JetStreamStream",
    "SampleStream",
    "decode_sample",
    "encode_sample",
    "person_token",
]
