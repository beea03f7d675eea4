"""Time-based one-time passwords (RFC 6238) as authenticator apps expect them.

30-second steps, 6 digits, HMAC-SHA1: the parameters every authenticator app supports (many
ignore the algorithm in the provisioning URI and always use SHA1). A code is accepted for the
step before and after the current one, to forgive a drifting phone clock, and never for a step
at or before the last one accepted, so a code read over someone's shoulder or from a proxy log
cannot be used twice.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp

STEP_SECONDS = 30
DIGITS = 6
ISSUER = "careloop"
DRIFT_STEPS = 1


def new_secret() -> str:
    """A random 160-bit secret in base32, the length RFC 4226 recommends for SHA1."""
    return pyotp.random_base32(length=32)


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, digest=hashlib.sha1, interval=STEP_SECONDS)


def provisioning_uri(secret: str, username: str) -> str:
    """The otpauth:// URI an authenticator app reads from a QR code."""
    return _totp(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def step_at(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp()) // STEP_SECONDS


def code_at(secret: str, moment: datetime) -> str:
    """The code an authenticator shows at `moment` (demo tooling and tests use it)."""
    return _totp(secret).generate_otp(step_at(moment))


@dataclass(frozen=True)
class TotpCheck:
    """The outcome of checking a code: the step it matched, or why it did not."""

    step: int | None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.step is not None and not self.replayed


def verify(secret: str, code: str, last_step: int, moment: datetime) -> TotpCheck:
    """Check `code` at `moment` against the steps around it, refusing steps <= `last_step`."""
    code = code.replace(" ", "")
    if not secret or len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return TotpCheck(step=None)
    totp = _totp(secret)
    current = step_at(moment)
    # Compare against every candidate step, in constant time, so the work done does not
    # depend on which step (if any) matched. Should two steps share a code, the latest wins,
    # which is the one that can still be fresh.
    matches = [
        step
        for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1)
        if hmac.compare_digest(totp.generate_otp(step), code)
    ]
    if not matches:
        return TotpCheck(step=None)
    return TotpCheck(step=max(matches), replayed=max(matches) <= last_step)
