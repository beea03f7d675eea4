"""The resource store: versioned, encrypted FHIR resources with blind-index search.

Writes happen inside a `StoreTransaction`, so a caller decides what is atomic (a bundle, an NDJSON
file) and a failure or a killed process leaves the store as it was before that unit. Writing the
same content again is a no-op; changed content becomes a new version, and only the current version
is searchable.
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from functools import lru_cache
from pathlib import Path

import orjson
from alembic import command
from alembic.config import Config
from cryptography.exceptions import InvalidTag
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    create_engine,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql.elements import ColumnElement

from careloop.store.crypto import (
    BlindIndex,
    KeyMaterialError,
    MasterKey,
    Sealer,
    new_data_key,
    unwrap_key,
    wrap_key,
)
from careloop.store.records import ResourceRecord, record_of
from careloop.store.schema import (
    data_keys,
    erasures,
    monitoring_persons,
    resources,
    search_tokens,
    store_settings,
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
ENCRYPTION_SETTING = "encryption"
AES_GCM = "aes-256-gcm"
PLAINTEXT = "off"  # only for measuring what encryption costs; never a deployment setting
INDEX_KEY_OWNER = "__blind_index__"
SHARED_KEY_OWNER = "__shared__"


class StoreError(Exception):
    """The store cannot do what was asked; the message is safe to show (no PHI, no secrets)."""


class WriteOutcome(Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class WriteResult:
    outcome: WriteOutcome
    version: int


@dataclass(frozen=True, slots=True)
class StoredResource:
    resource_type: str
    version: int
    last_updated: datetime
    body: dict


@dataclass(frozen=True, slots=True)
class DateBound:
    """One `date=` search condition: prefix eq, ne, lt, le, gt, ge, sa, eb, ap over [start, end]."""

    prefix: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class SearchPage:
    total: int
    resources: list[StoredResource]


def create_store_engine(url: str) -> Engine:
    """An engine tuned for ingest: SQLite in WAL mode; PostgreSQL through psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


def _tune_sqlite(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    # WAL keeps readers working during an ingest and makes a commit one sequential append.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class ResourceStore:
    """FHIR resources at rest. Construct with `ResourceStore.open(url, master_key)`."""

    def __init__(self, engine: Engine, master_key: MasterKey | None, encrypt: bool = True) -> None:
        if encrypt and master_key is None:
            raise StoreError("an encrypted store needs a master key")
        self.engine = engine
        self._master = master_key
        self._encrypt = encrypt
        self._sealers: dict[str, Sealer] = {}  # data key id -> sealer
        self._patient_key_ids: dict[str, str] = {}  # patient hash -> data key id
        self._blind = BlindIndex(self._load_or_create_index_key())
        # Codes and patients repeat across thousands of resources: hash each once.
        self.token_hash = lru_cache(maxsize=1 << 16)(self._token_hash)
        self.patient_hash = lru_cache(maxsize=1 << 13)(self._patient_hash)
        self.is_sqlite = engine.dialect.name == "sqlite"

    @classmethod
    def open(cls, url: str, master_key: MasterKey | None, encrypt: bool = True) -> ResourceStore:
        engine = create_store_engine(url)
        migrate(engine)
        _check_encryption_setting(engine, encrypt)
        return cls(engine, master_key, encrypt)

    def close(self) -> None:
        self.engine.dispose()

    # -- hashing -----------------------------------------------------------------------------

    def id_hash(self, resource_type: str, resource_id: str) -> str:
        return self._blind.digest("id", resource_type, resource_id)

    def _patient_hash(self, patient_id: str) -> str:
        return self._blind.digest("patient", patient_id)

    def _token_hash(self, param: str, value: str) -> str:
        return self._blind.digest("token", param, value)

    def content_hash(self, fingerprint: bytes) -> str:
        return self._blind.digest_bytes("content", fingerprint)

    # -- writing -----------------------------------------------------------------------------

    def begin(self) -> StoreTransaction:
        """Open one atomic unit of writes; the caller must commit or roll it back."""
        return StoreTransaction(self, self.engine.connect())

    @contextmanager
    def transaction(self) -> Iterator[StoreTransaction]:
        """One atomic unit of writes: everything in it commits together or not at all."""
        tx = self.begin()
        try:
            yield tx
        except BaseException:
            tx.rollback()
            raise
        tx.commit()

    # -- reading -----------------------------------------------------------------------------

    def read(self, resource_type: str, resource_id: str) -> StoredResource | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(*_BODY_COLUMNS).where(
                    resources.c.resource_type == resource_type,
                    resources.c.id_hash == self.id_hash(resource_type, resource_id),
                    resources.c.is_current.is_(True),
                )
            ).first()
            return self._decode(connection, row) if row else None

    def history(self, resource_type: str, resource_id: str) -> list[StoredResource]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(*_BODY_COLUMNS)
                .where(
                    resources.c.resource_type == resource_type,
                    resources.c.id_hash == self.id_hash(resource_type, resource_id),
                )
                .order_by(resources.c.version.desc())
            ).all()
            return [self._decode(connection, row) for row in rows]

    def search(
        self,
        resource_type: str,
        *,
        patient_id: str | None = None,
        codes: Sequence[str] = (),
        dates: Sequence[DateBound] = (),
        count: int = 50,
        offset: int = 0,
    ) -> SearchPage:
        """Current resources of one type matching every given condition (codes are OR-ed)."""
        conditions = [resources.c.resource_type == resource_type, resources.c.is_current.is_(True)]
        if patient_id is not None:
            conditions.append(resources.c.patient_hash == self.patient_hash(patient_id))
        if codes:
            conditions.append(self._has_code(codes))
        conditions.extend(_date_condition(bound) for bound in dates)
        where = and_(*conditions)
        with self.engine.connect() as connection:
            total = connection.execute(select(func.count()).select_from(resources).where(where))
            rows = connection.execute(
                select(*_BODY_COLUMNS)
                .where(where)
                .order_by(resources.c.date_start, resources.c.pk)
                .limit(count)
                .offset(offset)
            ).all()
            return SearchPage(
                total=int(total.scalar_one()),
                resources=[self._decode(connection, row) for row in rows],
            )

    def written_after(
        self, resource_type: str, after_pk: int, *, codes: Sequence[str] = (), limit: int = 500
    ) -> list[tuple[int, StoredResource]]:
        """Current resources of one type written after row `after_pk`, in write order, with
        their row number: a change feed (a resource rewritten later comes again, as a new row).
        `codes` (system|code tokens, OR-ed) narrows it to those codes."""
        conditions = [
            resources.c.resource_type == resource_type,
            resources.c.is_current.is_(True),
            resources.c.pk > after_pk,
        ]
        if codes:
            conditions.append(self._has_code(codes))
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(resources.c.pk, *_BODY_COLUMNS)
                .where(*conditions)
                .order_by(resources.c.pk)
                .limit(limit)
            ).all()
            return [(int(row.pk), self._decode(connection, row)) for row in rows]

    def _has_code(self, codes: Sequence[str]) -> ColumnElement[bool]:
        """The resource row has one of `codes` (OR-ed) among its indexed code tokens."""
        hashes = [self.token_hash("code", code) for code in codes]
        return exists().where(
            search_tokens.c.resource_pk == resources.c.pk,
            search_tokens.c.param == "code",
            search_tokens.c.value_hash.in_(hashes),
        )

    def patient_resources(
        self, patient_id: str, resource_types: Sequence[str] = ()
    ) -> Iterator[dict]:
        """Every current resource in one patient's compartment (the patient included)."""
        return (stored.body for stored in self.patient_compartment(patient_id, resource_types))

    def patient_compartment(
        self, patient_id: str, resource_types: Sequence[str] = ()
    ) -> Iterator[StoredResource]:
        """As `patient_resources`, with each resource's version and last-updated time."""
        conditions = [
            resources.c.patient_hash == self.patient_hash(patient_id),
            resources.c.is_current.is_(True),
        ]
        if resource_types:
            conditions.append(resources.c.resource_type.in_(list(resource_types)))
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(*_BODY_COLUMNS).where(*conditions).order_by(resources.c.date_start)
            ).all()
            for row in rows:
                yield self._decode(connection, row)

    def compartments(
        self, patient_ids: Sequence[str], resource_types: Sequence[str] = ()
    ) -> list[StoredResource]:
        """The current resources of many patients at once (those of `resource_types`, or all),
        in clinical-time order within each batch: one indexed query per 500 patients instead
        of one per patient, for pages that show a list of patients."""
        found: list[StoredResource] = []
        unique = list(dict.fromkeys(patient_ids))
        with self.engine.connect() as connection:
            for start in range(0, len(unique), COMPARTMENT_BATCH):
                hashes = [self.patient_hash(p) for p in unique[start : start + COMPARTMENT_BATCH]]
                conditions = [
                    resources.c.patient_hash.in_(hashes),
                    resources.c.is_current.is_(True),
                ]
                if resource_types:
                    conditions.append(resources.c.resource_type.in_(list(resource_types)))
                rows = connection.execute(
                    select(*_BODY_COLUMNS)
                    .where(*conditions)
                    .order_by(resources.c.date_start, resources.c.pk)
                ).all()
                found.extend(self._decode(connection, row) for row in rows)
        return found

    def counts_by_type(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(resources.c.resource_type, func.count())
                .where(resources.c.is_current.is_(True))
                .group_by(resources.c.resource_type)
            ).all()
        return {resource_type: int(n) for resource_type, n in rows}

    # -- keys ----------------------------------------------------------------------------------

    def rotate_master_key(self, new_master: MasterKey) -> int:
        """Re-wrap every data key under `new_master`; the data itself is not touched."""
        if not self._encrypt or self._master is None:
            raise StoreError("this store is not encrypted; there is no master key to rotate")
        old_master = self._master
        with self.engine.begin() as connection:
            rows = connection.execute(
                select(
                    data_keys.c.key_id, data_keys.c.wrapped_key, data_keys.c.master_key_id
                ).where(data_keys.c.wrapped_key.is_not(None))
            ).all()
            for key_id, wrapped, master_key_id in rows:
                if master_key_id == new_master.key_id:
                    continue  # already rotated by an earlier, interrupted run
                if master_key_id != old_master.key_id:
                    raise StoreError(
                        f"data key {key_id} is wrapped by master key {master_key_id}, "
                        f"not by the configured master key {old_master.key_id}"
                    )
                data_key = unwrap_key(old_master, wrapped, key_id)
                connection.execute(
                    update(data_keys)
                    .where(data_keys.c.key_id == key_id)
                    .values(
                        wrapped_key=wrap_key(new_master, data_key, key_id),
                        master_key_id=new_master.key_id,
                    )
                )
        self._master = new_master
        return len(rows)

    def master_key_ids(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(data_keys.c.master_key_id, func.count()).group_by(data_keys.c.master_key_id)
            ).all()
        return {key_id: int(n) for key_id, n in rows}

    # -- internals -----------------------------------------------------------------------------

    def service_key(self, name: str) -> bytes:
        """A 256-bit key of one service (audit chain, identity secrets, pseudonyms), created on
        first use and kept wrapped by the master key like every data key.

        Service keys are never per patient, so erasing a patient leaves the audit trail readable.
        """
        if not name.isidentifier() or len(name) > 16:
            raise StoreError(f"invalid service key name {name!r}")
        return self._load_or_create_key(f"__{name}__", name)

    def _load_or_create_index_key(self) -> bytes:
        return self._load_or_create_key(INDEX_KEY_OWNER, "index")

    def _load_or_create_key(self, owner: str, purpose: str) -> bytes:
        with self.engine.begin() as connection:
            row = connection.execute(
                select(
                    data_keys.c.key_id, data_keys.c.wrapped_key, data_keys.c.master_key_id
                ).where(data_keys.c.owner_hash == owner)
            ).first()
            if row is not None:
                return self._unwrap(row.key_id, row.wrapped_key, row.master_key_id)
            key = new_data_key()
            key_id = secrets.token_hex(16)
            connection.execute(insert(data_keys).values(self._key_row(key_id, purpose, key, owner)))
            return key

    def _key_row(self, key_id: str, purpose: str, key: bytes, owner: str | None = None) -> dict:
        if self._encrypt:
            assert self._master is not None
            wrapped, master_id = wrap_key(self._master, key, key_id), self._master.key_id
        else:
            wrapped, master_id = key, PLAINTEXT
        return {
            "key_id": key_id,
            "purpose": purpose,
            "owner_hash": owner,
            "wrapped_key": wrapped,
            "master_key_id": master_id,
            "created_at": datetime.now(UTC),
        }

    def _unwrap(self, key_id: str, wrapped: bytes | None, master_key_id: str) -> bytes:
        if wrapped is None:
            raise StoreError(f"data key {key_id} has been destroyed")
        if master_key_id == PLAINTEXT:
            return wrapped
        if self._master is None:
            raise StoreError("the store is encrypted and no master key is configured")
        if master_key_id != self._master.key_id:
            raise StoreError(
                f"data key {key_id} is wrapped by master key {master_key_id}; the configured "
                f"master key is {self._master.key_id}"
            )
        try:
            return unwrap_key(self._master, wrapped, key_id)
        except KeyMaterialError as exc:
            raise StoreError(str(exc)) from exc

    def sealer_for_key_id(self, connection: Connection, key_id: str) -> Sealer:
        sealer = self._sealers.get(key_id)
        if sealer is None:
            row = connection.execute(
                select(data_keys.c.wrapped_key, data_keys.c.master_key_id).where(
                    data_keys.c.key_id == key_id
                )
            ).first()
            if row is None:
                raise StoreError(f"data key {key_id} is missing")
            sealer = Sealer(self._unwrap(key_id, row.wrapped_key, row.master_key_id))
            self._sealers[key_id] = sealer
        return sealer

    def _decode(self, connection: Connection, row) -> StoredResource:  # type: ignore[no-untyped-def]
        body = row.body
        if row.data_key_id is not None:
            sealer = self.sealer_for_key_id(connection, row.data_key_id)
            try:
                body = sealer.open(body, _row_binding(row.resource_type, row.id_hash, row.version))
            except InvalidTag:
                raise StoreError(
                    f"a stored {row.resource_type} (version {row.version}) failed its integrity "
                    "check: its body was altered or moved from another row"
                ) from None
        last_updated = _as_utc(row.last_updated)
        resource = orjson.loads(zlib.decompress(body))
        resource["meta"] = {
            **resource.get("meta", {}),
            "versionId": str(row.version),
            "lastUpdated": last_updated.isoformat().replace("+00:00", "Z"),
        }
        return StoredResource(
            resource_type=row.resource_type,
            version=row.version,
            last_updated=last_updated,
            body=resource,
        )

    # -- patient rights: erasure by crypto-shredding, retention (issue 3) -----------------------
    # Mechanism only. Who may erase, and the audit event, belong to careloop.access; what erasure
    # guarantees, and what it does not, is documented in careloop.rights.erasure.

    def erased_hashes(
        self, patient_hashes: Iterable[str], connection: Connection | None = None
    ) -> set[str]:
        """Which of these patient hashes carry an erasure tombstone.

        Ingest should call this on its own write transaction, after its inserts and before
        commit: another process may have erased the patient after this one cached their key.
        On PostgreSQL the erasure holds the key row FOR UPDATE, so an insert that references the
        key waits for the erasure to commit, and a check issued after the insert then sees the
        tombstone; on SQLite writers are serialized, so the check sees every committed erasure.
        """
        wanted = list(dict.fromkeys(patient_hashes))
        if connection is None:
            with self.engine.connect() as own:
                return self.erased_hashes(wanted, own)
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            found.update(
                connection.execute(
                    select(erasures.c.patient_hash).where(
                        erasures.c.patient_hash.in_(wanted[start : start + 500])
                    )
                ).scalars()
            )
        return found

    def is_erased(self, patient_id: str) -> bool:
        """True once the patient was erased: ingest must refuse them from then on."""
        return bool(self.erased_hashes([self.patient_hash(patient_id)]))

    def erasure_tombstone(self, patient_id: str) -> dict | None:
        """The tombstone of an erased patient (hash, when, by whom, basis, count), else None."""
        return self.erasure_tombstone_by_hash(self.patient_hash(patient_id))

    def erasure_tombstone_by_hash(self, patient_hash: str) -> dict | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(erasures).where(erasures.c.patient_hash == patient_hash)
            ).first()
        return None if row is None else dict(row._mapping)

    def patient_activity(
        self, patient_hashes: Sequence[str] | None = None, connection: Connection | None = None
    ) -> list[tuple[str, str, datetime | None, datetime]]:
        """(patient hash, resource type, latest clinical time, latest load time) per patient
        compartment and resource type, over current rows, in one GROUP BY; nothing is decrypted.

        Clinical time is the end of the period a resource is about, else its start; load time is
        `last_updated`, when careloop wrote the row. Retention weighs them (careloop.rights).
        """
        if connection is None:
            with self.engine.connect() as own:
                return self.patient_activity(patient_hashes, own)
        clinical = func.max(func.coalesce(resources.c.date_end, resources.c.date_start))
        statement = (
            select(
                resources.c.patient_hash,
                resources.c.resource_type,
                clinical,
                func.max(resources.c.last_updated),
            )
            .where(resources.c.patient_hash.is_not(None), resources.c.is_current.is_(True))
            .group_by(resources.c.patient_hash, resources.c.resource_type)
            .order_by(resources.c.patient_hash, resources.c.resource_type)
        )
        if patient_hashes is not None:
            statement = statement.where(resources.c.patient_hash.in_(list(patient_hashes)))
        return [
            (patient_hash, resource_type, latest, _as_utc(loaded))
            for patient_hash, resource_type, latest, loaded in connection.execute(statement)
        ]

    def shred_patient(
        self,
        patient_hash: str,
        *,
        erased_by: str,
        basis: str,
        erased_at: datetime,
        precondition: Callable[[Connection], None] | None = None,
    ) -> tuple[int, int] | None:
        """Crypto-shred one patient compartment, in one transaction.

        Destroys the patient's data key (wrapped_key NULL, destroyed_at set), deletes every
        stored version sealed with it or filed under the patient, with their search tokens, and
        writes the tombstone. Returns (current resources, stored versions) removed, or None when
        the patient was already erased (then nothing changes). Raises StoreError when the store
        holds nothing for this hash. `precondition` runs once the patient is locked against
        concurrent writes and raises to abort with nothing changed.
        """
        try:
            with self.engine.connect() as connection:
                secure_delete = None
                if self.is_sqlite:
                    # Zero the freed bytes (the old wrapped key, deleted rows) in the file itself;
                    # builds differ in their default, which is restored afterwards.
                    pragma = connection.exec_driver_sql("PRAGMA secure_delete")
                    secure_delete = int(pragma.scalar_one())
                    connection.exec_driver_sql("PRAGMA secure_delete=ON")
                    connection.commit()  # ends SQLAlchemy's autobegun (empty) transaction
                try:
                    with connection.begin():
                        shredded = self._shred_locked(
                            connection, patient_hash, erased_by, basis, erased_at, precondition
                        )
                finally:
                    if secure_delete is not None:
                        connection.exec_driver_sql(f"PRAGMA secure_delete={secure_delete}")
                        connection.commit()
        except IntegrityError:
            # A concurrent erasure of the same patient committed its tombstone first.
            if self.erased_hashes([patient_hash]):
                return None
            raise
        if shredded is None:
            return None
        current, versions, key_id = shredded
        # Forget the key in this process; other processes refuse through `erased_hashes`.
        cached_key_id = self._patient_key_ids.pop(patient_hash, None)
        for stale in (key_id, cached_key_id):
            if stale is not None:
                self._sealers.pop(stale, None)
        return current, versions

    def _shred_locked(
        self,
        connection: Connection,
        patient_hash: str,
        erased_by: str,
        basis: str,
        erased_at: datetime,
        precondition: Callable[[Connection], None] | None,
    ) -> tuple[int, int, str | None] | None:
        if self.is_sqlite:
            # Take the write lock before reading, so no writer slips in between check and delete.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        # FOR UPDATE conflicts with the KEY SHARE lock a referencing insert takes (PostgreSQL).
        key_id = connection.execute(
            select(data_keys.c.key_id)
            .where(data_keys.c.owner_hash == patient_hash, data_keys.c.purpose == "patient")
            .with_for_update()
        ).scalar_one_or_none()
        if self.erased_hashes([patient_hash], connection):
            return None
        if precondition is not None:
            precondition(connection)
        owned = resources.c.patient_hash == patient_hash
        if key_id is not None:
            owned = or_(owned, resources.c.data_key_id == key_id)
        current, versions = connection.execute(
            select(
                func.coalesce(func.sum(case((resources.c.is_current.is_(True), 1), else_=0)), 0),
                func.count(),
            ).where(owned)
        ).one()
        if key_id is None and not versions:
            raise StoreError("the store holds no patient compartment for this patient")
        connection.execute(
            search_tokens.delete().where(
                search_tokens.c.resource_pk.in_(select(resources.c.pk).where(owned))
            )
        )
        connection.execute(resources.delete().where(owned))
        # the monitoring worker's baselines of this person are health data too
        connection.execute(
            monitoring_persons.delete().where(monitoring_persons.c.patient_hash == patient_hash)
        )
        if key_id is not None:
            connection.execute(
                update(data_keys)
                .where(data_keys.c.key_id == key_id)
                .values(wrapped_key=None, destroyed_at=erased_at)
            )
        connection.execute(
            insert(erasures).values(
                patient_hash=patient_hash,
                erased_at=erased_at,
                erased_by=erased_by,
                basis=basis,
                resources=int(current),
            )
        )
        return int(current), int(versions), key_id

    def scrub_freed_space(self) -> bool:
        """Push what erasures freed out of the database files, as far as the backend allows.

        SQLite: erasure already zeroed the freed bytes (secure_delete); this checkpoints the WAL,
        whose older frames still hold the pages as they were, and truncates it to nothing.
        PostgreSQL: VACUUM FULL rewrites data_keys (small) into a new file, dropping the dead row
        version that still held the wrapped key. Returns False when another session kept that
        from completing (a reader pinning the WAL, a lock held past the timeout); run it again.
        """
        if self.is_sqlite:
            with self.engine.connect() as connection:
                busy = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
            return not busy
        autocommit = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        with autocommit as connection:
            connection.exec_driver_sql("SET lock_timeout = '5s'")
            try:
                connection.exec_driver_sql(f"VACUUM FULL {data_keys.name}")
            except OperationalError:
                return False
            finally:
                connection.exec_driver_sql("RESET lock_timeout")
        return True


COMPARTMENT_BATCH = 500  # patients per IN list: well under every backend's parameter limit
_BODY_COLUMNS = (
    resources.c.resource_type,
    resources.c.id_hash,
    resources.c.version,
    resources.c.data_key_id,
    resources.c.body,
    resources.c.last_updated,
)


class StoreTransaction:
    """Writes and the look-ups ingest needs, on one open database transaction."""

    def __init__(self, store: ResourceStore, connection: Connection) -> None:
        self._store = store
        self._connection = connection
        self._transaction = connection.begin()
        self._new_key_ids: list[tuple[str, str]] = []  # (key owner, key id)
        self._patients_written: set[str] = set()

    @property
    def connection(self) -> Connection:
        """The open connection, for rows that must commit or roll back with the resources
        (e.g. the CDS ledger's call and card rows beside the cards' FHIR records)."""
        return self._connection

    def commit(self) -> None:
        try:
            self._refuse_erased_patients()
            self._transaction.commit()
        except BaseException:
            self.rollback()
            raise
        self._connection.close()

    def _refuse_erased_patients(self) -> None:
        """Checked after the inserts and before commit, so an erasure committed by another
        process after this one cached the patient's key still wins (see `erased_hashes`)."""
        if self._patients_written and self._store.erased_hashes(
            self._patients_written, self._connection
        ):
            raise StoreError("the record of an erased patient cannot be written again")

    def rollback(self) -> None:
        """Undo every write of this transaction, and forget the keys it had created."""
        try:
            if self._transaction.is_active:
                self._transaction.rollback()
        finally:
            self._connection.close()
            for owner, key_id in self._new_key_ids:
                self._store._sealers.pop(key_id, None)
                self._store._patient_key_ids.pop(owner, None)

    def existing_ids(self, refs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of the (type, id) pairs exist as current resources."""
        wanted = {(t, self._store.id_hash(t, i)): (t, i) for t, i in refs}
        current = self._current_rows([id_hash for _type, id_hash in wanted])
        return {ref for key, ref in wanted.items() if key in current}

    def find_by_identifier(self, resource_type: str, identifier_token: str) -> list[str]:
        """Ids of current resources of a type with this `system|value` identifier."""
        rows = self._connection.execute(
            select(*_BODY_COLUMNS)
            .join(search_tokens, search_tokens.c.resource_pk == resources.c.pk)
            .where(
                resources.c.resource_type == resource_type,
                resources.c.is_current.is_(True),
                search_tokens.c.param == "identifier",
                search_tokens.c.value_hash
                == self._store.token_hash("identifier", identifier_token),
            )
        ).all()
        return [self._store._decode(self._connection, row).body["id"] for row in rows]

    def put_many(
        self, records: Sequence[ResourceRecord], now: datetime | None = None
    ) -> list[WriteResult]:
        """Write records; content identical to the current version is not written again."""
        store = self._store
        now = now or datetime.now(UTC)
        keyed = [(store.id_hash(r.resource_type, r.resource_id), r) for r in records]
        current = self._current_rows([h for h, _ in keyed])
        outcomes: list[WriteResult] = []
        replaced_pks: list[int] = []
        new_rows: list[tuple] = []
        token_lists: list[list[tuple[str, str]]] = []
        for id_hash, record in keyed:
            content_hash = store.content_hash(record.fingerprint)
            previous = current.get((record.resource_type, id_hash))
            if previous is not None and previous[2] == content_hash:
                outcomes.append(WriteResult(WriteOutcome.UNCHANGED, previous[1]))
                continue
            if previous is not None and previous[0] < 0:
                raise StoreError(f"{record.resource_type} appears twice in one write")
            version = 1 if previous is None else previous[1] + 1
            if previous is not None:
                replaced_pks.append(previous[0])
            current[(record.resource_type, id_hash)] = (-1, version, content_hash)
            new_rows.append(self._row_for(record, id_hash, version, content_hash, now))
            token_lists.append([(p, store.token_hash(p, v)) for p, v in record.tokens])
            outcome = WriteOutcome.CREATED if previous is None else WriteOutcome.UPDATED
            outcomes.append(WriteResult(outcome, version))
        self._retire(replaced_pks)
        self._insert(new_rows, token_lists)
        return outcomes

    def put_resources(self, resources_: Sequence[dict]) -> list[WriteResult]:
        return self.put_many([record_of(resource) for resource in resources_])

    def _current_rows(self, id_hashes: list[str]) -> dict[tuple[str, str], tuple[int, int, str]]:
        """(pk, version, content hash) of the current rows, by (type, id hash)."""
        found: dict[tuple[str, str], tuple[int, int, str]] = {}
        unique = list(dict.fromkeys(id_hashes))
        for start in range(0, len(unique), 500):  # stay far below every driver's parameter limit
            rows = self._connection.execute(
                select(
                    resources.c.resource_type,
                    resources.c.id_hash,
                    resources.c.pk,
                    resources.c.version,
                    resources.c.content_hash,
                ).where(
                    resources.c.id_hash.in_(unique[start : start + 500]),
                    resources.c.is_current.is_(True),
                )
            )
            for resource_type, id_hash, pk, version, content_hash in rows:
                found[(resource_type, id_hash)] = (pk, version, content_hash)
        return found

    def _row_for(
        self, record: ResourceRecord, id_hash: str, version: int, content_hash: str, now: datetime
    ) -> tuple:
        """One `resources` row, its values in `_RESOURCE_COLUMNS` order."""
        store = self._store
        patient_hash = store.patient_hash(record.patient_id) if record.patient_id else None
        body = record.compressed_body
        data_key_id = None
        if patient_hash is not None:
            self._patients_written.add(patient_hash)
        if store._encrypt:
            data_key_id = self._data_key_id(patient_hash)
            sealer = store.sealer_for_key_id(self._connection, data_key_id)
            body = sealer.seal(body, _row_binding(record.resource_type, id_hash, version))
        to_db = _sqlite_time if store.is_sqlite else _naive_utc
        return (
            record.resource_type,
            id_hash,
            version,
            True,
            patient_hash,
            data_key_id,
            content_hash,
            body,
            to_db(now),
            to_db(record.date_start),
            to_db(record.date_end),
        )

    def _data_key_id(self, patient_hash: str | None) -> str:
        """The data key of a patient compartment, or the shared key; created on first use."""
        store = self._store
        owner = patient_hash or SHARED_KEY_OWNER
        key_id = store._patient_key_ids.get(owner)
        if key_id is not None:
            return key_id
        key_id = self._connection.execute(
            select(data_keys.c.key_id).where(data_keys.c.owner_hash == owner)
        ).scalar_one_or_none()
        if key_id is None:
            key = new_data_key()
            key_id = secrets.token_hex(16)
            purpose = "patient" if patient_hash else "shared"
            self._connection.execute(
                insert(data_keys).values(store._key_row(key_id, purpose, key, owner))
            )
            store._sealers[key_id] = Sealer(key)
            self._new_key_ids.append((owner, key_id))
        store._patient_key_ids[owner] = key_id
        return key_id

    def _retire(self, pks: list[int]) -> None:
        for start in range(0, len(pks), 500):
            chunk = pks[start : start + 500]
            self._connection.execute(
                update(resources).where(resources.c.pk.in_(chunk)).values(is_current=False)
            )
            self._connection.execute(
                search_tokens.delete().where(search_tokens.c.resource_pk.in_(chunk))
            )

    def _insert(self, rows: list[tuple], token_lists: list[list[tuple[str, str]]]) -> None:
        if not rows:
            return
        # Bulk rows go straight to the driver's executemany: SQLAlchemy's per-row parameter
        # processing cost more than the database itself here. RETURNING is avoided because with
        # parameter order it falls back to a statement per row on SQLite.
        self._executemany(resources.name, _RESOURCE_COLUMNS, rows)
        inserted = self._current_rows([row[1] for row in rows])
        tokens = [
            (inserted[(row[0], row[1])][0], param, value_hash)
            for row, hashed in zip(rows, token_lists, strict=True)
            for param, value_hash in hashed
        ]
        if tokens:
            self._executemany(search_tokens.name, _TOKEN_COLUMNS, tokens)

    def _executemany(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        if not self._store.is_sqlite:
            self._copy_into(table, columns, rows)
            return
        statement = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )
        self._connection.exec_driver_sql(statement, rows)

    def _copy_into(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """PostgreSQL's bulk path: COPY streams rows where executemany pays a round trip each."""
        driver_connection = self._connection.connection.driver_connection
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        cursor = driver_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)


def _check_encryption_setting(engine: Engine, encrypt: bool) -> None:
    """A store keeps the encryption mode it was created with; never mix the two."""
    wanted = AES_GCM if encrypt else PLAINTEXT
    with engine.begin() as connection:
        current = connection.execute(
            select(store_settings.c.value).where(store_settings.c.name == ENCRYPTION_SETTING)
        ).scalar_one_or_none()
        if current is None:
            connection.execute(insert(store_settings).values(name=ENCRYPTION_SETTING, value=wanted))
        elif current != wanted:
            raise StoreError(f"this store was created with encryption={current}, not {wanted}")


def metadata_tables() -> list:
    """Every table of the store, for audits of what is stored."""
    return [store_settings, data_keys, resources, search_tokens]


_RESOURCE_COLUMNS = (
    "resource_type",
    "id_hash",
    "version",
    "is_current",
    "patient_hash",
    "data_key_id",
    "content_hash",
    "body",
    "last_updated",
    "date_start",
    "date_end",
)
_TOKEN_COLUMNS = ("resource_pk", "param", "value_hash")


def _naive_utc(moment: datetime | None) -> datetime | None:
    """What `UtcDateTime` stores, for rows written without SQLAlchemy's type processing."""
    return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)


def _sqlite_time(moment: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DateTime text format: always with microseconds, so text order is time
    # order and rows written here compare correctly with rows written through SQLAlchemy.
    naive = _naive_utc(moment)
    return None if naive is None else naive.isoformat(sep=" ", timespec="microseconds")


def _row_binding(resource_type: str, id_hash: str, version: int) -> bytes:
    """Associated data: a ciphertext copied onto another row fails to open."""
    return f"{resource_type}|{id_hash}|{version}".encode()


def _date_condition(bound: DateBound):  # type: ignore[no-untyped-def]
    start, end = resources.c.date_start, resources.c.date_end
    match bound.prefix:
        case "eq":  # the resource's period lies within the search period
            return and_(start >= bound.start, end <= bound.end)
        case "ne":
            return ~and_(start >= bound.start, end <= bound.end)
        case "lt" | "eb":
            return start < bound.start
        case "le":
            return start <= bound.end
        case "gt" | "sa":
            return end > bound.end
        case "ge":
            return end >= bound.start
        case "ap":  # approximately: overlaps the search period
            return and_(start <= bound.end, end >= bound.start)
    raise StoreError(f"unknown date prefix {bound.prefix!r}")


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
