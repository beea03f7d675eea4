"""The `careloop` console script as a user runs it: real processes, real files, real server."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import pytest

from samples import PATIENT_ID, transaction_bundle, with_change

CARELOOP = str(Path(sys.executable).with_name("careloop"))


def run(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CARELOOP, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    key_file = tmp_path / "master.key"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")}
    env.update(
        CARELOOP_HOME=str(tmp_path / "home"),
        CARELOOP_DATABASE_URL=database_url,
        CARELOOP_MASTER_KEY_FILE=str(key_file),
        COLUMNS="200",
    )
    assert run(["keys", "generate", str(key_file)], env).returncode == 0
    return env


def test_ingest_prints_a_summary_and_exits_zero(cli_env, tmp_path):
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(orjson.dumps(transaction_bundle(3)))

    result = run(["ingest", str(bundle), "--json"], cli_env)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["by_type"]["Observation"]["created"] == 3
    assert summary["units_rejected"] == 0 and summary["resources_per_second"] > 0
    again = run(["ingest", str(bundle)], cli_env)
    assert "5 resources" in again.stdout and "unchanged" in again.stdout


def test_rejected_input_exits_one_and_names_the_place(cli_env, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps(with_change(transaction_bundle(3), 3, ["status"], "??")))

    result = run(["ingest", str(bad)], cli_env)

    assert result.returncode == 1
    assert f"{bad}, entry 3 (Observation), at Observation.status" in result.stderr
    assert PATIENT_ID not in result.stderr and "Quillfeather" not in result.stderr


def test_configuration_errors_exit_two_without_echoing_secrets(cli_env, tmp_path):
    env = {**cli_env, "CARELOOP_MASTER_KEY": "c2VjcmV0LXRvby1zaG9ydA=="}
    result = run(["ingest", str(tmp_path)], env)
    assert result.returncode == 2 and "32 bytes" in result.stderr
    assert "c2VjcmV0LXRvby1zaG9ydA==" not in result.stderr
    missing = {k: v for k, v in cli_env.items() if k != "CARELOOP_MASTER_KEY_FILE"}
    result = run(["ingest", str(tmp_path)], missing)
    assert result.returncode == 2 and "no master key" in result.stderr


def test_key_rotation_from_the_command_line(cli_env, tmp_path):
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(orjson.dumps(transaction_bundle(1)))
    assert run(["ingest", str(bundle)], cli_env).returncode == 0
    new_key = tmp_path / "new.key"
    assert run(["keys", "generate", str(new_key)], cli_env).returncode == 0
    assert run(["keys", "generate", str(new_key)], cli_env).returncode == 2  # never overwrites

    rotated = run(["keys", "rotate", "--new-key-file", str(new_key)], cli_env)

    assert rotated.returncode == 0, rotated.stderr
    assert run(["timeline", PATIENT_ID], cli_env).returncode == 2  # old key no longer opens it
    new_env = {**cli_env, "CARELOOP_MASTER_KEY_FILE": str(new_key)}
    timeline = run(["timeline", PATIENT_ID], new_env)
    assert timeline.returncode == 0 and "1 observation codes" in timeline.stdout
    assert oct((new_key).stat().st_mode & 0o777) == "0o600"


def test_synth_writes_labelled_ndjson(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")}
    result = run(["synth", "--patients", "3", "--out", str(tmp_path / "pop")], env)
    assert result.returncode == 0, result.stderr
    patients = (tmp_path / "pop" / "Patient.ndjson").read_bytes().splitlines()
    assert len(patients) == 3
    assert all(b'"synthetic"' in line for line in patients)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get_json(url: str, headers: dict[str, str] | None = None, **kw: object) -> dict:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5, **kw) as response:
        return json.loads(response.read())


def _demo_sign_in(base: str, username: str) -> dict[str, str]:
    """Sign in as a demo account the way a browser does; the session cookie to send back."""
    from datetime import UTC, datetime

    from careloop.identity.totp import code_at
    from careloop.identity.users import DEMO_PASSWORD, demo_totp_secret

    code = code_at(demo_totp_secret(username), datetime.now(UTC))
    form = urllib.parse.urlencode({"username": username, "password": DEMO_PASSWORD, "code": code})
    request = urllib.request.Request(
        f"{base}/auth/login",
        data=form.encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        cookie = response.headers["set-cookie"].split(";", 1)[0]
    return {"cookie": cookie}


def test_demo_loads_the_synthetic_population_and_serves_it(tmp_path):
    """`careloop demo` on the embedded default: no settings, no servers, a real HTTP server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")}
    env["CARELOOP_HOME"] = str(tmp_path / "home")
    port = _free_port()
    server = subprocess.Popen(
        [CARELOOP, "demo", "--patients", "10", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                assert _get_json(f"http://127.0.0.1:{port}/healthz")["status"] == "ok"
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "demo server did not come up"
                time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError, match="401"):
            _get_json(f"{base}/fhir/Patient?_count=100")
        session = _demo_sign_in(base, "clinician")
        patients = _get_json(f"{base}/fhir/Patient?_count=100", session)
        assert patients["total"] == 11  # the 10 asked for, and one deteriorating now
        # the web pages are served too, the sign-in page first
        with urllib.request.urlopen(f"{base}/app/login", timeout=10) as page:
            assert page.status == 200 and b"Sign in to careloop" in page.read()
        patient_id = patients["entry"][0]["resource"]["id"]
        vitals = _get_json(f"{base}/fhir/Observation?patient={patient_id}&_count=5", session)
        assert vitals["resourceType"] == "Bundle" and vitals["type"] == "searchset"
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "demo-master.key" in output and "/fhir/metadata" in output
    assert "clinician" in output and "TOTP seed" in output
    assert "governed models" in output  # the shipped models, registered and made active
    assert "sepsis: sepsis-lgbm-" in output and "readmission: readmission-lgbm-" in output
    assert output.count("(active)") >= 2
    assert f"open {base}/app/" in output.lower()  # the demo opens onto the web pages
    assert re.search(r"worklist: .* [1-9][0-9]* in alert", output)  # one deteriorating now
    assert (tmp_path / "home" / "careloop.db").exists()


def test_serve_refuses_plain_http_and_serves_over_tls(cli_env: dict[str, str], tmp_path: Path):
    refused = run(["serve", "--port", str(_free_port())], cli_env)
    assert refused.returncode == 2 and "HTTPS" in refused.stderr
    not_loopback = run(["serve", "--dev-tls", "--host", "0.0.0.0"], cli_env)
    assert not_loopback.returncode == 2 and "loopback" in not_loopback.stderr
    port = _free_port()
    server = subprocess.Popen(
        [CARELOOP, "serve", "--dev-tls", "--port", str(port)],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        import ssl

        cert = Path(cli_env["CARELOOP_HOME"]) / "tls" / "dev-cert.pem"
        deadline = time.monotonic() + 60
        while True:
            try:
                context = ssl.create_default_context(cafile=str(cert))
                health = _get_json(f"https://127.0.0.1:{port}/healthz", context=context)
                break
            except (OSError, ssl.SSLError):
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the TLS server did not come up"
                time.sleep(0.3)
        assert health["status"] == "ok"
        request = urllib.request.Request(f"https://127.0.0.1:{port}/fhir/metadata")
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            assert response.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises(urllib.error.HTTPError, match="401"):
            _get_json(f"https://127.0.0.1:{port}/fhir/Patient", context=context)
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_patient_rights_and_audit_from_the_command_line(cli_env, tmp_path):
    """Export, de-identified export, erasure and retention from the shell, each audited, and the
    trail still verifies afterwards; `audit review` writes the signed report."""
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(orjson.dumps(transaction_bundle(3)))
    assert run(["ingest", str(bundle)], cli_env).returncode == 0

    record = tmp_path / "record.json"
    exported = run(["export-record", PATIENT_ID, "--out", str(record)], cli_env)
    assert exported.returncode == 0, exported.stderr
    entries = orjson.loads(record.read_bytes())["entry"]
    assert {e["resource"]["resourceType"] for e in entries} >= {"Patient", "Observation"}

    deid = tmp_path / "deid"
    result = run(["deid", "export", "--out", str(deid)], cli_env)
    assert result.returncode == 0, result.stderr
    exported_text = "".join(p.read_text() for p in deid.glob("*.ndjson"))
    assert '"Patient"' in exported_text and PATIENT_ID not in exported_text
    assert "Quillfeather" not in exported_text

    dry = run(["retention", "run", "--years", "1"], cli_env)
    assert dry.returncode == 0 and "dry run" in dry.stdout
    assert run(["erase", PATIENT_ID], cli_env).returncode == 2  # needs --yes
    erased = run(["erase", PATIENT_ID, "--yes"], cli_env)
    assert erased.returncode == 0 and "crypto-shredded" in erased.stdout
    assert run(["timeline", PATIENT_ID], cli_env).returncode == 1
    assert run(["ingest", str(bundle)], cli_env).returncode == 1  # an erased patient stays erased

    verified = run(["audit", "verify"], cli_env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = tmp_path / "review.md"
    reviewed = run(
        ["audit", "review", "--since", "2000-01-01", "--until", "2100-01-01", "--out", str(report)],
        cli_env,
    )
    assert reviewed.returncode == 0, reviewed.stderr
    text = report.read_text()
    assert "local:" in text and "Signature" in text and "Quillfeather" not in text
