"""People: enrolment, password + TOTP login, lockout, demo accounts, and web sessions.

Every test runs on SQLite and on PostgreSQL (the `store` fixture). TOTP codes come from pyotp
directly, as an authenticator app would compute them, not from careloop's own helper.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from argon2 import PasswordHasher, Type
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update

from careloop.access.roles import Role
from careloop.identity import AuthenticationError
from careloop.identity.cli import users_group
from careloop.identity.passwords import PasswordPolicyError, Passwords
from careloop.identity.ratelimit import RateLimiter
from careloop.identity.sessions import NOT_SIGNED_IN, SessionManager
from careloop.identity.users import (
    DEMO_PASSWORD,
    LOGIN_FAILED,
    UserDirectory,
    ensure_demo_users,
)
from careloop.store.repository import ResourceStore
from careloop.store.schema import metadata, users, web_sessions

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"


def code(secret: str, moment: datetime) -> str:
    return pyotp.TOTP(secret).at(moment)


@pytest.fixture
def directory(store: ResourceStore) -> UserDirectory:
    return UserDirectory(store)


@pytest.fixture
def alice(directory: UserDirectory):
    return directory.add("alice", "clinician", PASSWORD, "Practitioner/p-17", now=T0)


def other_code(good: str) -> str:
    """A well-formed code that is not `good`."""
    return f"{(int(good) + 1) % 1_000_000:06d}"


def refused(call) -> AuthenticationError:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthenticationError) as caught:
        call()
    return caught.value


# -- enrolment and login ---------------------------------------------------------------------


def test_enrol_and_log_in_with_a_real_totp_code(directory, alice):
    assert alice.provisioning_uri.startswith("otpauth://totp/careloop:alice?")
    assert f"secret={alice.totp_secret}" in alice.provisioning_uri
    assert alice.totp_secret not in repr(alice)

    principal = directory.login("alice", PASSWORD, code(alice.totp_secret, T0), now=T0)

    assert principal.subject == "alice" and principal.kind == "user"
    assert principal.role is Role.CLINICIAN
    assert principal.fhir_user == "Practitioner/p-17" and principal.scopes is None


def test_a_code_from_the_neighbouring_step_is_accepted_but_not_two_steps_away(directory, alice):
    late_phone = code(alice.totp_secret, T0 - timedelta(seconds=30))
    directory.login("alice", PASSWORD, late_phone, now=T0)
    far = code(alice.totp_secret, T0 + timedelta(seconds=120))
    refused(lambda: directory.login("alice", PASSWORD, far, now=T0 + timedelta(seconds=60)))
    spaced = code(alice.totp_secret, T0 + timedelta(seconds=60))
    spaced = spaced[:3] + " " + spaced[3:]  # as authenticator apps display it
    directory.login("alice", PASSWORD, spaced, now=T0 + timedelta(seconds=60))


def test_every_failure_gives_the_same_message(directory, alice):
    good = code(alice.totp_secret, T0)
    failures = [
        refused(lambda: directory.login("alice", "wrong password here", good, now=T0)),
        refused(lambda: directory.login("alice", PASSWORD, other_code(good), now=T0)),
        refused(lambda: directory.login("nobody", PASSWORD, good, now=T0)),
        refused(lambda: directory.login("Not A Valid Name!", PASSWORD, good, now=T0)),
        refused(lambda: directory.login("alice", PASSWORD, "abcdef", now=T0)),
        refused(lambda: directory.login("alice", PASSWORD, "", now=T0)),
    ]
    assert {(str(e), e.status, e.code) for e in failures} == {(LOGIN_FAILED, 401, "invalid_grant")}
    assert all(PASSWORD not in repr(e) and good not in str(e) for e in failures)


def test_a_used_code_cannot_be_replayed(directory, alice):
    first = code(alice.totp_secret, T0)
    directory.login("alice", PASSWORD, first, now=T0)

    error = refused(
        lambda: directory.login("alice", PASSWORD, first, now=T0 + timedelta(seconds=5))
    )
    assert str(error) == LOGIN_FAILED
    # nor the code of the step before, though it is within the drift window
    before = code(alice.totp_secret, T0 - timedelta(seconds=30))
    refused(lambda: directory.login("alice", PASSWORD, before, now=T0 + timedelta(seconds=5)))
    later = T0 + timedelta(seconds=30)
    directory.login("alice", PASSWORD, code(alice.totp_secret, later), now=later)


def test_five_failures_lock_the_account_for_fifteen_minutes(directory, alice):
    for attempt in range(5):
        moment = T0 + timedelta(seconds=attempt)
        refused(
            lambda m=moment: directory.login(
                "alice", "not the password", code(alice.totp_secret, m), now=m
            )
        )
    summary = directory.get("alice")
    assert summary is not None and summary.locked_until == T0 + timedelta(seconds=4, minutes=15)

    # while locked, even the right password and code are refused, with the same message
    during = T0 + timedelta(minutes=10)
    error = refused(
        lambda: directory.login("alice", PASSWORD, code(alice.totp_secret, during), now=during)
    )
    assert str(error) == LOGIN_FAILED

    after = T0 + timedelta(minutes=16)
    assert (
        directory.login("alice", PASSWORD, code(alice.totp_secret, after), now=after).subject
        == "alice"
    )
    assert directory.get("alice").locked_until is None


def test_a_success_resets_the_failure_count(directory, alice):
    moment = T0
    for _round in range(2):
        for _ in range(4):
            moment += timedelta(seconds=31)
            refused(
                lambda m=moment: directory.login(
                    "alice", "not the password", code(alice.totp_secret, m), now=m
                )
            )
        moment += timedelta(seconds=31)
        directory.login("alice", PASSWORD, code(alice.totp_secret, moment), now=moment)
    assert directory.get("alice").locked_until is None


def test_a_disabled_user_cannot_log_in(directory, alice):
    directory.disable("alice")
    assert directory.get("alice").disabled
    error = refused(lambda: directory.login("alice", PASSWORD, code(alice.totp_secret, T0), now=T0))
    assert str(error) == LOGIN_FAILED
    with pytest.raises(ValueError, match="no user"):
        directory.disable("nobody")


def test_set_password_replaces_the_old_one_and_lifts_a_lockout(directory, alice):
    for attempt in range(5):
        moment = T0 + timedelta(seconds=attempt)
        refused(
            lambda m=moment: directory.login(
                "alice", "not the password", code(alice.totp_secret, m), now=m
            )
        )
    directory.set_password("alice", "a brand new passphrase")
    later = T0 + timedelta(minutes=1)
    refused(lambda: directory.login("alice", PASSWORD, code(alice.totp_secret, later), now=later))
    directory.login("alice", "a brand new passphrase", code(alice.totp_secret, later), now=later)
    with pytest.raises(PasswordPolicyError):
        directory.set_password("alice", "short")


@pytest.mark.parametrize(
    ("password", "complaint"),
    [
        ("short-pass", "at least 12"),
        ("x" * 257 + "abcd", "at most 256"),
        ("my name is bob, hi", "user name"),
        ("MY-BOB-PASSWORD", "user name"),
        ("abababababababab", "different characters"),
    ],
)
def test_the_password_policy_says_what_is_wrong(directory, password, complaint):
    with pytest.raises(PasswordPolicyError, match=complaint) as caught:
        directory.add("bob", "nurse", password)
    assert password not in str(caught.value)
    assert directory.get("bob") is None


@pytest.mark.parametrize(
    ("username", "role", "fhir_user", "complaint"),
    [
        ("Al", "nurse", None, "3 to 64"),
        ("Alice", "nurse", None, "3 to 64"),
        ("-alice", "nurse", None, "3 to 64"),
        ("alice smith", "nurse", None, "3 to 64"),
        ("a" * 65, "nurse", None, "3 to 64"),
        ("carol", "surgeon", None, "unknown role"),
        ("carol", "integration", None, "for systems, not people"),
        ("carol", "ehr", None, "for systems, not people"),
        ("carol", "patient", None, "Patient/<id>"),
        ("carol", "patient", "Practitioner/p1", "Patient/<id>"),
        ("carol", "nurse", "Patient/p1", "Practitioner/<id>"),
        ("carol", "nurse", "Practitioner/has space", "Practitioner/<id>"),
    ],
)
def test_enrolment_refuses_bad_names_roles_and_fhir_users(
    directory, username, role, fhir_user, complaint
):
    with pytest.raises(ValueError, match=complaint):
        directory.add(username, role, PASSWORD, fhir_user)


def test_a_user_name_is_taken_once(directory, alice):
    with pytest.raises(ValueError, match="already taken"):
        directory.add("alice", "nurse", "another long password")


def test_a_patient_user_is_tied_to_their_record(directory):
    enrolled = directory.add("pat.one", Role.PATIENT, PASSWORD, "Patient/abc-1")
    principal = directory.login("pat.one", PASSWORD, code(enrolled.totp_secret, T0), now=T0)
    assert principal.own_patient_id == "abc-1"


def test_list_shows_users_without_secrets(directory, alice):
    directory.add("bob.k", "auditor", PASSWORD)
    listed = directory.list()
    assert [u.username for u in listed] == ["alice", "bob.k"]
    assert listed[1].role is Role.AUDITOR and listed[1].fhir_user is None
    assert not hasattr(listed[0], "password_hash") and not hasattr(listed[0], "totp_secret")


# -- what is stored ------------------------------------------------------------------------


def all_stored_bytes(store: ResourceStore) -> bytes:
    """Every value of every table, as bytes, to search for what must not be there."""
    chunks = []
    with store.engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    chunks.append(value if isinstance(value, bytes) else str(value).encode())
    return b"\x00".join(chunks)


def test_no_password_or_totp_secret_is_stored_in_clear(store, directory, alice, database_url):
    sessions = SessionManager(store)
    session = sessions.start(
        directory.login("alice", PASSWORD, code(alice.totp_secret, T0), now=T0), now=T0
    )

    stored = all_stored_bytes(store)
    raw_secret = base64.b32decode(alice.totp_secret)
    for secret in (
        PASSWORD.encode(),
        alice.totp_secret.encode(),
        alice.totp_secret.lower().encode(),
        raw_secret,
        session.token.encode(),
        session.csrf_token.encode(),
    ):
        assert secret not in stored
    if database_url.startswith("sqlite:///"):
        database = Path(database_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
        assert PASSWORD.encode() not in raw and alice.totp_secret.encode() not in raw
    with store.engine.connect() as connection:
        encoded = connection.execute(select(users.c.password_hash)).scalar_one()
        session_row = connection.execute(select(web_sessions)).one()
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert session_row.token_hash == hashlib.sha256(session.token.encode()).hexdigest()


def test_a_sealed_totp_secret_moved_to_another_user_does_not_open(store, directory, alice):
    bob = directory.add("bob.k", "nurse", PASSWORD)
    with store.engine.begin() as connection:
        sealed = connection.execute(
            select(users.c.totp_secret).where(users.c.username == "alice")
        ).scalar_one()
        connection.execute(
            update(users).where(users.c.username == "bob.k").values(totp_secret=sealed)
        )
    # bob's row now carries alice's sealed secret: neither secret produces an accepted code
    for secret in (alice.totp_secret, bob.totp_secret):
        error = refused(lambda s=secret: directory.login("bob.k", PASSWORD, code(s, T0), now=T0))
        assert str(error) == LOGIN_FAILED


def test_a_hash_made_with_weaker_parameters_is_upgraded_at_login(store):
    weak = Passwords(PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1, type=Type.ID))
    enrolled = UserDirectory(store, passwords=weak).add("dana", "pharmacist", PASSWORD)

    def stored_hash() -> str:
        with store.engine.connect() as connection:
            return connection.execute(select(users.c.password_hash)).scalar_one()

    assert "m=8192,t=1" in stored_hash()
    UserDirectory(store).login("dana", PASSWORD, code(enrolled.totp_secret, T0), now=T0)
    assert "m=19456,t=2" in stored_hash()
    later = T0 + timedelta(seconds=30)
    UserDirectory(store).login("dana", PASSWORD, code(enrolled.totp_secret, later), now=later)


# -- demo accounts ---------------------------------------------------------------------------


def test_demo_accounts_need_demo_mode(directory):
    with pytest.raises(RuntimeError, match="demo mode"):
        ensure_demo_users(directory, "Patient/demo-1")
    with pytest.raises(RuntimeError, match="demo mode"):
        ensure_demo_users(directory, "Patient/demo-1", demo_mode=False)
    assert directory.list() == []


def test_demo_accounts_exist_for_every_person_role_and_can_log_in(directory):
    accounts = ensure_demo_users(directory, "Patient/demo-1", demo_mode=True)

    assert {a.role for a in accounts} == set(Role) - {Role.INTEGRATION, Role.EHR, Role.MONITOR}
    by_role = {a.role: a for a in accounts}
    assert by_role[Role.PATIENT].fhir_user == "Patient/demo-1"
    assert by_role[Role.CLINICIAN].fhir_user == "Practitioner/demo-clinician"
    for account in accounts:
        principal = directory.login(account.username, DEMO_PASSWORD, account.code_at(T0), now=T0)
        assert principal.role is account.role and account.username == account.role.value
    # idempotent: a second run creates nothing and returns the same credentials
    again = ensure_demo_users(directory, "Patient/demo-1", demo_mode=True)
    assert again == accounts and len(directory.list()) == len(accounts)


# -- sessions --------------------------------------------------------------------------------


@pytest.fixture
def signed_in(store, directory, alice):
    principal = directory.login("alice", PASSWORD, code(alice.totp_secret, T0), now=T0)
    return SessionManager(store), principal


def test_a_session_resumes_to_the_same_principal_and_checks_csrf(signed_in):
    sessions, principal = signed_in
    new = sessions.start(principal, now=T0)
    assert new.idle_expires_at == T0 + timedelta(minutes=15)
    assert new.absolute_expires_at == T0 + timedelta(hours=12)
    assert new.token not in repr(new) and new.csrf_token not in repr(new)

    resumed, csrf_hash = sessions.resume(new.token, now=T0 + timedelta(minutes=1))

    assert resumed == principal
    assert SessionManager.check_csrf(csrf_hash, new.csrf_token)
    assert not SessionManager.check_csrf(csrf_hash, new.token)
    assert not SessionManager.check_csrf(csrf_hash, None)
    assert not SessionManager.check_csrf(csrf_hash, "")


def test_an_idle_session_ends_itself(signed_in):
    sessions, principal = signed_in
    new = sessions.start(principal, now=T0)
    # activity within 15 minutes keeps it alive, twice over
    sessions.resume(new.token, now=T0 + timedelta(minutes=14))
    sessions.resume(new.token, now=T0 + timedelta(minutes=28))

    error = refused(lambda: sessions.resume(new.token, now=T0 + timedelta(minutes=43, seconds=1)))
    assert "15 minutes without activity" in str(error) and error.code == "invalid_token"
    # it stays ended, even for a request that claims an earlier time
    error = refused(lambda: sessions.resume(new.token, now=T0 + timedelta(minutes=29)))
    assert "session has ended" in str(error)


def test_a_session_ends_after_twelve_hours_however_active(signed_in):
    sessions, principal = signed_in
    new = sessions.start(principal, now=T0)
    moment = T0
    while moment < T0 + timedelta(hours=11, minutes=50):
        moment += timedelta(minutes=10)
        sessions.resume(new.token, now=moment)
    error = refused(lambda: sessions.resume(new.token, now=T0 + timedelta(hours=12, minutes=1)))
    assert "12-hour limit" in str(error)


def test_logout_ends_the_session(signed_in):
    sessions, principal = signed_in
    new = sessions.start(principal, now=T0)
    other = sessions.start(principal, now=T0)
    assert sessions.end(new.token, now=T0 + timedelta(minutes=1))
    assert not sessions.end(new.token)  # already ended
    refused(lambda: sessions.resume(new.token, now=T0 + timedelta(minutes=2)))
    sessions.resume(other.token, now=T0 + timedelta(minutes=2))  # other sessions live on
    assert sessions.end_all("alice", now=T0 + timedelta(minutes=3)) == 1
    refused(lambda: sessions.resume(other.token, now=T0 + timedelta(minutes=4)))


@pytest.mark.parametrize("token", ["", "x" * 43, "x" * 10_000])
def test_unknown_session_tokens_are_refused(signed_in, token):
    sessions, _ = signed_in
    error = refused(lambda: sessions.resume(token, now=T0))
    assert error.status == 401 and error.code == "invalid_token"
    assert str(error) == NOT_SIGNED_IN


def test_disabling_a_user_ends_their_sessions(signed_in, directory):
    sessions, principal = signed_in
    new = sessions.start(principal, now=T0)
    directory.disable("alice", now=T0 + timedelta(minutes=1))
    refused(lambda: sessions.resume(new.token, now=T0 + timedelta(minutes=2)))


def test_a_role_change_applies_to_a_running_session(store, signed_in):
    sessions, principal = signed_in
    new = sessions.start(principal, now=T0)
    with store.engine.begin() as connection:
        connection.execute(update(users).where(users.c.username == "alice").values(role="auditor"))
    resumed, _ = sessions.resume(new.token, now=T0 + timedelta(minutes=1))
    assert resumed.role is Role.AUDITOR


def test_sessions_are_for_people_only(signed_in):
    from careloop.access.principal import Principal

    sessions, _ = signed_in
    client = Principal(subject="c1", kind="client", role=Role.INTEGRATION, scopes=frozenset())
    with pytest.raises(ValueError, match="people"):
        sessions.start(client)


# -- the command line ------------------------------------------------------------------------


def test_cli_enrols_lists_and_disables_users(store, database_url, master_key):
    env = {
        "CARELOOP_DATABASE_URL": database_url,
        "CARELOOP_MASTER_KEY": base64.b64encode(master_key.secret).decode(),
        "CARELOOP_MASTER_KEY_FILE": None,
        "CARELOOP_CONFIG": None,
        "COLUMNS": "200",
    }
    runner = CliRunner()
    added = runner.invoke(
        users_group,
        ["add", "erin", "--role", "nurse", "--fhir-user", "Practitioner/n-2", "--password-stdin"],
        input=PASSWORD + "\n",
        env=env,
    )
    assert added.exit_code == 0, added.output
    assert PASSWORD not in added.output
    secret = next(line.split()[-1] for line in added.output.splitlines() if "secret:" in line)
    assert "otpauth://totp/careloop:erin" in added.output
    UserDirectory(store).login("erin", PASSWORD, code(secret, T0), now=T0)

    prompted = runner.invoke(
        users_group, ["add", "fay.b", "--role", "admin"], input=f"{PASSWORD}\n{PASSWORD}\n", env=env
    )
    assert prompted.exit_code == 0, prompted.output

    listed = runner.invoke(users_group, ["list"], env=env)
    assert listed.exit_code == 0 and "erin" in listed.output and "fay.b" in listed.output
    assert secret not in listed.output

    disabled = runner.invoke(users_group, ["disable", "erin"], env=env)
    assert disabled.exit_code == 0
    assert UserDirectory(store).get("erin").disabled

    weak = runner.invoke(
        users_group, ["add", "gus", "--role", "nurse", "--password-stdin"], input="tiny\n", env=env
    )
    assert weak.exit_code == 2 and "at least 12" in weak.output and "tiny" not in weak.output
    unknown = runner.invoke(users_group, ["disable", "nobody"], env=env)
    assert unknown.exit_code == 2


def test_two_concurrent_logins_with_one_code_let_only_one_in(store, alice):
    barrier = threading.Barrier(2)
    outcomes: list[str] = []
    good = code(alice.totp_secret, T0)

    def attempt() -> None:
        directory = UserDirectory(store)
        barrier.wait()
        try:
            directory.login("alice", PASSWORD, good, now=T0)
            outcomes.append("in")
        except AuthenticationError:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["in", "refused"]


# -- rate limiting -----------------------------------------------------------------------------


def test_a_bucket_allows_a_burst_then_refills_at_its_rate():
    limiter = RateLimiter(capacity=3, refill_per_second=0.5)
    assert [limiter.check("10.0.0.1", now=100.0) for _ in range(3)] == [None, None, None]
    assert limiter.check("10.0.0.1", now=100.0) == pytest.approx(2.0)
    assert limiter.check("10.0.0.1", now=101.0) == pytest.approx(1.0)
    assert limiter.check("10.0.0.1", now=102.0) is None  # one token back after 2 s
    assert limiter.check("10.0.0.1", now=102.0) == pytest.approx(2.0)
    assert limiter.check("user:alice", now=102.0) is None  # keys are independent


def test_a_long_idle_bucket_holds_no_more_than_its_capacity():
    limiter = RateLimiter(capacity=2, refill_per_second=1.0)
    limiter.check("k", now=0.0)
    allowed = [limiter.check("k", now=10_000.0) is None for _ in range(5)]
    assert allowed == [True, True, False, False, False]


def test_a_clock_read_out_of_order_adds_no_tokens():
    limiter = RateLimiter(capacity=1, refill_per_second=1.0)
    assert limiter.check("k", now=50.0) is None
    assert limiter.check("k", now=40.0) is not None
    assert limiter.check("k", now=50.5) == pytest.approx(0.5)


def test_memory_is_bounded_by_max_keys_and_idle_eviction():
    limiter = RateLimiter(capacity=5, refill_per_second=1.0, max_keys=100)
    for n in range(1000):
        limiter.check(f"10.0.{n // 256}.{n % 256}", now=1.0)
    assert len(limiter) == 100
    # five seconds refill any bucket: idle ones are dropped at the next check
    limiter.check("newcomer", now=7.0)
    assert len(limiter) == 1


def test_the_least_recently_used_key_is_the_one_evicted():
    limiter = RateLimiter(capacity=1, refill_per_second=0.001, max_keys=2)
    limiter.check("a", now=0.0)
    limiter.check("b", now=0.0)
    limiter.check("a", now=0.1)  # a is refused, and now the most recently used
    limiter.check("c", now=0.2)  # evicts b
    assert limiter.check("a", now=0.3) is not None  # still empty: a was kept
    assert limiter.check("b", now=0.3) is None  # b starts afresh


def test_concurrent_checks_never_grant_more_than_the_capacity():
    limiter = RateLimiter(capacity=50, refill_per_second=1.0)
    granted: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def hammer() -> None:
        barrier.wait()
        for _ in range(100):
            ok = limiter.check("shared", now=5.0) is None
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 50 and len(granted) == 800


@pytest.mark.parametrize(
    ("capacity", "rate", "max_keys"), [(0, 1.0, 10), (1, 0.0, 10), (1, -1.0, 10), (1, 1.0, 0)]
)
def test_a_limiter_refuses_meaningless_settings(capacity, rate, max_keys):
    with pytest.raises(ValueError):
        RateLimiter(capacity, rate, max_keys=max_keys)


@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.floats(min_value=0, max_value=3)),
        max_size=200,
    ),
    st.integers(min_value=1, max_value=5),
    st.floats(min_value=0.1, max_value=4),
)
def test_no_key_ever_gets_more_than_burst_plus_refill(steps, capacity, rate):
    # idle eviction drops only buckets that are full again, so it must not change the bound
    limiter = RateLimiter(capacity, rate, max_keys=10)
    now, first, last, granted = 0.0, {}, {}, {}
    for key, gap in steps:
        now += gap
        retry = limiter.check(key, now=now)
        first.setdefault(key, now)
        last[key] = now
        if retry is None:
            granted[key] = granted.get(key, 0) + 1
        else:
            assert 0 < retry <= 1 / rate + 1e-9
    for key, count in granted.items():
        assert count <= capacity + rate * (last[key] - first[key]) + 1e-6
