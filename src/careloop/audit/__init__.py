"""The audit trail: FHIR AuditEvents (IHE BALP), a tamper-evident log, and its review."""

from careloop.audit.events import AuditAction, AuditOutcome, AuditRecord, audit_event_resource
from careloop.audit.log import (
    AuditIntegrityError,
    AuditLog,
    AuditLogError,
    StoredAuditEvent,
    TamperFinding,
    VerifyReport,
)

__all__ = [
    "AuditAction",
    "AuditIntegrityError",
    "AuditLog",
    "AuditLogError",
    "AuditOutcome",
    "AuditRecord",
    "StoredAuditEvent",
    "TamperFinding",
    "VerifyReport",
    "audit_event_resource",
]
