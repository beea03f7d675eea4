"""Passwords: the policy a new password must meet, and argon2id hashing.

Parameters follow the OWASP Password Storage Cheat Sheet's argon2id baseline (19 MiB of memory,
two passes, one lane). They are recorded inside every encoded hash, so raising them later does
not lock anyone out: a login that verifies under old parameters re-hashes the password under the
new ones (`needs_rehash`).

The policy follows NIST SP 800-63B rather than composition rules: length is what makes a
password strong, so it asks for 12 characters and refuses only what is plainly guessable (the
user name inside it, or a handful of characters repeated).
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
# argon2 hashes any length, but an unbounded input is free CPU for an attacker; 256 is far more
# than any passphrase a person types.
MAX_LENGTH = 256
MIN_DISTINCT_CHARACTERS = 5


def owasp_hasher() -> PasswordHasher:
    """argon2id with OWASP's recommended minimum: m=19 MiB, t=2, p=1."""
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)


class PasswordPolicyError(ValueError):
    """A new password does not meet the policy; the message says why, never the password."""


def check_policy(password: str, username: str) -> None:
    """Raise PasswordPolicyError when `password` may not be set for `username`."""
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"the password must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"the password must be at most {MAX_LENGTH} characters long")
    if username and username.casefold() in password.casefold():
        raise PasswordPolicyError("the password must not contain the user name")
    if len(set(password)) < MIN_DISTINCT_CHARACTERS:
        raise PasswordPolicyError(
            f"the password must use at least {MIN_DISTINCT_CHARACTERS} different characters"
        )


class Passwords:
    """Hashes and verifies passwords with one argon2id hasher."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or owasp_hasher()
        self._decoy: str | None = None

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, encoded: str, password: str) -> bool:
        """True when `password` matches; False for a mismatch or an unreadable hash."""
        if len(password) > MAX_LENGTH:
            return False
        try:
            return self._hasher.verify(encoded, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, encoded: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(encoded)
        except InvalidHashError:
            return True

    def burn(self, password: str) -> None:
        """Spend the time of one verification without a real hash.

        Called when the user is unknown, locked or disabled, so the time a login takes does
        not tell an attacker which of those it was.
        """
        if self._decoy is None:
            self._decoy = self._hasher.hash("careloop-decoy-password")
        self.verify(self._decoy, password[:MAX_LENGTH])
