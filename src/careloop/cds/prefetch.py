"""The data a CDS service decides on: prefetched by the EHR, fetched from the EHR's FHIR server,
or read from careloop's own store, in that order; 412 when none of them can give it.

Every source passes the access layer: careloop's own store through a guarded compartment read,
and data the EHR sent or served through `AccessLayer.screen`, so the patient's consents recorded
in careloop apply to what careloop processes whatever its source, and every use is audited.

Prefetched data is checked before it is believed: a key holds null (the EHR has nothing), one
resource of the template's type, or a Bundle of them, and every resource must be about the
patient in the context. A prefetch about another patient is refused, not filtered: it means the
EHR's request is wrong, and guessing which half is right would put one patient's data on
another's card.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from careloop.access.errors import AccessDenied
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal
from careloop.audit.events import AuditAction
from careloop.cds.client_auth import CdsClient
from careloop.cds.hooks import CdsRequestError, HookRequest
from careloop.fhir.indexing import patient_id_of

MAX_FETCH_PAGES = 20
MAX_FETCH_BYTES = 16 * 1024 * 1024
FETCH_TIMEOUT_SECONDS = 5.0
_TOKEN = re.compile(r"\{\{([A-Za-z.]+)\}\}")


@dataclass(frozen=True)
class PrefetchKey:
    """One prefetch template a service declares in discovery."""

    name: str
    template: str  # e.g. "Observation?patient={{context.patientId}}&_count=1000"

    @property
    def resource_type(self) -> str:
        return re.split(r"[/?]", self.template, maxsplit=1)[0]

    @property
    def single(self) -> bool:
        """A read of one resource (Patient/{{context.patientId}}) rather than a search."""
        return "?" not in self.template

    @property
    def codes(self) -> frozenset[tuple[str, str]]:
        """The (system, code) pairs the template's `code=` filters on; empty when it does not."""
        _path, _, query = self.template.partition("?")
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if name == "code":
                return frozenset(
                    (system, code)
                    for token in value.split(",")
                    for system, _, code in [token.rpartition("|")]
                )
        return frozenset()


@dataclass
class PatientData:
    """What one call decides on, by prefetch key, and where each key's data came from."""

    patient_id: str
    by_key: dict[str, list[dict]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # "prefetch", "fhirServer", "careloop"

    @property
    def patient(self) -> dict | None:
        found = self.by_key.get("patient", [])
        return found[0] if found else None

    def resources(self, *keys: str) -> list[dict]:
        """The resources of the given keys (all keys when none is named), without repeats."""
        chosen = keys or tuple(self.by_key)
        seen: set[tuple[str, str]] = set()
        result = []
        for key in chosen:
            for resource in self.by_key.get(key, []):
                identity = (str(resource.get("resourceType")), str(resource.get("id")))
                if identity not in seen:
                    seen.add(identity)
                    result.append(resource)
        return result


def prefetch_for(keys: Sequence[PrefetchKey], resources: Sequence[dict]) -> dict[str, Any]:
    """The prefetch an EHR would send for these resources of one patient: each key's matching
    resource (a read) or searchset Bundle (a search). For EHR simulators, tests and benchmarks."""
    prefetch: dict[str, Any] = {}
    for key in keys:
        matching = [resource for resource in resources if _matches(key, resource)]
        if key.single:
            prefetch[key.name] = matching[0] if matching else None
        else:
            prefetch[key.name] = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": resource} for resource in matching],
            }
    return prefetch


def render(template: str, request: HookRequest) -> str:
    """A prefetch template with its tokens filled from the request's context."""
    values = {
        "context.patientId": request.patient_id,
        "context.userId": request.user_id,
        "context.encounterId": request.encounter_id,
        "userPractitionerId": _user_of(request.user_id, "Practitioner"),
        "userPractitionerRoleId": _user_of(request.user_id, "PractitionerRole"),
        "userPatientId": _user_of(request.user_id, "Patient"),
        "userRelatedPersonId": _user_of(request.user_id, "RelatedPerson"),
    }

    def fill(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        if value is None:
            raise CdsRequestError(412, f"the prefetch token {match.group(0)} has no value")
        return value

    return _TOKEN.sub(fill, template)


def _user_of(user_id: str, resource_type: str) -> str | None:
    kind, _, identifier = user_id.partition("/")
    return identifier if kind == resource_type else None


class DataGatherer:
    """Finds the data of a call's prefetch keys (see the module docstring for the order)."""

    def __init__(self, access: AccessLayer, http: httpx.Client | None = None) -> None:
        self.access = access
        self.http = http or httpx.Client(
            timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
        )

    def gather(
        self,
        keys: Sequence[PrefetchKey],
        request: HookRequest,
        client: CdsClient,
        principal: Principal,
        ctx: AccessContext,
    ) -> PatientData:
        data = PatientData(request.patient_id)
        received: list[dict] = []
        missing: list[PrefetchKey] = []
        for key in keys:
            if key.name in request.prefetch:
                data.by_key[key.name] = checked_prefetch(key, request.prefetch[key.name], request)
                data.sources[key.name] = "prefetch"
                received.extend(data.by_key[key.name])
            else:
                missing.append(key)
        if missing and request.fhir_server is not None:
            for key in missing:
                data.by_key[key.name] = self._fetch(key, request, client)
                data.sources[key.name] = "fhirServer"
                received.extend(data.by_key[key.name])
        elif missing:
            self._read_own_store(missing, data, principal, ctx)
        if received:
            self._screen(data, received, principal, ctx)
        if not data.patient:
            raise CdsRequestError(412, "the patient's Patient resource could not be had")
        return data

    def _screen(
        self, data: PatientData, received: list[dict], principal: Principal, ctx: AccessContext
    ) -> None:
        """Drop what the patient's consents withhold from careloop (audited by the layer)."""
        try:
            kept = self.access.screen(principal, ctx, data.patient_id, received, AuditAction.READ)
        except AccessDenied as exc:
            raise CdsRequestError(403, str(exc)) from None
        kept_ids = {id(resource) for resource in kept}
        for key, resources in data.by_key.items():
            if data.sources.get(key) != "careloop":
                data.by_key[key] = [r for r in resources if id(r) in kept_ids]

    def _read_own_store(
        self,
        keys: Sequence[PrefetchKey],
        data: PatientData,
        principal: Principal,
        ctx: AccessContext,
    ) -> None:
        types = sorted({key.resource_type for key in keys})
        try:
            release = self.access.patient_compartment(
                principal, ctx, data.patient_id, types, action=AuditAction.READ
            )
        except AccessDenied as exc:
            raise CdsRequestError(403, str(exc)) from None
        bodies = [item.body for item in release.resources]
        if not any(body.get("resourceType") == "Patient" for body in bodies):
            raise CdsRequestError(
                412,
                "no prefetch and no fhirServer were given, and careloop holds no record of this "
                "patient",
            )
        for key in keys:
            data.by_key[key.name] = [body for body in bodies if _matches(key, body)]
            data.sources[key.name] = "careloop"

    def _fetch(self, key: PrefetchKey, request: HookRequest, client: CdsClient) -> list[dict]:
        base = request.fhir_server or ""
        if not client.allows_fhir_server(base):
            raise CdsRequestError(
                412,
                f"prefetch '{key.name}' is missing and the fhirServer is not one careloop may "
                "query for this client (register it with `careloop cds-clients register "
                "--fhir-server`)",
            )
        if request.fhir_authorization is None:
            raise CdsRequestError(
                412, f"prefetch '{key.name}' is missing and no fhirAuthorization was given"
            )
        headers = {
            "Authorization": f"Bearer {request.fhir_authorization.access_token}",
            "Accept": "application/fhir+json",
        }
        url = f"{base}/{render(key.template, request)}"
        resources: list[dict] = []
        for _page in range(MAX_FETCH_PAGES):
            document = self._get(url, headers, key)
            if document is None:
                return resources
            if key.single:
                return checked_prefetch(key, document, request)
            resources.extend(checked_prefetch(key, document, request))
            url = _next_link(document, base)
            if url is None:
                return resources
        raise CdsRequestError(
            412, f"prefetch '{key.name}' has more than {MAX_FETCH_PAGES} pages on the fhirServer"
        )

    def _get(self, url: str, headers: dict[str, str], key: PrefetchKey) -> Any:
        try:
            response = self.http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise CdsRequestError(
                412, f"fetching '{key.name}' from the fhirServer failed: {type(exc).__name__}"
            ) from None
        if response.status_code == 404 and key.single:
            return None
        if response.status_code != 200:
            raise CdsRequestError(
                412, f"the fhirServer answered {response.status_code} for '{key.name}'"
            )
        if len(response.content) > MAX_FETCH_BYTES:
            raise CdsRequestError(412, f"the fhirServer's answer for '{key.name}' is too large")
        try:
            return response.json()
        except ValueError:
            raise CdsRequestError(
                412, f"the fhirServer's answer for '{key.name}' is not JSON"
            ) from None


def checked_prefetch(key: PrefetchKey, value: Any, request: HookRequest) -> list[dict]:
    """The resources of one prefetch value, or CdsRequestError(400) saying what is wrong."""
    where = f"prefetch '{key.name}'"
    if value is None:
        return []
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise CdsRequestError(400, f"{where} must be a FHIR resource, a Bundle or null")
    if value["resourceType"] == "Bundle":
        resources = _bundle_resources(value, where)
    elif key.single:
        resources = [value]
    else:
        raise CdsRequestError(400, f"{where} must be a Bundle (its template is a search)")
    for index, resource in enumerate(resources):
        _check_resource(key, resource, request, f"{where} entry[{index}]")
    return [resource for resource in resources if _matches(key, resource)]


def _bundle_resources(bundle: dict, where: str) -> list[dict]:
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise CdsRequestError(400, f"{where}: Bundle.entry must be a list")
    resources = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise CdsRequestError(400, f"{where} entry[{index}] has no resource")
        search = entry.get("search")
        if isinstance(search, dict) and search.get("mode") == "outcome":
            continue  # an OperationOutcome about the search, not data
        resources.append(resource)
    return resources


def _check_resource(key: PrefetchKey, resource: dict, request: HookRequest, where: str) -> None:
    resource_type = resource["resourceType"]
    if resource_type not in (key.resource_type, "OperationOutcome"):
        raise CdsRequestError(
            400, f"{where} is a {resource_type}; the template asks for {key.resource_type}"
        )
    if not isinstance(resource.get("id"), str):
        raise CdsRequestError(400, f"{where} has no id")
    if resource_type == "Patient":
        if resource["id"] != request.patient_id:
            raise CdsRequestError(400, f"{where} is another patient than context.patientId")
        return
    about = patient_id_of(resource)
    if about is not None and about != request.patient_id:
        raise CdsRequestError(400, f"{where} is about another patient than context.patientId")


def _matches(key: PrefetchKey, resource: dict) -> bool:
    """Whether a resource answers the key's template (its type and, if filtered, its code)."""
    if resource.get("resourceType") != key.resource_type:
        return False
    wanted = key.codes
    if not wanted:
        return True
    concept = resource.get("code")
    codings = concept.get("coding", []) if isinstance(concept, dict) else []
    return any(
        isinstance(coding, dict) and (coding.get("system", ""), coding.get("code")) in wanted
        for coding in codings
    )


def _next_link(bundle: dict, base: str) -> str | None:
    """The Bundle's next page, only when it is on the same FHIR server (never elsewhere)."""
    for link in bundle.get("link", []) if isinstance(bundle.get("link"), list) else []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url.startswith(base + "/"):
                return url
    return None
