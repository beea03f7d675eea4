"""A patient's record as one FHIR R4 Bundle: the right of access (and to data portability).

Bundle type: `collection`. The export is a self-contained file handed to the patient (or another
provider of theirs), not the answer to a search: `searchset` would promise search semantics it
does not have (`total`, `entry.search.mode`, paging links), while a `collection` is exactly "a set
of resources collected into a single package". A `Patient/$everything` endpoint can wrap the same
entries as a searchset page.

Entries: every current resource in the patient's compartment (`store.patient_resources`), or the
resources the caller passes after its own filtering (consent, security labels). Every entry is
checked to belong to the patient, so a caller's mistake cannot put another patient in the file.
Order is stable: the Patient first, then by resource type, clinical time (undated first) and id.

Memory: entries are built from the iterator and refer to the resource dicts (no second copy), and
`write_bundle` serializes entry by entry, so the serialized file never sits in memory whole.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson

from careloop.fhir.indexing import clinical_period, patient_id_of
from careloop.store.repository import ResourceStore

EXPORT_TAG_SYSTEM = "https://careloop.dev/fhir/CodeSystem/export-kind"
PATIENT_ACCESS_TAG = {
    "system": EXPORT_TAG_SYSTEM,
    "code": "patient-access",
    "display": "Patient access export",
}
# fullUrls must be RESTful URLs for the resources' relative references (Patient/x) to resolve
# inside the Bundle. Without a server base, a reserved never-resolving host (RFC 2606) says so.
DEFAULT_FHIR_BASE = "https://careloop.invalid/fhir"
_EARLIEST = datetime.min.replace(tzinfo=UTC)


class ExportError(ValueError):
    """The export cannot be built as asked; the message carries no patient data."""


class RecordNotFound(LookupError):
    """The store holds no record for this patient (never stored, or erased)."""


def patient_record_bundle(
    store: ResourceStore,
    patient_id: str,
    *,
    resources: Iterable[dict] | None = None,
    fhir_base: str = DEFAULT_FHIR_BASE,
    now: datetime | None = None,
) -> dict:
    """The patient's record as a `collection` Bundle tagged as a patient-access export."""
    source = store.patient_resources(patient_id) if resources is None else resources
    base = fhir_base.rstrip("/")
    entries: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for index, resource in enumerate(source):
        key = _check_entry(resource, patient_id, index, seen)
        entries.append({"fullUrl": f"{base}/{key[0]}/{key[1]}", "resource": resource})
    if not entries and resources is None:
        raise RecordNotFound("the store holds no record for this patient")
    entries.sort(key=lambda entry: _order(entry["resource"]))
    moment = _instant(now or datetime.now(UTC))
    bundle: dict = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": moment, "tag": [dict(PATIENT_ACCESS_TAG)]},
        "type": "collection",
        "timestamp": moment,
    }
    if entries:  # FHIR JSON forbids an empty array
        bundle["entry"] = entries
    return bundle


def export_facts(bundle: dict) -> dict[str, object]:
    """What the audit record of an export needs: the Bundle id and counts, nothing else."""
    by_type = Counter(entry["resource"]["resourceType"] for entry in bundle.get("entry", ()))
    return {
        "bundle_id": bundle.get("id"),
        "entries": sum(by_type.values()),
        "by_type": dict(sorted(by_type.items())),
    }


def write_bundle(bundle: dict, path: Path | str) -> int:
    """Write the Bundle as JSON atomically (temp file, fsync, rename); returns bytes written.

    The file is created readable by its owner only: it is a whole medical record. On any failure
    the destination is left as it was and no temporary file remains.
    """
    target = Path(path)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            written = _write_json(bundle, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)
    return written


def _check_entry(
    resource: object, patient_id: str, index: int, seen: set[tuple[str, str]]
) -> tuple[str, str]:
    if not isinstance(resource, dict):
        raise ExportError(f"export entry {index} is not a FHIR resource")
    resource_type, resource_id = resource.get("resourceType"), resource.get("id")
    if not isinstance(resource_type, str) or not isinstance(resource_id, str):
        raise ExportError(f"export entry {index} has no resourceType or id")
    if patient_id_of(resource) != patient_id:
        raise ExportError(
            f"export entry {index} ({resource_type}) is outside the patient's compartment"
        )
    key = (resource_type, resource_id)
    if key in seen:
        raise ExportError(f"export entry {index} ({resource_type}) appears twice")
    seen.add(key)
    return key


def _order(resource: dict) -> tuple:
    resource_type = resource["resourceType"]
    start, _end = clinical_period(resource)
    return (
        resource_type != "Patient",
        resource_type,
        start is not None,
        start or _EARLIEST,
        resource["id"],
    )


def _write_json(bundle: dict, out: BinaryIO) -> int:
    """The Bundle's JSON, written entry by entry instead of as one serialized blob."""
    head = orjson.dumps({key: value for key, value in bundle.items() if key != "entry"})
    written = out.write(head[:-1])  # the head object, left open for the entries
    entries = bundle.get("entry") or []
    if entries:
        written += out.write(b',"entry":[')
        for position, entry in enumerate(entries):
            written += out.write((b"," if position else b"") + orjson.dumps(entry))
        written += out.write(b"]")
    return written + out.write(b"}")


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _instant(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ExportError("the export time must be time-zone aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
