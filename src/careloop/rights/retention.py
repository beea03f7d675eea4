"""The retention job: find patients whose record has outlived its retention period, and erase them.

When is a patient's last activity? Retention rules for medical records run from the last care
(for example ten years after treatment ends), not from when the data were copied into careloop.
So activity is the latest *clinical* time in the compartment: the end of the period a resource is
about, else its start (`resources.date_end` / `date_start`, which ingest derives from each type's
clinical date). `last_updated` (when careloop wrote the row) is used only for a compartment that
has no dated resource at all (a lone Patient): otherwise loading an old record today, or merely
migrating stores, would restart every clock. Only current versions count.

Consequences, all on the side of keeping data: an open-ended period (an encounter or care plan
without an end) counts as activity up to the end of time, so the patient is never due; a date in
the future (a planned visit) is activity in the future.

Overrides set a longer (or shorter) period per resource type, e.g. immunizations kept 50 years.
Erasure takes a whole compartment (its one key), so a patient is due only when *every* resource
type in the compartment is older than that type's period.

The job sees only blind-index hashes: one GROUP BY over current rows (`patient_activity`), no
decryption. With `apply`, each candidate is erased by hash (basis "retention") and is checked
again inside the erasure transaction, with the patient locked against writes: a patient who gained
activity since the listing is skipped, never erased.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby

from sqlalchemy import Connection

from careloop.rights.erasure import ErasureResult, erase_patient_hash
from careloop.store.repository import ResourceStore

Activity = tuple[str, datetime | None, datetime]  # (resource type, latest clinical, latest load)
MAX_YEARS = 200


class RetentionError(ValueError):
    """A retention policy or run is malformed; the message carries no patient data."""


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep records `years` after the last activity; `overrides` by resource type."""

    years: int = 10
    overrides: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_years(self.years, "years")
        for resource_type, years in self.overrides.items():
            if not isinstance(resource_type, str) or not resource_type.isalpha():
                raise RetentionError("override keys must be FHIR resource type names")
            _check_years(years, f"the override for {resource_type}")

    def years_for(self, resource_type: str) -> int:
        return self.overrides.get(resource_type, self.years)

    def cutoff(self, resource_type: str, now: datetime) -> datetime:
        """Activity before this moment is outside the period for this type."""
        return _years_before(now, self.years_for(resource_type))


@dataclass(frozen=True, slots=True)
class RetentionCandidate:
    patient_hash: str
    last_activity: datetime


@dataclass(frozen=True)
class RetentionRun:
    candidates: list[RetentionCandidate]
    erased: list[ErasureResult]  # empty on a dry run
    # patients that gained activity between the listing and their erasure: kept
    skipped: list[str] = field(default_factory=list)
    applied: bool = False


def find_expired(
    store: ResourceStore, policy: RetentionPolicy, *, now: datetime | None = None
) -> list[RetentionCandidate]:
    """Patients whose last activity is older than the policy allows, oldest first."""
    moment = _aware(now)
    candidates = []
    rows = store.patient_activity()
    for patient_hash, group in groupby(rows, key=lambda row: row[0]):
        last = last_activity_if_due(policy, [row[1:] for row in group], moment)
        if last is not None:
            candidates.append(RetentionCandidate(patient_hash, last))
    candidates.sort(key=lambda c: (c.last_activity, c.patient_hash))
    return candidates


def last_activity_if_due(
    policy: RetentionPolicy, activity: Iterable[Activity], now: datetime
) -> datetime | None:
    """The compartment's last activity when every type in it is past its period, else None."""
    rows = list(activity)
    dated = [
        (resource_type, clinical) for resource_type, clinical, _ in rows if clinical is not None
    ]
    measured = dated or [(resource_type, loaded) for resource_type, _, loaded in rows]
    if not measured:
        return None
    if any(moment >= policy.cutoff(resource_type, now) for resource_type, moment in measured):
        return None
    return max(moment for _, moment in measured)


def run_retention(
    store: ResourceStore,
    policy: RetentionPolicy,
    *,
    apply: bool = False,
    erased_by: str,
    now: datetime | None = None,
) -> RetentionRun:
    """List who is due; with `apply`, erase them (basis "retention"). A dry run changes nothing."""
    moment = _aware(now)
    candidates = find_expired(store, policy, now=moment)
    if not apply:
        return RetentionRun(candidates, [])
    erased, skipped = erase_candidates(store, policy, candidates, erased_by=erased_by, now=moment)
    return RetentionRun(candidates, erased, skipped, applied=True)


def erase_candidates(
    store: ResourceStore,
    policy: RetentionPolicy,
    candidates: Iterable[RetentionCandidate],
    *,
    erased_by: str,
    now: datetime | None = None,
) -> tuple[list[ErasureResult], list[str]]:
    """Erase each candidate still due at `now`; returns (erasures, hashes skipped as active)."""
    moment = _aware(now)
    erased: list[ErasureResult] = []
    skipped: list[str] = []
    for candidate in candidates:
        guard = _still_due(store, policy, candidate.patient_hash, moment)
        try:
            result = erase_patient_hash(
                store,
                candidate.patient_hash,
                erased_by=erased_by,
                basis="retention",
                now=moment,
                precondition=guard,
                scrub=False,
            )
        except _StillActive:
            skipped.append(candidate.patient_hash)
            continue
        erased.append(result)
    if any(not result.already_erased for result in erased):
        store.scrub_freed_space()  # once for the batch
    return erased, skipped


class _StillActive(Exception):
    """Raised inside the erasure transaction to abort it: the patient is no longer due."""


def _still_due(
    store: ResourceStore, policy: RetentionPolicy, patient_hash: str, now: datetime
) -> Callable[[Connection], None]:
    def check(connection: Connection) -> None:
        rows = store.patient_activity([patient_hash], connection)
        if last_activity_if_due(policy, [row[1:] for row in rows], now) is None:
            raise _StillActive

    return check


def _check_years(years: object, what: str) -> None:
    if isinstance(years, bool) or not isinstance(years, int) or not 1 <= years <= MAX_YEARS:
        raise RetentionError(f"{what} must be a whole number of years from 1 to {MAX_YEARS}")


def _years_before(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year - years)
    except ValueError:  # 29 February in a year that has none
        return moment.replace(year=moment.year - years, day=28)


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise RetentionError("the retention reference time must be time-zone aware")
    return now.astimezone(UTC)
