"""The access layer: the one door between a principal and patient data.

Every read of patient data, from the HTTP API, the CLI or a training-data builder, goes through
`AccessLayer`, which in one place:

1. checks the role against the authorization table and, for API clients, the SMART scopes;
2. checks the purpose of use is one the role may state;
3. confines a patient to their own record;
4. evaluates the patient's FHIR Consent resources for every resource released, by actor,
   purpose, data class (security labels, explicit or inferred from codes) and time, with a
   break-glass grant letting a care role past a consent denial;
5. writes one FHIR AuditEvent per patient touched (BALP), including denials, *before* any data
   leaves: if the audit cannot be written, nothing is released (fail closed).

Nothing here knows about HTTP; the web layer maps `AccessDenied` to 403 or 404.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from careloop.access.consent import (
    AccessRequest,
    ConsentDecision,
    ConsentPolicy,
    ParsedConsent,
    evaluate,
    needs_security_labels,
    parse_consent,
)
from careloop.access.errors import AccessDenied
from careloop.access.labels import security_labels
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.relationships import BreakGlass, BreakGlassGrant, CareRelationships
from careloop.access.roles import CARE_ROLES, Permission, Role, allows
from careloop.audit.events import AuditAction, AuditOutcome, AuditRecord
from careloop.audit.log import AuditLog
from careloop.fhir.indexing import clinical_period, patient_id_of
from careloop.identity.scopes import ScopeSet
from careloop.store.repository import ResourceStore, SearchPage, StoredResource

# The purposes each role may state. Anything else is refused before data is touched.
ALLOWED_PURPOSES: dict[Role, frozenset[Purpose]] = {
    **{
        role: frozenset(
            {
                Purpose.TREATMENT,
                Purpose.EMERGENCY_TREATMENT,
                Purpose.BREAK_THE_GLASS,
                Purpose.QUALITY_IMPROVEMENT,
                Purpose.OPERATIONS,
                Purpose.PATIENT_REQUEST,  # staff fulfilling a patient's request for their record
            }
        )
        for role in CARE_ROLES
    },
    Role.PATIENT: frozenset({Purpose.PATIENT_REQUEST}),
    Role.DATA_SCIENTIST: frozenset(
        {Purpose.RESEARCH, Purpose.MODEL_TRAINING, Purpose.QUALITY_IMPROVEMENT}
    ),
    Role.AUDITOR: frozenset({Purpose.OPERATIONS}),
    Role.AI_COMMITTEE: frozenset({Purpose.OPERATIONS, Purpose.QUALITY_IMPROVEMENT}),
    Role.ADMIN: frozenset({Purpose.OPERATIONS}),
    Role.INTEGRATION: frozenset({Purpose.OPERATIONS, Purpose.TREATMENT}),
    Role.EHR: frozenset({Purpose.TREATMENT, Purpose.EMERGENCY_TREATMENT}),
    Role.MONITOR: frozenset({Purpose.TREATMENT}),
}
# Purposes under which an active break-glass grant overrides a consent denial.
BREAK_GLASS_PURPOSES = frozenset(
    {Purpose.TREATMENT, Purpose.EMERGENCY_TREATMENT, Purpose.BREAK_THE_GLASS}
)
# A patient's consents are records the care team must be able to see (to honour them), so they
# are not themselves filtered by consent.
UNFILTERED_TYPES = frozenset({"Consent"})
CONSENT_PAGE = 1000


@dataclass
class _PatientAccess:
    """What one request did with one patient's data, for its audit record."""

    released: list[str] = field(default_factory=list)
    withheld: list[ConsentDecision] = field(default_factory=list)
    break_glass: BreakGlassGrant | None = None
    relationship: bool = True


@dataclass(frozen=True)
class _Prefetched:
    """What judging a page of patients needs, read for all of them at once."""

    consents: dict[str, list[dict]]  # patient id -> their current Consents
    related: set[str]  # the patients the principal has a care relationship with


@dataclass(frozen=True)
class Release:
    """The result of a guarded read: what may be shown, and how much consent withheld."""

    resources: list[StoredResource]
    withheld: int


class AccessLayer:
    def __init__(
        self,
        store: ResourceStore,
        *,
        consent_policy: ConsentPolicy | None = None,
        break_glass_duration: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.audit = AuditLog(store)
        self.consent_policy = consent_policy or ConsentPolicy()
        self.relationships = CareRelationships(store)
        self.break_glass = BreakGlass(store, break_glass_duration)
        self.clock = clock

    # -- authorization -------------------------------------------------------------------------

    def authorize(
        self,
        principal: Principal,
        ctx: AccessContext,
        permission: Permission,
        *,
        resource_type: str | None = None,
        interaction: str | None = None,
        action: AuditAction = AuditAction.READ,
    ) -> None:
        """Role, scope and purpose checks; a refusal is audited and raised as AccessDenied."""
        problem = self._authorization_problem(
            principal, ctx, permission, resource_type, interaction
        )
        if problem is not None:
            self._record(principal, ctx, action, AuditOutcome.MINOR_FAILURE, detail=problem)
            raise AccessDenied(problem)

    def _authorization_problem(
        self,
        principal: Principal,
        ctx: AccessContext,
        permission: Permission,
        resource_type: str | None,
        interaction: str | None,
    ) -> str | None:
        if not allows(principal.role, permission):
            return f"the {principal.role.value} role does not have the {permission.value} right"
        if permission is Permission.PUBLIC or permission is Permission.SESSION:
            return None
        if ctx.purpose not in ALLOWED_PURPOSES[principal.role]:
            return f"the {principal.role.value} role may not act for purpose {ctx.purpose.value}"
        if (
            principal.scopes is not None
            and resource_type
            and interaction
            and not scope_set(principal.scopes).allows(resource_type, interaction)
        ):
            return f"the token's scopes do not allow '{interaction}' on {resource_type}"
        return None

    def require_own_patient(
        self, principal: Principal, ctx: AccessContext, patient_id: str
    ) -> None:
        """A patient reaches only their own record; anyone else passes."""
        if principal.role is not Role.PATIENT:
            return
        if principal.own_patient_id != patient_id:
            self._record(
                principal,
                ctx,
                AuditAction.READ,
                AuditOutcome.MINOR_FAILURE,
                patient_id=patient_id,
                flags={"other-patient"},
                detail="a patient reached for another patient's record",
            )
            raise AccessDenied("a patient may only reach their own record")

    # -- guarded reads ---------------------------------------------------------------------------

    def read(
        self, principal: Principal, ctx: AccessContext, resource_type: str, resource_id: str
    ) -> StoredResource | None:
        """The current version, or None when there is none; AccessDenied when it is withheld."""
        self.authorize(
            principal, ctx, Permission.PATIENT_READ, resource_type=resource_type, interaction="r"
        )
        stored = self.store.read(resource_type, resource_id)
        if stored is None:
            self._record(
                principal,
                ctx,
                AuditAction.READ,
                AuditOutcome.MINOR_FAILURE,
                detail="no such resource",
            )
            return None
        release = self._release(principal, ctx, [stored], AuditAction.READ)
        if not release.resources:
            raise AccessDenied("withheld by the patient's consent")
        return stored

    def history(
        self, principal: Principal, ctx: AccessContext, resource_type: str, resource_id: str
    ) -> list[StoredResource]:
        """Every version, newest first; withheld as a whole when any version is withheld."""
        self.authorize(
            principal,
            ctx,
            Permission.PATIENT_READ,
            resource_type=resource_type,
            interaction="r",
            action=AuditAction.HISTORY,
        )
        versions = self.store.history(resource_type, resource_id)
        if not versions:
            self._record(
                principal,
                ctx,
                AuditAction.HISTORY,
                AuditOutcome.MINOR_FAILURE,
                detail="no such resource",
            )
            return []
        release = self._release(principal, ctx, versions, AuditAction.HISTORY)
        if release.withheld:
            raise AccessDenied("withheld by the patient's consent")
        return versions

    def search(
        self,
        principal: Principal,
        ctx: AccessContext,
        resource_type: str,
        run: Callable[[str | None], SearchPage],
        *,
        patient_id: str | None,
        query_text: str,
    ) -> tuple[SearchPage, int]:
        """Run a search (`run(patient_id)`) and release what consent permits.

        A patient's search is confined to their own record whatever they asked for. Withheld
        resources are left out of the page; the count withheld is returned for the caller to
        decide what to say (the API then omits `total`, which would reveal them).
        """
        self.authorize(
            principal,
            ctx,
            Permission.PATIENT_READ,
            resource_type=resource_type,
            interaction="s",
            action=AuditAction.SEARCH,
        )
        if principal.role is Role.PATIENT:
            if patient_id is not None:
                self.require_own_patient(principal, ctx, patient_id)
            patient_id = principal.own_patient_id
        page = run(patient_id)
        release = self._release(
            principal,
            ctx,
            page.resources,
            AuditAction.SEARCH,
            query_text=query_text,
            searched_patient=patient_id,
        )
        return SearchPage(total=page.total, resources=release.resources), release.withheld

    def patient_compartment(
        self,
        principal: Principal,
        ctx: AccessContext,
        patient_id: str,
        resource_types: Sequence[str] = (),
        action: AuditAction = AuditAction.READ,
        permission: Permission = Permission.PATIENT_READ,
    ) -> Release:
        """One patient's current resources that this principal may see."""
        self.authorize(
            principal, ctx, permission, resource_type="Patient", interaction="r", action=action
        )
        self.require_own_patient(principal, ctx, patient_id)
        stored = list(self.store.patient_compartment(patient_id, resource_types))
        return self._release(principal, ctx, stored, action, searched_patient=patient_id)

    def screen(
        self,
        principal: Principal,
        ctx: AccessContext,
        patient_id: str,
        resources: Sequence[dict],
        action: AuditAction = AuditAction.READ,
    ) -> list[dict]:
        """Judge data careloop did not read from its own store (an EHR's CDS Hooks prefetch, or
        what careloop fetched from the EHR's FHIR server) as if it had: the patient's consents in
        careloop apply to what careloop processes whatever its source, and the use is audited."""
        self.authorize(
            principal,
            ctx,
            Permission.PATIENT_READ,
            resource_type="Patient",
            interaction="r",
            action=action,
        )
        self.require_own_patient(principal, ctx, patient_id)
        now = self.clock()
        received = [
            StoredResource(str(body.get("resourceType", "")), 0, now, body) for body in resources
        ]
        release = self._release(principal, ctx, received, action, searched_patient=patient_id)
        return [item.body for item in release.resources]

    # -- consent and audit ----------------------------------------------------------------------

    def _release(
        self,
        principal: Principal,
        ctx: AccessContext,
        stored: Sequence[StoredResource],
        action: AuditAction,
        *,
        query_text: str | None = None,
        searched_patient: str | None = None,
    ) -> Release:
        """Consent-filter resources of any number of patients; audit; then hand them out."""
        now = self.clock()
        by_patient: dict[str | None, list[StoredResource]] = defaultdict(list)
        for item in stored:
            by_patient[patient_id_of(item.body)].append(item)
        if not by_patient and searched_patient is not None:
            by_patient[searched_patient] = []
        released: list[StoredResource] = []
        records: list[AuditRecord] = []
        denied_other_patient = False
        known = self._prefetch(principal, [p for p in by_patient if p is not None], now)
        for patient_id, items in by_patient.items():
            if principal.role is Role.PATIENT and patient_id not in (
                None,
                principal.own_patient_id,
            ):
                denied_other_patient = True
                records.append(
                    self._audit_record(
                        principal,
                        ctx,
                        action,
                        AuditOutcome.MINOR_FAILURE,
                        patient_id=patient_id,
                        flags={"other-patient"},
                        query_text=query_text,
                        detail="a patient reached for another patient's record",
                    )
                )
                continue
            access, kept = self._judge_patient(principal, ctx, patient_id, items, now, known)
            released.extend(kept)
            records.append(
                self._patient_audit_record(principal, ctx, action, patient_id, access, query_text)
            )
        if not records:
            records.append(
                self._audit_record(
                    principal, ctx, action, AuditOutcome.SUCCESS, query_text=query_text
                )
            )
        self.audit.append_many(records)  # before anything is released
        if denied_other_patient and not released:
            raise AccessDenied("a patient may only reach their own record")
        withheld = len(stored) - len(released)
        kept_ids = {id(item) for item in released}
        ordered = [item for item in stored if id(item) in kept_ids]
        return Release(resources=ordered, withheld=withheld)

    def _prefetch(
        self, principal: Principal, patient_ids: list[str], now: datetime
    ) -> _Prefetched | None:
        """For a page of many patients, their Consents and care relationships in a few
        queries rather than a few per patient; None for one patient (read as it comes)."""
        if len(patient_ids) < 2 or principal.role is Role.PATIENT:
            return None
        consents: dict[str, list[dict]] = {patient_id: [] for patient_id in patient_ids}
        for item in self.store.compartments(patient_ids, ("Consent",)):
            owner = patient_id_of(item.body)
            if owner in consents:
                consents[owner].append(item.body)
        related = (
            self.relationships.related(principal.fhir_user, patient_ids, now)
            if principal.role in CARE_ROLES
            else set()
        )
        return _Prefetched(consents, related)

    def _judge_patient(
        self,
        principal: Principal,
        ctx: AccessContext,
        patient_id: str | None,
        items: Sequence[StoredResource],
        now: datetime,
        known: _Prefetched | None = None,
    ) -> tuple[_PatientAccess, list[StoredResource]]:
        access = _PatientAccess()
        if patient_id is None or principal.role is Role.PATIENT:
            # resources outside any compartment, or a patient's own record: no consent applies
            access.released = [_reference(item) for item in items]
            return access, list(items)
        if principal.role in CARE_ROLES:
            access.relationship = (
                patient_id in known.related
                if known is not None
                else self.relationships.exists(principal.fhir_user, patient_id, now)
            )
        stored_consents = (
            known.consents[patient_id] if known is not None else self.consents_of(patient_id)
        )
        consents = [parse_consent(consent) for consent in stored_consents]
        with_labels = needs_security_labels(consents)
        # with no Consent on record, the policy's default decides every resource alike
        uniform = None if consents else self._default_decision(principal, ctx, patient_id, now)
        kept: list[StoredResource] = []
        for item in items:
            if uniform is not None and item.resource_type not in UNFILTERED_TYPES:
                decision = uniform
            else:
                decision = self.decide(
                    principal, ctx, patient_id, item.body, consents, now, with_labels=with_labels
                )
            if not decision.permitted and self._break_glass_applies(principal, ctx):
                access.break_glass = access.break_glass or self.break_glass.active(
                    principal.subject, patient_id, now
                )
                if access.break_glass is not None:
                    decision = ConsentDecision(True, "break-glass", None, None)
            if decision.permitted:
                kept.append(item)
                access.released.append(_reference(item))
            else:
                access.withheld.append(decision)
        return access, kept

    def decide(
        self,
        principal: Principal,
        ctx: AccessContext,
        patient_id: str,
        resource: dict,
        consents: Sequence[dict | ParsedConsent],
        now: datetime,
        *,
        with_labels: bool = True,
    ) -> ConsentDecision:
        resource_type = str(resource.get("resourceType", ""))
        if resource_type in UNFILTERED_TYPES:
            return ConsentDecision(True, "consent records are visible to the care team", None, None)
        start, end = clinical_period(resource)
        request = AccessRequest(
            patient_id=patient_id,
            actor_references=principal.actor_references,
            actor_role=principal.role.value,
            purpose=ctx.purpose,
            resource_type=resource_type,
            security_labels=security_labels(resource) if with_labels else frozenset(),
            data_period=(start, end) if start or end else None,
            resource_reference=f"{resource_type}/{resource.get('id', '')}",
            resource_codes=_codes_of(resource),
            at=now,
        )
        return evaluate(consents, request, self.consent_policy)

    def _default_decision(
        self, principal: Principal, ctx: AccessContext, patient_id: str, now: datetime
    ) -> ConsentDecision:
        """The decision for any resource of a patient without consents: the configured default
        for the purpose (evaluated once, not once per resource)."""
        request = AccessRequest(
            patient_id=patient_id,
            actor_references=principal.actor_references,
            actor_role=principal.role.value,
            purpose=ctx.purpose,
            resource_type="",
            at=now,
        )
        return evaluate([], request, self.consent_policy)

    def consents_of(self, patient_id: str) -> list[dict]:
        page = self.store.search("Consent", patient_id=patient_id, count=CONSENT_PAGE)
        return [item.body for item in page.resources]

    def _break_glass_applies(self, principal: Principal, ctx: AccessContext) -> bool:
        return principal.role in CARE_ROLES and ctx.purpose in BREAK_GLASS_PURPOSES

    def _patient_audit_record(
        self,
        principal: Principal,
        ctx: AccessContext,
        action: AuditAction,
        patient_id: str | None,
        access: _PatientAccess,
        query_text: str | None,
    ) -> AuditRecord:
        flags: set[str] = set()
        details = []
        if not access.relationship:
            flags.add("no-care-relationship")
        if access.break_glass is not None:
            flags.add("break-glass")
            details.append(f"under break-glass grant {access.break_glass.grant_id}")
        if access.withheld:
            flags.add("consent-denied")
            bases = sorted({decision.basis for decision in access.withheld})
            details.append(f"{len(access.withheld)} withheld: {'; '.join(bases)}"[:400])
        outcome = AuditOutcome.SUCCESS
        if access.withheld and not access.released:
            outcome = AuditOutcome.MINOR_FAILURE
        return self._audit_record(
            principal,
            ctx,
            action,
            outcome,
            patient_id=patient_id,
            entities=tuple(access.released[:200]),
            flags=flags,
            query_text=query_text,
            detail="; ".join(details) or None,
            purpose=Purpose.BREAK_THE_GLASS if access.break_glass else None,
        )

    def _audit_record(
        self,
        principal: Principal,
        ctx: AccessContext,
        action: AuditAction,
        outcome: AuditOutcome,
        *,
        patient_id: str | None = None,
        entities: tuple[str, ...] = (),
        flags: Iterable[str] = (),
        query_text: str | None = None,
        detail: str | None = None,
        purpose: Purpose | None = None,
    ) -> AuditRecord:
        return AuditRecord(
            action=action,
            outcome=outcome,
            agent=principal.subject,
            role=principal.role.value,
            agent_kind=principal.kind,
            fhir_user=principal.fhir_user,
            purpose=(purpose or ctx.purpose).value,
            patient_id=patient_id,
            entities=entities,
            query=query_text,
            source_address=ctx.source or None,
            flags=frozenset(flags),
            detail=detail,
        )

    def _record(
        self,
        principal: Principal,
        ctx: AccessContext,
        action: AuditAction,
        outcome: AuditOutcome,
        **details: object,
    ) -> None:
        self.audit.append(self._audit_record(principal, ctx, action, outcome, **details))  # type: ignore[arg-type]

    def record(
        self,
        principal: Principal,
        ctx: AccessContext,
        action: AuditAction,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        *,
        patient_id: str | None = None,
        entities: tuple[str, ...] = (),
        flags: Iterable[str] = (),
        detail: str | None = None,
    ) -> None:
        """Audit an action decided elsewhere (login, write, export, erasure ...)."""
        self.audit.append(
            self._audit_record(
                principal,
                ctx,
                action,
                outcome,
                patient_id=patient_id,
                entities=entities,
                flags=flags,
                detail=detail,
            )
        )

    # -- break-glass -----------------------------------------------------------------------------

    def grant_break_glass(
        self,
        principal: Principal,
        ctx: AccessContext,
        patient_id: str,
        reason: str,
        duration: timedelta | None = None,
    ) -> BreakGlassGrant:
        """Emergency access past consent for one patient: a stated reason, a time limit, and
        every use flagged for the audit review."""
        self.authorize(principal, ctx, Permission.BREAK_GLASS, action=AuditAction.BREAK_GLASS)
        try:
            grant = self.break_glass.grant(
                principal.subject, patient_id, reason, duration=duration, now=self.clock()
            )
        except ValueError as exc:
            self._record(
                principal,
                ctx,
                AuditAction.BREAK_GLASS,
                AuditOutcome.MINOR_FAILURE,
                patient_id=patient_id,
                detail=str(exc),
            )
            raise
        self._record(
            principal,
            ctx,
            AuditAction.BREAK_GLASS,
            AuditOutcome.SUCCESS,
            patient_id=patient_id,
            flags={"break-glass"},
            detail=f"grant {grant.grant_id} until {grant.expires_at.isoformat()}",
        )
        return grant

    # -- training data -------------------------------------------------------------------------

    def consented_patients(
        self, principal: Principal, ctx: AccessContext, patient_ids: Iterable[str]
    ) -> Iterator[str]:
        """The patients whose consent permits `ctx.purpose` (research or model training) at the
        record level. Every builder of training or research data starts here, so an opt-out is
        honoured everywhere; each patient left out is audited as a consent denial."""
        self.authorize(
            principal, ctx, Permission.DEIDENTIFIED_EXPORT, action=AuditAction.DEIDENTIFIED_EXPORT
        )
        now = self.clock()
        for patient_id in patient_ids:
            decision = evaluate(
                self.consents_of(patient_id),
                AccessRequest(
                    patient_id=patient_id,
                    actor_references=principal.actor_references,
                    actor_role=principal.role.value,
                    purpose=ctx.purpose,
                    resource_type="Patient",
                    security_labels=frozenset(),
                    data_period=None,
                    resource_reference=f"Patient/{patient_id}",
                    at=now,
                ),
                self.consent_policy,
            )
            if decision.permitted:
                yield patient_id
            else:
                self._record(
                    principal,
                    ctx,
                    AuditAction.CONSENT_DECISION,
                    AuditOutcome.MINOR_FAILURE,
                    patient_id=patient_id,
                    flags={"consent-denied"},
                    detail=decision.basis,
                )

    def research_compartments(
        self,
        principal: Principal,
        ctx: AccessContext,
        patient_ids: Iterable[str] | None = None,
    ) -> Iterator[tuple[str, list[dict]]]:
        """Per consented patient, the resources consent releases for research or training.

        The identified resources never leave the process: callers de-identify them (see
        `careloop.access.exports`). Each patient's release is audited like any other read.
        """
        ids = self.all_patient_ids() if patient_ids is None else patient_ids
        for patient_id in self.consented_patients(principal, ctx, ids):
            stored = list(self.store.patient_compartment(patient_id))
            release = self._release(
                principal, ctx, stored, AuditAction.DEIDENTIFIED_EXPORT, searched_patient=patient_id
            )
            yield patient_id, [item.body for item in release.resources]

    def all_patient_ids(self) -> Iterator[str]:
        """Every patient id in the store (read from the Patient resources, which are sealed)."""
        offset = 0
        while True:
            page = self.store.search("Patient", count=500, offset=offset)
            if not page.resources:
                return
            for item in page.resources:
                yield str(item.body["id"])
            offset += len(page.resources)


@lru_cache(maxsize=1024)
def scope_set(scopes: frozenset[str]) -> ScopeSet:
    """A token's scopes, parsed once: they are checked for every entry of every request."""
    return ScopeSet.parse(sorted(scopes))


def _codes_of(resource: dict) -> frozenset[tuple[str, str]]:
    """The (system, code) pairs of the resource's `code`, for a provision.code criterion."""
    concept = resource.get("code")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(codings, list):
        return frozenset()
    return frozenset(
        (str(coding.get("system", "")), coding["code"])
        for coding in codings
        if isinstance(coding, dict) and isinstance(coding.get("code"), str)
    )


def _reference(item: StoredResource) -> str:
    return f"{item.resource_type}/{item.body.get('id', '')}"
