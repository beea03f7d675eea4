"""The FHIR REST routes: a thin adapter from HTTP to the store and the ingestor.

Reads run as plain functions (FastAPI runs them in its thread pool, since the store blocks);
writes read their body on the event loop and ingest in the pool, one at a time, because the
Ingestor is not thread-safe and two bundles must not interleave inside one store transaction.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from careloop.access.errors import AccessDenied
from careloop.access.layer import AccessLayer, scope_set
from careloop.access.roles import Permission
from careloop.audit.events import AuditAction, AuditOutcome
from careloop.fhir.indexing import patient_id_of
from careloop.identity.scopes import ScopeSet
from careloop.ingest import IngestOptions, Ingestor, IngestProblem, IngestReport
from careloop.ingest.documents import entries_of_document, parse_json
from careloop.store.repository import (
    ResourceStore,
    SearchPage,
    StoredResource,
    StoreError,
    WriteResult,
)
from careloop.web import openapi_docs as docs
from careloop.web.auth import Caller, caller_for, denied, permission_extra
from careloop.web.body import (
    FHIR_JSON_TYPES,
    FORM_TYPES,
    NDJSON_TYPES,
    read_limited,
    require_content_type,
    spool_limited,
)
from careloop.web.bundles import etag, history, paging_links, search_set, write_response
from careloop.web.capability import capability_statement
from careloop.web.outcomes import (
    FhirError,
    Issue,
    is_syntax_problem,
    issue_of_problem,
    operation_outcome,
)
from careloop.web.resource_types import FHIR_ID, R4_RESOURCE_TYPES
from careloop.web.responses import FhirJSONResponse
from careloop.web.search_params import SearchParamError, SearchQuery, parse_search

BUNDLE_SOURCE = "Bundle"
NDJSON_SOURCE = "NDJSON body"
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 200
MAX_JSON_DEPTH = 64
_TYPE_NAME = re.compile(r"^[A-Za-z]{1,64}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,9}$")

Written = list[tuple[tuple[str, str], WriteResult]]


@dataclass
class FhirService:
    """The store and the one ingestor of an app, with the lock that serializes its writes."""

    store: ResourceStore
    access: AccessLayer
    max_body_bytes: int
    max_ndjson_bytes: int
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    ingestor: Ingestor = field(init=False)
    write_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # workers=0: validate in this process; a request is one unit, a pool would only add latency
        self.ingestor = Ingestor(self.store, IngestOptions(workers=0))

    def refused(self, caller: Caller, action: AuditAction, error: FhirError) -> FhirError:
        """Audit a request refused for what it sent (hostile input is worth a trail too)."""
        self.access.record(
            caller.principal,
            caller.ctx,
            action,
            AuditOutcome.MINOR_FAILURE,
            flags={"rejected-input"},
            detail=f"refused with {error.status}: {error.issues[0].code}" if error.issues else None,
        )
        return error

    def write_bundle(self, caller: Caller, data: bytes) -> tuple[str, Written]:
        try:
            bundle_type, entries = request_bundle(data)
        except FhirError as error:
            raise self.refused(caller, AuditAction.CREATE, error) from None
        self.authorize_entries(caller, entries)
        with self.write_lock:
            try:
                written = self.ingestor.ingest_document(data, BUNDLE_SOURCE)
            except IngestProblem as problem:
                self.access.record(
                    caller.principal,
                    caller.ctx,
                    AuditAction.CREATE,
                    AuditOutcome.MINOR_FAILURE,
                    detail="the bundle was rejected",
                )
                raise FhirError(422, [issue_of_problem(problem)]) from None
            except StoreError as exc:
                message = f"the store refused the write: {exc}"
                raise FhirError.of(500, "processing", message) from None
        self.audit_writes(caller, entries, written)
        return bundle_type, written

    def authorize_entries(self, caller: Caller, entries: list[tuple[str, dict]]) -> None:
        """Scopes are per type and interaction: every entry must be covered (SMART)."""
        for method, resource in entries:
            interaction = "u" if method == "PUT" else "c"
            try:
                self.access.authorize(
                    caller.principal,
                    caller.ctx,
                    Permission.PATIENT_WRITE,
                    resource_type=str(resource.get("resourceType")),
                    interaction=interaction,
                    action=AuditAction.CREATE,
                )
            except AccessDenied as exc:
                raise denied(exc) from None

    def audit_writes(
        self, caller: Caller, entries: list[tuple[str, dict]], written: Written
    ) -> None:
        """One AuditEvent per patient whose record changed (BALP), naming what was written."""
        patients = [patient_id_of(resource) for _method, resource in entries]
        by_patient: dict[str | None, list[str]] = {}
        for patient_id, ((resource_type, resource_id), result) in zip(
            patients, written, strict=False
        ):
            if result.outcome.value != "unchanged":
                by_patient.setdefault(patient_id, []).append(f"{resource_type}/{resource_id}")
        for patient_id, references in by_patient.items():
            self.access.record(
                caller.principal,
                caller.ctx,
                AuditAction.CREATE,
                patient_id=patient_id,
                entities=tuple(references[:200]),
            )

    def write_ndjson(self, caller: Caller, stream: IO[bytes]) -> IngestReport:
        scopes = caller.principal.scopes
        if scopes is not None and not creates_every_type(scope_set(scopes)):
            raise FhirError.of(
                403, "forbidden", "bulk ingest needs a create scope on every type (system/*.c)"
            )
        with self.write_lock:
            report = self.ingestor.ingest_ndjson(stream, NDJSON_SOURCE)  # type: ignore[arg-type]
        outcome = AuditOutcome.SUCCESS if report.ok else AuditOutcome.MINOR_FAILURE
        self.access.record(
            caller.principal,
            caller.ctx,
            AuditAction.INGEST,
            outcome,
            flags={"bulk"},
            detail=f"{report.resources} resources in one NDJSON unit",
        )
        return report


def creates_every_type(scopes: ScopeSet) -> bool:
    return all(scopes.allows(resource_type, "c") for resource_type in R4_RESOURCE_TYPES)


def request_bundle(data: bytes) -> tuple[str, list[tuple[str, dict]]]:
    """The type of a well-formed request Bundle and its (method, resource) entries; 400 for
    anything that is not one."""
    try:
        document = parse_json(data, BUNDLE_SOURCE)
        if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
            raise FhirError.of(
                400,
                "structure",
                "POST /fhir takes a Bundle of type transaction, batch or collection",
            )
        check_depth(document)
        entries = entries_of_document(document, BUNDLE_SOURCE)
    except IngestProblem as problem:
        raise FhirError(400, [issue_of_problem(problem, "structure")]) from None
    methods = [
        str((entry.get("request") or {}).get("method", "POST")).upper()
        if isinstance(entry, dict)
        else "POST"
        for entry in document.get("entry", [])
    ]
    return str(document["type"]), [
        (method, entry.resource) for method, entry in zip(methods, entries, strict=False)
    ]


def check_depth(document: object, limit: int = MAX_JSON_DEPTH) -> None:
    """400 for JSON nested deeper than any FHIR resource needs, before anything walks it
    recursively (a hostile body of nested extensions would otherwise exhaust the stack)."""
    level: list[tuple[object, int]] = [(document, 1)]
    while level:
        node, depth = level.pop()
        if depth > limit:
            raise FhirError.of(400, "structure", f"the JSON is nested deeper than {limit} levels")
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        level.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def fhir_base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def check_type(resource_type: str) -> None:
    if resource_type not in R4_RESOURCE_TYPES:
        shown = f"{resource_type!r} is" if _TYPE_NAME.match(resource_type) else "the type is"
        raise FhirError.of(400, "not-supported", f"{shown} not a FHIR R4 resource type name")


def check_id(resource_id: str) -> None:
    if not FHIR_ID.match(resource_id):
        raise FhirError.of(
            400, "invalid", "the id is not a FHIR id: 1 to 64 of A-Z a-z 0-9 - and ."
        )


def resource_response(stored: StoredResource) -> FhirJSONResponse:
    return FhirJSONResponse(
        stored.body,
        headers={
            "ETag": etag(stored.version),
            "Last-Modified": format_datetime(stored.last_updated.astimezone(UTC), usegmt=True),
        },
    )


def not_found(resource_type: str, what: str = "resource") -> FhirError:
    return FhirError.of(404, "not-found", f"no {resource_type} {what} with this id")


def ingest_summary(report: IngestReport) -> str:
    by_type = "; ".join(
        f"{t}: {n['created']} created, {n['updated']} updated, {n['unchanged']} unchanged"
        for t, n in report.by_type().items()
    )
    details = f" ({by_type})" if by_type else ""
    if report.warning_count:
        details += f"; {report.warning_count} warnings, the first ones follow"
    return f"ingested {report.resources} resources in {report.seconds:.3f} s{details}"


def build_router(service: FhirService) -> APIRouter:
    router = APIRouter(prefix="/fhir", default_response_class=FhirJSONResponse, tags=["FHIR"])

    @router.get(
        "/metadata",
        summary="CapabilityStatement",
        response_model=None,
        responses=docs.responses(docs.CAPABILITY_STATEMENT, ()),
        openapi_extra=permission_extra(Permission.PUBLIC),
    )
    def metadata(request: Request) -> FhirJSONResponse:
        return FhirJSONResponse(capability_statement(fhir_base(request), service.started))

    @router.post(
        "",
        summary="Transaction or batch Bundle (applied atomically)",
        description=(
            "Every entry is validated and its references resolved before anything is written; "
            "one bad entry rejects the whole Bundle. careloop applies a batch atomically too, "
            "unlike FHIR's entry-by-entry batch, so a retry never duplicates half a batch."
        ),
        response_model=None,
        responses=docs.responses(
            docs.bundle_schema(["transaction-response", "batch-response"]), (400, 413, 415, 422)
        ),
        openapi_extra=permission_extra(
            Permission.PATIENT_WRITE, docs.json_body(docs.REQUEST_BUNDLE)
        ),
    )
    async def transaction(
        request: Request, caller: Caller = caller_for(Permission.PATIENT_WRITE)
    ) -> FhirJSONResponse:
        try:
            require_content_type(request, FHIR_JSON_TYPES)
            data = await read_limited(request, service.max_body_bytes)
        except FhirError as error:
            raise service.refused(caller, AuditAction.CREATE, error) from None
        bundle_type, written = await run_in_threadpool(service.write_bundle, caller, data)
        return FhirJSONResponse(write_response(bundle_type, written))

    @router.post(
        "/$ingest-ndjson",
        summary="Bulk Data NDJSON, one atomic unit",
        response_model=None,
        responses=docs.responses(docs.OPERATION_OUTCOME, (400, 413, 415, 422)),
        openapi_extra=permission_extra(Permission.BULK_INGEST, docs.ndjson_body()),
    )
    async def ingest_ndjson(
        request: Request, caller: Caller = caller_for(Permission.BULK_INGEST)
    ) -> FhirJSONResponse:
        require_content_type(request, NDJSON_TYPES)
        spool = await spool_limited(request, service.max_ndjson_bytes)
        try:
            report = await run_in_threadpool(service.write_ndjson, caller, spool)
        finally:
            spool.close()
        if not report.ok:
            status = 400 if all(is_syntax_problem(p) for p in report.rejected) else 422
            raise FhirError(status, [issue_of_problem(p) for p in report.rejected])
        summary = Issue("information", "informational", ingest_summary(report))
        warnings = [issue_of_problem(w, "code-invalid", "warning") for w in report.warnings]
        return FhirJSONResponse(operation_outcome([summary, *warnings]))

    @router.get(
        "/{resource_type}",
        summary="Search",
        response_model=None,
        responses=docs.responses(docs.bundle_schema(["searchset"]), (400,)),
        openapi_extra=permission_extra(
            Permission.PATIENT_READ, {"parameters": docs.search_query_parameters()}
        ),
    )
    def search(
        request: Request,
        resource_type: str = _type_param(),
        caller: Caller = caller_for(Permission.PATIENT_READ),
    ) -> FhirJSONResponse:
        params = request.query_params.multi_items()
        return run_search(service, caller, request, resource_type, params)

    @router.post(
        "/{resource_type}/_search",
        summary="Search with form-encoded parameters",
        response_model=None,
        responses=docs.responses(docs.bundle_schema(["searchset"]), (400, 413, 415)),
        openapi_extra=permission_extra(Permission.PATIENT_READ, docs.form_body()),
    )
    async def search_post(
        request: Request,
        resource_type: str = _type_param(),
        caller: Caller = caller_for(Permission.PATIENT_READ),
    ) -> FhirJSONResponse:
        params = list(request.query_params.multi_items())
        body = await read_limited(request, MAX_FORM_BYTES)
        if body:  # an empty POST is a search without parameters, whatever its content type
            require_content_type(request, FORM_TYPES)
            params += form_fields(body)
        return await run_in_threadpool(run_search, service, caller, request, resource_type, params)

    @router.get(
        "/{resource_type}/{resource_id}",
        summary="Read",
        response_model=None,
        responses=docs.responses(docs.RESOURCE, (400, 404), ("ETag", "Last-Modified")),
        openapi_extra=permission_extra(Permission.PATIENT_READ),
    )
    def read(
        resource_type: str = _type_param(),
        resource_id: str = _id_param(),
        caller: Caller = caller_for(Permission.PATIENT_READ),
    ) -> FhirJSONResponse:
        check_type(resource_type)
        check_id(resource_id)
        stored = guarded(service.access.read, caller, resource_type, resource_id)
        if stored is None:
            raise not_found(resource_type)
        return resource_response(stored)

    @router.get(
        "/{resource_type}/{resource_id}/_history",
        summary="Instance history, newest first",
        response_model=None,
        responses=docs.responses(docs.bundle_schema(["history"]), (400, 404)),
        openapi_extra=permission_extra(Permission.PATIENT_READ),
    )
    def instance_history(
        request: Request,
        resource_type: str = _type_param(),
        resource_id: str = _id_param(),
        caller: Caller = caller_for(Permission.PATIENT_READ),
    ) -> FhirJSONResponse:
        check_type(resource_type)
        check_id(resource_id)
        versions = guarded(service.access.history, caller, resource_type, resource_id)
        if not versions:
            raise not_found(resource_type)
        return FhirJSONResponse(history(versions, fhir_base(request)))

    @router.get(
        "/{resource_type}/{resource_id}/_history/{version_id}",
        summary="Version read",
        response_model=None,
        responses=docs.responses(docs.RESOURCE, (400, 404), ("ETag", "Last-Modified")),
        openapi_extra=permission_extra(Permission.PATIENT_READ),
    )
    def vread(
        resource_type: str = _type_param(),
        resource_id: str = _id_param(),
        version_id: str = Path(json_schema_extra={"pattern": _VERSION.pattern}),
        caller: Caller = caller_for(Permission.PATIENT_READ),
    ) -> FhirJSONResponse:
        check_type(resource_type)
        check_id(resource_id)
        if not _VERSION.match(version_id):
            raise FhirError.of(400, "invalid", "the version id is not a positive whole number")
        versions = guarded(service.access.history, caller, resource_type, resource_id)
        match = [v for v in versions if v.version == int(version_id)]
        if not match:
            raise not_found(resource_type, "version")
        return resource_response(match[0])

    return router


def _type_param() -> Any:
    # Documented for clients (the R4 names); checked in the route, to answer with a FHIR error.
    return Path(json_schema_extra=docs.RESOURCE_TYPE_SCHEMA)


def _id_param() -> Any:
    return Path(json_schema_extra=docs.ID_SCHEMA)


def form_fields(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise FhirError.of(
            400, "structure", "the form body is not UTF-8 form-encoded search parameters"
        ) from None


def guarded(read: Any, caller: Caller, *args: str) -> Any:
    """A read through the access layer; a refusal becomes its 403."""
    try:
        return read(caller.principal, caller.ctx, *args)
    except AccessDenied as exc:
        raise denied(exc) from None


def run_search(
    service: FhirService,
    caller: Caller,
    request: Request,
    resource_type: str,
    params: Sequence[tuple[str, str]],
) -> FhirJSONResponse:
    check_type(resource_type)
    try:
        query = parse_search(resource_type, params)
    except SearchParamError as exc:
        error = FhirError.of(400, exc.code, str(exc))
        raise service.refused(caller, AuditAction.SEARCH, error) from None
    try:
        page, withheld = service.access.search(
            caller.principal,
            caller.ctx,
            resource_type,
            lambda patient_id: search_page(service.store, resource_type, query, patient_id),
            patient_id=query.patient_id,
            query_text=urlencode(query.filters),
        )
    except AccessDenied as exc:
        raise denied(exc) from None
    base = fhir_base(request)
    links = paging_links(
        f"{base}/{resource_type}", query.filters, query.count, query.offset, page.total
    )
    # a total that counts withheld resources would reveal that they exist
    total = None if withheld else page.total
    return FhirJSONResponse(search_set(page, base, resource_type, links, total))


def search_page(
    store: ResourceStore, resource_type: str, query: SearchQuery, patient_id: str | None
) -> SearchPage:
    if query.matches_nothing:
        return SearchPage(total=0, resources=[])
    return store.search(
        resource_type,
        patient_id=patient_id,
        codes=query.codes,
        dates=query.dates,
        count=query.count,
        offset=query.offset,
    )
