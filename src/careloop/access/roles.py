"""Roles, permissions and the one authorization table.

Every route and every CLI command that touches data names the single `Permission` it needs;
`AUTHORIZATION` says which roles hold it. Nothing else grants access, so reading this table is
reading careloop's access policy (tests walk every route for every role against it).

Separation of duties is visible in the table: the auditor reads the trail but no clinical
content, the admin configures but reads no patient data, the data scientist sees only
de-identified data, and a patient reaches only their own record (enforced by the access layer).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    CLINICIAN = "clinician"
    NURSE = "nurse"
    PHARMACIST = "pharmacist"
    CARE_COORDINATOR = "care-coordinator"
    PATIENT = "patient"  # their own record only
    DATA_SCIENTIST = "data-scientist"  # de-identified data only
    AUDITOR = "auditor"  # the audit trail, no clinical content
    # the hospital's AI committee: models, their cards, fairness, drift and alert burden, all
    # aggregate; no patient's record
    AI_COMMITTEE = "ai-committee"
    ADMIN = "admin"  # configuration, no patient data
    # a system client that feeds data in (EHR interface engine, device gateway); reads nothing
    INTEGRATION = "integration"
    # an EHR calling careloop's CDS Hooks services: it reads the record to decide, writes the
    # record of each card, and acts for the user it names (context.userId)
    EHR = "ehr"
    # careloop's own remote-monitoring worker: reads device data (and the consent that governs
    # it), writes daily summaries and the alerts it raises (Flag, DetectedIssue, Task, Media)
    MONITOR = "monitor"


class Permission(StrEnum):
    PUBLIC = "public"  # health check, capability statement, login itself
    PATIENT_READ = "patient-read"  # read and search clinical data
    PATIENT_WRITE = "patient-write"  # create and update clinical data
    BULK_INGEST = "bulk-ingest"  # Bulk NDJSON loads
    BREAK_GLASS = "break-glass"  # emergency access past a consent denial
    RECORD_EXPORT = "record-export"  # a patient's record as a FHIR Bundle
    AMENDMENT_REQUEST = "amendment-request"
    CONSENT_MANAGE = "consent-manage"  # record or change a patient's Consent
    ERASURE_REQUEST = "erasure-request"
    MESSAGE_SEND = "message-send"  # a patient writes to their care team (a Communication)
    ERASURE_EXECUTE = "erasure-execute"  # crypto-shred a patient, run retention
    DEIDENTIFIED_EXPORT = "deidentified-export"
    AUDIT_READ = "audit-read"  # verify and review the audit trail
    # the governance console: registry, model cards, fairness, drift, alert-burden and override
    # analytics; aggregates only, never one patient's data
    MODEL_GOVERNANCE = "model-governance"
    ACCESS_ADMIN = "access-admin"  # users, clients, care relationships
    SESSION = "session"  # any signed-in person: who am I, log out
    # CDS Hooks calls: only an EHR's signed CDS Hooks JWT opens them, never a bearer token or a
    # session, so no role in the table holds it
    CDS_HOOKS = "cds-hooks"


_CLINICAL = {Permission.PATIENT_READ, Permission.SESSION}
_PRESCRIBER = _CLINICAL | {
    Permission.PATIENT_WRITE,
    Permission.BREAK_GLASS,
    Permission.RECORD_EXPORT,
    Permission.AMENDMENT_REQUEST,
}

AUTHORIZATION: dict[Role, frozenset[Permission]] = {
    Role.CLINICIAN: frozenset(_PRESCRIBER | {Permission.CONSENT_MANAGE}),
    Role.NURSE: frozenset(_PRESCRIBER),
    Role.PHARMACIST: frozenset(_CLINICAL | {Permission.PATIENT_WRITE}),
    Role.CARE_COORDINATOR: frozenset(
        _CLINICAL
        | {Permission.RECORD_EXPORT, Permission.CONSENT_MANAGE, Permission.AMENDMENT_REQUEST}
    ),
    Role.PATIENT: frozenset(
        _CLINICAL
        | {
            Permission.RECORD_EXPORT,
            Permission.AMENDMENT_REQUEST,
            Permission.CONSENT_MANAGE,
            Permission.ERASURE_REQUEST,
            Permission.MESSAGE_SEND,
        }
    ),
    Role.DATA_SCIENTIST: frozenset(
        {Permission.DEIDENTIFIED_EXPORT, Permission.MODEL_GOVERNANCE, Permission.SESSION}
    ),
    Role.AUDITOR: frozenset(
        {Permission.AUDIT_READ, Permission.MODEL_GOVERNANCE, Permission.SESSION}
    ),
    Role.AI_COMMITTEE: frozenset({Permission.MODEL_GOVERNANCE, Permission.SESSION}),
    Role.ADMIN: frozenset(
        {Permission.ACCESS_ADMIN, Permission.ERASURE_EXECUTE, Permission.SESSION}
    ),
    Role.INTEGRATION: frozenset({Permission.PATIENT_WRITE, Permission.BULK_INGEST}),
    Role.EHR: frozenset({Permission.PATIENT_READ, Permission.PATIENT_WRITE}),
    Role.MONITOR: frozenset({Permission.PATIENT_READ, Permission.PATIENT_WRITE}),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission is Permission.PUBLIC or permission in AUTHORIZATION[role]


# Roles whose access is clinical care: their reads are judged against consent for treatment and
# counted for the "access without a care relationship" review.
CARE_ROLES = frozenset({Role.CLINICIAN, Role.NURSE, Role.PHARMACIST, Role.CARE_COORDINATOR})
