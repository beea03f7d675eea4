"""Turning bytes into resources: JSON documents (a Bundle or one resource) and NDJSON lines.

Everything here is about shape, with the location of each problem; whether a resource is valid FHIR
is `validation`'s job, and what its references point at is `references`'.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from careloop.ingest.errors import IngestProblem, ProblemKind

ACCEPTED_BUNDLE_TYPES = ("transaction", "batch", "collection")
WRITE_METHODS = ("POST", "PUT")


@dataclass(frozen=True, slots=True)
class Entry:
    """One resource to ingest, with where it came from inside its unit."""

    index: int
    resource: dict
    full_url: str | None = None
    request_url: str | None = None


def problem_at(
    entry: Entry,
    source: str,
    label: str,
    message: str,
    field: str | None = None,
    kind: ProblemKind = "invalid",
) -> IngestProblem:
    """A problem located at one entry (or NDJSON line) of a unit."""
    return IngestProblem(
        source,
        message,
        entry=entry.index,
        resource_type=entry.resource.get("resourceType"),
        field=field or None,
        entry_label=label,
        kind=kind,
    )


def read_limited(stream: BinaryIO, limit: int, source: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise IngestProblem(
            source, f"document is larger than the {limit:,}-byte limit", kind="syntax"
        )
    return data


def parse_json(data: bytes, source: str, entry: int | None = None, label: str = "entry") -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise IngestProblem(
            source, _json_error(data, exc), entry=entry, entry_label=label, kind="syntax"
        ) from None


def entries_of_document(document: object, source: str) -> list[Entry]:
    """The entries of a Bundle, or the one resource of a single-resource document."""
    if not isinstance(document, dict):
        raise IngestProblem(
            source, f"expected a JSON object, got {_json_type(document)}", kind="syntax"
        )
    if document.get("resourceType") != "Bundle":
        return [Entry(index=0, resource=document)]
    bundle_type = document.get("type")
    if bundle_type not in ACCEPTED_BUNDLE_TYPES:
        raise IngestProblem(
            source,
            f"Bundle.type is {bundle_type!r}; careloop ingests {', '.join(ACCEPTED_BUNDLE_TYPES)}",
            resource_type="Bundle",
            field="Bundle.type",
            kind="structure",
        )
    raw_entries = document.get("entry", [])
    if not isinstance(raw_entries, list):
        raise IngestProblem(
            source, "Bundle.entry must be an array", field="Bundle.entry", kind="structure"
        )
    return [_bundle_entry(raw, index, bundle_type, source) for index, raw in enumerate(raw_entries)]


def _bundle_entry(raw: object, index: int, bundle_type: str, source: str) -> Entry:
    def problem(message: str, field: str) -> IngestProblem:
        location = f"Bundle.entry[{index}].{field}"
        return IngestProblem(source, message, entry=index, field=location, kind="structure")

    if not isinstance(raw, dict):
        raise problem("an entry must be a JSON object", "")
    resource = raw.get("resource")
    request = raw.get("request")
    request_url = None
    if bundle_type != "collection":
        if not isinstance(request, dict):
            raise problem(f"a {bundle_type} entry needs a request", "request")
        method = request.get("method")
        if method not in WRITE_METHODS:
            raise problem(f"request.method {method!r} is not supported; use POST or PUT", "request")
        request_url = request.get("url") if isinstance(request.get("url"), str) else None
    if not isinstance(resource, dict):
        raise problem("entry has no resource object", "resource")
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise problem("fullUrl must be a string", "fullUrl")
    return Entry(index=index, resource=resource, full_url=full_url, request_url=request_url)


def iter_ndjson_lines(
    stream: BinaryIO, source: str, max_line_bytes: int
) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) for each non-blank line, in constant memory."""
    line_number = 0
    while True:
        line = stream.readline(max_line_bytes + 1)
        if not line:
            return
        line_number += 1
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            raise IngestProblem(
                source,
                f"line is longer than the {max_line_bytes:,}-byte limit",
                entry=line_number,
                entry_label="line",
                kind="syntax",
            )
        if line.strip():
            yield line_number, line


def resource_of_line(line: bytes, line_number: int, source: str) -> Entry:
    resource = parse_json(line, source, entry=line_number, label="line")
    if not isinstance(resource, dict):
        raise IngestProblem(
            source,
            f"each NDJSON line must be one resource object, got {_json_type(resource)}",
            entry=line_number,
            entry_label="line",
            kind="syntax",
        )
    return Entry(index=line_number, resource=resource)


def _json_error(data: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as decode_error:
        return f"bytes are not valid UTF-8 (byte offset {decode_error.start})"
    if not data.strip():
        return "document is empty"
    return f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


def _json_type(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )
