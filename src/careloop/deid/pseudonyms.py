"""Keyed pseudonyms for resource ids and references (Safe Harbor identifier 18).

A pseudonym is HMAC-SHA256 under the export's 32-byte key of `kind` and the value, so it is
stable (the same key and value always give the same pseudonym, and so cross-references stay
consistent within an export and across exports made with the same key) and not reversible or
guessable without the key: an id cannot be confirmed by hashing candidate ids. Another key gives
unrelated pseudonyms, so exports made under different keys cannot be joined.

Pseudonyms are written as UUIDs (122 bits of the MAC, version 8 "custom" and RFC 9562 variant
bits set) because that one shape is both a valid FHIR `id` and a valid `urn:uuid:` reference.
Resource ids use one kind, "id", whatever their type: a `urn:uuid:` reference does not say the
type of its target, and must map to the same pseudonym as `Type/id`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping

KEY_BYTES = 32
RESOURCE_ID_KIND = "id"
CONTAINED_ID_KIND = "contained"

_KIND = re.compile(r"^[a-z][a-z0-9\-]{0,31}$")
# Type/id, optionally after a base URL and with a version: the forms a FHIR reference takes.
_LITERAL = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9+.\-]*://[^?#\s]*/)?"
    r"([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)
_URN_UUID = re.compile(r"^urn:uuid:([0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12})$")


class Pseudonymizer:
    """Keyed, deterministic pseudonyms; holds the key and never exposes it."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise ValueError(f"the pseudonym key must be {KEY_BYTES} bytes")
        self._key = bytes(key)

    def digest(self, kind: str, value: str) -> bytes:
        """The raw MAC of (kind, value): distinct kinds never collide (domain separation)."""
        if not _KIND.match(kind):
            raise ValueError("a pseudonym kind is 1-32 lowercase letters, digits or hyphens")
        if not isinstance(value, str):
            raise TypeError("a pseudonym is made of a string value")
        message = kind.encode() + b"\x00" + value.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def pseudonym(self, kind: str, value: str) -> str:
        raw = bytearray(self.digest(kind, value)[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80  # version 8: custom, not random and not time-based
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
        return str(uuid.UUID(bytes=bytes(raw)))

    def resource_id(self, resource_id: str) -> str:
        return self.pseudonym(RESOURCE_ID_KIND, resource_id)

    def contained_id(self, local_id: str) -> str:
        return self.pseudonym(CONTAINED_ID_KIND, local_id)

    def reference(
        self, reference: str, types_by_id: Mapping[str, str], local_ids: Mapping[str, str]
    ) -> tuple[str | None, str | None]:
        """(pseudonymized reference or None to drop it, the target's type when known).

        `Type/id` and absolute URLs become `Type/<pseudonym>` (the base URL is itself a URL
        identifier, so it goes). `urn:uuid:` references become `Type/<pseudonym>` when the target
        is in the compartment, else `urn:uuid:<pseudonym>`. `#local` references stay local, and
        are dropped when their contained target was dropped. Anything else (conditional
        references that embed an identifier, `urn:oid:`) is dropped.
        """
        if reference.startswith("#"):
            local = reference[1:]
            if not local:
                return reference, None
            if local in local_ids:
                return "#" + self.contained_id(local), local_ids[local]
            return None, None
        literal = _LITERAL.match(reference)
        if literal:
            target_type, target_id = literal.groups()
            return f"{target_type}/{self.resource_id(target_id)}", target_type
        urn = _URN_UUID.match(reference)
        if urn:
            target_id = urn.group(1)
            target_type = types_by_id.get(target_id)
            if target_type is not None:
                return f"{target_type}/{self.resource_id(target_id)}", target_type
            return f"urn:uuid:{self.resource_id(target_id)}", None
        return None, None
