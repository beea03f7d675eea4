"""Care relationships and break-glass grants: the two facts that qualify a clinician's access.

A care relationship (a clinician assigned to the patient, or on their care team) does not gate
access: emergencies do not wait for paperwork. It decides what the audit review flags. A
break-glass grant lets a care role past a consent denial for one patient, for a limited time,
with a stated reason, and marks every access under it for review.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, insert, or_, select, update

from careloop.store.crypto import Sealer
from careloop.store.repository import COMPARTMENT_BATCH, ResourceStore
from careloop.store.schema import break_glass_grants, care_relationships

MIN_REASON_LENGTH = 10
MAX_REASON_LENGTH = 1000
MAX_BREAK_GLASS = timedelta(hours=4)
ERASED_REASON = "[erased with the patient's record]"
PATIENT_PAGE = 1000
KNOWN_PATIENT_IDS = 200_000  # hash -> id pairs kept by patients_of (about 30 MB)


@dataclass(frozen=True)
class BreakGlassGrant:
    grant_id: str
    agent: str
    patient_hash: str
    granted_at: datetime
    expires_at: datetime


class CareRelationships:
    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    def assign(
        self,
        practitioner: str,
        patient_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> None:
        """Record (or renew) that `practitioner` (a fhirUser reference) cares for the patient,
        from `since` (now by default; earlier when recording one that began before, such as
        an admission) until `until` (open by default)."""
        patient_hash = self.store.patient_hash(patient_id)
        key = and_(
            care_relationships.c.practitioner == practitioner,
            care_relationships.c.patient_hash == patient_hash,
        )
        with self.store.engine.begin() as connection:
            connection.execute(delete(care_relationships).where(key))
            connection.execute(
                insert(care_relationships).values(
                    practitioner=practitioner,
                    patient_hash=patient_hash,
                    since=since or datetime.now(UTC),
                    until=until,
                )
            )

    def forget(self, patient_id: str) -> int:
        """Drop the patient's relationships (on erasure)."""
        patient_hash = self.store.patient_hash(patient_id)
        with self.store.engine.begin() as connection:
            done = connection.execute(
                delete(care_relationships).where(care_relationships.c.patient_hash == patient_hash)
            )
        return done.rowcount

    def exists(self, practitioner: str | None, patient_id: str, at: datetime) -> bool:
        if not practitioner:
            return False
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(care_relationships.c.since).where(
                    care_relationships.c.practitioner == practitioner,
                    care_relationships.c.patient_hash == self.store.patient_hash(patient_id),
                    care_relationships.c.since <= at,
                    or_(care_relationships.c.until.is_(None), care_relationships.c.until > at),
                )
            ).first()
        return row is not None

    def related(
        self, practitioner: str | None, patient_ids: Sequence[str], at: datetime
    ) -> set[str]:
        """Which of `patient_ids` the practitioner cares for at `at`: `exists` for a whole
        page of patients in one query."""
        if not practitioner or not patient_ids:
            return set()
        by_hash = {self.store.patient_hash(patient_id): patient_id for patient_id in patient_ids}
        hashes = list(by_hash)
        found: set[str] = set()
        with self.store.engine.connect() as connection:
            for start in range(0, len(hashes), COMPARTMENT_BATCH):
                found.update(
                    connection.execute(
                        select(care_relationships.c.patient_hash).where(
                            care_relationships.c.practitioner == practitioner,
                            care_relationships.c.patient_hash.in_(
                                hashes[start : start + COMPARTMENT_BATCH]
                            ),
                            care_relationships.c.since <= at,
                            or_(
                                care_relationships.c.until.is_(None),
                                care_relationships.c.until > at,
                            ),
                        )
                    ).scalars()
                )
        return {by_hash[patient_hash] for patient_hash in found}

    def patients_of(self, practitioner: str, at: datetime) -> list[str]:
        """The ids of the patients `practitioner` has an active relationship with at `at`.

        The table keeps patients only as blind-index hashes, so an id is found by matching the
        hash of each stored Patient's id (the Patient resources are the only place ids are
        kept): a scan of every Patient, once. What it learns is kept (a hash always belongs to
        the same id), so later calls read only the relationships, unless a new patient turns
        up. An erased patient has no relationships left (`forget`) and is never returned."""
        with self.store.engine.connect() as connection:
            wanted = set(
                connection.execute(
                    select(care_relationships.c.patient_hash).where(
                        care_relationships.c.practitioner == practitioner,
                        care_relationships.c.since <= at,
                        or_(care_relationships.c.until.is_(None), care_relationships.c.until > at),
                    )
                ).scalars()
            )
        known = self._patient_ids()
        missing = wanted - known.keys()
        offset = 0
        while missing:
            page = self.store.search("Patient", count=PATIENT_PAGE, offset=offset)
            if not page.resources:
                break
            for item in page.resources:
                patient_id = str(item.body.get("id", ""))
                patient_hash = self.store.patient_hash(patient_id)
                if len(known) < KNOWN_PATIENT_IDS or patient_hash in missing:
                    known[patient_hash] = patient_id
                missing.discard(patient_hash)
            offset += len(page.resources)
        return sorted(known[h] for h in wanted if h in known)

    def _patient_ids(self) -> dict[str, str]:
        """Patient hash -> id, as learnt by `patients_of` (bounded by KNOWN_PATIENT_IDS)."""
        known: dict[str, str] | None = getattr(self, "_known_patient_ids", None)
        if known is None or len(known) > 2 * KNOWN_PATIENT_IDS:
            known = {}
            self._known_patient_ids = known
        return known


class BreakGlass:
    def __init__(self, store: ResourceStore, default_duration: timedelta) -> None:
        if not timedelta(0) < default_duration <= MAX_BREAK_GLASS:
            raise ValueError(f"break-glass duration must be positive and at most {MAX_BREAK_GLASS}")
        self.store = store
        self.default_duration = default_duration
        self._sealer = Sealer(store.service_key("breakglass"))

    def grant(
        self,
        agent: str,
        patient_id: str,
        reason: str,
        *,
        duration: timedelta | None = None,
        now: datetime | None = None,
    ) -> BreakGlassGrant:
        reason = reason.strip()
        if not MIN_REASON_LENGTH <= len(reason) <= MAX_REASON_LENGTH:
            raise ValueError(
                f"break-glass needs a stated reason of {MIN_REASON_LENGTH} to "
                f"{MAX_REASON_LENGTH} characters"
            )
        duration = duration or self.default_duration
        if not timedelta(0) < duration <= MAX_BREAK_GLASS:
            raise ValueError(f"break-glass lasts at most {MAX_BREAK_GLASS}")
        now = now or datetime.now(UTC)
        grant = BreakGlassGrant(
            grant_id=secrets.token_hex(16),
            agent=agent,
            patient_hash=self.store.patient_hash(patient_id),
            granted_at=now,
            expires_at=now + duration,
        )
        sealed = self._sealer.seal(reason.encode(), grant.grant_id.encode())
        with self.store.engine.begin() as connection:
            connection.execute(
                insert(break_glass_grants).values(
                    grant_id=grant.grant_id,
                    agent=agent,
                    patient_hash=grant.patient_hash,
                    reason=sealed,
                    granted_at=grant.granted_at,
                    expires_at=grant.expires_at,
                )
            )
        return grant

    def active(self, agent: str, patient_id: str, at: datetime) -> BreakGlassGrant | None:
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(break_glass_grants)
                .where(
                    break_glass_grants.c.agent == agent,
                    break_glass_grants.c.patient_hash == self.store.patient_hash(patient_id),
                    break_glass_grants.c.granted_at <= at,
                    break_glass_grants.c.expires_at > at,
                )
                .order_by(break_glass_grants.c.expires_at.desc())
            ).first()
        if row is None:
            return None
        return BreakGlassGrant(
            row.grant_id, row.agent, row.patient_hash, row.granted_at, row.expires_at
        )

    def reason(self, grant_id: str) -> str:
        with self.store.engine.connect() as connection:
            sealed = connection.execute(
                select(break_glass_grants.c.reason).where(break_glass_grants.c.grant_id == grant_id)
            ).scalar_one()
        return self._sealer.open(sealed, grant_id.encode()).decode()

    def redact_reasons(self, patient_id: str) -> int:
        """On erasure: a stated reason may describe the patient, so it goes with the record;
        that the grant happened, by whom and when, stays for the audit review."""
        patient_hash = self.store.patient_hash(patient_id)
        with self.store.engine.begin() as connection:
            grant_ids = (
                connection.execute(
                    select(break_glass_grants.c.grant_id).where(
                        break_glass_grants.c.patient_hash == patient_hash
                    )
                )
                .scalars()
                .all()
            )
            for grant_id in grant_ids:
                redacted = self._sealer.seal(ERASED_REASON.encode(), grant_id.encode())
                connection.execute(
                    update(break_glass_grants)
                    .where(break_glass_grants.c.grant_id == grant_id)
                    .values(reason=redacted)
                )
        return len(grant_ids)

    def mark_reviewed(self, grant_id: str, reviewer: str) -> bool:
        with self.store.engine.begin() as connection:
            done = connection.execute(
                update(break_glass_grants)
                .where(
                    break_glass_grants.c.grant_id == grant_id,
                    break_glass_grants.c.reviewed_at.is_(None),
                )
                .values(reviewed_by=reviewer, reviewed_at=datetime.now(UTC))
            )
        return done.rowcount == 1
