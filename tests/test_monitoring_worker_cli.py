"""`careloop monitor run` and `careloop monitor publish` as an operator runs them: real
processes, a real store on each backend, device data loaded with `careloop ingest`."""

from __future__ import annotations

from pathlib import Path

import orjson

from careloop.monitoring.fhir import sample_to_observation
from careloop.monitoring.worker_cli import shown_url
from monitoring_streams import EPISODE, person_stream
from test_cli import cli_env, run  # noqa: F401 - cli_env is a fixture

__all__ = ["cli_env"]


def test_the_worker_raises_the_alert_then_resumes(cli_env: dict, tmp_path: Path) -> None:  # noqa: F811
    samples = person_stream(episode=True, days=EPISODE[-1] + 1, person="cli-p1")
    data = tmp_path / "device.ndjson"
    patient = {"resourceType": "Patient", "id": "cli-p1"}
    lines = [patient, *(sample_to_observation(s) for s in samples)]
    data.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    assert run(["ingest", str(data)], cli_env).returncode == 0

    first = run(["monitor", "run", "--idle-seconds", "0.2"], cli_env)
    assert first.returncode == 0, first.stderr
    assert "starting without a checkpoint" in first.stdout
    assert f"{len(samples)} samples processed" in first.stdout
    assert "1 alerts" in first.stdout

    again = run(["monitor", "run", "--idle-seconds", "0.2"], cli_env)
    assert again.returncode == 0, again.stderr
    assert "resumed from the saved checkpoint" in again.stdout
    assert "0 duplicates" in again.stdout  # nothing settled was read twice


def test_unreachable_nats_and_missing_exports_fail_cleanly(
    cli_env: dict,  # noqa: F811
    tmp_path: Path,
) -> None:
    down = run(["monitor", "run", "--nats", "nats://127.0.0.1:9"], cli_env, timeout=60)
    assert down.returncode == 2
    assert "cannot reach NATS JetStream at nats://127.0.0.1:9" in down.stderr
    missing = run(["monitor", "publish", "--data", str(tmp_path / "absent")], cli_env)
    assert missing.returncode == 2
    assert "no such folder" in missing.stderr


def test_a_nats_secret_is_never_printed(cli_env: dict) -> None:  # noqa: F811
    url = "nats://gateway:s3cret-pass@127.0.0.1:9"
    down = run(["monitor", "run", "--nats", url], cli_env, timeout=60)
    assert down.returncode == 2
    assert "s3cret-pass" not in down.stderr + down.stdout
    assert "nats://gateway:***@127.0.0.1:9" in down.stderr
    assert shown_url("nats://tok3n@host:4222") == "nats://***@host:4222"
    assert shown_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
