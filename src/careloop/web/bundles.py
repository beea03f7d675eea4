"""Bundles the API answers with: transaction/batch responses, search sets and histories."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlencode

from careloop.store.repository import SearchPage, StoredResource, WriteOutcome, WriteResult

_STATUS = {
    WriteOutcome.CREATED: "201 Created",
    WriteOutcome.UPDATED: "200 OK",
    WriteOutcome.UNCHANGED: "200 OK",
}
# A collection is not a request Bundle; it is answered like a batch, the closest request type.
RESPONSE_TYPES = {
    "transaction": "transaction-response",
    "batch": "batch-response",
    "collection": "batch-response",
}


def etag(version: int) -> str:
    return f'W/"{version}"'


def instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _bundle(bundle_type: str, entries: list[dict], **extra: object) -> dict:
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(datetime.now(UTC))},
        "type": bundle_type,
        **extra,
    }
    if entries:  # FHIR JSON forbids empty arrays
        bundle["entry"] = entries
    return bundle


def write_response(
    bundle_type: str, written: Sequence[tuple[tuple[str, str], WriteResult]]
) -> dict:
    """One response entry per request entry, in order, as FHIR transaction/batch responses are."""
    entries = [
        {
            "response": {
                "status": _STATUS[result.outcome],
                "location": f"{resource_type}/{resource_id}/_history/{result.version}",
                "etag": etag(result.version),
            }
        }
        for (resource_type, resource_id), result in written
    ]
    return _bundle(RESPONSE_TYPES[bundle_type], entries)


def search_set(
    page: SearchPage,
    fhir_base: str,
    resource_type: str,
    links: list[dict[str, str]],
    total: int | None,
) -> dict:
    """A searchset; `total` is left out when giving it would reveal withheld resources."""
    entries = [
        {
            "fullUrl": f"{fhir_base}/{resource_type}/{stored.body['id']}",
            "resource": stored.body,
            "search": {"mode": "match"},
        }
        for stored in page.resources
    ]
    if total is None:
        return _bundle("searchset", entries, link=links)
    return _bundle("searchset", entries, total=total, link=links)


def paging_links(
    search_url: str, filters: Sequence[tuple[str, str]], count: int, offset: int, total: int
) -> list[dict[str, str]]:
    """self, and next/previous when there are such pages, each repeating the same filters."""

    def link(relation: str, at: int) -> dict[str, str]:
        query = urlencode([*filters, ("_count", str(count)), ("_offset", str(at))])
        return {"relation": relation, "url": f"{search_url}?{query}"}

    links = [link("self", offset)]
    if count > 0 and offset + count < total:
        links.append(link("next", offset + count))
    if offset > 0:
        links.append(link("previous", max(0, offset - count)))
    return links


def history(versions: Sequence[StoredResource], fhir_base: str) -> dict:
    """Newest version first, as FHIR orders an instance history."""
    entries = []
    for stored in versions:
        reference = f"{stored.resource_type}/{stored.body['id']}"
        first = stored.version == 1
        entries.append(
            {
                "fullUrl": f"{fhir_base}/{reference}",
                "resource": stored.body,
                "request": {
                    "method": "POST" if first else "PUT",
                    "url": stored.resource_type if first else reference,
                },
                "response": {
                    "status": "201 Created" if first else "200 OK",
                    "etag": etag(stored.version),
                    "lastModified": instant(stored.last_updated),
                },
            }
        )
    return _bundle("history", entries, total=len(entries))
