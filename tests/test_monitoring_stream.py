"""The streaming path against the real NATS JetStream server (127.0.0.1:4222) and in-process.

The same scenario runs on both streams: samples with re-sends, out-of-order and late ones and
malformed messages; a consumer killed mid-way without acknowledging what it held; a new
consumer with the same durable name and the saved checkpoint. Every timely sample must be
processed exactly once, in time order per person, and nothing lost.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from careloop.monitoring.processor import SampleProcessor
from careloop.monitoring.signals import Sample, Signal
from careloop.monitoring.stream import (
    InProcessStream,
    InvalidSample,
    JetStreamConfig,
    JetStreamStream,
    decode_sample,
    encode_sample,
    person_token,
)
from conftest import require

NATS_URL = os.environ.get("CARELOOP_TEST_NATS_URL", "nats://127.0.0.1:4222")
BASE = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
PERSONS = ("p-anna", "p.bo", "invalid")  # a '.' and the reserved token must route safely
PER_PERSON = 40
LATENESS = timedelta(minutes=10)


def nats_reachable() -> bool:
    host, port = NATS_URL.removeprefix("nats://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def sample(person: str, minute: float, index: int | None = None) -> Sample:
    label = index if index is not None else minute
    return Sample(
        person_id=person,
        signal=Signal.HEART_RATE,
        time=BASE + timedelta(minutes=minute),
        value=60.0 + minute % 7,
        sample_id=f"{person}/hr/{label}",
        source="test-watch",
    )


class Recorder:
    """An idempotency-checking callback: how often each sample came, in which order."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.times: dict[str, list[datetime]] = defaultdict(list)

    def __call__(self, item: Sample) -> None:
        self.count[item.sample_id] += 1
        self.times[item.person_id].append(item.time)


# ------------------------------------------------------------------------------ wire format


def test_encode_decode_round_trip() -> None:
    original = Sample("p1", Signal.STEPS, BASE, 120, "p1/steps/0", "fitbit-export", 60)
    assert decode_sample(encode_sample(original)) == original


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"{not json", "JSON"),
        (b"[1, 2]", "object"),
        (b'{"v": 2}', "'v'"),
        (
            b'{"v":1,"person_id":"p","signal":"pulse","time":"2026-03-01T08:00:00+00:00",'
            b'"value":60,"sample_id":"s","source":"x"}',
            "'signal'",
        ),
        (
            b'{"v":1,"person_id":"p","signal":"heart-rate","time":"2026-03-01T08:00:00",'
            b'"value":60,"sample_id":"s","source":"x"}',
            "'time'",
        ),
        (
            b'{"v":1,"person_id":"p","signal":"heart-rate","time":"2026-03-01T08:00:00Z",'
            b'"value":true,"sample_id":"s","source":"x"}',
            "'value'",
        ),
        (
            b'{"v":1,"person_id":"","signal":"heart-rate","time":"2026-03-01T08:00:00Z",'
            b'"value":60,"sample_id":"s","source":"x"}',
            "'person_id'",
        ),
        (
            b'{"v":1,"person_id":"p","signal":"steps","time":"2026-03-01T08:00:00Z",'
            b'"value":60,"sample_id":"s","source":"x","period_minutes":0}',
            "'period_minutes'",
        ),
    ],
)
def test_decode_names_the_bad_field(payload: bytes, field: str) -> None:
    with pytest.raises(InvalidSample, match=field):
        decode_sample(payload)


def test_decode_errors_never_quote_values() -> None:
    body = encode_sample(sample("p-secret", 0)).replace(b'"value":60.0', b'"value":"sixty"')
    with pytest.raises(InvalidSample) as problem:
        decode_sample(body)
    assert "finite number" in str(problem.value)
    assert "secret" not in str(problem.value) and "sixty" not in str(problem.value)


def test_person_tokens_are_safe_and_distinct() -> None:
    ids = ["abc-1_X", "a.b", "a~2Eb", "invalid", "~invalid", "ü", "a b"]
    tokens = [person_token(i) for i in ids]
    assert len(set(tokens)) == len(ids)
    assert tokens[0] == "abc-1_X"
    assert all(t != "invalid" and not set(t) & set(". *>") for t in tokens)


# ---------------------------------------------------------------------------- the scenario

MakeStream = Callable[[], Awaitable[object]]


def plan() -> tuple[list[Sample], list[Sample], list[Sample]]:
    """(in publish order, the timely distinct ones, the late ones)."""
    rng = random.Random(6)
    timely = [sample(p, m) for m in range(PER_PERSON) for p in PERSONS]
    # shuffle within windows of 4 minutes: out of order, but inside the lateness window
    ordered: list[Sample] = []
    for start in range(0, len(timely), 12):
        window = timely[start : start + 12]
        rng.shuffle(window)
        ordered.extend(window)
    late = [sample(p, 0.5) for p in PERSONS]
    return ordered, timely, late


async def publish_all(stream, ordered: list[Sample], late: list[Sample]) -> None:
    accepted = [await stream.publish(s) for s in ordered]
    assert all(accepted)
    # device re-sends with the same id: the stream's duplicate window drops them
    assert not any([await stream.publish(s) for s in ordered[:15]])
    # re-sends under a new message id get past the stream; the processor must catch them
    for s in ordered[20:23]:
        assert await stream.publish_bytes(encode_sample(s), f"retry-{s.sample_id}", s.person_id)
    await stream.publish_bytes(b"{not json", "bad-1", "p-anna")
    await stream.publish_bytes(b'{"v": 1, "person_id": "p-anna"}', "bad-2", "p-anna")
    for s in late:
        await stream.publish(s)


async def kill_and_resume(first, kill: Callable[[], Awaitable[None]], reopen: MakeStream) -> tuple:
    ordered, timely, late = plan()
    await publish_all(first, ordered, late)
    recorder = Recorder()
    consumer = SampleProcessor(recorder, lateness=LATENESS, max_hold_seconds=30)
    handled = await consumer.run_for(first, 60, batch_size=25)
    assert handled == 60
    # fetched but never handled, plus what the reorder buffer holds: all unacknowledged
    assert consumer.held_count() > 0
    await first.fetch(10, 0.5)
    saved = consumer.checkpoint()  # saved with the callback's state, as a real consumer would
    await kill()  # the consumer dies: nothing more is acknowledged

    second_stream = await reopen()
    resumed = SampleProcessor(recorder, lateness=LATENESS, max_hold_seconds=0.3)
    resumed.restore(saved)
    counters = await resumed.run_until_idle(second_stream, batch_size=50, idle_seconds=2.5)
    return recorder, counters, timely, late, second_stream, resumed.checkpoint()


def assert_exactly_once(recorder: Recorder, counters, timely, late) -> None:
    assert {s.sample_id for s in timely} == set(recorder.count)
    assert set(recorder.count.values()) == {1}
    assert counters.processed == len(timely)
    assert counters.late == len(late)
    assert counters.duplicates < 20  # the 3 re-sends, not a storm of redeliveries
    assert counters.invalid == 2
    assert counters.duplicates >= 3
    for times in recorder.times.values():
        assert times == sorted(times)


# -------------------------------------------------------------------------------- in-process


def test_in_process_kill_and_resume_processes_each_sample_once() -> None:
    async def scenario() -> None:
        # the consumer dies, the stream lives on in this process (a crash would lose both)
        stream = InProcessStream(capacity=1_000, ack_wait_seconds=2.0)

        async def kill() -> None:
            return None

        async def reopen() -> InProcessStream:
            return stream

        recorder, counters, timely, late, _, _ = await kill_and_resume(stream, kill, reopen)
        assert_exactly_once(recorder, counters, timely, late)
        assert stream.pending_count() == 0
        letters = await stream.dead_letters()
        assert [d.payload for d in letters] == [b"{not json", b'{"v": 1, "person_id": "p-anna"}']
        assert "JSON" in letters[0].reason and "signal" in letters[1].reason

    asyncio.run(scenario())


def test_in_process_publish_waits_when_full() -> None:
    async def scenario() -> None:
        stream = InProcessStream(capacity=2)
        await stream.publish(sample("p1", 0))
        await stream.publish(sample("p1", 1))
        blocked = asyncio.ensure_future(stream.publish(sample("p1", 2)))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        deliveries = await stream.fetch(1, 0)
        await asyncio.wait_for(blocked, 1)
        await deliveries[0].ack()
        assert stream.pending_count() == 2

    asyncio.run(scenario())


def test_future_dated_and_failing_callback() -> None:
    async def scenario() -> None:
        stream = InProcessStream(ack_wait_seconds=5)
        await stream.publish(sample("p1", 0))
        await stream.publish(sample("p1", 60 * 24 * 365 * 50))  # fifty years ahead
        calls: list[str] = []

        def flaky(item: Sample) -> None:
            calls.append(item.sample_id)
            if len(calls) == 1:
                raise RuntimeError("downstream unavailable")

        processor = SampleProcessor(flaky, lateness=timedelta(0))
        with pytest.raises(RuntimeError):
            await processor.run_until_idle(stream, idle_seconds=0.1)
        # the failed sample was given back at once (nak) and is processed on the next run
        counters = await processor.run_until_idle(stream, idle_seconds=0.1)
        assert calls == ["p1/hr/0", "p1/hr/0"]
        assert counters.processed == 1 and counters.invalid == 1
        assert (await stream.dead_letters())[0].reason == "sample time is in the future"

    asyncio.run(scenario())


def test_lateness_window_orders_and_quiet_person_is_released() -> None:
    async def scenario() -> None:
        stream = InProcessStream()
        for minute in (5, 3, 4, 20, 1, 12):
            await stream.publish(sample("p1", minute))
        recorder = Recorder()
        processor = SampleProcessor(recorder, lateness=timedelta(minutes=5), max_hold_seconds=0)
        await processor.run_for(stream, 6)
        minutes = [(t - BASE).total_seconds() / 60 for t in recorder.times["p1"]]
        # 1 arrives after 3,4,5 were released by the newest (20): late; the rest in order,
        # and 20 itself is released by the hold limit, not left waiting for a next sample
        assert minutes == [3, 4, 5, 12, 20]
        assert processor.counters.late == 1

    asyncio.run(scenario())


def test_checkpoint_round_trips_and_rejects_bad_input() -> None:
    processor = SampleProcessor(Recorder())
    with pytest.raises(ValueError, match="'version'"):
        processor.restore({"seen": []})
    with pytest.raises(ValueError, match="'seen'"):
        processor.restore({"version": 1, "seen": "abc", "processed_until": {}})
    with pytest.raises(ValueError, match="UTC offset"):
        processor.restore({"version": 1, "seen": [], "processed_until": {"p": "2026-01-01"}})
    state = {
        "version": 1,
        "seen": ["a", "b"],
        "processed_until": {"p": "2026-01-01T00:00:00+00:00"},
        "counters": {"processed": 2, "duplicates": 0, "late": 0, "invalid": 0},
    }
    processor.restore(state)
    assert processor.checkpoint() == state


# --------------------------------------------------------------------------------- JetStream


def jetstream_config(durable: str = "processor") -> JetStreamConfig:
    tag = uuid.uuid4().hex[:10]
    return JetStreamConfig(
        url=NATS_URL,
        stream=f"TEST_{tag}",
        prefix=f"test{tag}.samples",
        durable=durable,
        ack_wait_seconds=2.0,
        duplicate_window_seconds=60,
        max_age_seconds=600,
    )


def test_jetstream_kill_and_resume_processes_each_sample_once() -> None:
    require(nats_reachable(), f"NATS JetStream is not reachable at {NATS_URL}")
    config = jetstream_config()

    async def scenario() -> None:
        first = await JetStreamStream.connect(config)
        second = None
        try:
            recorder, counters, timely, late, second, saved = await kill_and_resume(
                first, first.close, lambda: JetStreamStream.connect(config)
            )
            assert_exactly_once(recorder, counters, timely, late)
            letters = await second.dead_letters()
            assert [d.payload for d in letters] == [
                b"{not json",
                b'{"v": 1, "person_id": "p-anna"}',
            ]
            assert "JSON" in letters[0].reason
            # a consumer that lost its position replays the whole stream from the start;
            # with the checkpoint nothing is processed a second time
            replay = await JetStreamStream.connect(replace(config, durable="replayer"))
            again = SampleProcessor(recorder, lateness=LATENESS)
            again.restore(saved)
            before = again.counters.processed
            await again.run_until_idle(replay, idle_seconds=1.0)
            await replay.close()
            assert again.counters.processed == before
            assert set(recorder.count.values()) == {1}
        finally:
            cleaner = second or await JetStreamStream.connect(config)
            await cleaner.delete()
            await cleaner.close()
            await first.close()

    asyncio.run(scenario())
