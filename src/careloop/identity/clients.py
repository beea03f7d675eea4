"""API clients registered for SMART Backend Services: a name, a role, the scopes they may be
granted and the public keys (a JWK Set) their signed assertions are checked against.

Only public asymmetric keys are accepted. A symmetric (`oct`) key would let anyone who reads
the registration sign assertions, and a private key has no business leaving the client: both
are refused with a message saying so. RSA keys need at least 2048 bits; EC keys are P-256
(ES256) or P-384 (ES384). What is stored is the public part only, re-serialized.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import insert, select, update

from careloop.access.roles import Role
from careloop.identity.scopes import ScopeSet
from careloop.identity.users import check_fhir_user, parse_role
from careloop.store.repository import ResourceStore
from careloop.store.schema import access_tokens, api_clients

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192  # bigger keys only make every verification slower
MAX_KEYS = 10
MAX_JWKS_CHARS = 16384  # the api_clients.jwks column
MAX_SCOPES_CHARS = 2048  # the api_clients.scopes column
# Which algorithms each kind of key may sign with. HMAC ("HS*") and "none" are never accepted.
ALGORITHMS_FOR_KEY = {
    ("RSA", None): ("RS384", "RS256"),
    ("EC", "P-384"): ("ES384",),
    ("EC", "P-256"): ("ES256",),
}
SIGNING_ALGORITHMS = frozenset({"RS384", "ES384", "RS256", "ES256"})
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y")}
_KID = re.compile(r"^[\x21-\x7e]{1,128}$")
_NAME_MAX = 128


@dataclass(frozen=True)
class ApiClient:
    client_id: str
    name: str
    role: Role
    scopes: tuple[str, ...]
    fhir_user: str | None
    jwks: dict[str, Any]
    disabled: bool
    created_at: datetime

    def key(self, kid: str) -> dict[str, Any] | None:
        """The JWK whose kid is `kid`, if the client registered one."""
        return next((key for key in self.jwks["keys"] if key["kid"] == kid), None)


@dataclass(frozen=True)
class ClientSummary:
    """A client as an administrator lists it: the key ids, not the keys."""

    client_id: str
    name: str
    role: Role
    scopes: tuple[str, ...]
    fhir_user: str | None
    kids: tuple[str, ...]
    disabled: bool
    created_at: datetime


def algorithms_for(jwk: dict[str, Any]) -> tuple[str, ...]:
    """The signing algorithms a stored key may be used with."""
    allowed = ALGORITHMS_FOR_KEY.get((jwk["kty"], jwk.get("crv")), ())
    declared = jwk.get("alg")
    return tuple(alg for alg in allowed if declared in (None, alg))


def public_jwks(jwks: object) -> dict[str, Any]:
    """Check a JWK Set and return its public keys only; ValueError saying which key is wrong."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError('a JWK Set is a JSON object with a "keys" list')
    keys = jwks["keys"]
    if not 1 <= len(keys) <= MAX_KEYS:
        raise ValueError(f"a JWK Set must hold 1 to {MAX_KEYS} keys")
    checked = [_public_key(index, key) for index, key in enumerate(keys, start=1)]
    kids = [key["kid"] for key in checked]
    if len(set(kids)) != len(kids):
        raise ValueError("every key of a JWK Set needs its own kid")
    result = {"keys": checked}
    if len(json.dumps(result)) > MAX_JWKS_CHARS:
        raise ValueError(f"the JWK Set is larger than {MAX_JWKS_CHARS} characters")
    return result


def _public_key(index: int, key: object) -> dict[str, Any]:
    where = f"key {index} of the JWK Set"
    if not isinstance(key, dict):
        raise ValueError(f"{where} is not a JSON object")
    kty = key.get("kty")
    if kty == "oct":
        raise ValueError(f"{where} is a symmetric (oct) key: register the client's public key")
    if kty not in _PUBLIC_MEMBERS:
        raise ValueError(f'{where} has an unsupported "kty": only RSA and EC keys are accepted')
    if _PRIVATE_MEMBERS & key.keys():
        raise ValueError(f"{where} holds private key material: register the public key only")
    kid = key.get("kid")
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise ValueError(f"{where} needs a kid of 1 to 128 printable characters")
    if key.get("use", "sig") != "sig":
        raise ValueError(f'{where} has "use" other than "sig"')
    if "key_ops" in key and key["key_ops"] != ["verify"]:
        raise ValueError(f'{where} may have "key_ops" ["verify"] only')
    public = {"kty": kty, "kid": kid}
    for member in _PUBLIC_MEMBERS[kty]:
        if not isinstance(key.get(member), str):
            raise ValueError(f'{where} lacks its "{member}" member')
        public[member] = key[member]
    _check_strength(where, public)
    if "alg" in key:
        if key["alg"] not in algorithms_for({**public, "alg": None}):
            raise ValueError(f"{where} declares an algorithm this key type cannot sign with")
        public["alg"] = key["alg"]
    return public


def _check_strength(where: str, jwk: dict[str, Any]) -> None:
    if jwk["kty"] == "EC" and jwk["crv"] not in ("P-256", "P-384"):
        raise ValueError(f"{where} must be on curve P-256 or P-384")
    algorithm = RSAAlgorithm if jwk["kty"] == "RSA" else ECAlgorithm
    try:
        key = algorithm.from_jwk(json.dumps(jwk))
    except Exception:  # PyJWT's InvalidKeyError, or cryptography's ValueError for a bad point
        raise ValueError(f"{where} is not a valid {jwk['kty']} public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise ValueError(f"{where} must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
    elif not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"{where} is not a public key")


def check_name(name: str) -> None:
    if not name.strip() or len(name) > _NAME_MAX or not name.isprintable():
        raise ValueError(f"a client name is 1 to {_NAME_MAX} printable characters")


def new_client_id() -> str:
    """A random client id (144 bits) an operator can type as a command argument: URL-safe
    base64 may begin with '-', which a command line reads as an option, so it gets a letter
    in front."""
    return "c" + secrets.token_urlsafe(18)


class ClientRegistry:
    """The api_clients table."""

    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    def register(
        self,
        name: str,
        role: Role | str,
        scopes: list[str],
        jwks: dict[str, Any],
        fhir_user: str | None = None,
        *,
        now: datetime | None = None,
    ) -> str:
        """Register a client and return its new client_id; ValueError says what is wrong."""
        check_name(name)
        chosen = parse_role(role)
        check_fhir_user(chosen, fhir_user)
        if not scopes:
            raise ValueError("a client needs at least one scope")
        ScopeSet.parse(scopes)  # every scope must parse
        texts = list(dict.fromkeys(scopes))
        if len(" ".join(texts)) > MAX_SCOPES_CHARS:
            raise ValueError(f"the scopes add up to more than {MAX_SCOPES_CHARS} characters")
        keys = public_jwks(jwks)
        client_id = new_client_id()
        with self.store.engine.begin() as connection:
            connection.execute(
                insert(api_clients).values(
                    client_id=client_id,
                    name=name,
                    role=chosen.value,
                    scopes=" ".join(texts),
                    fhir_user=fhir_user,
                    jwks=json.dumps(keys, sort_keys=True),
                    disabled=False,
                    created_at=now or datetime.now(UTC),
                )
            )
        return client_id

    def get(self, client_id: str) -> ApiClient | None:
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(api_clients).where(api_clients.c.client_id == client_id)
            ).first()
        return None if row is None else _client(row)

    def list(self) -> list[ClientSummary]:
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                select(api_clients).order_by(api_clients.c.created_at, api_clients.c.client_id)
            )
            return [_summary(_client(row)) for row in rows]

    def disable(self, client_id: str) -> None:
        """Refuse the client's future token requests and revoke the tokens it holds."""
        with self.store.engine.begin() as connection:
            result = connection.execute(
                update(api_clients)
                .where(api_clients.c.client_id == client_id)
                .values(disabled=True)
            )
            if result.rowcount == 0:
                raise ValueError("no client with that client_id")
            connection.execute(access_tokens.delete().where(access_tokens.c.client_id == client_id))


def _client(row) -> ApiClient:  # type: ignore[no-untyped-def]
    return ApiClient(
        client_id=row.client_id,
        name=row.name,
        role=Role(row.role),
        scopes=tuple(row.scopes.split()),
        fhir_user=row.fhir_user,
        jwks=json.loads(row.jwks),
        disabled=bool(row.disabled),
        created_at=row.created_at,
    )


def _summary(client: ApiClient) -> ClientSummary:
    return ClientSummary(
        client_id=client.client_id,
        name=client.name,
        role=client.role,
        scopes=client.scopes,
        fhir_user=client.fhir_user,
        kids=tuple(key["kid"] for key in client.jwks["keys"]),
        disabled=client.disabled,
        created_at=client.created_at,
    )
