"""De-identified exports: the `Deidentifier` over patient compartments, and NDJSON output.

The access layer decides *what* may leave (consent, purpose) and hands over, per patient, the
current resources it releases plus the pseudonym service key; this module decides *how* they
leave (`safe_harbor` documents the rules). It touches no database and keeps no patient data
beyond the call: the report holds only counts and resource type names.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import IO

import orjson

from careloop.deid.dates import DateRule, shift_days
from careloop.deid.pseudonyms import Pseudonymizer
from careloop.deid.safe_harbor import (
    Category,
    ResourceTransformer,
    Tally,
    WalkContext,
    known_terms,
)

DATE_SHIFT_KIND = "date-shift"
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


@dataclass(frozen=True)
class DeidOptions:
    """`date_mode` "shift" keeps intervals (training); "year" is Safe Harbor strict.

    `as_of` is the date ages are judged on for living patients (default: today, UTC).
    """

    date_mode: str = "shift"
    max_shift_days: int = 365
    keep_state: bool = True
    as_of: date | None = None

    def __post_init__(self) -> None:
        if self.date_mode not in ("shift", "year"):
            raise ValueError('date_mode must be "shift" or "year"')
        if not isinstance(self.max_shift_days, int) or not 1 <= self.max_shift_days <= 36500:
            raise ValueError("max_shift_days must be an integer from 1 to 36500")


@dataclass(frozen=True)
class DeidReport:
    """Counts only. `identifiers_removed` has every Safe Harbor category, zero included; dates
    count every date element shifted, reduced to the year or removed; ids count every resource
    id and reference replaced by a pseudonym (category "other-unique-identifiers")."""

    patients: int
    resources_in: int
    resources_out: int
    resources_dropped: Mapping[str, int]
    identifiers_removed: Mapping[str, int]
    dates_shifted: int
    dates_generalized: int
    free_text_scrubbed: int
    narratives_dropped: int
    attachments_removed: int
    extensions_dropped: int
    unknown_elements_dropped: int
    age_banded: int = field(default=0)


class Deidentifier:
    """Safe Harbor de-identification of patient compartments with keyed pseudonyms.

    One instance per export: pseudonyms and date shifts depend only on the key and the ids, so
    separate instances with the same key agree, and the report accumulates over the export.
    """

    def __init__(self, key: bytes, options: DeidOptions = DeidOptions()) -> None:
        self._pseudonyms = Pseudonymizer(key)
        self.options = options
        self._tally = Tally()

    def pseudonym(self, kind: str, value: str) -> str:
        """Keyed, stable, not reversible without the key; kind "id" is used for resource ids."""
        return self._pseudonyms.pseudonym(kind, value)

    def date_shift_days(self, patient_id: str) -> int:
        """The patient's offset in days (shift mode): in [-max, +max], never 0."""
        mac = self._pseudonyms.digest(DATE_SHIFT_KIND, patient_id)
        return shift_days(mac, self.options.max_shift_days)

    def patient_resources(self, patient_id: str, resources: Sequence[dict]) -> list[dict]:
        """One patient's compartment, de-identified consistently (one date offset, one set of
        known names for the text scrubber, references resolved within the compartment)."""
        if not isinstance(patient_id, str) or not patient_id:
            raise ValueError("patient_id must be a non-empty string")
        if self.options.date_mode == "shift":
            rule = DateRule("shift", self.date_shift_days(patient_id))
        else:
            rule = DateRule("year")
        out = self._run(_checked(resources), rule)
        self._tally.patients += 1
        return out

    def shared_resources(self, resources: Sequence[dict]) -> list[dict]:
        """Resources outside any compartment (Organization, Practitioner, Location, Medication):
        the same rules, with dates reduced to the year since no patient offset applies."""
        return self._run(_checked(resources), DateRule("year"))

    def report(self) -> DeidReport:
        tally = self._tally
        return DeidReport(
            patients=tally.patients,
            resources_in=tally.resources_in,
            resources_out=tally.resources_out,
            resources_dropped=MappingProxyType(dict(sorted(tally.dropped.items()))),
            identifiers_removed=MappingProxyType(
                {category.value: tally.removed[category] for category in Category}
            ),
            dates_shifted=tally.dates_shifted,
            dates_generalized=tally.dates_generalized,
            free_text_scrubbed=tally.free_text_scrubbed,
            narratives_dropped=tally.narratives_dropped,
            attachments_removed=tally.attachments_removed,
            extensions_dropped=tally.extensions_dropped,
            unknown_elements_dropped=tally.unknown_elements_dropped,
            age_banded=tally.age_banded,
        )

    def _run(self, resources: list[dict], rule: DateRule) -> list[dict]:
        context = WalkContext(
            pseudonyms=self._pseudonyms,
            dates=rule,
            known=known_terms(resources),
            types_by_id={
                r["id"]: r["resourceType"] for r in resources if isinstance(r.get("id"), str)
            },
            keep_state=self.options.keep_state,
            as_of=self.options.as_of or datetime.now(UTC).date(),
        )
        transformer = ResourceTransformer(context, self._tally)
        out = [r for r in (transformer.resource(item) for item in resources) if r is not None]
        self._tally.resources_in += len(resources)
        self._tally.resources_out += len(out)
        return out


def _checked(resources: Sequence[dict]) -> list[dict]:
    items = list(resources)
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("resourceType"), str):
            raise ValueError(f"item {index} is not a FHIR resource object")
    return items


def export_ndjson(deidentified: Iterable[dict], out_dir: Path) -> dict[str, int]:
    """Write one `<Type>.ndjson` per resource type; returns resources written per type.

    Each file is written to a temporary file in `out_dir` and renamed into place only after every
    input was written, so a failure part-way leaves no new or half-written file. A resource seen
    again with the same type and id (a Practitioner referenced from several compartments) is
    written once: reduced types are identical in every compartment, so the first one stands.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[IO[bytes], Path]] = {}
    counts: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    try:
        for index, resource in enumerate(deidentified):
            resource_type = _export_type(resource, index)
            resource_id = resource.get("id")
            if isinstance(resource_id, str):
                if (resource_type, resource_id) in seen:
                    continue
                seen.add((resource_type, resource_id))
            if resource_type not in files:
                files[resource_type] = _temp_file(out_dir, resource_type)
            files[resource_type][0].write(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS))
            files[resource_type][0].write(b"\n")
            counts[resource_type] += 1
        for handle, _ in files.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
    except BaseException:
        for handle, temp in files.values():
            handle.close()
            temp.unlink(missing_ok=True)
        raise
    for resource_type, (_, temp) in files.items():
        os.replace(temp, out_dir / f"{resource_type}.ndjson")
    _sync_directory(out_dir)
    return dict(sorted(counts.items()))


def _export_type(resource: object, index: int) -> str:
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(resource_type, str) or not _RESOURCE_TYPE.match(resource_type):
        raise ValueError(f"item {index} is not a FHIR resource object")
    return resource_type


def _temp_file(out_dir: Path, resource_type: str) -> tuple[IO[bytes], Path]:
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by export_ndjson
        dir=out_dir, prefix=f".{resource_type}.", suffix=".ndjson.tmp", delete=False
    )
    return handle, Path(handle.name)


def _sync_directory(directory: Path) -> None:
    """Make the renames durable where the platform allows opening a directory."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
