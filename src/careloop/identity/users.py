"""People who sign in: enrolment, login with password and TOTP, lockout, and demo accounts.

A login answers every failure the same way ("invalid username, password or code") and spends
the time of one argon2 verification even when there is no user to check, so neither the message
nor the timing tells an attacker which user names exist. Five failures in a row lock an account
for fifteen minutes; a successful login resets the count.

The database holds no secret in a usable form: the password only as an argon2id hash, the TOTP
secret sealed (AES-256-GCM) under the store's "identity" service key with the user name as
associated data, so a sealed secret copied onto another user's row does not open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidTag
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from careloop.access.principal import Principal
from careloop.access.roles import CARE_ROLES, Role
from careloop.identity import INVALID_GRANT, AuthenticationError, totp
from careloop.identity.passwords import Passwords, check_policy
from careloop.store.crypto import Sealer
from careloop.store.repository import ResourceStore
from careloop.store.schema import users, web_sessions

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
FHIR_ID_PATTERN = r"[A-Za-z0-9\-.]{1,64}"
PATIENT_REF = re.compile(rf"^Patient/{FHIR_ID_PATTERN}$")
PRACTITIONER_REF = re.compile(rf"^Practitioner/{FHIR_ID_PATTERN}$")
BASE32_SECRET = re.compile(r"^[A-Z2-7]{16,64}$")

LOGIN_FAILED = "invalid username, password or code"
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)


@dataclass(frozen=True)
class EnrolledUser:
    """What a new user needs once: the TOTP secret and the URI their authenticator reads."""

    username: str
    totp_secret: str = field(repr=False)
    provisioning_uri: str = field(repr=False)


@dataclass(frozen=True)
class UserSummary:
    """A user as an administrator sees them: no hash, no secret."""

    username: str
    role: Role
    fhir_user: str | None
    disabled: bool
    locked_until: datetime | None
    created_at: datetime


def parse_role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        accepted = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role; use one of: {accepted}") from None


def check_username(username: str) -> None:
    if not USERNAME_PATTERN.fullmatch(username):
        raise ValueError(
            "a user name is 3 to 64 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def check_fhir_user(role: Role, fhir_user: str | None) -> None:
    """A patient is tied to their own Patient record; anyone else may name a Practitioner."""
    if role is Role.PATIENT:
        if fhir_user is None or not PATIENT_REF.fullmatch(fhir_user):
            raise ValueError("a patient user needs --fhir-user Patient/<id> (their own record)")
    elif fhir_user is not None and not PRACTITIONER_REF.fullmatch(fhir_user):
        raise ValueError(f"the fhirUser of a {role.value} must be Practitioner/<id>")


class UserDirectory:
    """The users table: enrol, sign in, disable, list."""

    def __init__(
        self,
        store: ResourceStore,
        *,
        passwords: Passwords | None = None,
        max_failures: int = MAX_FAILURES,
        lockout: timedelta = LOCKOUT,
    ) -> None:
        self.store = store
        self.passwords = passwords or Passwords()
        self.max_failures = max_failures
        self.lockout = lockout
        self._sealer = Sealer(store.service_key("identity"))

    # -- administration ----------------------------------------------------------------------

    def add(
        self,
        username: str,
        role: Role | str,
        password: str,
        fhir_user: str | None = None,
        *,
        totp_secret: str | None = None,
        now: datetime | None = None,
    ) -> EnrolledUser:
        """Enrol a user. `totp_secret` is for demo accounts only; a real one is random.

        Raises ValueError for a malformed name, an unknown role, a fhirUser that does not fit
        the role, a password the policy refuses, or a name already taken.
        """
        check_username(username)
        chosen = parse_role(role)
        if chosen in (Role.INTEGRATION, Role.EHR, Role.MONITOR):
            raise ValueError(f"the {chosen.value} role is for systems, not people")
        check_fhir_user(chosen, fhir_user)
        check_policy(password, username)
        secret = totp_secret or totp.new_secret()
        if not BASE32_SECRET.fullmatch(secret):
            raise ValueError("a TOTP secret is 16 to 64 base32 characters")
        row = {
            "username": username,
            "role": chosen.value,
            "fhir_user": fhir_user,
            "password_hash": self.passwords.hash(password),
            "totp_secret": self._sealer.seal(secret.encode("ascii"), _binding(username)),
            "totp_last_step": 0,
            "failed_logins": 0,
            "locked_until": None,
            "disabled": False,
            "created_at": now or datetime.now(UTC),
        }
        try:
            with self.store.engine.begin() as connection:
                connection.execute(insert(users).values(row))
        except IntegrityError:
            raise ValueError(f"the user name {username} is already taken") from None
        return EnrolledUser(username, secret, totp.provisioning_uri(secret, username))

    def set_password(self, username: str, password: str) -> None:
        """Replace a password (an administrator's reset); also lifts a lockout."""
        check_policy(password, username)
        encoded = self.passwords.hash(password)
        with self.store.engine.begin() as connection:
            result = connection.execute(
                update(users)
                .where(users.c.username == username)
                .values(password_hash=encoded, failed_logins=0, locked_until=None)
            )
        if result.rowcount == 0:
            raise ValueError(f"no user named {username}")

    def disable(self, username: str, *, now: datetime | None = None) -> None:
        """Refuse every future login of `username` and end their open sessions."""
        moment = now or datetime.now(UTC)
        with self.store.engine.begin() as connection:
            result = connection.execute(
                update(users).where(users.c.username == username).values(disabled=True)
            )
            if result.rowcount == 0:
                raise ValueError(f"no user named {username}")
            connection.execute(
                update(web_sessions)
                .where(web_sessions.c.username == username, web_sessions.c.ended_at.is_(None))
                .values(ended_at=moment)
            )

    def get(self, username: str) -> UserSummary | None:
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(*_SUMMARY_COLUMNS).where(users.c.username == username)
            ).first()
        return None if row is None else _summary(row)

    def list(self) -> list[UserSummary]:
        with self.store.engine.connect() as connection:
            rows = connection.execute(select(*_SUMMARY_COLUMNS).order_by(users.c.username))
            return [_summary(row) for row in rows]

    # -- sign-in -----------------------------------------------------------------------------

    def login(
        self, username: str, password: str, totp_code: str, *, now: datetime | None = None
    ) -> Principal:
        """The principal of a user whose password and current TOTP code are right.

        Raises AuthenticationError with one message for every failure.
        """
        moment = now or datetime.now(UTC)
        row = self._row(username) if USERNAME_PATTERN.fullmatch(username) else None
        if row is None or row.disabled or (row.locked_until and row.locked_until > moment):
            self.passwords.burn(password)
            raise _refused()
        password_ok = self.passwords.verify(row.password_hash, password)
        secret = self._totp_secret(username, row.totp_secret)
        check = totp.verify(secret, totp_code, row.totp_last_step, moment)
        if not (password_ok and check.ok):
            self._record_failure(username, moment)
            raise _refused()
        assert check.step is not None
        rehashed = (
            self.passwords.hash(password)
            if self.passwords.needs_rehash(row.password_hash)
            else None
        )
        if not self._record_success(username, check.step, rehashed):
            raise _refused()  # another login used this code a moment ago
        return Principal(
            subject=username, kind="user", role=Role(row.role), fhir_user=row.fhir_user
        )

    def _totp_secret(self, username: str, sealed: bytes) -> str:
        """The user's TOTP secret; one that does not open (moved from another row, or sealed
        under another key) matches no code, so the login fails like any other."""
        try:
            return self._sealer.open(sealed, _binding(username)).decode("ascii")
        except InvalidTag:
            return ""

    def _row(self, username: str):  # type: ignore[no-untyped-def]
        with self.store.engine.connect() as connection:
            return connection.execute(select(users).where(users.c.username == username)).first()

    def _record_failure(self, username: str, moment: datetime) -> None:
        """Count a failure; the one that reaches the limit locks the account and resets the
        count, so after the lockout the user has the full number of attempts again."""
        with self.store.engine.begin() as connection:
            # an atomic increment: concurrent failures are all counted
            connection.execute(
                update(users)
                .where(users.c.username == username)
                .values(failed_logins=users.c.failed_logins + 1)
            )
            failures = connection.execute(
                select(users.c.failed_logins).where(users.c.username == username)
            ).scalar_one()
            if failures >= self.max_failures:
                connection.execute(
                    update(users)
                    .where(users.c.username == username)
                    .values(failed_logins=0, locked_until=moment + self.lockout)
                )

    def _record_success(self, username: str, step: int, rehashed: str | None) -> bool:
        """Consume the TOTP step; False when a concurrent login consumed it first."""
        values: dict[str, object] = {
            "totp_last_step": step,
            "failed_logins": 0,
            "locked_until": None,
        }
        if rehashed is not None:
            values["password_hash"] = rehashed
        with self.store.engine.begin() as connection:
            result = connection.execute(
                update(users)
                .where(users.c.username == username, users.c.totp_last_step < step)
                .values(**values)
            )
        return result.rowcount == 1


_SUMMARY_COLUMNS = (
    users.c.username,
    users.c.role,
    users.c.fhir_user,
    users.c.disabled,
    users.c.locked_until,
    users.c.created_at,
)


def _summary(row) -> UserSummary:  # type: ignore[no-untyped-def]
    return UserSummary(
        username=row.username,
        role=Role(row.role),
        fhir_user=row.fhir_user,
        disabled=bool(row.disabled),
        locked_until=row.locked_until,
        created_at=row.created_at,
    )


def _binding(username: str) -> bytes:
    return b"careloop.users.totp_secret\x00" + username.encode("utf-8")


def _refused() -> AuthenticationError:
    return AuthenticationError(LOGIN_FAILED, 401, INVALID_GRANT)


# -- demo accounts ---------------------------------------------------------------------------

# DEMO ONLY. The TOTP secrets of demo accounts are derived from this public constant, so anyone
# who reads this file can compute their codes. Demo accounts are created only when a caller
# passes demo_mode=True (the `careloop demo` command); no other default credential exists.
DEMO_TOTP_SEED = b"careloop demo accounts only - this seed is public, never use it for real users"
# One password for every demo account: a per-role password would contain the user name (which
# is the role), and the policy refuses that for every account, demo or not.
DEMO_PASSWORD = "careloop-demo-password"


@dataclass(frozen=True)
class DemoAccount:
    username: str
    role: Role
    password: str
    totp_secret: str
    fhir_user: str | None

    def code_at(self, moment: datetime) -> str:
        """The TOTP code this account's authenticator would show at `moment`."""
        return totp.code_at(self.totp_secret, moment)


def demo_totp_secret(username: str) -> str:
    digest = hmac.new(DEMO_TOTP_SEED, username.encode("utf-8"), hashlib.sha256).digest()
    return base64.b32encode(digest[:20]).decode("ascii")


def ensure_demo_users(
    directory: UserDirectory, patient_fhir_user: str, *, demo_mode: bool = False
) -> list[DemoAccount]:
    """One account per role (but integration and ehr, which are systems), named after the role.

    Existing accounts are left as they are, so running the demo twice is harmless. Refuses
    unless `demo_mode` is True: these credentials are public.
    """
    if not demo_mode:
        raise RuntimeError("demo accounts have public credentials: create them in demo mode only")
    accounts = []
    for role in Role:
        if role in (Role.INTEGRATION, Role.EHR, Role.MONITOR):
            continue
        username = role.value
        if role is Role.PATIENT:
            fhir_user: str | None = patient_fhir_user
        elif role in CARE_ROLES:
            fhir_user = f"Practitioner/demo-{role.value}"
        else:
            fhir_user = None
        account = DemoAccount(username, role, DEMO_PASSWORD, demo_totp_secret(username), fhir_user)
        if directory.get(username) is None:
            directory.add(username, role, DEMO_PASSWORD, fhir_user, totp_secret=account.totp_secret)
        accounts.append(account)
    return accounts
