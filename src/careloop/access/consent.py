"""Does a patient's consent permit one access? FHIR R4 Consent, evaluated as careloop reads it.

Reference: FHIR R4 Consent (http://hl7.org/fhir/R4/consent.html), §"Provision" and the
`Consent.provision` elements: a root provision with a `type` (permit | deny) and criteria, and
nested provisions that are exceptions to their parent. This module fixes the points R4 leaves
open; each rule below is what `evaluate` does.

**Which consents count.** A Consent is considered only when its `status` is `active` and its
`patient` references the request's patient (`Patient/<id>`, an absolute URL ending in
`/Patient/<id>`, or either with `/_history/<n>`). Everything else (draft, proposed, rejected,
inactive, entered-in-error, another patient's) is ignored. Of those, a consent *applies* when
(1) its scope covers the purpose: `patient-privacy` covers every purpose, `research` only
research (HRESCH) and model training (MODELTRAIN); `treatment` (consent to care) and `adr`
(advance directive) are valid but are not information-sharing rules, so they never apply;
(2) its root `provision.period`, if any, contains the access time; and (3) the root provision's
criteria match the request. A consent whose root does not match says nothing about the request.

**Matching a provision.** Every criterion a provision states must match; a criterion it does not
state matches everything.
- `actor`: any `actor[].reference` equals one of the request's actor references (the principal's
  `fhirUser` and `Organization/<id>`, so an organisation actor covers everyone who acts for it).
  Absolute URLs are reduced to `Type/id`. `actor.role` is the participation type (e.g. IRCP) in
  R4, not the actor's job, so it is not matched against careloop roles.
- `action`: any code equals the request's action, where `access` and `use` are one: reading a
  record in careloop both shows it (access) and processes it (use, e.g. scoring), so a patient
  who denies either must not see a careloop read slip through as the other.
- `securityLabel`: any label code (system v3-ActCode or absent) is among the request's labels
  (`careloop.access.labels.security_labels` of the resource; empty for a search-level check, which
  a labelled provision therefore never matches: results are judged one by one afterwards).
- `purpose`: any coding with the request purpose's code and its system (or no system).
- `class`: any coding whose code is the resource type (system resource-types or absent).
- `code`: any coding (system, code) among the request's `resource_codes`.
- `dataPeriod`: overlaps the request's `data_period`; a request with no clinical time does not
  match.
- `data`: any `data[].reference` equals the request's `resource_reference`, or is
  `Patient/<the patient>` (the whole record). `meaning` related/dependents/authoredby are not
  resolved (careloop has no graph here): they match only the referenced resource itself.
- `period`: contains the access time.

**Deciding.** If the root matches, the deepest matching provision in its tree decides, with its
`type`; a nested provision that does not match contributes nothing, whatever is below it. Among
matching provisions at the same depth, deny wins. With several applicable consents, the one with
the latest `dateTime` decides (a missing dateTime counts as the oldest); on a tie deny wins. With
no applicable consent, `policy.default_for(purpose)` decides: opt-out permits, opt-in denies.
Purposes in `policy.always_permitted_purposes` skip consent entirely (empty by default: the
access layer handles break-glass and a patient's own reads itself).

**Fail closed.** A consent that is active and for this patient but cannot be read with certainty
(a bad date in `dateTime` or any period, a period that ends before it starts, a missing or
unknown provision `type`, a missing or unknown `scope`, an element of the wrong JSON shape or an
empty array, a stated criterion that names nothing comparable such as a coding without a code or
an actor without a reference, nesting deeper than 32) is *malformed*: it
denies every request of that patient, whatever other consents say, with a basis naming the
consent id and the field (never its value). It never raises and never silently permits; fixing or
withdrawing the record lifts the denial.

**Cost.** `evaluate` runs for every resource released. Parsing a consent into a `ParsedConsent`
walks its provision tree once (about 15 us for a two-level consent on the 2-core reference
machine); `parse_consent` caches the result keyed by the consent's exact JSON bytes (orjson), so
a changed consent is never judged by a stale parse, and re-evaluating the same consents for each
resource of a page costs one serialisation and one cache hit per consent. Matching is a few set
look-ups per provision: two consents evaluate in about 6 us from dicts, 4.5 us pre-parsed (pass
`ParsedConsent` objects when judging a whole page). Labelling the resource
(`labels.security_labels`) is the larger share, about 25 us for an average Synthea resource.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Final

import orjson

from careloop.access.labels import CLASS_LABELS, CONFIDENTIALITY_SYSTEM, DataClass
from careloop.access.principal import Purpose
from careloop.fhir import codes
from careloop.fhir.timeutil import FhirDateError, parse_fhir_instant_range

CONSENT_SCOPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_ACTION_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/consentaction"
RESOURCE_TYPES_SYSTEM: Final = "http://hl7.org/fhir/resource-types"
PARTICIPATION_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
CONSENT_CATEGORY_LOINC: Final = "59284-0"  # Patient Consent

PERMIT: Final = "permit"
DENY: Final = "deny"
MAX_PROVISION_DEPTH: Final = 32
# Scopes that carry information-sharing rules, and the purposes each covers (None: all).
SCOPE_PURPOSES: Final[Mapping[str, frozenset[Purpose] | None]] = {
    "patient-privacy": None,
    "research": frozenset({Purpose.RESEARCH, Purpose.MODEL_TRAINING}),
    "treatment": frozenset(),
    "adr": frozenset(),
}
# Actions that are one for matching (see the module docstring).
ACTION_EQUIVALENTS: Final[Mapping[str, frozenset[str]]] = {
    "access": frozenset({"access", "use"}),
    "use": frozenset({"access", "use"}),
}

_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)
Period = tuple[datetime, datetime]


class DefaultPolicy(StrEnum):
    """What happens when no consent applies.

    opt-out: access is permitted unless a consent denies; opt-in: denied unless a consent
    permits. The default applies to every purpose except those listed in
    `ConsentPolicy.always_permitted_purposes`.
    """

    OPT_IN = "opt-in"
    OPT_OUT = "opt-out"


@dataclass(frozen=True)
class ConsentPolicy:
    default: DefaultPolicy = DefaultPolicy.OPT_OUT
    # per-purpose defaults override, e.g. {Purpose.RESEARCH: OPT_IN}
    purpose_defaults: Mapping[Purpose, DefaultPolicy] = field(default_factory=dict)
    # purposes consent does not govern at all (always permitted); keep empty unless the law of
    # the deployment says otherwise
    always_permitted_purposes: frozenset[Purpose] = frozenset()

    def default_for(self, purpose: Purpose) -> DefaultPolicy:
        return self.purpose_defaults.get(purpose, self.default)


@dataclass(frozen=True, kw_only=True)
class AccessRequest:
    patient_id: str
    actor_references: frozenset[str]  # Principal.actor_references
    purpose: Purpose
    resource_type: str
    at: datetime  # when the access happens (timezone-aware)
    actor_role: str | None = None  # careloop Role value, kept for the record
    security_labels: frozenset[str] = frozenset()  # labels.security_labels(resource)
    data_period: tuple[datetime | None, datetime | None] | None = None  # clinical time
    resource_reference: str | None = None  # "Observation/123"
    resource_codes: frozenset[tuple[str, str]] = frozenset()  # (system, code) of the resource
    action: str = "access"  # consentaction: access, collect, use, disclose, correct

    def __post_init__(self) -> None:
        moments = [self.at, *(self.data_period or ())]
        if any(moment is not None and moment.tzinfo is None for moment in moments):
            raise ValueError("AccessRequest times must be timezone-aware")


@dataclass(frozen=True)
class ConsentDecision:
    permitted: bool
    basis: str  # human-readable, no PHI
    consent_id: str | None
    provision_path: str | None  # "1" is the root, "1.2" its second nested provision


@dataclass(frozen=True, slots=True)
class ParsedProvision:
    path: str
    type: str  # PERMIT or DENY
    period: Period | None = None
    actors: frozenset[str] | None = None
    actions: frozenset[str] | None = None
    labels: frozenset[str] | None = None
    purposes: frozenset[tuple[str | None, str]] | None = None
    classes: frozenset[str] | None = None
    codes: frozenset[tuple[str | None, str]] | None = None
    data_period: Period | None = None
    data: frozenset[str] | None = None
    children: tuple[ParsedProvision, ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedConsent:
    consent_id: str | None
    active: bool
    patient_id: str | None
    scope: str | None = None
    recorded: datetime | None = None
    root: ParsedProvision | None = None
    malformed: str | None = None  # the field that could not be read, when malformed

    @property
    def label(self) -> str:
        return f"Consent/{self.consent_id}" if self.consent_id else "Consent (no id)"


class _Malformed(Exception):
    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


# -- parsing ------------------------------------------------------------------------------------


def parse_consent(consent: dict | ParsedConsent) -> ParsedConsent:
    """A consent read once into match-ready sets; never raises (malformed content is recorded)."""
    if isinstance(consent, ParsedConsent):
        return consent
    try:
        # datetimes and dataclasses are not FHIR JSON: refuse them here so the cached parse sees
        # exactly what an uncached one would
        key = orjson.dumps(consent, option=_PASSTHROUGH)
    except TypeError:  # includes orjson.JSONEncodeError: non-JSON content, parsed uncached
        return _parse(consent)
    return _parse_cached(key)


def needs_security_labels(consents: Sequence[dict | ParsedConsent]) -> bool:
    """Whether any of these consents states a securityLabel criterion. When none does, a
    resource's labels cannot change a decision, so the caller may skip inferring them (the
    costliest step of a decision: a walk over every coding of the resource)."""
    stack = [parse_consent(consent).root for consent in consents]
    while stack:
        provision = stack.pop()
        if provision is None:
            continue
        if provision.labels is not None:
            return True
        stack.extend(provision.children)
    return False


_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


@lru_cache(maxsize=4096)
def _parse_cached(key: bytes) -> ParsedConsent:
    return _parse(orjson.loads(key))


def _parse(consent: object) -> ParsedConsent:
    if not isinstance(consent, dict):
        return ParsedConsent(None, False, None, malformed="Consent")
    raw_id = consent.get("id")
    consent_id = raw_id if isinstance(raw_id, str) else None
    active = consent.get("status") == "active"
    patient = consent.get("patient")
    patient_ref = patient.get("reference") if isinstance(patient, dict) else None
    patient_id = _patient_id(patient_ref) if isinstance(patient_ref, str) else None
    try:
        scope = _scope(consent.get("scope"))
        recorded = _instant(consent.get("dateTime"), "dateTime", end=False)
        root = _provision(consent.get("provision"), "1", "provision", 0)
    except _Malformed as problem:
        return ParsedConsent(consent_id, active, patient_id, malformed=problem.where)
    except Exception:  # last resort: an unforeseen shape must fail closed, never escape
        return ParsedConsent(consent_id, active, patient_id, malformed="provision")
    return ParsedConsent(consent_id, active, patient_id, scope, recorded, root)


def _scope(scope: object) -> str:
    for system, code in _concept_codes(scope, "scope"):
        if system in (None, CONSENT_SCOPE_SYSTEM) and code in SCOPE_PURPOSES:
            return code
    raise _Malformed("scope")


def _provision(node: object, path: str, where: str, depth: int) -> ParsedProvision:
    if not isinstance(node, dict) or depth >= MAX_PROVISION_DEPTH:
        raise _Malformed(where)
    kind = node.get("type")
    if kind not in (PERMIT, DENY):
        raise _Malformed(f"{where}.type")
    children = tuple(
        _provision(child, f"{path}.{index + 1}", f"{where}.provision[{index}]", depth + 1)
        for index, child in enumerate(_list(node, "provision", where))
    )
    return ParsedProvision(
        path=path,
        type=kind,
        period=_period(node.get("period"), f"{where}.period"),
        actors=_references(node, "actor", where),
        actions=_concepts_codes(node, "action", where),
        labels=_coding_codes(node, "securityLabel", where, (None, CONFIDENTIALITY_SYSTEM)),
        purposes=_codings(node, "purpose", where),
        classes=_coding_codes(node, "class", where, (None, RESOURCE_TYPES_SYSTEM)),
        codes=_concepts_codings(node, "code", where),
        data_period=_period(node.get("dataPeriod"), f"{where}.dataPeriod"),
        data=_references(node, "data", where),
        children=children,
    )


def _list(node: dict, key: str, where: str) -> list:
    """A JSON array element; FHIR JSON never has an empty array, so one is malformed."""
    value = node.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise _Malformed(f"{where}.{key}")
    return value


def _coding(value: object, where: str) -> tuple[str | None, str] | None:
    """(system, code) of a Coding; None for a coding without a code."""
    if not isinstance(value, dict):
        raise _Malformed(where)
    system, code = value.get("system"), value.get("code")
    if system is not None and not isinstance(system, str):
        raise _Malformed(f"{where}.system")
    if code is None:
        return None
    if not isinstance(code, str):
        raise _Malformed(f"{where}.code")
    return system, code.strip()


def _concept_codes(concept: object, where: str) -> list[tuple[str | None, str]]:
    """The coded codings of a CodeableConcept (codings without a code are skipped)."""
    if not isinstance(concept, dict):
        raise _Malformed(where)
    found = []
    for index, item in enumerate(_list(concept, "coding", where)):
        coding = _coding(item, f"{where}.coding[{index}]")
        if coding is not None:
            found.append(coding)
    return found


# A stated criterion must name something careloop can compare: a coding without a code, a
# CodeableConcept without a coded coding, or an actor or data entry without a reference would
# otherwise be a criterion that silently never matches, which weakens a deny.


def _codings(node: dict, key: str, where: str) -> frozenset[tuple[str | None, str]] | None:
    if key not in node:
        return None
    found = set()
    for index, item in enumerate(_list(node, key, where)):
        coding = _coding(item, f"{where}.{key}[{index}]")
        if coding is None:
            raise _Malformed(f"{where}.{key}[{index}].code")
        found.add(coding)
    return frozenset(found)


def _coding_codes(
    node: dict, key: str, where: str, systems: tuple[str | None, ...]
) -> frozenset[str] | None:
    """Codes of the codings in one of `systems`; codings of other systems never match."""
    codings = _codings(node, key, where)
    if codings is None:
        return None
    return frozenset(code for system, code in codings if system in systems)


def _concepts_codings(node: dict, key: str, where: str) -> frozenset[tuple[str | None, str]] | None:
    if key not in node:
        return None
    found: set[tuple[str | None, str]] = set()
    for index, concept in enumerate(_list(node, key, where)):
        coded = _concept_codes(concept, f"{where}.{key}[{index}]")
        if not coded:
            raise _Malformed(f"{where}.{key}[{index}].coding")
        found.update(coded)
    return frozenset(found)


def _concepts_codes(node: dict, key: str, where: str) -> frozenset[str] | None:
    codings = _concepts_codings(node, key, where)
    if codings is None:
        return None
    return frozenset(code for system, code in codings if system in (None, CONSENT_ACTION_SYSTEM))


def _reference(value: object, where: str) -> str:
    if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
        raise _Malformed(where)
    return local_reference(value["reference"])


def _references(node: dict, key: str, where: str) -> frozenset[str] | None:
    """`actor[].reference` or `data[].reference`, each required by R4 (1..1)."""
    if key not in node:
        return None
    found = set()
    for index, item in enumerate(_list(node, key, where)):
        if not isinstance(item, dict):
            raise _Malformed(f"{where}.{key}[{index}]")
        found.add(_reference(item.get("reference"), f"{where}.{key}[{index}].reference"))
    return frozenset(found)


def _period(value: object, where: str) -> Period | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Malformed(where)
    start = _instant(value.get("start"), f"{where}.start", end=False)
    end = _instant(value.get("end"), f"{where}.end", end=True)
    if start is not None and end is not None and end < start:
        raise _Malformed(where)
    return start or _EARLIEST, end or _LATEST


def _instant(value: object, where: str, *, end: bool) -> datetime | None:
    """A FHIR date/dateTime as a UTC instant: the first instant it covers, or the last for the
    end of a period (so `end: "2024"` lasts the whole year)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Malformed(where)
    try:
        first, last = parse_fhir_instant_range(value)
    except (FhirDateError, ValueError, OverflowError):
        raise _Malformed(where) from None
    return last if end else first


def local_reference(reference: str) -> str:
    """`Type/id` for a relative or absolute reference, without any `/_history/n`."""
    text = reference.strip()
    if "/_history/" in text:
        text = text.split("/_history/", 1)[0]
    if text.startswith("urn:"):
        return text
    parts = [part for part in text.split("/") if part]
    return "/".join(parts[-2:]) if len(parts) >= 2 else text


def _patient_id(reference: str) -> str | None:
    local = local_reference(reference)
    return local.removeprefix("Patient/") if local.startswith("Patient/") else None


# -- matching -----------------------------------------------------------------------------------


def _contains(period: Period | None, moment: datetime) -> bool:
    return period is None or period[0] <= moment <= period[1]


def _overlaps(period: Period, data_period: tuple[datetime | None, datetime | None] | None) -> bool:
    if data_period is None or (data_period[0] is None and data_period[1] is None):
        return False
    start = data_period[0] or _EARLIEST
    end = data_period[1] or _LATEST
    return period[0] <= end and start <= period[1]


def _purpose_matches(purposes: frozenset[tuple[str | None, str]], purpose: Purpose) -> bool:
    return (purpose.system, purpose.value) in purposes or (None, purpose.value) in purposes


def _codes_match(stated: frozenset[tuple[str | None, str]], request: AccessRequest) -> bool:
    return any(
        (system, code) in request.resource_codes
        if system is not None
        else any(code == have for _system, have in request.resource_codes)
        for system, code in stated
    )


def _data_matches(data: frozenset[str], request: AccessRequest) -> bool:
    whole_record = f"Patient/{request.patient_id}"
    return whole_record in data or (
        request.resource_reference is not None
        and local_reference(request.resource_reference) in data
    )


def _matched_criteria(provision: ParsedProvision, request: AccessRequest) -> list[str] | None:
    """What the provision stated and the request met (codes only, no PHI); None on a mismatch."""
    met: list[str] = []
    if provision.period is not None:
        if not _contains(provision.period, request.at):
            return None
        met.append("period")
    if provision.actors is not None:
        if provision.actors.isdisjoint(map(local_reference, request.actor_references)):
            return None
        met.append("actor")
    if provision.actions is not None:
        wanted = ACTION_EQUIVALENTS.get(request.action, frozenset({request.action}))
        hits = provision.actions & wanted
        if not hits:
            return None
        met.append("action " + ",".join(sorted(hits)))
    if provision.labels is not None:
        hits = provision.labels & request.security_labels
        if not hits:
            return None
        met.append("securityLabel " + ",".join(sorted(hits)))
    if provision.purposes is not None:
        if not _purpose_matches(provision.purposes, request.purpose):
            return None
        met.append(f"purpose {request.purpose.value}")
    if provision.classes is not None:
        if request.resource_type not in provision.classes:
            return None
        met.append(f"class {request.resource_type}")
    if provision.codes is not None:
        if not _codes_match(provision.codes, request):
            return None
        met.append("code")
    if provision.data_period is not None:
        if not _overlaps(provision.data_period, request.data_period):
            return None
        met.append("dataPeriod")
    if provision.data is not None:
        if not _data_matches(provision.data, request):
            return None
        met.append("data")
    return met


@dataclass(frozen=True, slots=True)
class _Match:
    depth: int
    provision: ParsedProvision
    criteria: tuple[str, ...]

    def outranks(self, other: _Match) -> bool:
        """Deeper wins; at the same depth deny wins."""
        if self.depth != other.depth:
            return self.depth > other.depth
        return self.provision.type == DENY and other.provision.type != DENY


def _deepest_match(provision: ParsedProvision, request: AccessRequest, depth: int) -> _Match | None:
    criteria = _matched_criteria(provision, request)
    if criteria is None:
        return None
    best = _Match(depth, provision, tuple(criteria))
    for child in provision.children:
        found = _deepest_match(child, request, depth + 1)
        if found is not None and found.outranks(best):
            best = found
    return best


def _scope_covers(scope: str | None, purpose: Purpose) -> bool:
    covered = SCOPE_PURPOSES.get(scope or "", frozenset())
    return covered is None or purpose in covered


def _for_patient(parsed: ParsedConsent, request: AccessRequest) -> bool:
    return parsed.active and parsed.patient_id == request.patient_id


def _root_match(parsed: ParsedConsent, request: AccessRequest) -> _Match | None:
    if parsed.root is None or not _scope_covers(parsed.scope, request.purpose):
        return None
    return _deepest_match(parsed.root, request, 0)


def consent_is_applicable(consent: dict | ParsedConsent, request: AccessRequest) -> bool:
    """True when the consent has something to say about this request: active, for this patient,
    and either malformed (fail closed) or in scope, in its period, with its root matching."""
    parsed = parse_consent(consent)
    if not _for_patient(parsed, request):
        return False
    return parsed.malformed is not None or _root_match(parsed, request) is not None


# -- deciding -----------------------------------------------------------------------------------


def evaluate(
    consents: Sequence[dict | ParsedConsent], request: AccessRequest, policy: ConsentPolicy
) -> ConsentDecision:
    """The decision for one access under a patient's consents (rules in the module docstring)."""
    if request.purpose in policy.always_permitted_purposes:
        basis = f"purpose {request.purpose.value} is always permitted by policy"
        return ConsentDecision(True, basis, None, None)
    best: tuple[ParsedConsent, _Match] | None = None
    for consent in consents:
        parsed = parse_consent(consent)
        if not _for_patient(parsed, request):
            continue
        if parsed.malformed is not None:
            basis = f"{parsed.label} is malformed at {parsed.malformed}: denied (fail closed)"
            return ConsentDecision(False, basis, parsed.consent_id, None)
        match = _root_match(parsed, request)
        if match is not None and (best is None or _newer(parsed, match, *best)):
            best = parsed, match
    if best is None:
        default = policy.default_for(request.purpose)
        basis = f"default {default.value} policy (purpose {request.purpose.value})"
        return ConsentDecision(default is DefaultPolicy.OPT_OUT, basis, None, None)
    parsed, match = best
    stated = ", ".join(match.criteria) or "no criteria"
    basis = f"{parsed.label} provision {match.provision.path} ({match.provision.type}: {stated})"
    return ConsentDecision(
        match.provision.type == PERMIT, basis, parsed.consent_id, match.provision.path
    )


def _newer(parsed: ParsedConsent, match: _Match, other: ParsedConsent, other_match: _Match) -> bool:
    """Does this consent's decision override the other's? Later dateTime wins; tie: deny."""
    mine = parsed.recorded or _EARLIEST
    theirs = other.recorded or _EARLIEST
    if mine != theirs:
        return mine > theirs
    return match.provision.type == DENY and other_match.provision.type != DENY


# -- builders -----------------------------------------------------------------------------------


def opt_out_consent(
    patient_id: str,
    purposes: Sequence[Purpose],
    *,
    consent_id: str | None = None,
    at: datetime | None = None,
) -> dict:
    """A patient-privacy Consent that denies every access for these purposes (and says nothing
    about any other purpose, which the default policy then decides)."""
    if not purposes:
        raise ValueError("an opt-out consent needs at least one purpose")
    provision = {
        "type": DENY,
        "purpose": [
            {"system": purpose.system, "code": purpose.value} for purpose in dict.fromkeys(purposes)
        ],
    }
    return _consent(patient_id, provision, "OPTOUT", consent_id, at)


def data_class_restriction(
    patient_id: str,
    classes: Sequence[DataClass],
    *,
    except_actors: Sequence[str] = (),
    consent_id: str | None = None,
    at: datetime | None = None,
) -> dict:
    """A patient-privacy Consent that denies data of these classes (by security label) to
    everyone, with one nested permit for the listed actors (`Practitioner/x`, `Organization/y`)."""
    if not classes:
        raise ValueError("a data-class restriction needs at least one class")
    labels = sorted({label for data_class in classes for label in CLASS_LABELS[data_class]})
    provision: dict = {
        "type": DENY,
        "securityLabel": [{"system": CONFIDENTIALITY_SYSTEM, "code": label} for label in labels],
    }
    if except_actors:
        provision["provision"] = [
            {
                "type": PERMIT,
                "actor": [
                    {
                        "role": {"coding": [{"system": PARTICIPATION_TYPE_SYSTEM, "code": "IRCP"}]},
                        "reference": {"reference": actor},
                    }
                    for actor in dict.fromkeys(except_actors)
                ],
            }
        ]
    policy_rule = "OPTOUTE" if except_actors else "OPTOUT"
    return _consent(patient_id, provision, policy_rule, consent_id, at)


def _consent(
    patient_id: str, provision: dict, policy_rule: str, consent_id: str | None, at: datetime | None
) -> dict:
    moment = (at or datetime.now(UTC)).astimezone(UTC)
    return {
        "resourceType": "Consent",
        "id": consent_id or str(uuid.uuid4()),
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": codes.LOINC, "code": CONSENT_CATEGORY_LOINC}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "policyRule": {"coding": [{"system": CONFIDENTIALITY_SYSTEM, "code": policy_rule}]},
        "provision": provision,
    }
