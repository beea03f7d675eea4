"""Request bodies: the content type, and reading within a byte limit without trusting the client.

The limit is checked twice: against Content-Length before anything is read (a quick refusal), and
while streaming, since a chunked request has no length and a client may lie about it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from typing import IO

from starlette.requests import Request

from careloop.web.outcomes import FhirError

FHIR_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
NDJSON_TYPES = ("application/fhir+ndjson", "application/x-ndjson", "application/ndjson")
FORM_TYPES = ("application/x-www-form-urlencoded",)
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024  # past this, a bulk body moves to a temporary file


def require_content_type(request: Request, accepted: Collection[str]) -> None:
    """415 unless the body is one of the accepted media types, in UTF-8 if a charset is given."""
    header = request.headers.get("content-type", "")
    media_type, *parameters = (part.strip().lower() for part in header.split(";"))
    charset = next(
        (p.partition("=")[2].strip('"') for p in parameters if p.startswith("charset=")), ""
    )
    if media_type not in accepted:
        shown = "none" if not media_type else "this content type"
        raise FhirError.of(
            415,
            "not-supported",
            f"Content-Type is {shown}; send {' or '.join(accepted)}",
        )
    if charset not in ("", "utf-8", "utf8"):
        raise FhirError.of(415, "not-supported", "FHIR bodies are UTF-8; the charset must be utf-8")


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.strip().isdigit():
        raise FhirError.of(400, "structure", "Content-Length is not a whole number")
    if int(declared) > limit:
        raise _too_large(limit)


def _too_large(limit: int) -> FhirError:
    return FhirError.of(413, "too-long", f"request body is larger than the {limit:,}-byte limit")


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, in memory; 413 as soon as it is known to exceed `limit` bytes."""
    _check_declared_length(request, limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


async def spool_limited(request: Request, limit: int) -> IO[bytes]:
    """The body in a spooled temporary file (memory while small, disk after), rewound.

    A bulk file can be far larger than memory; the caller must close the returned file.
    """
    _check_declared_length(request, limit)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
    try:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            spool.write(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool
