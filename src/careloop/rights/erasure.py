"""Erasure of a patient by crypto-shredding, with a tombstone.

What one erasure does, in one database transaction (`ResourceStore.shred_patient`):

- destroys the patient's data key: `data_keys.wrapped_key` becomes NULL and `destroyed_at` is set.
  Every version of every resource in the compartment was sealed with that one key (a key per
  patient hash, created on first write and reused for later versions), so the history goes too;
- deletes the compartment's rows, every version, with their search tokens. Ciphertext that can
  never be opened again is worth nothing, while its clear columns (type, clinical time, load time,
  blind indexes) would still tell when and how often the patient was seen;
- writes the tombstone (`erasures`): the patient hash, when, by whom, on what basis, how many
  resources. It holds no PHI, lets ingest refuse the patient from then on (`is_erased`), and
  lets an auditor see that the erasure happened.

Then it forgets the key in this process's caches and scrubs freed space (`scrub_freed_space`):
SQLite zeroes freed bytes and truncates its WAL; PostgreSQL rewrites `data_keys`.

What crypto-shredding buys: copies of the ciphertext elsewhere (replicas, exports of the table,
backups) cannot be opened without the data key, and the data key is gone from the live store.
What it does not buy on its own: a backup taken *before* the erasure holds the wrapped key too,
and it opens with the master key. Those copies become unreadable once the master key that wrapped
the destroyed key is retired: rotate the master key after erasures (`careloop keys rotate`) and
destroy the old one when the last backup taken under it expires. The same holds for PostgreSQL's
WAL archive and for any bytes the database engine left in freed disk blocks.

Out of scope, by design: resources outside the patient's compartment that mention the patient
(a Group listing them, a Provenance or AuditEvent pointing at their data, a shared resource); they
are sealed with the shared key and kept. The audit trail is sealed with a service key and kept, so
the erasure itself stays accountable. Care relationships and break-glass grants keyed by the
patient hash belong to the access layer, which decides their fate.

This module is mechanism: who may erase, and the audit event, belong to careloop.access. Results
carry counts and the patient hash, never an identifier or a name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection

from careloop.store.repository import ResourceStore, StoreError

ERASURE_BASES = ("patient-request", "retention")
MAX_AGENT_LENGTH = 128  # erasures.erased_by


class ErasureError(StoreError):
    """The erasure cannot be done as asked; the message carries no patient data."""


@dataclass(frozen=True, slots=True)
class ErasureResult:
    """What one call did, for the audit record: no identifier, only the blind-index hash."""

    patient_hash: str
    resources_shredded: int  # current resources (what an export of the patient showed)
    already_erased: bool  # True: an earlier erasure did it, and this call changed nothing
    versions_shredded: int = 0  # stored versions, history included
    # False: this call did not scrub freed space (a busy reader, or left to a batch's caller)
    scrubbed: bool = True


def erase_patient(
    store: ResourceStore,
    patient_id: str,
    *,
    erased_by: str,
    basis: str = "patient-request",
    now: datetime | None = None,
) -> ErasureResult:
    """Crypto-shred one patient's compartment and leave a tombstone; idempotent."""
    if not isinstance(patient_id, str) or not patient_id:
        raise ErasureError("a patient id is required to erase a patient")
    return erase_patient_hash(
        store, store.patient_hash(patient_id), erased_by=erased_by, basis=basis, now=now
    )


def erase_patient_hash(
    store: ResourceStore,
    patient_hash: str,
    *,
    erased_by: str,
    basis: str = "patient-request",
    now: datetime | None = None,
    precondition: Callable[[Connection], None] | None = None,
    scrub: bool = True,
) -> ErasureResult:
    """Erase by blind-index hash, for jobs that never see identifiers (retention).

    `precondition` runs inside the erasure transaction, once the patient is locked against
    concurrent writes, and raises to abort with nothing changed. `scrub=False` leaves freed-space
    scrubbing to the caller, so a batch of erasures scrubs once.
    """
    _check_request(erased_by, basis)
    erased_at = _aware(now)
    shredded = store.shred_patient(
        patient_hash,
        erased_by=erased_by,
        basis=basis,
        erased_at=erased_at,
        precondition=precondition,
    )
    if shredded is None:
        return ErasureResult(patient_hash, 0, already_erased=True)
    current, versions = shredded
    scrubbed = store.scrub_freed_space() if scrub else False
    return ErasureResult(patient_hash, current, False, versions, scrubbed)


def _check_request(erased_by: str, basis: str) -> None:
    if basis not in ERASURE_BASES:
        raise ErasureError(f"erasure basis must be one of {', '.join(ERASURE_BASES)}")
    if not isinstance(erased_by, str) or not erased_by.strip():
        raise ErasureError("erased_by must name who erases (a user name or client id)")
    if len(erased_by) > MAX_AGENT_LENGTH:
        raise ErasureError(f"erased_by is longer than {MAX_AGENT_LENGTH} characters")


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ErasureError("the erasure time must be time-zone aware")
    return now.astimezone(UTC)
