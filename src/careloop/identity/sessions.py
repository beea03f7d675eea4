"""Web sessions that end by themselves: after 15 minutes without a request (automatic logoff,
HIPAA §164.312(a)(2)(iii)) and 12 hours after sign-in whatever happens.

The browser holds the session token and a CSRF token; the database holds only their SHA-256
digests, so a copy of the database cannot be replayed as a signed-in browser. A session of a
user who is disabled afterwards stops working at its next request, and the role is read from the
users table on every request, so a role change takes effect at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, update

from careloop.access.principal import Principal
from careloop.access.roles import Role
from careloop.identity import INVALID_TOKEN, AuthenticationError
from careloop.store.repository import ResourceStore
from careloop.store.schema import users, web_sessions

IDLE_TIMEOUT = timedelta(minutes=15)
ABSOLUTE_TIMEOUT = timedelta(hours=12)
MAX_TOKEN_LENGTH = 128  # token_urlsafe(32) is 43 characters; refuse junk before hashing it

NOT_SIGNED_IN = "not signed in, or the session has ended: sign in again"


@dataclass(frozen=True)
class NewSession:
    """What the browser gets at sign-in; the tokens are shown here once and never stored."""

    token: str = field(repr=False)
    csrf_token: str = field(repr=False)
    idle_expires_at: datetime
    absolute_expires_at: datetime


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionManager:
    def __init__(
        self,
        store: ResourceStore,
        idle_timeout: timedelta = IDLE_TIMEOUT,
        absolute_timeout: timedelta = ABSOLUTE_TIMEOUT,
    ) -> None:
        self.store = store
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout

    def start(self, principal: Principal, *, now: datetime | None = None) -> NewSession:
        """A new session for a user who has just signed in."""
        if principal.kind != "user":
            raise ValueError("web sessions are for people; API clients use bearer tokens")
        moment = now or datetime.now(UTC)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.store.engine.begin() as connection:
            connection.execute(
                insert(web_sessions).values(
                    token_hash=digest(token),
                    username=principal.subject,
                    csrf_hash=digest(csrf),
                    created_at=moment,
                    last_seen=moment,
                    ended_at=None,
                )
            )
        return NewSession(token, csrf, moment + self.idle_timeout, moment + self.absolute_timeout)

    def resume(self, token: str, *, now: datetime | None = None) -> tuple[Principal, str]:
        """The principal of a live session and its CSRF digest; marks the session as used.

        Raises AuthenticationError when the token is unknown, the session was ended, has been
        idle too long or is too old, or its user has been disabled.
        """
        moment = now or datetime.now(UTC)
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise _ended(NOT_SIGNED_IN)
        token_hash = digest(token)
        with self.store.engine.begin() as connection:
            row = connection.execute(
                select(web_sessions, users.c.role, users.c.fhir_user, users.c.disabled)
                .join(users, users.c.username == web_sessions.c.username)
                .where(web_sessions.c.token_hash == token_hash)
            ).first()
            if row is None or row.ended_at is not None:
                raise _ended(NOT_SIGNED_IN)
            reason = self._expiry_reason(row, moment)
            if reason is not None:
                connection.execute(_end(token_hash, moment))
        # raise only after the block has committed the end: raising inside would roll it back
        if reason is not None:
            raise _ended(reason)
        self._touch(token_hash, moment)
        principal = Principal(
            subject=row.username, kind="user", role=Role(row.role), fhir_user=row.fhir_user
        )
        return principal, row.csrf_hash

    def _expiry_reason(self, row, moment: datetime) -> str | None:  # type: ignore[no-untyped-def]
        if row.disabled:
            return NOT_SIGNED_IN
        if moment - row.last_seen > self.idle_timeout:
            minutes = int(self.idle_timeout.total_seconds() // 60)
            return f"the session ended after {minutes} minutes without activity: sign in again"
        if moment - row.created_at > self.absolute_timeout:
            hours = int(self.absolute_timeout.total_seconds() // 3600)
            return f"the session reached its {hours}-hour limit: sign in again"
        return None

    def _touch(self, token_hash: str, moment: datetime) -> None:
        # never move last_seen backwards (requests may finish out of order)
        with self.store.engine.begin() as connection:
            connection.execute(
                update(web_sessions)
                .where(web_sessions.c.token_hash == token_hash, web_sessions.c.last_seen < moment)
                .values(last_seen=moment)
            )

    @staticmethod
    def check_csrf(csrf_hash: str, presented: str | None) -> bool:
        """True when `presented` is the CSRF token of the session whose digest is `csrf_hash`."""
        if not presented or len(presented) > MAX_TOKEN_LENGTH:
            return False
        return hmac.compare_digest(digest(presented), csrf_hash)

    def end(self, token: str, *, now: datetime | None = None) -> bool:
        """Log out; True when a live session was ended."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return False
        with self.store.engine.begin() as connection:
            result = connection.execute(_end(digest(token), now or datetime.now(UTC)))
        return result.rowcount == 1

    def end_all(self, username: str, *, now: datetime | None = None) -> int:
        """End every open session of a user (password reset, suspected compromise)."""
        with self.store.engine.begin() as connection:
            result = connection.execute(
                update(web_sessions)
                .where(web_sessions.c.username == username, web_sessions.c.ended_at.is_(None))
                .values(ended_at=now or datetime.now(UTC))
            )
        return result.rowcount


def _end(token_hash: str, moment: datetime):  # type: ignore[no-untyped-def]
    return (
        update(web_sessions)
        .where(web_sessions.c.token_hash == token_hash, web_sessions.c.ended_at.is_(None))
        .values(ended_at=moment)
    )


def _ended(reason: str) -> AuthenticationError:
    return AuthenticationError(reason, 401, INVALID_TOKEN)
