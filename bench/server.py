"""A careloop server in a child process for the benchmarks that measure it over HTTP.

A child process, so the server's CPU time is its own and the client's work (httpx, Chromium)
does not share its interpreter. The master key goes by environment, never on a command line
other users can read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
SEPSIS_MODEL = REPO_ROOT / "models" / "sepsis"


def start_server(
    database_url: str, key_text: str, port: int, *, ddi_dir: Path | None = None
) -> subprocess.Popen[bytes]:
    """uvicorn serving the store on 127.0.0.1:`port` in demo mode (plain HTTP on loopback),
    with the shipped sepsis model; returns once /healthz answers."""
    ddi = repr(str(ddi_dir)) if ddi_dir is not None and ddi_dir.is_dir() else "None"
    code = (
        "import os\n"
        "import uvicorn\n"
        "from pathlib import Path\n"
        "from careloop.store.crypto import MasterKey\n"
        "from careloop.store.repository import ResourceStore\n"
        "from careloop.web.app import AppSettings, create_app\n"
        "key = MasterKey.from_text(os.environ['CARELOOP_BENCH_KEY'], origin='environment')\n"
        f"store = ResourceStore.open({database_url!r}, key)\n"
        f"ddi = {ddi}\n"
        f"settings = AppSettings(public_url='http://127.0.0.1:{port}', plain_http_allowed=True,"
        f" sepsis_model=Path({str(SEPSIS_MODEL)!r}),"
        " ddi_dir=Path(ddi) if ddi else None)\n"
        f"uvicorn.run(create_app(store, settings), host='127.0.0.1', port={port},"
        " log_level='warning', access_log=False)\n"
    )
    env = {**os.environ, "CARELOOP_BENCH_KEY": key_text}
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the careloop server did not start within 60 s")
