"""Who is calling a CDS service: the EHR's signed JWT (CDS Hooks 2.0, "Trusting CDS Clients").

Every call from an EHR, discovery included, carries `Authorization: Bearer <JWT>`. The JWT is
signed with the EHR's private key; careloop checks it against public keys it trusts for that
EHR, and only those:

- the JWK Set registered for the issuer, or
- a JWK Set fetched from one of the issuer's allow-listed `jku` URLs. A `jku` in the JWT header
  must be *exactly* one of them: otherwise anyone could point careloop at keys of their own.

What is checked, in order, and why:
- The header is at most 8 KiB, so nothing large is ever parsed.
- `alg` must be RS384 or ES384 (the algorithms CDS Hooks names) before anything else; PyJWT is
  then told to accept exactly that algorithm with the key `kid` names. So `none` is refused, and
  so is the confusion attack of an HS256 token "signed" with the EHR's public key as a secret.
- The unverified token is read only to pick the issuer and the key; every decision after that
  uses the verified claims.
- `aud` must be the exact URL of the endpoint called (no trailing-slash leniency: a token for one
  service must not open another).
- `exp` in the future, at most 5 minutes after `iat`, `iat` not in the future, with 60 seconds of
  clock skew either way.
- `jti` is remembered, as a keyed hash, until the token expires: a replayed token is refused. It
  is remembered only after everything else checked out, so a bad token cannot burn a jti.

Every refusal is a `CdsAuthError` whose message says what is wrong and may be returned to the
caller: it never quotes the token, its claims or a key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from careloop.identity.clients import algorithms_for, check_name, public_jwks
from careloop.identity.signed_jwt import Wording, numeric_date, verified_claims
from careloop.store.repository import ResourceStore
from careloop.store.schema import cds_clients, cds_jwt_ids

ACCEPTED_ALGORITHMS = frozenset({"RS384", "ES384"})
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti"]
JWT_WORDING = Wording(
    noun="the JWT",
    audience="the URL of the CDS service called",
    garbled="the bearer token is not a valid signed JWT",
)
MAX_TOKEN_LENGTH = 8192
MAX_LIFETIME = timedelta(minutes=5)  # exp - iat
CLOCK_SKEW = timedelta(seconds=60)
MAX_ISSUER_LENGTH = 255  # the cds_clients.issuer column
MAX_CLAIM_LENGTH = 255  # sub, tenant
MAX_JTI_LENGTH = 256
MAX_KID_LENGTH = 128
MAX_URL_LENGTH = 1024
MAX_URLS = 10
MAX_URL_LIST_CHARS = 4096  # the jku_allowlist and fhir_servers columns
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

FETCH_TIMEOUT_SECONDS = 3.0
MAX_JWKS_BYTES = 64 * 1024
DEFAULT_JWKS_TTL = timedelta(minutes=5)
REFRESH_INTERVAL = timedelta(seconds=30)  # at most one unplanned fetch per URL this often

_ISSUER = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
_JTI_KEY_NAME = "cds_jti"


class CdsAuthError(Exception):
    """A CDS client's call is refused. `str(exc)` says why and is safe to return to the caller."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- registered clients --------------------------------------------------------------------------


@dataclass(frozen=True)
class CdsClient:
    """An EHR registered to call careloop's CDS services."""

    issuer: str
    name: str
    jku_allowlist: tuple[str, ...]
    jwks: dict[str, Any] | None
    fhir_servers: tuple[str, ...]
    disabled: bool
    created_at: datetime

    def allows_fhir_server(self, url: str) -> bool:
        """Whether `url` is one of the FHIR servers registered for this EHR (a trailing "/" aside).

        A hook request names the fhirServer careloop should read from; only the EHR's own
        servers may be named, or a forged request could make careloop fetch elsewhere.
        """
        wanted = _without_trailing_slash(url)
        return any(wanted == server for server in self.fhir_servers)


class CdsClientRegistry:
    """The cds_clients table: the EHRs careloop trusts, with where their keys come from."""

    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    def register(
        self,
        issuer: str,
        name: str,
        *,
        jku_allowlist: Sequence[str] = (),
        jwks: object | None = None,
        fhir_servers: Sequence[str] = (),
    ) -> CdsClient:
        """Register an EHR; ValueError says what is wrong and nothing is written."""
        _check_issuer(issuer)
        check_name(name)
        if not jku_allowlist and jwks is None:
            raise ValueError("a CDS client needs a key source: a jku URL, a JWK Set, or both")
        jkus = _check_urls(jku_allowlist, "jku")
        servers = tuple(
            dict.fromkeys(_without_trailing_slash(u) for u in _check_urls(fhir_servers, "FHIR"))
        )
        keys = None if jwks is None else _cds_jwks(jwks)
        client = CdsClient(issuer, name, jkus, keys, servers, False, _utcnow())
        try:
            with self.store.engine.begin() as connection:
                connection.execute(insert(cds_clients).values(**_row(client)))
        except IntegrityError:
            raise ValueError("a CDS client with that issuer is already registered") from None
        return client

    def get(self, issuer: str) -> CdsClient | None:
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(cds_clients).where(cds_clients.c.issuer == issuer)
            ).first()
        return None if row is None else _client(row)

    def list(self) -> list[CdsClient]:
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                select(cds_clients).order_by(cds_clients.c.created_at, cds_clients.c.issuer)
            )
            return [_client(row) for row in rows]

    def disable(self, issuer: str) -> None:
        """Refuse every further call from this issuer (its JWTs are checked against the flag)."""
        with self.store.engine.begin() as connection:
            result = connection.execute(
                update(cds_clients).where(cds_clients.c.issuer == issuer).values(disabled=True)
            )
        if result.rowcount == 0:
            raise ValueError("no CDS client with that issuer")


def _check_issuer(issuer: str) -> None:
    if not isinstance(issuer, str) or not _ISSUER.fullmatch(issuer):
        raise ValueError(
            f"an issuer is 1 to {MAX_ISSUER_LENGTH} printable ASCII characters without spaces"
        )


def _check_urls(urls: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(urls, str):  # a lone string would otherwise be read character by character
        raise ValueError(f"the {what} URLs must be given as a list")
    checked = tuple(dict.fromkeys(_check_url(url, what) for url in urls))
    if len(checked) > MAX_URLS:
        raise ValueError(f"at most {MAX_URLS} {what} URLs can be registered")
    if len(json.dumps(list(checked))) > MAX_URL_LIST_CHARS:
        raise ValueError(f"the {what} URLs add up to more than {MAX_URL_LIST_CHARS} characters")
    return checked


def _check_url(url: object, what: str) -> str:
    """An https URL, or http on a loopback host (tests, the demo); ValueError otherwise."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_LENGTH:
        raise ValueError(f"a {what} URL is 1 to {MAX_URL_LENGTH} characters")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise ValueError(f"a {what} URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - parsing the port is what validates it
    except ValueError:
        raise ValueError(f"a {what} URL is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"a {what} URL must be an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"a {what} URL must not carry credentials")
    if parts.fragment:
        raise ValueError(f"a {what} URL must not have a fragment")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError(
            f"a {what} URL must use https (plain http only on 127.0.0.1, localhost or ::1)"
        )
    return url


def _is_loopback(host: str) -> bool:
    """urlsplit lower-cases the host and drops the brackets of [::1]."""
    return host in LOOPBACK_HOSTS


def _cds_jwks(jwks: object) -> dict[str, Any]:
    """Public keys only (see careloop.identity.clients), each able to sign RS384 or ES384:
    a key careloop would never accept a signature from is a registration mistake."""
    keys = public_jwks(jwks)
    for index, key in enumerate(keys["keys"], start=1):
        if not ACCEPTED_ALGORITHMS & set(algorithms_for(key)):
            raise ValueError(
                f"key {index} of the JWK Set cannot sign with RS384 or ES384, "
                "the only algorithms careloop accepts from CDS clients"
            )
    return keys


def _without_trailing_slash(url: str) -> str:
    return url.removesuffix("/")


def _row(client: CdsClient) -> dict[str, Any]:
    return {
        "issuer": client.issuer,
        "name": client.name,
        "jku_allowlist": json.dumps(list(client.jku_allowlist)),
        "jwks": None if client.jwks is None else json.dumps(client.jwks, sort_keys=True),
        "fhir_servers": json.dumps(list(client.fhir_servers)),
        "disabled": client.disabled,
        "created_at": client.created_at,
    }


def _client(row) -> CdsClient:  # type: ignore[no-untyped-def]
    return CdsClient(
        issuer=row.issuer,
        name=row.name,
        jku_allowlist=tuple(json.loads(row.jku_allowlist)),
        jwks=None if row.jwks is None else json.loads(row.jwks),
        fhir_servers=tuple(json.loads(row.fhir_servers)),
        disabled=bool(row.disabled),
        created_at=row.created_at,
    )


# -- JWK Sets fetched from allow-listed URLs -----------------------------------------------------


@dataclass
class _Fetched:
    jwks: dict[str, Any] | None  # the last good copy
    fetched_at: datetime | None  # when that copy was fetched
    attempted_at: datetime  # the last fetch, good or not
    error: str | None  # why the last fetch failed, if it did


class JwksFetcher:
    """Fetches allow-listed JWK Sets with httpx: timeout 3 s, no redirects, at most 64 KiB,
    JSON with public keys only; cached for `ttl`; a refresh for an unknown kid at most once per
    30 s per URL (so a flood of bad kids cannot make careloop hammer the EHR).

    A failed fetch is remembered for the same 30 s and answered from memory, for the same
    reason. Fetches of one URL are serialized (one lock per URL), so a burst of calls after
    the cache expires makes one request, and a slow EHR holds up only its own callers.
    """

    def __init__(
        self,
        http: httpx.Client | None = None,
        ttl: timedelta = DEFAULT_JWKS_TTL,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._owns_http = http is None
        if http is None:
            http = httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False)
        self._http = http
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, _Fetched] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def jwks(self, url: str, *, refresh: bool = False) -> dict[str, Any]:
        """The public JWK Set at `url`; CdsAuthError if it cannot be had.

        `refresh` asks for a new copy (a kid was not found: the EHR may have rotated its keys);
        it is honoured only if the last fetch of `url` is at least 30 s old.
        """
        with self._lock_for(url):
            now = self._clock()
            entry = self._cache.get(url)
            if entry is not None:
                recent = now - entry.attempted_at < REFRESH_INTERVAL
                if recent and entry.error is not None:
                    raise CdsAuthError(entry.error)
                fresh = entry.fetched_at is not None and now - entry.fetched_at < self._ttl
                if entry.jwks is not None and fresh and (recent or not refresh):
                    return entry.jwks
            try:
                jwks = self._fetch(url)
            except CdsAuthError as exc:
                kept = entry.jwks if entry else None
                fetched_at = entry.fetched_at if entry else None
                self._cache[url] = _Fetched(kept, fetched_at, now, str(exc))
                raise
            self._cache[url] = _Fetched(jwks, now, now, None)
            return jwks

    def close(self) -> None:
        """Close the HTTP client if this fetcher made it (a client passed in is the caller's)."""
        if self._owns_http:
            self._http.close()

    def _lock_for(self, url: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(url, threading.Lock())

    def _fetch(self, url: str) -> dict[str, Any]:
        body = self._download(url)
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise CdsAuthError("the JWK Set at the jku URL is not JSON") from None
        try:
            return public_jwks(document)
        except ValueError as exc:
            raise CdsAuthError(f"the JWK Set at the jku URL is not acceptable: {exc}") from None

    def _download(self, url: str) -> bytes:
        """The response body, read in chunks and abandoned past 64 KiB or 3 s in all."""
        deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
        try:
            with self._http.stream(
                "GET",
                url,
                headers={"Accept": "application/jwk-set+json, application/json"},
                timeout=FETCH_TIMEOUT_SECONDS,
                follow_redirects=False,
            ) as response:
                if response.status_code != 200:
                    raise CdsAuthError(_status_problem(response))
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise CdsAuthError("the JWK Set at the jku URL is larger than 64 KiB")
                    if time.monotonic() > deadline:
                        raise CdsAuthError("the JWK Set at the jku URL took too long to fetch")
                return bytes(body)
        except httpx.TimeoutException:
            raise CdsAuthError("the JWK Set at the jku URL took too long to fetch") from None
        except httpx.HTTPError as exc:
            raise CdsAuthError(
                f"the JWK Set at the jku URL could not be fetched ({type(exc).__name__})"
            ) from None


def _status_problem(response: httpx.Response) -> str:
    problem = f"the JWK Set at the jku URL could not be fetched: HTTP {response.status_code}"
    return f"{problem} (redirects are not followed)" if response.is_redirect else problem


# -- verifying a call ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CdsCaller:
    """Who made a CDS Hooks call, established from a verified JWT."""

    client: CdsClient
    subject: str  # the `sub` claim: the client id the EHR uses
    jti: str
    tenant: str | None
    expires_at: datetime


@dataclass(frozen=True)
class _Routing:
    """What is read from the unverified token, only to choose the client and key."""

    alg: str
    kid: str
    jku: str | None
    issuer: str


class CdsJwtVerifier:
    """Checks the bearer JWT of each CDS Hooks call (see the module docstring for what)."""

    def __init__(
        self,
        store: ResourceStore,
        registry: CdsClientRegistry,
        fetcher: JwksFetcher | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.registry = registry
        self.fetcher = fetcher if fetcher is not None else JwksFetcher(clock=clock)
        self._clock = clock
        # jtis are stored only as keyed hashes: the table then says nothing about the tokens
        self._jti_key = store.service_key(_JTI_KEY_NAME)

    def verify(self, authorization_header: str | None, audience: str) -> CdsCaller:
        """The caller behind an Authorization header value ("Bearer <jwt>") for a call to the
        endpoint at `audience` (its absolute URL); CdsAuthError if the call is refused."""
        token = _bearer_token(authorization_header)
        routing = _unverified_routing(token)
        client = self.registry.get(routing.issuer)
        if client is None:
            raise CdsAuthError("the JWT's issuer (iss) is not registered with careloop")
        if client.disabled:
            raise CdsAuthError("the JWT's issuer (iss) has been disabled")
        jwk = self._key(client, routing)
        if routing.alg not in algorithms_for(jwk):
            raise CdsAuthError(f"the key named by kid cannot sign with {routing.alg}")
        claims = _verified_claims(token, jwk, routing.alg, audience)
        now = self._clock()
        expires_at = _check_times(claims, now)
        caller = CdsCaller(
            client=client,
            subject=_text_claim(claims, "sub", MAX_CLAIM_LENGTH),
            jti=_text_claim(claims, "jti", MAX_JTI_LENGTH),
            tenant=_tenant(claims),
            expires_at=expires_at,
        )
        self._remember_jti(caller, now)
        return caller

    def _key(self, client: CdsClient, routing: _Routing) -> dict[str, Any]:
        """The JWK the header's kid names, from the only sources trusted for this issuer."""
        if routing.jku is not None:
            if routing.jku not in client.jku_allowlist:
                raise CdsAuthError("the JWT's jku is not on the issuer's allow-list")
            return self._key_at(routing.jku, routing.kid)
        if client.jwks is not None:
            found = _find_key(client.jwks, routing.kid)
            if found is None:
                raise CdsAuthError("no key registered for the issuer has the JWT's kid")
            return found
        # no jku in the header and no registered set: the allow-listed URLs are the key source
        for url in client.jku_allowlist:
            found = _find_key(self.fetcher.jwks(url), routing.kid)
            if found is not None:
                return found
        for url in client.jku_allowlist:
            found = _find_key(self.fetcher.jwks(url, refresh=True), routing.kid)
            if found is not None:
                return found
        raise CdsAuthError("no key published for the issuer has the JWT's kid")

    def _key_at(self, url: str, kid: str) -> dict[str, Any]:
        found = _find_key(self.fetcher.jwks(url), kid)
        if found is None:  # the EHR may have rotated its keys since the copy was fetched
            found = _find_key(self.fetcher.jwks(url, refresh=True), kid)
        if found is None:
            raise CdsAuthError("no key in the JWK Set at the jku has the JWT's kid")
        return found

    def _remember_jti(self, caller: CdsCaller, now: datetime) -> None:
        """Record the jti until the token can no longer be accepted, and prune expired ones.

        The primary key makes a concurrent replay fail here too, whichever call comes second.
        """
        issuer = caller.client.issuer
        message = f"{issuer}\x00{caller.jti}".encode()
        jti_hash = hmac.new(self._jti_key, message, hashlib.sha256).hexdigest()
        try:
            with self.store.engine.begin() as connection:
                connection.execute(delete(cds_jwt_ids).where(cds_jwt_ids.c.expires_at < now))
                connection.execute(
                    insert(cds_jwt_ids).values(
                        jti_hash=jti_hash,
                        issuer=issuer,
                        expires_at=caller.expires_at + CLOCK_SKEW,
                    )
                )
        except IntegrityError:
            raise CdsAuthError("this JWT was already used (jti replay)") from None


def _bearer_token(header: str | None) -> str:
    if header is None or not isinstance(header, str) or not header.strip():
        raise CdsAuthError("the call has no Authorization header: send 'Bearer <JWT>'")
    if len(header) > MAX_TOKEN_LENGTH + 64:  # checked before splitting, let alone parsing
        raise CdsAuthError("the bearer token is longer than 8 KiB")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise CdsAuthError("the Authorization header must use the Bearer scheme")
    token = token.strip()
    if not token:
        raise CdsAuthError("the Authorization header has no token after 'Bearer'")
    if len(token) > MAX_TOKEN_LENGTH:
        raise CdsAuthError("the bearer token is longer than 8 KiB")
    return token


def _unverified_routing(token: str) -> _Routing:
    """alg, kid and jku from the header and iss from the body, read before any verification
    and used only to pick the client and key that will verify the token."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        raise CdsAuthError("the bearer token is not a JWT") from None
    alg = header.get("alg")
    if alg is None:
        raise CdsAuthError("the JWT header lacks alg: sign with RS384 or ES384")
    if alg == "none":
        raise CdsAuthError("unsigned JWTs (alg none) are refused: sign with RS384 or ES384")
    if isinstance(alg, str) and alg.startswith("HS"):
        raise CdsAuthError("HMAC-signed JWTs (alg HS*) are refused: sign with RS384 or ES384")
    if alg not in ACCEPTED_ALGORITHMS:
        raise CdsAuthError("the JWT's alg must be RS384 or ES384")
    if "typ" in header and (not isinstance(header["typ"], str) or header["typ"].upper() != "JWT"):
        raise CdsAuthError('the JWT header\'s typ must be "JWT"')
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise CdsAuthError("the JWT header lacks the kid of the signing key")
    jku = header.get("jku")
    if jku is not None and not isinstance(jku, str):
        raise CdsAuthError("the JWT header's jku must be a URL")
    issuer = claims.get("iss")
    if issuer is None:
        raise CdsAuthError("the JWT lacks the iss claim")
    if not isinstance(issuer, str) or not 0 < len(issuer) <= MAX_ISSUER_LENGTH:
        raise CdsAuthError("the JWT's iss must be the issuer registered with careloop")
    return _Routing(alg=alg, kid=kid, jku=jku, issuer=issuer)


def _find_key(jwks: dict[str, Any], kid: str) -> dict[str, Any] | None:
    return next((key for key in jwks["keys"] if key["kid"] == kid), None)


def _verified_claims(token: str, jwk: dict[str, Any], alg: str, audience: str) -> dict[str, Any]:
    return verified_claims(
        token,
        jwk,
        alg,
        audience=audience,
        required=REQUIRED_CLAIMS,
        wording=JWT_WORDING,
        error=CdsAuthError,
    )


def _check_times(claims: dict[str, Any], now: datetime) -> datetime:
    """Check exp, iat (and nbf, if given) against `now`; the time the token expires."""
    moment = now.timestamp()
    skew = CLOCK_SKEW.total_seconds()
    exp = _number(claims["exp"], "exp")
    iat = _number(claims["iat"], "iat")
    if exp <= moment - skew:
        raise CdsAuthError("the JWT has expired (exp)")
    if iat > moment + skew:
        raise CdsAuthError("the JWT was issued in the future (iat)")
    if exp - iat > MAX_LIFETIME.total_seconds():
        raise CdsAuthError("the JWT's exp is more than 5 minutes after its iat")
    if "nbf" in claims and _number(claims["nbf"], "nbf") > moment + skew:
        raise CdsAuthError("the JWT is not valid yet (nbf)")
    return now + timedelta(seconds=exp - moment)


def _number(value: object, claim: str) -> float:
    number = numeric_date(value)
    if number is None:
        raise CdsAuthError(f"the JWT's {claim} must be a NumericDate")
    return number


def _text_claim(claims: dict[str, Any], name: str, limit: int) -> str:
    value = claims[name]
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise CdsAuthError(f"the JWT's {name} must be a string of 1 to {limit} characters")
    return value


def _tenant(claims: dict[str, Any]) -> str | None:
    if claims.get("tenant") is None:
        return None
    return _text_claim(claims, "tenant", MAX_CLAIM_LENGTH)
