"""Configuration from the environment, or from a TOML file named by CARELOOP_CONFIG.

Environment variables win over the file. Secrets (the master key) are read from a key file or
the environment and never written anywhere else; see the README for every setting.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from careloop.store.crypto import KeyMaterialError, MasterKey

DEFAULT_HOME = Path(".careloop")


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the setting, never a secret."""


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    master_key_file: Path | None
    master_key_inline: str | None  # CARELOOP_MASTER_KEY; kept out of repr below
    ingest_workers: int | None
    public_url: str | None = None  # how clients reach the API (the token audience)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    consent_default: str = "opt-out"  # what applies when a patient has no Consent: opt-in/opt-out
    session_idle_minutes: int = 15
    break_glass_minutes: int = 60
    retention_years: int = 10
    ddi_dir: Path | None = None  # the ONC drug-drug interaction lists (../shared/data/ddi)
    playbook_dirs: tuple[Path, ...] = ()  # playbooks added to the built-in ones
    cds_alert_budget: int = 6  # interruptive cards per patient per 24 hours
    cds_cors_origins: tuple[str, ...] = ("*",)

    def __repr__(self) -> str:
        return (
            f"Settings(home={self.home!s}, database_url={_redact_url(self.database_url)}, "
            f"master_key_file={self.master_key_file}, "
            f"master_key_inline={'set' if self.master_key_inline else 'unset'})"
        )

    def master_key(self) -> MasterKey:
        try:
            if self.master_key_inline:
                return MasterKey.from_text(self.master_key_inline, origin="CARELOOP_MASTER_KEY")
            if self.master_key_file is not None:
                return MasterKey.from_file(self.master_key_file)
        except KeyMaterialError as exc:
            raise ConfigError(str(exc)) from exc
        raise ConfigError(
            "no master key: set CARELOOP_MASTER_KEY_FILE to a key file (create one with "
            "`careloop keys generate PATH`) or CARELOOP_MASTER_KEY to a base64 256-bit key"
        )

    @property
    def redacted_database_url(self) -> str:
        return _redact_url(self.database_url)


# the shared data sets sit beside a checkout; a deployment names the directory explicitly
DEFAULT_DDI_DIR = Path("../shared/data/ddi")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    file_values = _read_config_file(env.get("CARELOOP_CONFIG"))

    def setting(name: str) -> str | None:
        return env.get(f"CARELOOP_{name.upper()}") or _as_text(file_values.get(name))

    home = Path(setting("home") or DEFAULT_HOME)
    key_file = setting("master_key_file")
    workers = setting("ingest_workers")
    return Settings(
        home=home,
        database_url=setting("database_url") or f"sqlite:///{home / 'careloop.db'}",
        master_key_file=Path(key_file) if key_file else None,
        master_key_inline=env.get("CARELOOP_MASTER_KEY"),  # never from the file: keep it out
        ingest_workers=_as_int("ingest_workers", workers) if workers else None,
        public_url=setting("public_url"),
        tls_cert_file=_as_path(setting("tls_cert_file")),
        tls_key_file=_as_path(setting("tls_key_file")),
        consent_default=_choice(
            "consent_default", setting("consent_default"), ("opt-out", "opt-in")
        ),
        session_idle_minutes=_bounded(
            "session_idle_minutes", setting("session_idle_minutes"), 15, 1, 240
        ),
        break_glass_minutes=_bounded(
            "break_glass_minutes", setting("break_glass_minutes"), 60, 1, 240
        ),
        retention_years=_bounded("retention_years", setting("retention_years"), 10, 1, 100),
        ddi_dir=_as_path(setting("ddi_dir")) or _present(DEFAULT_DDI_DIR),
        playbook_dirs=tuple(
            Path(part) for part in (setting("playbooks") or "").split(os.pathsep) if part
        ),
        cds_alert_budget=_bounded("cds_alert_budget", setting("cds_alert_budget"), 6, 1, 100),
        cds_cors_origins=tuple(
            origin.strip()
            for origin in (setting("cds_cors_origins") or "*").split(",")
            if origin.strip()
        ),
    )


def _present(path: Path) -> Path | None:
    return path if path.is_dir() else None


def _read_config_file(path: str | None) -> dict[str, object]:
    if not path:
        return {}
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read CARELOOP_CONFIG file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"CARELOOP_CONFIG file {path} is not valid TOML: {exc}") from exc
    if "master_key" in values:
        raise ConfigError(f"{path} holds master_key: keep keys in a key file, not in config")
    section = values.get("careloop", values)
    return section if isinstance(section, dict) else {}


def _as_path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _choice(name: str, value: str | None, choices: tuple[str, ...]) -> str:
    if value is None:
        return choices[0]
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}")
    return value


def _bounded(name: str, value: str | None, default: int, low: int, high: int) -> int:
    number = default if value is None else _as_int(name, value)
    if not low <= number <= high:
        raise ConfigError(f"{name} must be from {low} to {high}")
    return number


def _as_text(value: object) -> str | None:
    return None if value is None else str(value)


def _as_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from exc


def _redact_url(url: str) -> str:
    """The URL with any password replaced, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL is reported by the store; never echo it whole
        return "<unparseable database URL>"
