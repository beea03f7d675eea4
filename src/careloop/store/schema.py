"""Tables of the store (SQLAlchemy Core). Alembic migrations create and evolve them.

Data minimization: a column holds only what search or key management needs. Resource bodies are
encrypted; ids, patient references, codes and identifiers appear only as blind-index hashes;
the only clear clinical value is the time a resource is about, which date search must compare.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator):
    """Timestamps stored as naive UTC on every backend, read back as aware UTC.

    SQLite has no time-zone type and compares timestamps as text, so one zone everywhere is what
    makes date search correct on both backends.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("careloop stores only time-zone-aware timestamps")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):  # type: ignore[no-untyped-def]
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()

HASH_LEN = 32  # hex of a 128-bit blind index

store_settings = Table(
    "store_settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

data_keys = Table(
    "data_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    # 'patient' (one per patient compartment), 'shared' (resources outside any patient) or 'index'
    Column("purpose", String(16), nullable=False),
    Column("owner_hash", String(HASH_LEN), nullable=True, unique=True),
    Column("wrapped_key", LargeBinary, nullable=True),  # NULL once crypto-shredded
    Column("master_key_id", String(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("destroyed_at", UtcDateTime(), nullable=True),
)

resources = Table(
    "resources",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("resource_type", String(64), nullable=False),
    Column("id_hash", String(HASH_LEN), nullable=False),
    Column("version", Integer, nullable=False),
    Column("is_current", Boolean, nullable=False),
    Column("patient_hash", String(HASH_LEN), nullable=True),
    Column("data_key_id", String(32), ForeignKey("data_keys.key_id"), nullable=True),
    Column("content_hash", String(HASH_LEN), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("last_updated", UtcDateTime(), nullable=False),
    Column("date_start", UtcDateTime(), nullable=True),
    Column("date_end", UtcDateTime(), nullable=True),
    UniqueConstraint("id_hash", "resource_type", "version", name="uq_resource_version"),
    # uq_resource_version (id_hash first) also serves every look-up of current rows by id
    Index("ix_resources_patient", "patient_hash", "resource_type", "date_start"),
)

search_tokens = Table(
    "search_tokens",
    metadata,
    Column("resource_pk", Integer, ForeignKey("resources.pk", ondelete="CASCADE"), nullable=False),
    Column("param", String(32), nullable=False),
    Column("value_hash", String(HASH_LEN), nullable=False),
    Index("ix_search_tokens_lookup", "param", "value_hash"),
    Index("ix_search_tokens_resource", "resource_pk"),
)
