"""What the store writes for a resource, computed before any key or connection is needed.

Turning a resource into a record (canonical bytes, compression, index terms) is pure work that the
ingest pipeline runs in worker processes; the store then only hashes, encrypts and inserts.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from datetime import datetime

import orjson

from careloop.fhir.indexing import index_terms

COMPRESSION_LEVEL = 1  # bodies are JSON: level 1 already shrinks them ~5x at little CPU cost
STORE_STAMPED_META = ("versionId", "lastUpdated")


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    resource_type: str
    resource_id: str
    patient_id: str | None
    date_start: datetime | None
    date_end: datetime | None
    tokens: tuple[tuple[str, str], ...]
    compressed_body: bytes  # canonical JSON, zlib-compressed, not yet encrypted
    fingerprint: bytes  # SHA-256 of the canonical JSON; the store keys it before storing


def canonical_json(resource: dict) -> bytes:
    """Sorted keys, without the version stamps the store adds itself on read."""
    meta = resource.get("meta")
    if isinstance(meta, dict) and any(key in meta for key in STORE_STAMPED_META):
        meta = {k: v for k, v in meta.items() if k not in STORE_STAMPED_META}
        resource = {k: v for k, v in resource.items() if k != "meta"}
        if meta:
            resource["meta"] = meta
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)


def record_of(resource: dict) -> ResourceRecord:
    canonical = canonical_json(resource)
    terms = index_terms(resource)
    return ResourceRecord(
        resource_type=resource["resourceType"],
        resource_id=resource["id"],
        patient_id=terms.patient_id,
        date_start=terms.date_start,
        date_end=terms.date_end,
        tokens=tuple(dict.fromkeys(terms.tokens)),
        compressed_body=zlib.compress(canonical, COMPRESSION_LEVEL),
        fingerprint=hashlib.sha256(canonical).digest(),
    )
