"""CDS Hooks client authentication: the EHR's signed JWT on every call.

Keys are real (RSA 2048 for RS384, EC P-384 for ES384), JWTs are real, and the jku JWK Sets are
served by a real HTTP server on 127.0.0.1. Most tests run on SQLite; the ones that write what
matters (registration, accepted calls, the jti ledger, the CLI) also run on PostgreSQL.
`NEGATIVE_CASES` lists every faulty call the verifier must refuse with the reason it must give.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import func, select

from careloop.cds.cli_clients import cds_clients_group
from careloop.cds.client_auth import (
    CdsAuthError,
    CdsClientRegistry,
    CdsJwtVerifier,
    JwksFetcher,
)
from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore
from careloop.store.schema import cds_clients, cds_jwt_ids

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
AUDIENCE = "https://careloop.example/cds-services/sepsis-risk"
ISSUER = "https://ehr.example/cds-client"  # keys registered as a JWK Set
JKU_ISSUER = "https://other-ehr.example"  # keys published at an allow-listed jku
FHIR_SERVER = "https://ehr.example/fhir/r4"
DROP = object()


# -- a real JWK Set server on loopback -----------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    delay: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    server: _JwksHttpServer

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.server.hits[self.path] += 1
        route = self.server.routes.get(self.path, Route(404, b"{}"))
        time.sleep(route.delay)
        self.send_response(route.status)
        for name, value in route.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        # the fetcher hangs up on purpose on a body too big or too slow
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(route.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass


class _JwksHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]
    hits: Counter[str]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def serve_json(self, path: str, document: object) -> None:
        self.routes[path] = Route(body=json.dumps(document).encode())


@pytest.fixture(scope="module")
def http_server() -> Iterator[_JwksHttpServer]:
    server = _JwksHttpServer(("127.0.0.1", 0), _Handler)
    server.routes, server.hits = {}, Counter()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def jwks_server(http_server: _JwksHttpServer, keys: dict[str, Any]) -> _JwksHttpServer:
    """The module's server with this test's routes: the jku issuer's JWK Set and odd answers."""
    http_server.routes = {}
    http_server.hits = Counter()
    http_server.serve_json(
        "/jwks.json",
        {"keys": [public_jwk(keys["rsa2"], "jku-rsa"), public_jwk(keys["p384b"], "jku-ec")]},
    )
    http_server.serve_json("/other.json", {"keys": [public_jwk(keys["attacker"], "jku-rsa")]})
    http_server.routes["/redirect"] = Route(302, b"", (("Location", "/jwks.json"),))
    http_server.routes["/big"] = Route(body=b'{"keys": [' + b" " * 70_000 + b"]}")
    http_server.serve_json("/private", _private_rsa(keys))
    http_server.routes["/text"] = Route(body=b"<html>keys</html>")
    http_server.routes["/missing"] = Route(404, b"not here")
    http_server.routes["/slow"] = Route(body=b"{}", delay=6.0)
    return http_server


# -- keys, clocks and tokens ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    """Generated once per module: key generation is the slow part, and keys hold no state."""
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "rsa2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p384b": ec.generate_private_key(ec.SECP384R1()),
        "attacker": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
    }


def public_jwk(private: Any, kid: str, **members: str) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else ECAlgorithm
    jwk = algorithm.to_jwk(private.public_key(), as_dict=True)
    return {**jwk, "kid": kid, **members}


def _private_rsa(keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": [{**RSAAlgorithm.to_jwk(keys["rsa"], as_dict=True), "kid": "k"}]}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def claims(issuer: str, at: datetime = T0, **changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "iss": issuer,
        "sub": "ehr-client-7",
        "aud": AUDIENCE,
        "iat": int(at.timestamp()),
        "exp": int((at + timedelta(minutes=4)).timestamp()),
        "jti": str(uuid.uuid4()),
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not DROP}


def sign(private: Any, kid: str | object, payload: dict[str, Any], **header: Any) -> str:
    alg = header.pop("alg", "RS384" if isinstance(private, rsa.RSAPrivateKey) else "ES384")
    fields = {"typ": "JWT", "kid": kid, **header}
    return jwt.encode(
        payload, private, algorithm=alg, headers={k: v for k, v in fields.items() if v is not DROP}
    )


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"
    )


@dataclass
class Setup:
    store: ResourceStore
    registry: CdsClientRegistry
    verifier: CdsJwtVerifier
    clock: Clock
    keys: dict[str, Any]
    server: _JwksHttpServer

    def rsa(self, **changes: Any) -> str:
        return "Bearer " + sign(self.keys["rsa"], "rsa-1", claims(ISSUER, self.clock(), **changes))

    def jku_ec(self, **changes: Any) -> str:
        payload = claims(JKU_ISSUER, self.clock(), **changes)
        jku = self.server.url("/jwks.json")
        return "Bearer " + sign(self.keys["p384b"], "jku-ec", payload, jku=jku)

    def verify(self, header: str | None) -> Any:
        return self.verifier.verify(header, AUDIENCE)

    def refused(self, header: str | None) -> str:
        with pytest.raises(CdsAuthError) as caught:
            self.verify(header)
        return str(caught.value)

    def jti_rows(self) -> int:
        with self.store.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(cds_jwt_ids)).scalar_one()


def make_setup(store: ResourceStore, keys: dict[str, Any], server: _JwksHttpServer) -> Setup:
    registry = CdsClientRegistry(store)
    registry.register(
        ISSUER,
        "main hospital EHR",
        jwks={"keys": [public_jwk(keys["rsa"], "rsa-1"), public_jwk(keys["p384"], "ec-1")]},
        fhir_servers=[FHIR_SERVER + "/"],
    )
    registry.register(JKU_ISSUER, "partner EHR", jku_allowlist=[server.url("/jwks.json")])
    clock = Clock(T0)
    verifier = CdsJwtVerifier(store, registry, JwksFetcher(clock=clock), clock=clock)
    return Setup(store, registry, verifier, clock, keys, server)


@pytest.fixture
def sqlite_store(tmp_path: Path, master_key: MasterKey) -> Iterator[ResourceStore]:
    opened = ResourceStore.open(f"sqlite:///{tmp_path / 'cds.db'}", master_key)
    yield opened
    opened.close()


@pytest.fixture
def setup(sqlite_store: ResourceStore, keys: dict[str, Any], jwks_server: _JwksHttpServer) -> Setup:
    return make_setup(sqlite_store, keys, jwks_server)


@pytest.fixture
def setup_both(store: ResourceStore, keys: dict[str, Any], jwks_server: _JwksHttpServer) -> Setup:
    """On SQLite and on PostgreSQL."""
    return make_setup(store, keys, jwks_server)


# -- accepted calls ------------------------------------------------------------------------------


def test_both_algorithms_from_both_key_sources_are_accepted(setup_both: Setup) -> None:
    s = setup_both
    jku = s.server.url("/jwks.json")
    cases = [
        (ISSUER, "Bearer " + sign(s.keys["rsa"], "rsa-1", claims(ISSUER, tenant="ward-4"))),
        (ISSUER, "Bearer " + sign(s.keys["p384"], "ec-1", claims(ISSUER))),
        (JKU_ISSUER, "Bearer " + sign(s.keys["rsa2"], "jku-rsa", claims(JKU_ISSUER), jku=jku)),
        (JKU_ISSUER, s.jku_ec()),
    ]
    for issuer, header in cases:
        caller = s.verify(header)
        assert caller.client.issuer == issuer and caller.subject == "ehr-client-7"
        assert caller.expires_at == T0 + timedelta(minutes=4)
    assert s.jti_rows() == 4
    assert s.server.hits["/jwks.json"] == 1  # fetched once, then served from the cache


def test_the_caller_carries_the_verified_claims(setup: Setup) -> None:
    caller = setup.verify(setup.rsa(tenant="ward-4", jti="call-1"))
    assert (caller.tenant, caller.jti, caller.client.name) == (
        "ward-4",
        "call-1",
        "main hospital EHR",
    )
    assert caller.client.allows_fhir_server(FHIR_SERVER)
    assert caller.client.allows_fhir_server(FHIR_SERVER + "/")
    assert not caller.client.allows_fhir_server("https://elsewhere.example/fhir/r4")


def test_clock_skew_of_a_minute_is_tolerated(setup: Setup) -> None:
    now = int(T0.timestamp())
    setup.verify(setup.rsa(iat=now + 50, exp=now + 200))  # issued slightly in our future
    setup.verify(setup.rsa(iat=now - 250, exp=now - 50))  # expired slightly in our past
    setup.verify(setup.rsa().replace("Bearer", "bearer", 1))  # the scheme is case-insensitive


def test_without_a_jku_header_the_allow_listed_url_is_the_key_source(setup: Setup) -> None:
    payload = claims(JKU_ISSUER)
    assert setup.verify("Bearer " + sign(setup.keys["p384b"], "jku-ec", payload)).jti
    assert setup.server.hits["/jwks.json"] == 1


# -- refused calls -------------------------------------------------------------------------------

_NOW = int(T0.timestamp())


def _hs256_with_public_key(s: Setup) -> str:
    """The algorithm-confusion attack: HMAC keyed with the EHR's public key, which is public."""
    pem = (
        s.keys["rsa"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims(ISSUER)).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"Bearer {signing_input}.{b64(signature)}"


def _tampered(s: Setup) -> str:
    header, payload, signature = s.rsa().removeprefix("Bearer ").split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"Bearer {header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def _payload_swapped(s: Setup) -> str:
    """A valid signature over one payload, sent with another (a longer-lived one)."""
    header, _, signature = s.rsa().removeprefix("Bearer ").split(".")
    forged = b64(json.dumps(claims(ISSUER, exp=_NOW + 3600)).encode())
    return f"Bearer {header}.{forged}.{signature}"


def _disabled(s: Setup) -> str:
    s.registry.disable(ISSUER)
    return s.rsa()


NEGATIVE_CASES: list[tuple[str, Callable[[Setup], str | None], str]] = [
    ("no header", lambda s: None, "no Authorization header"),
    ("empty header", lambda s: "  ", "no Authorization header"),
    ("basic scheme", lambda s: "Basic ZWhyOnNlY3JldA==", "Bearer scheme"),
    ("no token", lambda s: "Bearer ", "no token"),
    ("not a JWT", lambda s: "Bearer not-a-jwt", "not a JWT"),
    ("two segments", lambda s: "Bearer " + ".".join(s.rsa().split(".")[:2]), "not a JWT"),
    ("oversized", lambda s: "Bearer " + "a" * 9000, "8 KiB"),
    ("oversized JWT", lambda s: s.rsa(pad="x" * 8200), "8 KiB"),
    (
        "alg none",
        lambda s: "Bearer " + unsigned({"alg": "none", "kid": "rsa-1"}, claims(ISSUER)),
        "alg none",
    ),
    ("alg missing", lambda s: "Bearer " + unsigned({"kid": "rsa-1"}, claims(ISSUER)), "lacks alg"),
    ("HS256 keyed with the public key", _hs256_with_public_key, "HMAC"),
    (
        "HS384",
        lambda s: "Bearer " + sign(b"k" * 48, "rsa-1", claims(ISSUER), alg="HS384"),
        "HMAC",
    ),
    (
        "RS256",
        lambda s: "Bearer " + sign(s.keys["rsa"], "rsa-1", claims(ISSUER), alg="RS256"),
        "RS384 or ES384",
    ),
    (
        "alg of another key type",
        lambda s: "Bearer " + unsigned({"alg": "ES384", "kid": "rsa-1"}, claims(ISSUER), b"x" * 96),
        "cannot sign with ES384",
    ),
    (
        "typ not JWT",
        lambda s: "Bearer " + sign(s.keys["rsa"], "rsa-1", claims(ISSUER), typ="at+jwt"),
        "typ",
    ),
    ("expired", lambda s: s.rsa(iat=_NOW - 360, exp=_NOW - 61), "expired"),
    ("lives too long", lambda s: s.rsa(iat=_NOW, exp=_NOW + 301), "5 minutes"),
    ("issued in the future", lambda s: s.rsa(iat=_NOW + 61, exp=_NOW + 120), "future (iat)"),
    ("not yet valid", lambda s: s.rsa(nbf=_NOW + 120), "nbf"),
    ("exp not a date", lambda s: s.rsa(exp="soon"), "exp must be a NumericDate"),
    ("iat not a date", lambda s: s.rsa(iat=True), "iat must be a NumericDate"),
    ("wrong aud", lambda s: s.rsa(aud="https://careloop.example/cds-services/other"), "aud"),
    ("aud with a trailing slash", lambda s: s.rsa(aud=AUDIENCE + "/"), "aud"),
    ("aud of the host only", lambda s: s.rsa(aud="https://careloop.example"), "aud"),
    (
        "unknown issuer",
        lambda s: "Bearer " + sign(s.keys["rsa"], "rsa-1", claims("https://rogue.example")),
        "not registered",
    ),
    ("disabled issuer", _disabled, "disabled"),
    (
        "jku not on the allow-list",
        lambda s: (
            "Bearer "
            + sign(
                s.keys["attacker"], "jku-rsa", claims(JKU_ISSUER), jku=s.server.url("/other.json")
            )
        ),
        "allow-list",
    ),
    (
        "jku allow-listed for another issuer",
        lambda s: (
            "Bearer "
            + sign(s.keys["rsa2"], "jku-rsa", claims(ISSUER), jku=s.server.url("/jwks.json"))
        ),
        "allow-list",
    ),
    (
        "jku not a string",
        lambda s: "Bearer " + sign(s.keys["rsa"], "rsa-1", claims(ISSUER), jku=7),
        "jku",
    ),
    ("unknown kid", lambda s: "Bearer " + sign(s.keys["rsa"], "rsa-9", claims(ISSUER)), "kid"),
    (
        "unknown kid at the jku",
        lambda s: (
            "Bearer "
            + sign(s.keys["rsa2"], "jku-9", claims(JKU_ISSUER), jku=s.server.url("/jwks.json"))
        ),
        "kid",
    ),
    ("tampered signature", _tampered, "signature"),
    ("payload swapped", _payload_swapped, "signature"),
    (
        "signed by another key",
        lambda s: "Bearer " + sign(s.keys["attacker"], "rsa-1", claims(ISSUER)),
        "signature",
    ),
    ("missing kid", lambda s: "Bearer " + sign(s.keys["rsa"], DROP, claims(ISSUER)), "kid"),
    ("missing iss", lambda s: s.rsa(iss=DROP), "lacks the iss claim"),
    ("missing sub", lambda s: s.rsa(sub=DROP), "lacks the sub claim"),
    ("missing aud", lambda s: s.rsa(aud=DROP), "lacks the aud claim"),
    ("missing exp", lambda s: s.rsa(exp=DROP), "lacks the exp claim"),
    ("missing iat", lambda s: s.rsa(iat=DROP), "lacks the iat claim"),
    ("missing jti", lambda s: s.rsa(jti=DROP), "lacks the jti claim"),
    ("over-long jti", lambda s: s.rsa(jti="j" * 300), "jti"),
    ("tenant not a string", lambda s: s.rsa(tenant=["ward-4"]), "tenant"),
]


@pytest.mark.parametrize(
    ("build", "complaint"),
    [case[1:] for case in NEGATIVE_CASES],
    ids=[case[0] for case in NEGATIVE_CASES],
)
def test_faulty_calls_are_refused_with_the_reason(setup: Setup, build, complaint) -> None:
    message = setup.refused(build(setup))
    assert complaint in message
    assert setup.jti_rows() == 0  # a refused token burns no jti
    assert setup.server.hits["/other.json"] == 0  # a jku off the allow-list is never fetched


def test_a_replayed_jwt_is_refused_and_expired_jtis_are_purged(setup_both: Setup) -> None:
    s = setup_both
    first = s.rsa()
    s.verify(first)
    assert "replay" in s.refused(first)
    same_jti_other_issuer = s.jku_ec(
        jti=jwt.decode(first[7:], options={"verify_signature": False})["jti"]
    )
    s.verify(same_jti_other_issuer)  # a jti is unique per issuer, not across issuers
    assert s.jti_rows() == 2

    s.clock.advance(600)  # both tokens are long expired
    s.verify(s.rsa())
    assert s.jti_rows() == 1


def test_a_refused_token_does_not_burn_its_jti(setup: Setup) -> None:
    assert "aud" in setup.refused(setup.rsa(jti="once", aud=AUDIENCE + "/"))
    assert setup.verify(setup.rsa(jti="once")).jti == "once"


def test_the_jti_is_stored_only_as_a_keyed_hash(setup: Setup) -> None:
    setup.verify(setup.rsa(jti="visible-jti-123"))
    with setup.store.engine.connect() as connection:
        stored = connection.execute(select(cds_jwt_ids.c.jti_hash)).scalar_one()
    plain = hashlib.sha256(f"{ISSUER}\x00visible-jti-123".encode()).hexdigest()
    assert len(stored) == 64 and "visible" not in stored and stored != plain


def test_a_disabled_issuer_is_refused_even_with_a_valid_token(setup: Setup) -> None:
    header = setup.rsa()
    setup.registry.disable(ISSUER)
    assert "disabled" in setup.refused(header)


# -- the JWK Set fetcher -------------------------------------------------------------------------


def test_a_rotated_key_is_found_by_one_refresh(setup: Setup) -> None:
    s = setup
    s.verify(s.jku_ec())  # fetched at T0
    s.server.serve_json("/jwks.json", {"keys": [public_jwk(s.keys["rsa"], "jku-new")]})
    s.clock.advance(31)
    url = s.server.url("/jwks.json")
    s.verify("Bearer " + sign(s.keys["rsa"], "jku-new", claims(JKU_ISSUER, s.clock()), jku=url))
    assert s.server.hits["/jwks.json"] == 2


def test_unknown_kids_refresh_at_most_once_per_30_seconds(setup: Setup) -> None:
    s = setup
    url = s.server.url("/jwks.json")

    def unknown_kid() -> str:
        return "Bearer " + sign(s.keys["rsa2"], "jku-x", claims(JKU_ISSUER, s.clock()), jku=url)

    s.verify(s.jku_ec())
    assert s.server.hits["/jwks.json"] == 1
    for _ in range(5):  # a flood within 30 s of the fetch: answered from the cache
        assert "kid" in s.refused(unknown_kid())
    assert s.server.hits["/jwks.json"] == 1
    s.clock.advance(31)
    assert "kid" in s.refused(unknown_kid())
    assert "kid" in s.refused(unknown_kid())
    assert s.server.hits["/jwks.json"] == 2
    s.clock.advance(30)
    assert "kid" in s.refused(unknown_kid())
    assert s.server.hits["/jwks.json"] == 3


def test_the_cache_expires_after_its_ttl(jwks_server: _JwksHttpServer) -> None:
    clock = Clock(T0)
    fetcher = JwksFetcher(ttl=timedelta(minutes=5), clock=clock)
    url = jwks_server.url("/jwks.json")
    first = fetcher.jwks(url)
    clock.advance(299)
    assert fetcher.jwks(url) == first and jwks_server.hits["/jwks.json"] == 1
    clock.advance(2)
    fetcher.jwks(url)
    assert jwks_server.hits["/jwks.json"] == 2
    fetcher.close()


@pytest.mark.parametrize(
    ("path", "complaint"),
    [
        ("/redirect", "redirects are not followed"),
        ("/big", "larger than 64 KiB"),
        ("/private", "private key material"),
        ("/text", "not JSON"),
        ("/missing", "HTTP 404"),
    ],
)
def test_a_bad_jwk_set_is_refused(jwks_server: _JwksHttpServer, path: str, complaint: str) -> None:
    with httpx.Client(follow_redirects=True) as http:  # the fetcher overrides this per request
        fetcher = JwksFetcher(http=http, clock=Clock(T0))
        with pytest.raises(CdsAuthError, match=complaint):
            fetcher.jwks(jwks_server.url(path))
        fetcher.close()
        assert not http.is_closed  # a client passed in stays the caller's to close
    assert jwks_server.hits["/jwks.json"] == 0  # the redirect was not followed


def test_a_failed_fetch_is_not_retried_for_30_seconds(jwks_server: _JwksHttpServer) -> None:
    clock = Clock(T0)
    fetcher = JwksFetcher(clock=clock)
    url = jwks_server.url("/missing")
    for _ in range(3):
        with pytest.raises(CdsAuthError, match="HTTP 404"):
            fetcher.jwks(url, refresh=True)
    assert jwks_server.hits["/missing"] == 1
    clock.advance(30)
    with pytest.raises(CdsAuthError, match="HTTP 404"):
        fetcher.jwks(url)
    assert jwks_server.hits["/missing"] == 2


def test_a_slow_jwk_set_server_times_out(jwks_server: _JwksHttpServer) -> None:
    started = time.monotonic()
    with pytest.raises(CdsAuthError, match="too long"):
        JwksFetcher(clock=Clock(T0)).jwks(jwks_server.url("/slow"))
    assert time.monotonic() - started < 5  # not the 6 s the server takes


def test_an_unreachable_jku_is_refused_without_detail() -> None:
    with pytest.raises(CdsAuthError, match="could not be fetched"):
        JwksFetcher(clock=Clock(T0)).jwks("http://127.0.0.1:9/jwks.json")  # discard port


# -- arbitrary input -----------------------------------------------------------------------------

_json_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from([ISSUER, JKU_ISSUER, AUDIENCE, "RS384", "ES384", "none", "HS256", "rsa-1"]),
)
_segment = st.one_of(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=40
    ),
    st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "jku", "iss", "sub", "aud", "exp", "iat", "jti"]),
        _json_value,
    ).map(lambda d: b64(json.dumps(d).encode())),
)
_headers = st.one_of(
    st.text(max_size=200),
    st.lists(_segment, min_size=1, max_size=4).map(lambda parts: "Bearer " + ".".join(parts)),
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_headers)
def test_arbitrary_headers_raise_nothing_but_cds_auth_error(setup: Setup, header: str) -> None:
    with pytest.raises(CdsAuthError):
        setup.verify(header)


# -- registration --------------------------------------------------------------------------------


def _keys_of(private: Any, **members: str) -> dict[str, Any]:
    return {"keys": [public_jwk(private, "k", **members)]}


REGISTRATION_CASES: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], str]] = [
    ("private RSA key", lambda k: {"jwks": _private_rsa(k)}, "private key material"),
    (
        "private EC key",
        lambda k: {"jwks": {"keys": [{**ECAlgorithm.to_jwk(k["p384"], as_dict=True), "kid": "k"}]}},
        "private key material",
    ),
    (
        "oct key",
        lambda k: {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k"}]}},
        "symmetric",
    ),
    ("P-256 key", lambda k: {"jwks": _keys_of(k["p256"])}, "RS384 or ES384"),
    (
        "RSA key for RS256 only",
        lambda k: {"jwks": _keys_of(k["rsa"], alg="RS256")},
        "RS384 or ES384",
    ),
    ("not a JWK Set", lambda k: {"jwks": ["key"]}, '"keys" list'),
    ("no key source", lambda k: {}, "key source"),
    ("http jku off loopback", lambda k: {"jku_allowlist": ["http://ehr.example/jwks"]}, "https"),
    (
        "http FHIR server off loopback",
        lambda k: {
            "jku_allowlist": ["https://ehr.example/jwks"],
            "fhir_servers": ["http://ehr.example/fhir"],
        },
        "https",
    ),
    ("ftp jku", lambda k: {"jku_allowlist": ["ftp://ehr.example/jwks"]}, "https"),
    ("relative jku", lambda k: {"jku_allowlist": ["/jwks.json"]}, "https"),
    (
        "jku with credentials",
        lambda k: {"jku_allowlist": ["https://u:p@ehr.example/jwks"]},
        "credentials",
    ),
    (
        "jku with a fragment",
        lambda k: {"jku_allowlist": ["https://ehr.example/jwks#x"]},
        "fragment",
    ),
    ("jku with a space", lambda k: {"jku_allowlist": ["https://ehr.example/a b"]}, "spaces"),
    (
        "jku with a bad port",
        lambda k: {"jku_allowlist": ["https://ehr.example:99999/"]},
        "not a valid URL",
    ),
    ("over-long jku", lambda k: {"jku_allowlist": ["https://ehr.example/" + "a" * 1100]}, "1024"),
    (
        "too many jkus",
        lambda k: {"jku_allowlist": [f"https://ehr.example/{i}" for i in range(11)]},
        "at most 10",
    ),
    ("jku list as a string", lambda k: {"jku_allowlist": "https://ehr.example/jwks"}, "list"),
]


@pytest.mark.parametrize(
    ("options", "complaint"),
    [case[1:] for case in REGISTRATION_CASES],
    ids=[case[0] for case in REGISTRATION_CASES],
)
def test_registration_refuses_bad_keys_and_urls(sqlite_store, keys, options, complaint) -> None:
    registry = CdsClientRegistry(sqlite_store)
    with pytest.raises(ValueError, match=complaint) as caught:
        registry.register(ISSUER, "EHR", **options(keys))
    assert RSAAlgorithm.to_jwk(keys["rsa"], as_dict=True)["d"] not in str(caught.value)
    assert registry.list() == []


@pytest.mark.parametrize(
    ("issuer", "name", "complaint"),
    [
        ("i" * 256, "EHR", "issuer"),
        ("", "EHR", "issuer"),
        ("https://ehr.example/a b", "EHR", "issuer"),
        (ISSUER, "", "name"),
        (ISSUER, "n" * 129, "name"),
    ],
)
def test_registration_refuses_bad_issuers_and_names(sqlite_store, issuer, name, complaint) -> None:
    with pytest.raises(ValueError, match=complaint):
        CdsClientRegistry(sqlite_store).register(
            issuer, name, jku_allowlist=["https://e.example/k"]
        )


def test_registry_round_trip(store: ResourceStore, keys: dict[str, Any]) -> None:
    registry = CdsClientRegistry(store)
    jwks = {"keys": [public_jwk(keys["p384"], "ec-1", use="sig", alg="ES384")]}
    made = registry.register(
        ISSUER,
        "main hospital EHR",
        jku_allowlist=[
            "https://ehr.example/jwks",
            "http://[::1]:8000/jwks",
            "https://ehr.example/jwks",
        ],
        jwks=jwks,
        fhir_servers=[FHIR_SERVER + "/", FHIR_SERVER],
    )
    assert registry.get(ISSUER) == made
    assert made.jku_allowlist == ("https://ehr.example/jwks", "http://[::1]:8000/jwks")
    assert made.fhir_servers == (FHIR_SERVER,)
    assert made.jwks == {"keys": [{**public_jwk(keys["p384"], "ec-1"), "alg": "ES384"}]}
    registry.register(JKU_ISSUER, "partner", jku_allowlist=["http://localhost:8080/jwks"])
    assert [c.issuer for c in registry.list()] == [ISSUER, JKU_ISSUER]

    with pytest.raises(ValueError, match="already registered"):
        registry.register(ISSUER, "again", jwks=jwks)
    assert registry.get(ISSUER).name == "main hospital EHR"

    registry.disable(ISSUER)
    assert registry.get(ISSUER).disabled and not registry.get(JKU_ISSUER).disabled
    with pytest.raises(ValueError, match="no CDS client"):
        registry.disable("https://nobody.example")
    assert registry.get("https://nobody.example") is None


# -- the command line ----------------------------------------------------------------------------


def test_cli_registers_lists_and_disables(store, database_url, master_key, keys, tmp_path) -> None:
    env = {
        "CARELOOP_DATABASE_URL": database_url,
        "CARELOOP_MASTER_KEY": base64.b64encode(master_key.secret).decode(),
        "CARELOOP_MASTER_KEY_FILE": None,
        "CARELOOP_CONFIG": None,
        "COLUMNS": "250",
    }
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [public_jwk(keys["p384"], "ehr-key-1")]}))
    runner = CliRunner()
    register = ["register", "--issuer", ISSUER, "--name", "main [bold]EHR"]
    result = runner.invoke(
        cds_clients_group,
        [
            *register,
            "--jwks",
            str(jwks_file),
            "--jku",
            "https://ehr.example/jwks",
            "--fhir-server",
            FHIR_SERVER,
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    client = CdsClientRegistry(store).get(ISSUER)
    assert client is not None and client.fhir_servers == (FHIR_SERVER,)

    listed = runner.invoke(cds_clients_group, ["list"], env=env)
    assert listed.exit_code == 0
    assert all(text in listed.output for text in (ISSUER, "main [bold]EHR", "ehr-key-1", "active"))

    assert runner.invoke(cds_clients_group, ["disable", ISSUER], env=env).exit_code == 0
    assert CdsClientRegistry(store).get(ISSUER).disabled
    unknown = runner.invoke(cds_clients_group, ["disable", "https://nobody.example"], env=env)
    assert unknown.exit_code == 2 and "no CDS client" in unknown.output

    no_keys = runner.invoke(
        cds_clients_group, ["register", "--issuer", "x", "--name", "x"], env=env
    )
    assert no_keys.exit_code == 2 and "key source" in no_keys.output
    private = tmp_path / "private.json"
    private.write_text(json.dumps(_private_rsa(keys)))
    refused = runner.invoke(
        cds_clients_group,
        ["register", "--issuer", "y", "--name", "y", "--jwks", str(private)],
        env=env,
    )
    assert refused.exit_code == 2 and "private key material" in refused.output
    assert RSAAlgorithm.to_jwk(keys["rsa"], as_dict=True)["d"] not in refused.output
    with store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(cds_clients)).scalar() == 1
