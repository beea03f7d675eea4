"""The monitoring worker end to end, on real stores (SQLite and PostgreSQL) and real NATS:
device Observations in through bulk NDJSON and the FHIR REST API, or samples on JetStream;
explained alerts out as Flag, DetectedIssue, chart Media and Task, with daily summaries, audit,
consent, and a checkpoint that makes a restart lose nothing and count nothing twice."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta

import orjson
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api_clients import BASE_URL, auth, bearer_token
from careloop.access.consent import opt_out_consent
from careloop.access.layer import AccessLayer
from careloop.access.principal import Purpose
from careloop.access.roles import Role
from careloop.audit.log import AuditLog
from careloop.ingest.pipeline import Ingestor
from careloop.monitoring.feed import StoreFeed, is_device_observation
from careloop.monitoring.fhir import sample_to_observation
from careloop.monitoring.fhir_alerts import ALERT_ID_SYSTEM
from careloop.monitoring.signals import Sample, Signal
from careloop.monitoring.stream import InProcessStream, JetStreamStream
from careloop.monitoring.worker import BACKFILL_REORDER, MonitoringWorker
from careloop.rights.erasure import erase_patient
from careloop.store.repository import ResourceStore
from careloop.store.schema import monitoring_persons
from careloop.web.app import AppSettings, create_app
from conftest import require
from monitoring_streams import EPISODE, START, day_start, person_stream
from test_monitoring_stream import NATS_URL, jetstream_config, nats_reachable

NOW = datetime(2024, 6, 1, tzinfo=UTC)  # after the streams; device clocks are not "in the future"


def _worker(store: ResourceStore, **options: object) -> MonitoringWorker:
    return MonitoringWorker(store, AccessLayer(store), clock=lambda: NOW, **options)  # type: ignore[arg-type]


def _ndjson(samples: list[Sample]) -> io.BytesIO:
    lines = [orjson.dumps(sample_to_observation(sample)) for sample in samples]
    return io.BytesIO(b"\n".join(lines) + b"\n")


def _with_patients(store: ResourceStore, *person_ids: str) -> None:
    with store.transaction() as tx:
        tx.put_resources([{"resourceType": "Patient", "id": pid} for pid in person_ids])


def _current(store: ResourceStore, resource_type: str, person: str) -> list[dict]:
    return [
        item.body for item in store.search(resource_type, patient_id=person, count=500).resources
    ]


def _alert_resources(store: ResourceStore, person: str) -> dict[str, list[dict]]:
    return {
        kind: [
            r for r in _current(store, kind, person)
            if any(i.get("system") == ALERT_ID_SYSTEM for i in r.get("identifier", []))
        ]
        for kind in ("Flag", "DetectedIssue", "Media", "Task")
    }  # fmt: skip


def _run(worker: MonitoringWorker, store: ResourceStore) -> None:
    feed = StoreFeed(store, worker.cursor)
    worker.follow(feed)
    asyncio.run(worker.run_until_idle(feed, idle_seconds=0.2))


def test_bulk_device_data_becomes_an_explained_alert_with_a_task(store: ResourceStore) -> None:
    _with_patients(store, "p1")
    open_episode = person_stream(episode=True, days=EPISODE[-1] + 1, person="p1")
    Ingestor(store).ingest_ndjson(_ndjson(open_episode), "watch.ndjson")  # ends mid-episode
    worker = _worker(store)
    _run(worker, store)

    found = _alert_resources(store, "p1")
    (flag,) = found["Flag"]
    (issue,) = found["DetectedIssue"]
    (task,) = found["Task"]
    assert flag["status"] == "active" and flag["code"]["coding"][0]["code"] == "infection-like"
    assert "Resting heart rate up" in issue["detail"] and "SD" in issue["detail"]
    chart_refs = {d["reference"] for e in issue["evidence"] for d in e.get("detail", [])}
    assert chart_refs == {f"Media/{m['id']}" for m in found["Media"]} and chart_refs
    assert all(m["content"]["contentType"] == "image/svg+xml" for m in found["Media"])
    assert task["focus"]["reference"] == f"Flag/{flag['id']}" and task["status"] == "requested"
    # since the first day of the rise
    assert flag["period"]["start"] == (START + timedelta(days=EPISODE[0])).isoformat()
    # daily summaries for the record, never read back as device data
    summaries = [o for o in _current(store, "Observation", "p1") if not is_device_observation(o)]
    assert summaries and all(o["meta"]["tag"][0]["code"] == "derived" for o in summaries)
    assert worker.monitor.counters.notifications == 1
    # each write is audited as the monitoring worker's
    writes = [e for e in AuditLog(store).events() if e.agent == "careloop:monitoring-worker"]
    assert any(e.action == "create" for e in writes)


def test_a_restart_resumes_where_the_checkpoint_left_off(store: ResourceStore) -> None:
    _with_patients(store, "p1")
    stream = person_stream(episode=True, person="p1")
    Ingestor(store).ingest_ndjson(_ndjson(stream[:40]), "first.ndjson")
    first = _worker(store)
    _run(first, store)
    assert first.monitor.counters.notifications == 0

    Ingestor(store).ingest_ndjson(_ndjson(stream[40:]), "second.ndjson")
    second = _worker(store)
    assert second.restore()
    _run(second, store)

    whole = _worker(store, worker="reference")
    _run(whole, store)  # the same data in one go, on its own checkpoint
    # counters carry over; nothing the first run settled was read again (no duplicates)
    assert second.processor.counters.processed == len(stream)
    assert second.processor.counters.duplicates == 0
    assert second.monitor.counters.notifications == whole.monitor.counters.notifications == 1
    assert len(_alert_resources(store, "p1")["Flag"]) == 1  # same alert id, written once


def test_a_failure_before_the_commit_loses_nothing(store: ResourceStore) -> None:
    _with_patients(store, "p1")
    Ingestor(store).ingest_ndjson(_ndjson(person_stream(episode=True, person="p1")), "w.ndjson")
    crashing = _worker(store, commit_every=10**9, commit_seconds=10**9)
    feed = StoreFeed(store, 0)
    crashing.follow(feed)

    async def half_then_crash() -> None:
        await crashing.processor.run_for(feed, 50)  # processed, not yet committed

    asyncio.run(half_then_crash())
    assert crashing.processor.counters.processed > 0
    # the process dies here: nothing was committed, so a new worker starts from scratch
    fresh = _worker(store)
    assert not fresh.restore()
    _run(fresh, store)
    assert fresh.processor.counters.processed == 80
    assert fresh.monitor.counters.notifications == 1


def test_without_consent_nothing_is_scored_or_written(store: ResourceStore) -> None:
    _with_patients(store, "p2")
    with store.transaction() as tx:
        tx.put_resources([opt_out_consent("p2", [Purpose.TREATMENT])])
    Ingestor(store).ingest_ndjson(_ndjson(person_stream(episode=True, person="p2")), "w.ndjson")
    worker = _worker(store)
    _run(worker, store)

    assert worker.counters.no_consent == 80
    assert worker.monitor.counters.samples == 0
    assert all(not found for found in _alert_resources(store, "p2").values())
    denied = [e for e in AuditLog(store).events() if "consent-denied" in e.flags]
    assert denied, "the consent check is audited"


def test_erasure_deletes_the_persons_monitoring_state(store: ResourceStore) -> None:
    _with_patients(store, "p3")
    Ingestor(store).ingest_ndjson(_ndjson(person_stream(episode=True, person="p3")), "w.ndjson")
    _run(_worker(store), store)

    def rows() -> int:
        with store.engine.connect() as connection:
            return connection.execute(
                select(func.count()).select_from(monitoring_persons)
            ).scalar_one()

    assert rows() == 1
    erase_patient(store, "p3", erased_by="admin", basis="patient-request")
    assert rows() == 0
    # a worker that restarts forgets the person too, alerts included, and writes nothing more
    again = _worker(store)
    assert again.restore()
    assert "p3" not in again.monitor.persons and "p3" not in again.monitor.manager.persons()


def test_device_observations_posted_over_rest_are_monitored(store: ResourceStore) -> None:
    _with_patients(store, "p4")
    client = TestClient(create_app(store, AppSettings(public_url=BASE_URL)), base_url=BASE_URL)
    token = bearer_token(client, store, Role.INTEGRATION)
    samples = person_stream(episode=True, days=EPISODE[-1] + 1, person="p4")
    observations = [sample_to_observation(sample) for sample in samples]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": o, "request": {"method": "PUT", "url": f"Observation/{o['id']}"}}
            for o in observations[:40]
        ],
    }
    answer = client.post("/fhir", json=bundle, headers=auth(token))
    assert answer.status_code == 200, answer.text
    ndjson = b"\n".join(orjson.dumps(o) for o in observations[40:])
    answer = client.post(
        "/fhir/$ingest-ndjson",
        content=ndjson,
        headers={**auth(token), "content-type": "application/fhir+ndjson"},
    )
    assert answer.status_code == 200, answer.text
    worker = _worker(store)
    _run(worker, store)
    assert len(_alert_resources(store, "p4")["Flag"]) == 1


def test_in_process_stream_with_duplicates_and_disorder(store: ResourceStore) -> None:
    _with_patients(store, "p5")
    samples = person_stream(episode=True, person="p5")
    shuffled = samples[1::2] + samples[::2]  # out of order across days
    worker = _worker(store)

    async def go() -> None:
        stream = InProcessStream()
        for sample in [*shuffled, *samples[:10]]:  # and re-sent
            await stream.publish(sample)
        await worker.run_until_idle(stream, idle_seconds=0.2)

    asyncio.run(go())
    counters = worker.processor.counters
    assert counters.processed + counters.late == len(samples)
    assert worker.monitor.counters.samples == counters.processed


def test_nats_jetstream_path_writes_alerts_and_survives_a_restart(store: ResourceStore) -> None:
    require(nats_reachable(), f"NATS JetStream is not reachable at {NATS_URL}")
    config = jetstream_config("worker")
    samples = person_stream(episode=True, person="p6")
    _with_patients(store, "p6")

    async def go() -> tuple[int, int]:
        js = await JetStreamStream.connect(config)
        try:
            for sample in samples:
                await js.publish(sample)
            first = _worker(store, commit_every=10**9, commit_seconds=10**9)
            await first.processor.run_for(js, 30)  # then "crash": nothing committed or acked
        finally:
            await js.close()
        again = await JetStreamStream.connect(config)
        try:
            second = _worker(store)
            second.restore()
            await second.run_until_idle(again, idle_seconds=0.5)
            return second.processor.counters.processed, second.monitor.counters.notifications
        finally:
            await again.delete()
            await again.close()

    processed, notifications = asyncio.run(go())
    assert processed == len(samples)
    assert notifications == 1
    assert len(_alert_resources(store, "p6")["Flag"]) == 1


def test_a_nurse_accepting_the_task_acknowledges_the_alert(store: ResourceStore) -> None:
    _with_patients(store, "p7")
    open_episode = person_stream(episode=True, days=EPISODE[-1] + 1, person="p7")
    Ingestor(store).ingest_ndjson(_ndjson(open_episode), "w.ndjson")
    worker = _worker(store)
    _run(worker, store)
    (task,) = _alert_resources(store, "p7")["Task"]
    task = {**task, "status": "accepted", "owner": {"reference": "Practitioner/nurse-1"}}
    with store.transaction() as tx:  # as the FHIR API would store the nurse's update
        tx.put_resources([task])

    asyncio.run(worker.tick(NOW))

    (alert,) = worker.monitor.manager.open_alerts("p7")
    assert alert.state.value == "acknowledged" and alert.acknowledged_by == "Practitioner/nurse-1"
    (issue,) = _alert_resources(store, "p7")["DetectedIssue"]
    assert "Status: acknowledged." in issue["detail"]
    (kept,) = _alert_resources(store, "p7")["Task"]
    assert kept["status"] == "accepted"  # the care team's Task is left as they set it


def test_a_silent_device_raises_a_routine_engagement_task(store: ResourceStore) -> None:
    _with_patients(store, "p8")
    Ingestor(store).ingest_ndjson(_ndjson(person_stream(episode=False, days=5, person="p8")), "w")
    worker = _worker(store)
    _run(worker, store)  # NOW is months after the last sample
    tasks = [
        t
        for t in _current(store, "Task", "p8")
        if t["code"]["coding"][0]["code"] == "engagement-gap"
    ]
    assert len(tasks) == 1 and tasks[0]["priority"] == "routine"
    assert worker.monitor.counters.notifications == 0  # silence is not a clinical alert


def test_the_task_goes_to_the_patients_care_team(store: ResourceStore) -> None:
    _with_patients(store, "p9")
    team = {
        "resourceType": "CareTeam",
        "id": "heart-failure-team",
        "status": "active",
        "subject": {"reference": "Patient/p9"},
        "name": "Heart failure nurses",
    }
    with store.transaction() as tx:
        tx.put_resources([team])
    open_episode = person_stream(episode=True, days=EPISODE[-1] + 1, person="p9")
    Ingestor(store).ingest_ndjson(_ndjson(open_episode), "w.ndjson")
    _run(_worker(store), store)
    (task,) = _alert_resources(store, "p9")["Task"]
    assert task["owner"] == {"reference": "CareTeam/heart-failure-team"}


def test_a_stopped_daily_weigh_in_raises_a_check_in_task(store: ResourceStore) -> None:
    _with_patients(store, "p10")
    watch = person_stream(episode=False, days=20, person="p10")
    weights = [
        Sample("p10", Signal.WEIGHT, day_start(day) + timedelta(hours=7), 80.0, f"w{day}", "scale")
        for day in range(12)  # weighed every morning, then stopped; the watch goes on
    ]
    # one file, the watch's days first and then the scale's: out of time order, as exports are
    Ingestor(store).ingest_ndjson(_ndjson([*watch, *weights]), "w.ndjson")
    worker = _worker(store, reorder=BACKFILL_REORDER)
    _run(worker, store)
    asyncio.run(worker.tick(day_start(20) + timedelta(hours=1)))  # the watch is not silent
    descriptions = [
        t["description"]
        for t in _current(store, "Task", "p10")
        if t["code"]["coding"][0]["code"] == "engagement-gap"
    ]
    assert any(d.startswith("No weight reading for 8 days") for d in descriptions)
