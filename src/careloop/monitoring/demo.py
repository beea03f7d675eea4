"""What `careloop demo` shows of remote monitoring: the worker run over the device data the demo
population brought (the synthetic home-monitoring summaries), and the alerts it explained."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal
from careloop.monitoring.feed import StoreFeed
from careloop.monitoring.fhir_alerts import ALERT_ID_SYSTEM
from careloop.monitoring.worker import BACKFILL_REORDER, MonitoringWorker
from careloop.store.repository import ResourceStore


@dataclass(frozen=True)
class DemoMonitoring:
    samples: int
    persons: int
    person_days: int
    alerts: int
    engagement_tasks: int
    explanations: list[str]  # each alert's DetectedIssue detail, as the care team reads it


def run_demo_monitoring(
    store: ResourceStore, reader: Principal, ctx: AccessContext, shown: int = 3
) -> DemoMonitoring:
    """Run the worker over the store until idle, then read back the explained alerts as
    `reader` would (through the access layer)."""
    access = AccessLayer(store)
    worker = MonitoringWorker(store, access, worker="demo", reorder=BACKFILL_REORDER)
    worker.restore()
    feed = StoreFeed(store, worker.cursor)
    worker.follow(feed)
    asyncio.run(worker.run_until_idle(feed, idle_seconds=0.2))
    page, _withheld = access.search(
        reader,
        ctx,
        "DetectedIssue",
        lambda _patient: store.search("DetectedIssue", count=200),
        patient_id=None,
        query_text="_count=200",
    )
    issues = [
        item.body
        for item in page.resources
        if any(i.get("system") == ALERT_ID_SYSTEM for i in item.body.get("identifier", []))
    ]
    monitor = worker.monitor
    return DemoMonitoring(
        samples=worker.processor.counters.processed,
        persons=len(monitor.persons),
        person_days=monitor.counters.days_closed,
        alerts=monitor.counters.notifications,
        engagement_tasks=worker.counters.engagement_tasks,
        explanations=[str(issue.get("detail", "")) for issue in issues[:shown]],
    )
