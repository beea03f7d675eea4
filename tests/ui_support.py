"""The web pages as a person uses them: a real careloop server and real headless Chromium.

`UiSite` is what `careloop demo` builds (run as the command itself, in a temporary home),
served by uvicorn on a free loopback port in a background thread of the test process, so a test
can also look at the store directly (the audit trail, a Consent) after driving the browser.

Chromium is Debian's (`/usr/bin/chromium`, installed by `make test`); Playwright's own
browser download is not reachable here. Screenshots go to `test-artifacts/screenshots/`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import uvicorn

from careloop.access.principal import Principal
from careloop.identity import totp
from careloop.identity.sessions import SessionManager
from careloop.identity.users import DEMO_PASSWORD, UserDirectory, demo_totp_secret
from careloop.store.repository import ResourceStore
from careloop.web.auth import SESSION_COOKIE
from careloop.web.ui.framework import home_path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CARELOOP_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PHONE = {"width": 390, "height": 844}  # a phone-sized screen, CSS pixels
DESKTOP = {"width": 1280, "height": 900}
CARELOOP = str(Path(sys.executable).parent / "careloop")  # the installed command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_demo_setup(home: Path, patients: int) -> None:
    """`careloop demo --no-serve`: the store, the population, the demo accounts, the models."""
    env = {**os.environ, "CARELOOP_HOME": str(home)}
    for name in ("CARELOOP_DATABASE_URL", "CARELOOP_MASTER_KEY", "CARELOOP_MASTER_KEY_FILE"):
        env.pop(name, None)
    result = subprocess.run(
        [CARELOOP, "demo", "--no-serve", "--patients", str(patients)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"careloop demo failed: {result.stderr[-2000:]}")


@dataclass
class UiSite:
    """A running careloop over a demo home."""

    home: Path
    base_url: str
    store: ResourceStore
    server: uvicorn.Server
    thread: threading.Thread
    _last_step: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base_url + path

    def next_code(self, username: str, secret: str | None = None) -> str:
        """A TOTP code this user has not used yet (each step is accepted once, so signing the
        same demo account in again within 30 s needs the next step's code, which the server
        accepts as clock drift; past that, wait for the clock)."""
        secret = secret or demo_totp_secret(username)
        with self._lock:
            while True:
                now = datetime.now(UTC)
                current = totp.step_at(now)
                # the previous step's code only early in this step: late in it, the clock may
                # move on before the server checks, leaving that code two steps behind
                lowest = current - 1 if now.timestamp() % 30 < 20 else current
                step = max(self._last_step.get(username, 0) + 1, lowest)
                if step <= current + 1:
                    self._last_step[username] = step
                    return totp.code_at(secret, datetime.fromtimestamp(step * 30, UTC))
                time.sleep(1.0)

    def sign_in(self, page, username: str, *, through_form: bool = False) -> None:  # noqa: ANN001
        """Be signed in as `username` on the landing page of their role.

        `through_form=True` signs in as a person does: the form, the password and a TOTP code
        (each demo role does so in test_ui_session). Otherwise the session is started the way
        the sign-in route starts it and its cookie handed to the browser: the same session,
        without waiting for a fresh TOTP step when a test signs the same account in again
        within 30 seconds (each code is accepted once)."""
        if through_form:
            self.sign_in_with_form(page, username)
            return
        user = UserDirectory(self.store).get(username)
        if user is None:
            raise AssertionError(f"no user {username}")
        principal = Principal(username, "user", user.role, fhir_user=user.fhir_user)
        session = SessionManager(self.store).start(principal)
        page.context.add_cookies(
            [
                {
                    "name": SESSION_COOKIE,
                    "value": session.token,
                    "domain": "127.0.0.1",  # host-only, as a __Host- cookie must be
                    "path": "/",
                    "secure": True,
                    "httpOnly": True,
                    "sameSite": "Strict",
                }
            ]
        )
        page.goto(self.url(home_path(user.role)))

    def sign_in_with_form(self, page, username: str, password: str = DEMO_PASSWORD) -> None:  # noqa: ANN001
        """Sign in through the login form as a person does, and wait for the landing page."""
        page.goto(self.url("/app/login"))
        page.get_by_label("User name").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_label("Code from your authenticator app").fill(self.next_code(username))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state("domcontentloaded")
        if "/app/login" in page.url:
            raise AssertionError(f"sign-in as {username} failed: {page.inner_text('main')}")


@contextmanager
def running_site(home: Path, patients: int = 16) -> Iterator[UiSite]:
    """Set up a demo home and serve it until the block ends."""
    from careloop.cli import app_settings
    from careloop.config import load_settings
    from careloop.store.crypto import MasterKey
    from careloop.web.app import create_app

    run_demo_setup(home, patients)
    settings = load_settings({"CARELOOP_HOME": str(home)})
    store = ResourceStore.open(settings.database_url, MasterKey.from_file(home / "demo-master.key"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # every test signs in from 127.0.0.1: the sign-in rate limit (tested in test_web_api) would
    # refuse the run's later sign-ins, so the test site allows more
    served = replace(app_settings(settings, base, demo=True, store=store), login_burst=10_000)
    app = create_app(store, served)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the careloop server did not start")
        time.sleep(0.05)
    try:
        yield UiSite(home, base, store, server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()


def screenshot(page, name: str) -> Path:  # noqa: ANN001
    """Keep what the page looked like as a test artifact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def accessibility_violations(page) -> list[dict]:  # noqa: ANN001
    """axe-core's WCAG 2.1 A/AA violations on the page as it is now (axe ships inside the
    axe-playwright-python package; nothing is fetched)."""
    from axe_playwright_python.sync_playwright import Axe

    result = Axe().run(
        page, options={"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21aa"]}}
    )
    return [
        {
            "id": violation["id"],
            "impact": violation.get("impact"),
            "help": violation.get("help"),
            "targets": [node.get("target") for node in violation.get("nodes", [])][:5],
        }
        for violation in result.response["violations"]
    ]


def external_requests(page_requests: list[str], base_url: str) -> list[str]:
    """Requests that left careloop's own origin (a CDN, a font service): there must be none."""
    return [url for url in page_requests if not url.startswith((base_url, "data:", "about:"))]
