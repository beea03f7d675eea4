"""The token endpoint of SMART Backend Services, and the bearer tokens it issues.

A client proves who it is with a JWT it signed with its private key (RFC 7523 client
authentication; SMART Backend Services "asymmetric client authentication"):

    grant_type=client_credentials
    client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
    client_assertion=<JWT: iss = sub = client_id, aud = token URL, exp <= 5 min, unique jti>
    scope=system/Observation.rs ...

What is checked, and why it is safe:
- The header's `alg` must be one of RS384, ES384, RS256, ES256 before anything else happens, and
  PyJWT is then told to accept exactly that algorithm with the key the header's `kid` names. So
  `none` is refused, and so is the classic confusion attack (an HS256 token "signed" with the
  client's public key as an HMAC secret).
- The unverified token is read only to find the client (`iss`) and key (`kid`); every decision
  after that uses claims from the verified token.
- Times are checked here, against `now`, with 30 seconds of allowed clock skew: an expired
  assertion, one that claims to live longer than the maximum, or one not yet valid is refused.
- A `jti` is remembered (hashed) until the assertion expires, so an intercepted assertion cannot
  buy a second token. Remembering and issuing happen in one transaction.
- Scopes: every requested scope must be covered by one registered for the client; asking for
  anything more is an `invalid_scope` error rather than a silently smaller grant.

Errors follow RFC 6749 §5.2: client authentication problems are `invalid_client` (as SMART
requires), a bad grant type `unsupported_grant_type`, scope problems `invalid_scope`. The bearer
token itself is opaque (`secrets.token_urlsafe(32)`) and stored only as its SHA-256 digest.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from careloop.access.principal import Principal
from careloop.access.roles import Role
from careloop.identity import (
    INVALID_CLIENT,
    INVALID_REQUEST,
    INVALID_SCOPE,
    INVALID_TOKEN,
    UNSUPPORTED_GRANT_TYPE,
    AuthenticationError,
)
from careloop.identity.clients import SIGNING_ALGORITHMS, ApiClient, ClientRegistry, algorithms_for
from careloop.identity.scopes import ScopeSet, parse_scope
from careloop.identity.signed_jwt import Wording, numeric_date, verified_claims
from careloop.store.repository import ResourceStore
from careloop.store.schema import access_tokens, api_clients, used_assertions

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW = timedelta(seconds=30)
MAX_ASSERTION_LENGTH = 8192  # an RS384 assertion with a 4096-bit key is under 1,500 characters
MAX_SCOPE_LENGTH = 2048
MAX_JTI_LENGTH = 256
MAX_TOKEN_LENGTH = 128
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "jti"]
ASSERTION_WORDING = Wording(
    noun="the client assertion",
    audience="this token endpoint",
    garbled="the client assertion is not a valid signed JWT",
)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str = field(repr=False)
    expires_in: int
    scope: str
    token_type: str = "bearer"

    def as_json(self) -> dict[str, Any]:
        """The body of the token response (RFC 6749 §5.1)."""
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "scope": self.scope,
        }


@dataclass(frozen=True)
class _Assertion:
    client: ApiClient
    jti: str
    expires_at: datetime


class TokenService:
    def __init__(
        self,
        store: ResourceStore,
        registry: ClientRegistry,
        token_url: str,
        token_lifetime: timedelta = timedelta(minutes=5),
        max_assertion_lifetime: timedelta = timedelta(minutes=5),
    ) -> None:
        self.store = store
        self.registry = registry
        self.token_url = token_url
        self.token_lifetime = token_lifetime
        self.max_assertion_lifetime = max_assertion_lifetime

    # -- the token request -------------------------------------------------------------------

    def issue(self, form: Mapping[str, str], *, now: datetime | None = None) -> IssuedToken:
        """Answer a token request (the form fields of the POST); AuthenticationError if refused."""
        moment = now or datetime.now(UTC)
        _check_grant(form)
        assertion = self._verify_assertion(form.get("client_assertion"), moment)
        granted = _granted_scopes(assertion.client, form.get("scope"))
        token = secrets.token_urlsafe(32)
        self._record(assertion, token, granted, moment)
        return IssuedToken(token, int(self.token_lifetime.total_seconds()), " ".join(granted))

    def _verify_assertion(self, assertion: str | None, moment: datetime) -> _Assertion:
        if not isinstance(assertion, str) or not assertion:
            raise _client_error("client_assertion is required")
        if len(assertion) > MAX_ASSERTION_LENGTH:
            raise _client_error("client_assertion is too long")
        alg, kid, client_id = _unverified_routing(assertion)
        client = self.registry.get(client_id)
        if client is None or client.disabled:
            raise _client_error("unknown or disabled client")
        jwk = client.key(kid)
        if jwk is None:
            raise _client_error("no key registered for this client has the assertion's kid")
        if alg not in algorithms_for(jwk):
            raise _client_error("the key named by kid cannot sign with the assertion's alg")
        claims = self._verified_claims(assertion, jwk, alg)
        if claims["iss"] != client.client_id or claims["sub"] != client.client_id:
            raise _client_error("the client assertion's iss and sub must both be the client_id")
        expires_at = self._check_times(claims, moment)
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
            raise _client_error(
                f"the client assertion's jti must be 1 to {MAX_JTI_LENGTH} characters"
            )
        return _Assertion(client, jti, expires_at)

    def _verified_claims(self, assertion: str, jwk: dict[str, Any], alg: str) -> dict[str, Any]:
        return verified_claims(
            assertion,
            jwk,
            alg,
            audience=self.token_url,
            required=REQUIRED_CLAIMS,
            wording=ASSERTION_WORDING,
            error=_client_error,
        )

    def _check_times(self, claims: dict[str, Any], moment: datetime) -> datetime:
        """Check exp, nbf and iat against `moment`; the time the assertion expires."""
        now = moment.timestamp()
        skew = CLOCK_SKEW.total_seconds()
        exp = _number(claims["exp"], "exp")
        if exp <= now - skew:
            raise _client_error("the client assertion has expired")
        if exp > now + self.max_assertion_lifetime.total_seconds() + skew:
            minutes = int(self.max_assertion_lifetime.total_seconds() // 60)
            raise _client_error(f"the client assertion's exp is more than {minutes} minutes ahead")
        if "nbf" in claims and _number(claims["nbf"], "nbf") > now + skew:
            raise _client_error("the client assertion is not valid yet (nbf)")
        if "iat" in claims and _number(claims["iat"], "iat") > now + skew:
            raise _client_error("the client assertion was issued in the future (iat)")
        return moment + timedelta(seconds=exp - now)

    def _record(
        self, assertion: _Assertion, token: str, granted: list[str], moment: datetime
    ) -> None:
        """Remember the jti and store the token in one transaction; a replayed jti fails both.

        A jti is kept until its assertion expires plus the clock skew, since an assertion is
        accepted that long. Expired jtis and tokens are pruned here, where rows are added.
        """
        client_id = assertion.client.client_id
        jti_hash = hashlib.sha256(f"{client_id}\x00{assertion.jti}".encode()).hexdigest()
        try:
            with self.store.engine.begin() as connection:
                connection.execute(
                    delete(used_assertions).where(used_assertions.c.expires_at < moment)
                )
                connection.execute(delete(access_tokens).where(access_tokens.c.expires_at < moment))
                connection.execute(
                    insert(used_assertions).values(
                        jti_hash=jti_hash,
                        client_id=client_id,
                        expires_at=assertion.expires_at + CLOCK_SKEW,
                    )
                )
                connection.execute(
                    insert(access_tokens).values(
                        token_hash=_digest(token),
                        client_id=client_id,
                        scopes=" ".join(granted),
                        issued_at=moment,
                        expires_at=moment + self.token_lifetime,
                    )
                )
        except IntegrityError:
            raise _client_error("this client assertion was already used (jti replay)") from None

    # -- using a token -----------------------------------------------------------------------

    def authenticate(self, bearer: str, *, now: datetime | None = None) -> Principal:
        """The client principal a bearer token stands for; AuthenticationError if it is unknown,
        expired, or its client has been disabled."""
        moment = now or datetime.now(UTC)
        if not bearer or len(bearer) > MAX_TOKEN_LENGTH:
            raise _token_error()
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(
                    access_tokens.c.client_id,
                    access_tokens.c.scopes,
                    access_tokens.c.expires_at,
                    api_clients.c.role,
                    api_clients.c.fhir_user,
                    api_clients.c.disabled,
                )
                .join(api_clients, api_clients.c.client_id == access_tokens.c.client_id)
                .where(access_tokens.c.token_hash == _digest(bearer))
            ).first()
        if row is None or row.expires_at <= moment or row.disabled:
            raise _token_error()
        return Principal(
            subject=row.client_id,
            kind="client",
            role=Role(row.role),
            fhir_user=row.fhir_user,
            scopes=frozenset(row.scopes.split()),
        )


def _check_grant(form: Mapping[str, str]) -> None:
    grant_type = form.get("grant_type")
    if not grant_type:
        raise AuthenticationError("grant_type is required", 400, INVALID_REQUEST)
    if grant_type != "client_credentials":
        raise AuthenticationError(
            "only grant_type=client_credentials is supported", 400, UNSUPPORTED_GRANT_TYPE
        )
    if form.get("client_assertion_type") != JWT_BEARER:
        raise _client_error(f"client_assertion_type must be {JWT_BEARER}")


def claimed_client_id(assertion: str) -> str | None:
    """The client id an assertion claims, unverified: for the audit of a refused request only,
    never for a decision."""
    try:
        claimed = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError):
        return None
    return claimed if isinstance(claimed, str) and 0 < len(claimed) <= 64 else None


def _unverified_routing(assertion: str) -> tuple[str, str, str]:
    """alg and kid from the header and iss from the body, read before any verification and
    used only to pick the client and key that will verify the token."""
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError):
        raise _client_error("the client assertion is not a well-formed JWT") from None
    alg = header.get("alg")
    if alg not in SIGNING_ALGORITHMS:
        allowed = ", ".join(sorted(SIGNING_ALGORITHMS))
        raise _client_error(f"the client assertion must be signed with one of {allowed}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _client_error("the client assertion's header needs the kid of a registered key")
    client_id = claims.get("iss")
    if not isinstance(client_id, str) or not 0 < len(client_id) <= 64:
        raise _client_error("the client assertion's iss must be the client_id")
    return alg, kid, client_id


def _granted_scopes(client: ApiClient, requested: str | None) -> list[str]:
    """The requested scopes, each of which must be covered by the client's registration."""
    if not requested or not requested.strip():
        raise AuthenticationError("scope is required", 400, INVALID_SCOPE)
    if len(requested) > MAX_SCOPE_LENGTH:
        raise AuthenticationError("the scope parameter is too long", 400, INVALID_SCOPE)
    registered = ScopeSet.parse(client.scopes)
    granted: list[str] = []
    for index, text in enumerate(requested.split(), start=1):
        try:
            scope = parse_scope(text)
        except ValueError as exc:
            raise AuthenticationError(
                f"requested scope {index}: {exc}", 400, INVALID_SCOPE
            ) from None
        if not registered.covers(scope):
            raise AuthenticationError(
                f"requested scope {index} is not registered for this client", 400, INVALID_SCOPE
            )
        if text not in granted:
            granted.append(text)
    return granted


def _number(value: object, claim: str) -> float:
    number = numeric_date(value)
    if number is None:
        raise _client_error(f"the client assertion's {claim} must be a NumericDate")
    return number


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _client_error(reason: str) -> AuthenticationError:
    return AuthenticationError(reason, 401, INVALID_CLIENT)


def _token_error() -> AuthenticationError:
    return AuthenticationError("the access token is invalid or has expired", 401, INVALID_TOKEN)
