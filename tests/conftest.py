"""Shared fixtures: a store on each real backend, keys, and the real data sets.

In CI (CI=true) a missing PostgreSQL or ../shared/data fails the run instead of skipping, so a
green CI always means the tests ran against the real components.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI") == "true"
SHARED_DATA = Path(os.environ.get("CARELOOP_SHARED_DATA", ROOT.parent / "shared" / "data"))
POSTGRES_URL = os.environ.get(
    "CARELOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def require(available: bool, reason: str) -> None:
    """Skip when something external is missing on a developer machine; fail in CI."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def shared_data(relative: str) -> Path:
    path = SHARED_DATA / relative
    require(path.exists(), f"{path} is not present")
    return path


def _postgres_reachable() -> bool:
    try:
        engine = sqlalchemy.create_engine(POSTGRES_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except sqlalchemy.exc.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    return _postgres_reachable()


@pytest.fixture
def postgres_url(postgres_available: bool) -> Iterator[str]:
    """A fresh, empty PostgreSQL schema for one test, dropped afterwards."""
    require(postgres_available, f"PostgreSQL is not reachable at {POSTGRES_URL}")
    schema = f"careloop_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def master_key() -> MasterKey:
    return MasterKey.from_bytes(os.urandom(32))


@pytest.fixture
def store(database_url: str, master_key: MasterKey) -> Iterator[ResourceStore]:
    opened = ResourceStore.open(database_url, master_key)
    yield opened
    opened.close()


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str, master_key: MasterKey) -> dict[str, str | None]:
    """The environment of a `careloop` command working on the test's store (for CliRunner:
    None unsets a variable). A test module may define its own."""
    return {
        "CARELOOP_HOME": str(tmp_path / "home"),
        "CARELOOP_DATABASE_URL": database_url,
        "CARELOOP_MASTER_KEY": base64.b64encode(master_key.secret).decode(),
        "CARELOOP_MASTER_KEY_FILE": None,
        "CARELOOP_CONFIG": None,
    }


@pytest.fixture(scope="session")
def synthea_archive() -> Path:
    return shared_data("synthea_r4/synthea_r4.tar.gz")


# -- the web pages in a real browser (tests/ui_support.py) ------------------------------------


@pytest.fixture(scope="session")
def ui_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One demo careloop served for the whole run: `careloop demo --no-serve` in a temporary
    home, then uvicorn on a free loopback port."""
    from ui_support import running_site

    with running_site(tmp_path_factory.mktemp("ui-home")) as site:
        yield site


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """Debian's headless Chromium driven by Playwright; required in CI."""
    from ui_support import CHROMIUM

    require(CHROMIUM.exists(), f"Chromium is not installed at {CHROMIUM} (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium: object) -> Iterator[object]:
    """A fresh browser context (no cookies) at desktop size; closed after the test."""
    from ui_support import DESKTOP

    context = chromium.new_context(viewport=DESKTOP)  # type: ignore[attr-defined]
    page = context.new_page()
    yield page
    context.close()
