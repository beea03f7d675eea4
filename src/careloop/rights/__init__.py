"""Patient rights at the store level: access (export), amendment, erasure and retention.

These are mechanisms. The access layer (careloop.access) decides who may call them, and writes
the audit events from the facts they return (ids, hashes and counts, never PHI).

- `export`: the patient's record as a FHIR R4 `collection` Bundle, and an atomic file writer;
- `amendment`: the amendment request as a FHIR R4 Task, and the answer to it;
- `erasure`: crypto-shredding of a patient's compartment, with a tombstone;
- `retention`: the job that finds (and, when applied, erases) records past their retention.
"""

from careloop.rights.amendment import (
    AmendmentError,
    amendment_request,
    is_amendment_request,
    respond_to_amendment,
    target_in_compartment,
)
from careloop.rights.erasure import (
    ErasureError,
    ErasureResult,
    erase_patient,
    erase_patient_hash,
)
from careloop.rights.export import (
    ExportError,
    RecordNotFound,
    export_facts,
    patient_record_bundle,
    write_bundle,
)
from careloop.rights.retention import (
    RetentionCandidate,
    RetentionError,
    RetentionPolicy,
    RetentionRun,
    erase_candidates,
    find_expired,
    run_retention,
)

__all__ = [
    "AmendmentError",
    "ErasureError",
    "ErasureResult",
    "ExportError",
    "RecordNotFound",
    "RetentionCandidate",
    "RetentionError",
    "RetentionPolicy",
    "RetentionRun",
    "amendment_request",
    "erase_candidates",
    "erase_patient",
    "erase_patient_hash",
    "export_facts",
    "find_expired",
    "is_amendment_request",
    "patient_record_bundle",
    "respond_to_amendment",
    "run_retention",
    "target_in_compartment",
    "write_bundle",
]
