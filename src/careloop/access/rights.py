"""Patient rights and data exports, guarded: each checks the right, confines a patient to their own
record, applies consent, writes its audit record, and only then calls the mechanism in
`careloop.rights` or `careloop.deid`.

Writes (a Consent, an amendment request) go through `write`, the caller's ingest of one resource,
so they are validated and stored exactly like any other FHIR write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from careloop.access.errors import AccessDenied
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Permission
from careloop.audit.events import AuditAction, AuditOutcome
from careloop.deid import Deidentifier
from careloop.fhir.indexing import patient_id_of
from careloop.rights.amendment import amendment_request, target_in_compartment
from careloop.rights.erasure import ErasureResult, erase_patient
from careloop.rights.export import patient_record_bundle
from careloop.store.repository import StoreError

WriteOne = Callable[[dict], None]
MAX_CHANGE_TEXT = 4000


def export_record(
    access: AccessLayer, principal: Principal, ctx: AccessContext, patient_id: str
) -> dict:
    """The patient's record as a FHIR Bundle (the right of access), as far as consent allows
    this principal to see it."""
    access.authorize(principal, ctx, Permission.RECORD_EXPORT, action=AuditAction.EXPORT)
    access.require_own_patient(principal, ctx, patient_id)
    release = access.patient_compartment(
        principal, ctx, patient_id, action=AuditAction.EXPORT, permission=Permission.RECORD_EXPORT
    )
    return patient_record_bundle(
        access.store, patient_id, resources=[item.body for item in release.resources]
    )


def request_amendment(
    access: AccessLayer,
    principal: Principal,
    ctx: AccessContext,
    patient_id: str,
    target_reference: str,
    requested_change: str,
    write: WriteOne,
) -> dict:
    """Record a request to amend part of the record (HIPAA §164.526) as a FHIR Task for the
    care team to accept or refuse; nothing in the record changes until they do."""
    access.authorize(
        principal, ctx, Permission.AMENDMENT_REQUEST, action=AuditAction.AMENDMENT_REQUEST
    )
    access.require_own_patient(principal, ctx, patient_id)
    requested_change = requested_change.strip()
    if not 1 <= len(requested_change) <= MAX_CHANGE_TEXT:
        raise ValueError(f"the requested change must be 1 to {MAX_CHANGE_TEXT} characters")
    _split_reference(target_reference)  # a clear 400 for anything but Type/id
    if not target_in_compartment(access.store, patient_id, target_reference):
        raise AccessDenied(
            "the resource to amend is not in this patient's record", status=404, code="not-found"
        )
    requester = principal.fhir_user or f"Patient/{patient_id}"
    task = amendment_request(patient_id, target_reference, requested_change, requester)
    write(task)
    access.record(
        principal,
        ctx,
        AuditAction.AMENDMENT_REQUEST,
        patient_id=patient_id,
        entities=(target_reference, f"Task/{task['id']}"),
    )
    return task


def record_consent(
    access: AccessLayer, principal: Principal, ctx: AccessContext, consent: dict, write: WriteOne
) -> dict:
    """Store a patient's Consent (a patient records their own; care staff record one for the
    patient). From the next read on, the access layer enforces it."""
    access.authorize(principal, ctx, Permission.CONSENT_MANAGE, action=AuditAction.CONSENT_DECISION)
    if consent.get("resourceType") != "Consent":
        raise ValueError("the body must be a FHIR Consent resource")
    patient_id = patient_id_of(consent)
    if patient_id is None:
        raise ValueError("Consent.patient must reference the patient (Patient/<id>)")
    access.require_own_patient(principal, ctx, patient_id)
    write(consent)
    access.record(
        principal,
        ctx,
        AuditAction.CONSENT_DECISION,
        patient_id=patient_id,
        entities=(f"Consent/{consent.get('id', '')}",),
        detail="consent recorded",
    )
    return consent


def request_erasure(
    access: AccessLayer, principal: Principal, ctx: AccessContext, patient_id: str
) -> None:
    """A patient asks for their record to be erased; an administrator carries it out (records
    under a legal hold must be kept, which needs a person to check). Audited for review."""
    access.authorize(principal, ctx, Permission.ERASURE_REQUEST, action=AuditAction.ERASURE)
    access.require_own_patient(principal, ctx, patient_id)
    access.record(
        principal,
        ctx,
        AuditAction.ERASURE,
        AuditOutcome.SUCCESS,
        patient_id=patient_id,
        flags={"erasure-requested"},
        detail="erasure requested by the patient",
    )


def erase(
    access: AccessLayer,
    principal: Principal,
    ctx: AccessContext,
    patient_id: str,
    basis: str = "patient-request",
) -> ErasureResult:
    """Crypto-shred the patient's record. The audit record is the tombstone's witness: written
    in the same breath, naming the patient, which is all that remains of them."""
    access.authorize(principal, ctx, Permission.ERASURE_EXECUTE, action=AuditAction.ERASURE)
    try:
        result = erase_patient(access.store, patient_id, erased_by=principal.subject, basis=basis)
    except StoreError as exc:
        access.record(
            principal,
            ctx,
            AuditAction.ERASURE,
            AuditOutcome.MINOR_FAILURE,
            patient_id=patient_id,
            detail="erasure refused: no such record",
        )
        raise AccessDenied(str(exc), status=404, code="not-found") from None
    access.relationships.forget(patient_id)
    access.break_glass.redact_reasons(patient_id)
    access.record(
        principal,
        ctx,
        AuditAction.ERASURE,
        patient_id=patient_id,
        flags={"erasure"},
        detail=f"{result.resources_shredded} resources crypto-shredded ({basis})"
        + ("; already erased" if result.already_erased else ""),
    )
    return result


def deidentified_compartments(
    access: AccessLayer,
    principal: Principal,
    ctx: AccessContext,
    patient_ids: Iterable[str] | None = None,
) -> Iterator[list[dict]]:
    """De-identified patient compartments for research or model training: only patients whose
    consent permits the purpose, only the resources it releases, de-identified before they
    leave. Every builder of training data reads through here."""
    if ctx.purpose not in (Purpose.RESEARCH, Purpose.MODEL_TRAINING, Purpose.QUALITY_IMPROVEMENT):
        raise AccessDenied(
            "de-identified exports are for research, model training or quality improvement"
        )
    deidentifier = Deidentifier(access.store.service_key("pseudonym"))
    for patient_id, resources in access.research_compartments(principal, ctx, patient_ids):
        yield deidentifier.patient_resources(patient_id, resources)


def _split_reference(reference: str) -> tuple[str, str]:
    resource_type, _, resource_id = reference.partition("/")
    if not resource_type or not resource_id or "/" in resource_id:
        raise ValueError("the target must be a relative reference Type/id")
    return resource_type, resource_id
