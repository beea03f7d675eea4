"""Giving each entry its id and pointing every reference at a real resource.

Two steps, because they run in different places. `localize` (in a worker process, no store)
assigns ids and rewrites references to other entries of the same unit — `urn:uuid:` and absolute
full URLs become `Type/id` — and lists what must still be found elsewhere. In the main process,
inside the unit's transaction, conditional references (`Type?identifier=system|value`) are resolved
to exactly one resource, and each remaining `Type/id` must exist by the end of the unit (so an
NDJSON file may refer forwards, or in cycles, within itself). Anything that cannot be found is a
dangling reference and rejects the whole unit.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from careloop.fhir.structure import FHIR_ID
from careloop.fhir.walk import FoundElements, Location, path_text, scan
from careloop.ingest.documents import Entry, problem_at
from careloop.ingest.errors import IngestProblem, ProblemKind

RELATIVE_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[^/]+)?$")
CONDITIONAL_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)\?identifier=(.+)$")
# Ids made up for entries that arrive without one, stable across re-ingest of the same content.
DERIVED_ID_NAMESPACE = uuid.UUID("6f1c1c3e-3d5a-4c55-9a52-2b8f2f0a9c11")


class StoreLookup(Protocol):
    """What reference resolution asks the store (a StoreTransaction answers it)."""

    def existing_ids(self, refs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]: ...

    def find_by_identifier(self, resource_type: str, identifier_token: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Site:
    """Where a reference sits: which entry, and the FHIRPath-like location inside it."""

    entry: int
    resource_type: str
    path: str


@dataclass
class Unresolved:
    """References `localize` could not settle inside the unit."""

    # (type, id) -> first place it is referenced
    targets: dict[tuple[str, str], Site] = field(default_factory=dict)
    # entries (by position in the unit) holding conditional references
    conditional_entries: list[int] = field(default_factory=list)


def localize(
    entries: list[Entry],
    source: str,
    label: str,
    found: list[FoundElements] | None = None,
) -> Unresolved:
    """Assign ids, rewrite references between entries of this unit, collect the rest.

    `found` may hold each entry's scan, when the caller already walked the resources.
    """
    _assign_ids(entries, source, label)
    by_full_url = {
        e.full_url: f"{e.resource['resourceType']}/{e.resource['id']}"
        for e in entries
        if e.full_url
    }
    in_unit = {(e.resource["resourceType"], e.resource["id"]) for e in entries}
    unresolved = Unresolved()
    for position, entry in enumerate(entries):
        has_conditional = False
        holders = found[position].references if found else _reference_holders(entry.resource)
        for holder, location in holders:
            reference = holder["reference"]
            if reference in by_full_url:
                holder["reference"] = by_full_url[reference]
                continue
            kind = _classify(reference, entry, location, source, label)
            if kind == "conditional":
                has_conditional = True
            elif kind is not None and kind not in in_unit:
                site = Site(entry.index, entry.resource["resourceType"], _path(entry, location))
                unresolved.targets.setdefault(kind, site)
        if has_conditional:
            unresolved.conditional_entries.append(position)
    return unresolved


def resolve_conditionals(
    conditional: dict[int, Entry],
    unresolved: Unresolved,
    source: str,
    label: str,
    lookup: StoreLookup,
) -> None:
    """Rewrite each conditional reference to the one resource in the store it matches.

    `conditional` maps positions listed in `unresolved.conditional_entries` to their entries.
    """
    for position in unresolved.conditional_entries:
        entry = conditional[position]
        for holder, location in _reference_holders(entry.resource):
            match = CONDITIONAL_REFERENCE.match(holder["reference"])
            if match:
                holder["reference"] = _resolve_conditional(
                    match.group(1), match.group(2), entry, location, source, label, lookup
                )


def missing_targets(
    targets: dict[tuple[str, str], Site], lookup: StoreLookup
) -> dict[tuple[str, str], Site]:
    """The referenced resources that are not in the store (nor written earlier in this unit)."""
    if not targets:
        return {}
    found = lookup.existing_ids(targets)
    return {target: site for target, site in targets.items() if target not in found}


def dangling(target: tuple[str, str], site: Site, source: str, label: str) -> IngestProblem:
    return IngestProblem(
        source,
        f"dangling reference to {target[0]}/{target[1]}: not in this unit and not in the store",
        entry=site.entry,
        resource_type=site.resource_type,
        field=site.path,
        entry_label=label,
        kind="reference",
    )


def _assign_ids(entries: list[Entry], source: str, label: str) -> None:
    """Give every resource an id (its own, its fullUrl's uuid, its PUT url's, or one derived from
    its content) and reject two entries that claim the same resource or full URL."""
    seen_urls: dict[str, int] = {}
    seen_ids: dict[tuple[str, str], int] = {}
    for entry in entries:
        resource = entry.resource
        if entry.full_url is not None:
            if entry.full_url in seen_urls:
                raise _problem(
                    entry,
                    source,
                    label,
                    "fullUrl",
                    f"fullUrl repeats {label} {seen_urls[entry.full_url]}",
                    kind="duplicate",
                )
            seen_urls[entry.full_url] = entry.index
        # fhir.resources reads a JSON null as absent, so `"id": null` is valid to it: treat the
        # id the same way rather than index a resource under no id at all
        if resource.get("id") is None:
            resource["id"] = _id_from_entry(entry)
        key = (resource["resourceType"], resource["id"])
        if key in seen_ids:
            raise _problem(
                entry,
                source,
                label,
                f"{key[0]}.id",
                f"{key[0]} with this id repeats {label} {seen_ids[key]}",
                kind="duplicate",
            )
        seen_ids[key] = entry.index


def _id_from_entry(entry: Entry) -> str:
    if entry.full_url and entry.full_url.startswith("urn:uuid:"):
        candidate = entry.full_url.removeprefix("urn:uuid:")
        if FHIR_ID.match(candidate):
            return candidate
    if entry.request_url:
        match = RELATIVE_REFERENCE.match(entry.request_url)
        if match and match.group(1) == entry.resource["resourceType"]:
            return match.group(2)
    content = orjson.dumps(entry.resource, option=orjson.OPT_SORT_KEYS)
    return str(uuid.uuid5(DERIVED_ID_NAMESPACE, content.decode("utf-8")))


def _classify(
    reference: str, entry: Entry, location: Location, source: str, label: str
) -> tuple[str, str] | str | None:
    """A (type, id) to look for, "conditional", or None when nothing is left to check."""
    if reference.startswith("#"):
        if not _contained_exists(entry.resource, reference[1:]):
            raise _problem(
                entry,
                source,
                label,
                _path(entry, location),
                f"reference {reference} names no contained resource",
            )
        return None
    if reference.startswith(("urn:uuid:", "urn:oid:")):
        raise _problem(
            entry,
            source,
            label,
            _path(entry, location),
            "dangling reference: no entry in this unit has that fullUrl",
        )
    if CONDITIONAL_REFERENCE.match(reference):
        return "conditional"
    relative = RELATIVE_REFERENCE.match(reference)
    if relative:
        return relative.group(1), relative.group(2)
    if reference.startswith(("http://", "https://")):
        return None  # a resource on another server: kept as the source gave it
    raise _problem(
        entry,
        source,
        label,
        _path(entry, location),
        "reference is neither Type/id, a full URL, a urn:uuid, nor #contained",
    )


def _resolve_conditional(
    resource_type: str,
    identifier: str,
    entry: Entry,
    location: Location,
    source: str,
    label: str,
    lookup: StoreLookup,
) -> str:
    matches = lookup.find_by_identifier(resource_type, identifier)
    if len(matches) == 1:
        return f"{resource_type}/{matches[0]}"
    count = "no" if not matches else str(len(matches))
    raise _problem(
        entry,
        source,
        label,
        _path(entry, location),
        f"conditional reference matches {count} {resource_type} in the store",
    )


def _contained_exists(resource: dict, local_id: str) -> bool:
    if local_id == "":
        return True  # "#" points at the containing resource itself
    return any(
        isinstance(c, dict) and c.get("id") == local_id for c in resource.get("contained", [])
    )


def _reference_holders(resource: dict) -> list[tuple[dict, Location]]:
    return scan(resource).references


def _path(entry: Entry, location: Location) -> str:
    return path_text(entry.resource["resourceType"], location, "reference")


def _problem(
    entry: Entry,
    source: str,
    label: str,
    field_path: str,
    message: str,
    kind: ProblemKind = "reference",
) -> IngestProblem:
    return problem_at(entry, source, label, message, field_path, kind)
