"""`careloop monitor run` (the worker) and `careloop monitor publish` (an export onto NATS, as a
device gateway would send it)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click

from careloop.cli_helpers import fail, open_configured_store
from careloop.monitoring.importers import ExportError
from careloop.monitoring.replay import person_sources
from careloop.monitoring.replay_cli import monitor_group

__all__ = ["monitor_group"]
from careloop.monitoring.stream import JetStreamConfig, JetStreamStream, SampleStream

DEFAULT_NATS = "nats://127.0.0.1:4222"


@monitor_group.command("run")
@click.option(
    "--nats",
    "nats_url",
    help="Consume samples from NATS JetStream at this URL (default: the store's device "
    "Observations, written through the FHIR API or `careloop ingest`).",
)
@click.option("--worker", default="default", show_default=True, help="Checkpoint name.")
@click.option(
    "--follow/--until-idle",
    default=False,
    help="Keep running until interrupted, or stop once the stream is idle (the default).",
)
@click.option("--idle-seconds", type=click.FloatRange(0.1), default=1.0, show_default=True)
def run_command(nats_url: str | None, worker: str, follow: bool, idle_seconds: float) -> None:
    """Run the monitoring worker: baselines, detectors and alerts over incoming device data,
    writing daily summaries, Flags, DetectedIssues, charts and Tasks through the access layer."""
    from careloop.access.layer import AccessLayer
    from careloop.monitoring.feed import StoreFeed
    from careloop.monitoring.worker import BACKFILL_REORDER, LIVE_REORDER, MonitoringWorker

    store = open_configured_store()
    reorder = LIVE_REORDER if nats_url else BACKFILL_REORDER  # the store also holds history
    runner = MonitoringWorker(store, AccessLayer(store), worker=worker, reorder=reorder)
    try:
        resumed = runner.restore()
    except ValueError as error:
        fail(str(error))
    click.echo("resumed from the saved checkpoint" if resumed else "starting without a checkpoint")

    async def run() -> None:
        stream: SampleStream
        if nats_url:
            stream = await _connect(nats_url)
        else:
            feed = StoreFeed(store, runner.cursor)
            runner.follow(feed)
            stream = feed
        try:
            if follow:
                await runner.run_forever(stream, _stop_on_signals())
            else:
                await runner.run_until_idle(stream, idle_seconds)
        finally:
            await stream.close()

    asyncio.run(run())
    processed = runner.processor.counters
    monitor = runner.monitor.counters
    click.echo(
        f"{processed.processed} samples processed ({processed.duplicates} duplicates, "
        f"{processed.late} late, {processed.invalid} invalid), {runner.counters.no_consent} "
        f"without consent; {monitor.days_closed} person-days closed, {monitor.notifications} "
        f"alerts; {runner.counters.resources_written} resources written"
    )
    refused = ", ".join(f"{why}: {n}" for why, n in sorted(monitor.refused.items()))
    if refused:
        click.echo(f"refused samples: {refused}")


@monitor_group.command("publish")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Wearable exports.")
@click.option("--nats", "nats_url", default=DEFAULT_NATS, show_default=True)
@click.option("--limit-persons", type=click.IntRange(1), help="Only the first N persons.")
def publish_command(data: Path, nats_url: str, limit_persons: int | None) -> None:
    """Publish the samples of wearable exports to NATS JetStream, person by person, as device
    gateways would (each sample once: JetStream drops a re-sent sample id)."""
    try:
        sources = person_sources(data)
    except ExportError as error:
        fail(str(error))

    async def publish() -> tuple[int, int]:
        stream = await _connect(nats_url)
        sent = dropped = 0
        try:
            for person in sorted(sources)[:limit_persons]:
                for sample in sources[person]():
                    if await stream.publish(sample):
                        sent += 1
                    else:
                        dropped += 1
        finally:
            await stream.close()
        return sent, dropped

    sent, dropped = asyncio.run(publish())
    click.echo(f"published {sent} samples to {shown_url(nats_url)} ({dropped} re-sends dropped)")


async def _connect(url: str) -> JetStreamStream:
    try:
        return await JetStreamStream.connect(JetStreamConfig(url=url))
    except Exception as error:  # nats raises its own hierarchy and OSError variants
        fail(f"cannot reach NATS JetStream at {shown_url(url)}: {type(error).__name__}")


def shown_url(url: str) -> str:
    """The NATS URL with any password or token in it masked, safe to print (a secret never
    goes into output or an error message)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable NATS URL>"
    if parts.username is None and parts.password is None:
        return url
    user = "***" if parts.password is None else f"{parts.username}:***"
    return urlunsplit(parts._replace(netloc=f"{user}@{host}{port}"))


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for name in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(name, stop.set)
    return stop
