"""Envelope encryption for data at rest, and keyed hashes for the columns search needs.

Each patient has a data key (AES-256); the data key is stored only wrapped (encrypted) by the
master key, which lives outside the database (a key file or an environment variable). Rotating the
master key re-wraps the data keys and never touches the data. Destroying a patient's data key makes
every copy of their data unreadable (crypto-shredding), which is why keys are per patient.

Search columns never hold identifiers in clear: ids, references, codes and identifiers are stored
as keyed HMACs (blind indexes) under an index key that is itself a wrapped data key, so an exact
match still works and nothing in the database can be read or brute-forced without the master key.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard nonce; random per message
BLIND_INDEX_BYTES = 16  # 128 bits: collisions are not a practical concern at any store size


class KeyMaterialError(Exception):
    """A key is missing, malformed or does not open what it should.

    Messages name keys by id only, never by their bytes.
    """


@dataclass(frozen=True)
class MasterKey:
    """The key-encryption key. `key_id` is a fingerprint, safe to store and to log."""

    key_id: str
    secret: bytes

    @classmethod
    def from_bytes(cls, secret: bytes) -> MasterKey:
        if len(secret) != KEY_BYTES:
            raise KeyMaterialError(f"a master key must be {KEY_BYTES} bytes, got {len(secret)}")
        fingerprint = hashlib.sha256(b"careloop-master-key-id\x00" + secret).hexdigest()[:16]
        return cls(key_id=fingerprint, secret=secret)

    @classmethod
    def from_text(cls, text: str, origin: str) -> MasterKey:
        """Parse the base64 form used in key files and CARELOOP_MASTER_KEY."""
        try:
            secret = base64.b64decode(text.strip(), validate=True)
        except (ValueError, TypeError) as exc:
            raise KeyMaterialError(f"the master key in {origin} is not valid base64") from exc
        try:
            return cls.from_bytes(secret)
        except KeyMaterialError as exc:
            raise KeyMaterialError(f"the master key in {origin}: {exc}") from exc

    @classmethod
    def from_file(cls, path: Path) -> MasterKey:
        try:
            text = path.read_text(encoding="ascii")
        except OSError as exc:
            raise KeyMaterialError(
                f"cannot read the master key file {path}: {exc.strerror}"
            ) from exc
        except UnicodeDecodeError as exc:
            raise KeyMaterialError(f"the master key file {path} is not base64 text") from exc
        return cls.from_text(text, origin=str(path))

    def __repr__(self) -> str:  # never print the secret, even by accident
        return f"MasterKey(key_id={self.key_id!r})"


def generate_key_text() -> str:
    """A new random 256-bit key in the base64 text form of key files."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def write_key_file(path: Path) -> MasterKey:
    """Create a new key file readable by its owner only; refuses to overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = generate_key_text()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text + "\n")
    return MasterKey.from_text(text, origin=str(path))


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def wrap_key(master: MasterKey, data_key: bytes, data_key_id: str) -> bytes:
    """Encrypt a data key under the master key; the key id is bound as associated data."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(master.secret).encrypt(nonce, data_key, data_key_id.encode())


def unwrap_key(master: MasterKey, wrapped: bytes, data_key_id: str) -> bytes:
    try:
        return AESGCM(master.secret).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], data_key_id.encode()
        )
    except InvalidTag as exc:
        raise KeyMaterialError(
            f"data key {data_key_id} does not open with master key {master.key_id}"
        ) from exc


class Sealer:
    """AES-256-GCM under one data key. Associated data binds a ciphertext to its row."""

    __slots__ = ("_aead",)

    def __init__(self, data_key: bytes) -> None:
        self._aead = AESGCM(data_key)

    def seal(self, plaintext: bytes, bound_to: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, bound_to)

    def open(self, sealed: bytes, bound_to: bytes) -> bytes:
        return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], bound_to)


class BlindIndex:
    """Keyed hashes for exact-match search over values that must not be stored in clear.

    Keyed BLAKE2b is a MAC by design (no HMAC construction needed) and costs one C call, which
    matters on the ingest path where every resource yields a dozen of them.
    """

    __slots__ = ("_key",)

    def __init__(self, index_key: bytes) -> None:
        self._key = index_key

    def digest(self, *parts: str) -> str:
        return self.digest_bytes(parts[0], "\x1f".join(parts[1:]).encode("utf-8"))

    def digest_bytes(self, label: str, payload: bytes) -> str:
        keyed = hashlib.blake2b(
            payload, digest_size=BLIND_INDEX_BYTES, key=self._key, person=label.encode()[:16]
        )
        return keyed.hexdigest()
