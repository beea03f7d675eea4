"""The HIPAA Safe Harbor method (45 CFR 164.514(b)(2)) applied to FHIR R4 resources.

Safe Harbor de-identifies by removing 18 kinds of identifiers of the individual "or of relatives,
employers, or household members of the individual" (45 CFR 164.514(b)(2)(i)(A)-(R)), with the
covered entity having no actual knowledge that what remains could identify someone
(164.514(b)(2)(ii)). Each is counted under its `Category` in the report. Where each is handled:

1. (A) Names: every HumanName is removed (Patient, RelatedPerson, Practitioner, contacts,
   contained resources); the `display` of references to people, organizations, locations or
   unknown targets is removed; Annotation.authorString, CareTeam.name, FamilyMemberHistory.name
   and the mother's-maiden-name extension are removed; the compartment's known names are
   scrubbed from all remaining text (`text`).
2. (B) Geographic subdivisions smaller than a state: Address keeps use, type, state (when
   `keep_state`) and country; line, city, district, text and geolocation are removed; a US ZIP
   becomes its first 3 digits, or "000" for the restricted ZIP3s (population 20,000 or less,
   Census 2000, `RESTRICTED_ZIP3`); other postal codes are removed; Location and Organization
   keep only state and country; street addresses and ZIP codes are scrubbed from text.
3. (C) Dates (except year) and ages over 89: every date, dateTime and instant is shifted by
   the patient's offset ("shift") or reduced to the year ("year"), see `dates`; birthDate is
   removed for anyone 90 or older and an `age-band` extension says "90+" (`AGE_BAND_URL`); Age
   values of 90 years or more become ">= 90 a"; dates of relatives and practitioners are
   removed; dates in text become `[DATE]`.
4. (D) Telephone numbers: every ContactPoint is removed; phone patterns are scrubbed.
5. (E) Fax numbers: ContactPoint (system fax) removed; scrubbed like phone numbers.
6. (F) E-mail addresses: ContactPoint (system email) removed; e-mail patterns scrubbed.
7. (G) Social security numbers: every Identifier element is removed; SSN patterns scrubbed.
8. (H) Medical record numbers: Identifier removed; labelled ids and long digit runs scrubbed.
9. (I) Health plan beneficiary numbers: Identifier removed; Coverage, Claim and
   ExplanationOfBenefit are dropped.
10. (J) Account numbers: Identifier removed; Account, Claim, Invoice and other billing types
    are dropped.
11. (K) Certificate/license numbers: Identifier removed (driver's license, passport, NPI,
    Practitioner.qualification.identifier).
12. (L) Vehicle identifiers and serial numbers, license plates: VIN patterns scrubbed from
    text; plates cannot be recognised, one more reason narrative is dropped.
13. (M) Device identifiers and serial numbers: Device.serialNumber, lotNumber, udiCarrier,
    distinctIdentifier and Immunization.lotNumber are removed; Medication keeps no batch.
14. (N) Web URLs: ContactPoint url and Device.url removed; the base URL of absolute references
    is stripped; URLs are scrubbed from text.
15. (O) IP addresses: Device.url removed; AuditEvent dropped; IPv4 and IPv6 patterns scrubbed.
16. (P) Biometric identifiers: Signature, base64Binary data and every Attachment are removed;
    Media and Binary are dropped.
17. (Q) Full-face photographs and comparable images: Patient.photo, Practitioner.photo and
    every Attachment removed; Media, DocumentReference and ImagingStudy dropped.
18. (R) Any other unique identifying number, characteristic or code: resource ids and every
    reference (`Type/id`, absolute URLs, `urn:uuid:`) become keyed pseudonyms (`pseudonyms`);
    conditional references and `urn:oid:` references are removed; meta.versionId, lastUpdated
    and source are removed.

Which resource types leave, and why (an allowlist, so a type nobody reviewed never leaves):

- kept: the clinical types in `KEPT_TYPES` (Patient, Encounter, Condition, Observation,
  Procedure, medications, Immunization, AllergyIntolerance, DiagnosticReport without
  presentedForm, CarePlan, CareTeam, Goal, ServiceRequest, Device without serial numbers, ...);
- reduced (`REDUCED_ELEMENTS`): Practitioner, PractitionerRole, Organization, Location,
  Medication and RelatedPerson keep a pseudonymized id and a few non-identifying elements
  (gender, qualification codes, organization type, location state), no names, no dates; being
  free of dates and extensions they are identical in every patient's export;
- dropped: everything else, notably Provenance and AuditEvent (agents, signatures, IPs),
  Consent, DocumentReference, Media and Binary (attachments: free text and images), Communication
  and QuestionnaireResponse (free text), ImagingStudy (DICOM UIDs), Claim, ClaimResponse,
  ExplanationOfBenefit, Coverage, Account, Invoice (billing ids), Person and Group.

Free text: `Resource.text` narrative is dropped; every other string and markdown element is
scrubbed by `text.scrub` (best-effort), except `Coding.display` of standard terminologies (not
patient-specific), where only the compartment's known terms are removed. Patient-level
extensions are allowlisted (race, ethnicity, birth sex, gender identity, birth place reduced
to state); elsewhere extensions are kept and de-identified like any element except a few that
identify by nature (geolocation, mother's maiden name).

Every exported resource is tagged in `meta.security` with v3-ObservationValue PSEUDED
(pseudonymized: whoever holds the key can link pseudonyms back) and REDACTED (content removed).
Pseudonymization means the key holder could re-link, so the key stays with careloop and is never
part of an export; the export itself carries no code that derives from the original ids without
it (164.514(c)).
"""

from __future__ import annotations

import re
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from functools import cache
from typing import Final

from careloop.deid import text as tags
from careloop.deid.dates import DateRule, is_ninety_or_older, latest_date, year_instant
from careloop.deid.pseudonyms import Pseudonymizer
from careloop.deid.text import KnownTerms, scrub
from careloop.fhir.structure import model_class


class Category(StrEnum):
    """The 18 Safe Harbor identifiers, in the order of 45 CFR 164.514(b)(2)(i)(A)-(R)."""

    NAMES = "names"
    GEOGRAPHIC = "geographic-subdivisions"
    DATES = "dates"
    TELEPHONE = "telephone-numbers"
    FAX = "fax-numbers"
    EMAIL = "email-addresses"
    SSN = "social-security-numbers"
    MRN = "medical-record-numbers"
    HEALTH_PLAN = "health-plan-beneficiary-numbers"
    ACCOUNT = "account-numbers"
    CERTIFICATE_LICENSE = "certificate-license-numbers"
    VEHICLE = "vehicle-identifiers"
    DEVICE = "device-identifiers"
    URL = "web-urls"
    IP_ADDRESS = "ip-addresses"
    BIOMETRIC = "biometric-identifiers"
    PHOTO = "full-face-photographs"
    OTHER = "other-unique-identifiers"


# HHS guidance (Census 2000): the 3-digit ZIP prefixes whose population is 20,000 or less.
RESTRICTED_ZIP3: Final = frozenset(
    "036 059 063 102 203 556 692 790 821 823 830 831 878 879 884 890 893".split()
)
AGE_BAND_URL: Final = "https://careloop.dev/fhir/StructureDefinition/age-band"
AGE_BAND_90_PLUS: Final = "90+"
UCUM: Final = "http://unitsofmeasure.org"
SECURITY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
SECURITY_LABELS: Final = (
    ("PSEUDED", "pseudonymized"),
    ("REDACTED", "redacted"),
)

KEPT_TYPES: Final = frozenset(
    {
        "Patient",
        "Encounter",
        "EpisodeOfCare",
        "Condition",
        "Observation",
        "Procedure",
        "MedicationRequest",
        "MedicationStatement",
        "MedicationAdministration",
        "MedicationDispense",
        "Medication",
        "Immunization",
        "ImmunizationRecommendation",
        "AllergyIntolerance",
        "DiagnosticReport",
        "CarePlan",
        "CareTeam",
        "Goal",
        "ServiceRequest",
        "Device",
        "DeviceUseStatement",
        "DeviceRequest",
        "Specimen",
        "FamilyMemberHistory",
        "RiskAssessment",
        "ClinicalImpression",
        "Flag",
        "NutritionOrder",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "RelatedPerson",
    }
)

# Types kept with only these elements (besides id and meta), no dates and no extensions.
REDUCED_ELEMENTS: Final[Mapping[str, frozenset[str]]] = {
    "Practitioner": frozenset({"active", "gender", "qualification", "communication"}),
    "PractitionerRole": frozenset(
        {"active", "practitioner", "organization", "location", "code", "specialty"}
    ),
    "Organization": frozenset({"active", "type", "partOf", "address"}),
    "Location": frozenset(
        {
            "status",
            "operationalStatus",
            "mode",
            "type",
            "physicalType",
            "address",
            "managingOrganization",
            "partOf",
        }
    ),
    "Medication": frozenset({"code", "status", "manufacturer", "form", "amount", "ingredient"}),
    "RelatedPerson": frozenset({"active", "patient", "relationship", "gender"}),
}

# (element type or resource type, element) removed wherever it occurs, with what it counts as;
# None: count what it contains (names, telecom, ...) instead.
DROP_ELEMENTS: Final[Mapping[tuple[str, str], Category | None]] = {
    ("Patient", "link"): Category.OTHER,  # points at other patients' records
    ("Patient", "contact"): None,  # relatives and household members
    ("Device", "serialNumber"): Category.DEVICE,
    ("Device", "lotNumber"): Category.DEVICE,
    ("Device", "udiCarrier"): Category.DEVICE,
    ("Device", "distinctIdentifier"): Category.DEVICE,
    ("Device", "url"): Category.URL,
    ("Immunization", "lotNumber"): Category.DEVICE,
    ("Annotation", "authorString"): Category.NAMES,
    ("CareTeam", "name"): Category.NAMES,
    ("FamilyMemberHistory", "name"): Category.NAMES,
}

PATIENT_EXTENSIONS: Final = frozenset(
    {
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-genderIdentity",
        "http://hl7.org/fhir/StructureDefinition/patient-genderIdentity",
        "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
        "http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired",
        AGE_BAND_URL,
    }
)
MAIDEN_NAME_URL: Final = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
DROP_EXTENSIONS: Final[Mapping[str, Category]] = {
    "http://hl7.org/fhir/StructureDefinition/geolocation": Category.GEOGRAPHIC,
    MAIDEN_NAME_URL: Category.NAMES,
}

# A reference display naming one of these (or an unknown target) is a name: removed.
PERSON_TYPES: Final = frozenset(
    {
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "RelatedPerson",
        "Person",
        "Organization",
        "Location",
        "CareTeam",
        "Group",
    }
)

# Code systems whose displays are the terminology's own words, not patient-specific.
STANDARD_SYSTEMS: Final = (
    "http://loinc.org",
    "http://snomed.info/sct",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://hl7.org/fhir/sid/icd-",
    "http://hl7.org/fhir/sid/cvx",
    "http://hl7.org/fhir/sid/ndc",
    "http://unitsofmeasure.org",
    "http://terminology.hl7.org/CodeSystem/",
    "http://hl7.org/fhir/",
    "urn:oid:2.16.840.1.113883.6.238",  # CDC race and ethnicity
    "urn:ietf:bcp:47",
    "urn:iso:std:iso:3166",
    "http://www.ama-assn.org/go/cpt",
    "http://www.whocc.no/atc",
    "http://nucc.org/provider-taxonomy",
    "http://www.nubc.org/",
)

# What an identifier's v2-0203 type code says it is.
_IDENTIFIER_TYPES: Final[Mapping[str, Category]] = {
    "SS": Category.SSN,
    "SB": Category.SSN,
    "MR": Category.MRN,
    "MRT": Category.MRN,
    "PI": Category.MRN,
    "PT": Category.MRN,
    "MB": Category.HEALTH_PLAN,
    "MA": Category.HEALTH_PLAN,
    "MC": Category.HEALTH_PLAN,
    "SN": Category.HEALTH_PLAN,
    "AN": Category.ACCOUNT,
    "ANON": Category.ACCOUNT,
    "BA": Category.ACCOUNT,
    "DL": Category.CERTIFICATE_LICENSE,
    "PPN": Category.CERTIFICATE_LICENSE,
    "LN": Category.CERTIFICATE_LICENSE,
    "MD": Category.CERTIFICATE_LICENSE,
    "NPI": Category.CERTIFICATE_LICENSE,
    "DEA": Category.CERTIFICATE_LICENSE,
    "BCT": Category.CERTIFICATE_LICENSE,
    "UDI": Category.DEVICE,
    "SNO": Category.DEVICE,
}
_OWNER_CATEGORY: Final[Mapping[str, Category]] = {
    "Coverage": Category.HEALTH_PLAN,
    "Account": Category.ACCOUNT,
    "Claim": Category.ACCOUNT,
    "ExplanationOfBenefit": Category.ACCOUNT,
    "Device": Category.DEVICE,
}
_TELECOM: Final[Mapping[str, Category]] = {
    "fax": Category.FAX,
    "email": Category.EMAIL,
    "url": Category.URL,
}
TAG_CATEGORY: Final[Mapping[str, Category]] = {
    tags.NAME: Category.NAMES,
    tags.DATE: Category.DATES,
    tags.PHONE: Category.TELEPHONE,
    tags.EMAIL: Category.EMAIL,
    tags.URL: Category.URL,
    tags.IP: Category.IP_ADDRESS,
    tags.SSN: Category.SSN,
    tags.ID: Category.OTHER,
    tags.ZIP: Category.GEOGRAPHIC,
    tags.ADDRESS: Category.GEOGRAPHIC,
    tags.LOCATION: Category.GEOGRAPHIC,
    tags.VIN: Category.VEHICLE,
    tags.REDACTED: Category.OTHER,
}
_DATE_KINDS: Final = frozenset({"date", "dateTime", "instant"})
_US: Final = frozenset({"US", "USA", "UNITED STATES", "UNITED STATES OF AMERICA"})
_ZIP: Final = re.compile(r"^\s*(\d{5})(?:-?\d{4})?\s*$")
_AGE_YEARS_PER_UNIT: Final[Mapping[str, float]] = {
    "a": 1.0,
    "mo": 1 / 12,
    "wk": 7 / 365.25,
    "d": 1 / 365.25,
    "h": 1 / 8766,
    "min": 1 / 525960,
}


def generalize_postal_code(postal_code: object, country: object = None) -> str | None:
    """A US ZIP reduced to its first 3 digits ("000" when restricted); None for anything else
    (a postal code Safe Harbor gives no rule for is removed)."""
    if not isinstance(postal_code, str):
        return None
    if isinstance(country, str) and country.strip().upper() not in _US:
        return None
    zip_code = _ZIP.match(postal_code)
    if zip_code is None:
        return None
    zip3 = zip_code.group(1)[:3]
    return "000" if zip3 in RESTRICTED_ZIP3 else zip3


def identifier_category(identifier: Mapping, resource_type: str) -> Category:
    system = identifier.get("system")
    if isinstance(system, str) and system.endswith("us-ssn"):
        return Category.SSN
    if isinstance(system, str) and system.endswith("us-npi"):
        return Category.CERTIFICATE_LICENSE
    kind = identifier.get("type")
    codings = kind.get("coding") if isinstance(kind, dict) else None
    for coding in codings if isinstance(codings, list) else ():
        code = coding.get("code") if isinstance(coding, dict) else None
        if code in _IDENTIFIER_TYPES:
            return _IDENTIFIER_TYPES[code]
    return _OWNER_CATEGORY.get(resource_type, Category.OTHER)


def telecom_category(contact_point: Mapping) -> Category:
    return _TELECOM.get(str(contact_point.get("system")), Category.TELEPHONE)


def _is_standard(system: object) -> bool:
    return isinstance(system, str) and system.startswith(STANDARD_SYSTEMS)


# --- what the compartment knows about people, for the text scrubber ---------------------------

_NAME_SPLIT = re.compile(r"[\s,;/()]+")
_TRAILING_DIGITS = re.compile(r"\d+$")


def known_terms(resources: Iterable[Mapping]) -> KnownTerms:
    """Names, identifier values, telecom values, address parts and ids found in the compartment."""
    pairs: list[tuple[str, str]] = []
    for resource in resources:
        if isinstance(resource.get("id"), str):
            pairs.append((resource["id"], tags.ID))
        _collect(resource, pairs)
    return KnownTerms.of(pairs)


def _collect(node: object, pairs: list[tuple[str, str]]) -> None:
    if isinstance(node, list):
        for item in node:
            _collect(item, pairs)
        return
    if not isinstance(node, dict):
        return
    if "family" in node or "given" in node:
        _collect_name(node, pairs)
    if node.get("url") == MAIDEN_NAME_URL and isinstance(node.get("valueString"), str):
        pairs.extend(_name_parts(node["valueString"]))
    for key, value in node.items():
        if key == "telecom":
            pairs.extend(_telecom_terms(value))
        elif key == "identifier":
            pairs.extend(_identifier_terms(value))
        elif key in ("address", "valueAddress"):
            pairs.extend(_address_terms(value))
        if isinstance(value, dict | list):
            _collect(value, pairs)


def _collect_name(name: Mapping, pairs: list[tuple[str, str]]) -> None:
    given = name.get("given")
    for part in [name.get("family"), name.get("text"), *(given if isinstance(given, list) else [])]:
        if isinstance(part, str):
            pairs.extend(_name_parts(part))


def _name_parts(text: str) -> list[tuple[str, str]]:
    parts = [p for p in _NAME_SPLIT.split(text) if p]
    words = parts + [_TRAILING_DIGITS.sub("", p) for p in parts]  # Synthea writes "Rice729"
    return [(word, tags.NAME) for word in words] + [(text, tags.NAME)]


def _telecom_terms(value: object) -> list[tuple[str, str]]:
    tag_of = {"email": tags.EMAIL, "url": tags.URL}
    found = []
    for point in value if isinstance(value, list) else [value]:
        if isinstance(point, dict) and isinstance(point.get("value"), str):
            found.append((point["value"], tag_of.get(str(point.get("system")), tags.PHONE)))
    return found


def _identifier_terms(value: object) -> list[tuple[str, str]]:
    found = []
    for identifier in value if isinstance(value, list) else [value]:
        if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            found.append((identifier["value"], tags.ID))
    return found


def _address_terms(value: object) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for address in value if isinstance(value, list) else [value]:
        if not isinstance(address, dict):
            continue
        lines = address.get("line")
        for line in lines if isinstance(lines, list) else []:
            if isinstance(line, str):
                found.append((line, tags.ADDRESS))
        for key, tag in (
            ("city", tags.LOCATION),
            ("district", tags.LOCATION),
            ("text", tags.ADDRESS),
        ):
            if isinstance(address.get(key), str):
                found.append((address[key], tag))
        if isinstance(address.get("postalCode"), str):
            found.append((address["postalCode"], tags.ZIP))
    return found


# --- the typed walk ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    is_list: bool
    primitive: str | None  # FHIR primitive type name; "resource" for contained resources
    model: type | None  # complex type
    required: bool


@cache
def _fields_of(model: type) -> dict[str, _Field]:
    """JSON key -> element shape, read once per model from fhir.resources' definitions."""
    fields: dict[str, _Field] = {}
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        if name == "fhir_comments":
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        is_list, primitive, target = _shape(info.annotation)
        required = bool(info.is_required() or extra.get("element_required"))
        fields[info.alias or name] = _Field(is_list, primitive, target, required)
    return fields


def _shape(annotation: object) -> tuple[bool, str | None, type | None]:
    inner = _without_none(annotation)
    is_list = typing.get_origin(inner) is list
    if is_list:
        inner = _without_none(typing.get_args(inner)[0])
    if typing.get_origin(inner) is typing.Annotated:
        for marker in typing.get_args(inner)[1:]:
            name = getattr(type(marker), "__visit_name__", None)
            if isinstance(name, str):
                return is_list, name, None
        return is_list, "unknown", None
    if inner is bool:
        return is_list, "boolean", None
    if isinstance(inner, type) and hasattr(inner, "get_model_klass"):
        if inner.__name__ == "ResourceType":
            return is_list, "resource", None
        return is_list, None, inner.get_model_klass()
    return is_list, "unknown", None


def _without_none(annotation: object) -> object:
    args = typing.get_args(annotation)
    if args and type(None) in args:
        options = [a for a in args if a is not type(None)]
        return options[0] if len(options) == 1 else annotation
    return annotation


@dataclass
class Tally:
    """Running counts for the report (no patient data: numbers and type names only)."""

    patients: int = 0
    resources_in: int = 0
    resources_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    removed: Counter[Category] = field(default_factory=Counter)
    dates_shifted: int = 0
    dates_generalized: int = 0
    free_text_scrubbed: int = 0
    narratives_dropped: int = 0
    attachments_removed: int = 0
    extensions_dropped: int = 0
    unknown_elements_dropped: int = 0
    age_banded: int = 0


@dataclass(frozen=True)
class WalkContext:
    """What is fixed for one compartment."""

    pseudonyms: Pseudonymizer
    dates: DateRule
    known: KnownTerms
    types_by_id: Mapping[str, str]
    keep_state: bool
    as_of: date


class ResourceTransformer:
    """De-identifies resources of one compartment by walking them with their FHIR types.

    Every output dict and list is built anew: the input is never mutated nor shared.
    """

    def __init__(self, context: WalkContext, tally: Tally) -> None:
        self.ctx = context
        self.tally = tally
        self._type = ""
        self._locals: dict[str, str] = {}
        self._reduced = False
        self._handlers: dict[str, Callable[[dict, type, str], object]] = {
            "HumanName": self._remove_name,
            "ContactPoint": self._remove_telecom,
            "Identifier": self._remove_identifier,
            "Attachment": self._remove_attachment,
            "Signature": self._remove_signature,
            "Narrative": self._remove_narrative,
            "Address": self._address,
            "Reference": self._reference,
            "Coding": self._coding,
            "Extension": self._extension,
            "Age": self._age,
        }

    # resources

    def resource(self, resource: Mapping, contained: bool = False) -> dict | None:
        resource_type = resource.get("resourceType")
        model = model_class(resource_type) if isinstance(resource_type, str) else None
        if model is None or resource_type not in KEPT_TYPES:
            self.tally.dropped[resource_type if model is not None else "(not a resource)"] += 1
            return None
        saved = (self._type, self._locals, self._reduced)
        self._type, self._reduced = resource_type, resource_type in REDUCED_ELEMENTS
        if not contained:
            self._locals = _contained_types(resource)
        try:
            return self._resource_body(resource, model, contained)
        finally:
            self._type, self._locals, self._reduced = saved

    def _resource_body(self, resource: Mapping, model: type, contained: bool) -> dict:
        node = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
        if "text" in node:
            del node["text"]
            self.tally.narratives_dropped += 1
        contained_out = self._contained(node.pop("contained", None))
        banded = self._apply_patient_rules(node) if self._type == "Patient" else False
        self._apply_reduction(node, model)
        body = self._element(node, model) or {}
        out: dict = {"resourceType": self._type}
        if isinstance(resource.get("id"), str):
            rid = resource["id"]
            out["id"] = self.ctx.pseudonyms.contained_id(rid) if contained else self._rid(rid)
        meta = self._meta(resource.get("meta"), model, labelled=not contained)
        if meta:
            out["meta"] = meta
        if contained_out:
            out["contained"] = contained_out
        out.update(body)
        if banded:
            band = {"url": AGE_BAND_URL, "valueString": AGE_BAND_90_PLUS}
            out["extension"] = [*out.get("extension", []), band]
        return out

    def _rid(self, resource_id: str) -> str:
        self.tally.removed[Category.OTHER] += 1
        return self.ctx.pseudonyms.resource_id(resource_id)

    def _contained(self, value: object) -> list[dict]:
        if not isinstance(value, list):
            return []
        kept = []
        for item in value:
            if isinstance(item, dict):
                out = self.resource(item, contained=True)
                if out is not None:
                    kept.append(out)
        return kept

    def _apply_patient_rules(self, node: dict) -> bool:
        """Patient-level extension allowlist and the 90+ rule; True when the age is banded."""
        extensions = node.get("extension")
        if isinstance(extensions, list):
            allowed = [e for e in extensions if isinstance(e, dict) and _allowed_patient_ext(e)]
            self.tally.extensions_dropped += len(extensions) - len(allowed)
            for dropped in extensions:
                if isinstance(dropped, dict) and not _allowed_patient_ext(dropped):
                    category = DROP_EXTENSIONS.get(str(dropped.get("url")))
                    if category is not None:
                        self.tally.removed[category] += 1
            node["extension"] = allowed
        birth = node.get("birthDate")
        if not isinstance(birth, str) or not is_ninety_or_older(birth, self._age_reference(node)):
            return False
        node.pop("birthDate")
        node.pop("_birthDate", None)
        self.tally.removed[Category.DATES] += 1
        self.tally.age_banded += 1
        return True

    def _age_reference(self, patient: Mapping) -> date:
        """Age is judged at death for the deceased, else on the export's as-of date."""
        deceased = patient.get("deceasedDateTime")
        died = latest_date(deceased) if isinstance(deceased, str) else None
        return died if died is not None else self.ctx.as_of

    def _apply_reduction(self, node: dict, model: type) -> None:
        allowed = REDUCED_ELEMENTS.get(self._type)
        if allowed is None:
            return
        fields = _fields_of(model)
        for key in list(node):
            if key.lstrip("_") not in allowed:
                value = node.pop(key)
                if key in fields:
                    self._count_discarded(value, fields[key])

    def _meta(self, meta: object, resource_model: type, labelled: bool) -> dict:
        """Drop versionId, lastUpdated and source (store-specific); add the security labels
        (to the exported resource: contained resources are covered by their container's)."""
        meta_model = _fields_of(resource_model)["meta"].model
        out: dict = {}
        if isinstance(meta, dict) and meta_model is not None:
            kept = {k: v for k, v in meta.items() if k.lstrip("_") not in _META_DROPPED}
            out = self._element(kept, meta_model) or {}
        if not labelled:
            return out
        security = list(out.get("security", []))
        present = {(s.get("system"), s.get("code")) for s in security}
        for code, display in SECURITY_LABELS:
            if (SECURITY_SYSTEM, code) not in present:
                security.append({"system": SECURITY_SYSTEM, "code": code, "display": display})
        out["security"] = security
        return out

    # elements

    def _element(self, node: Mapping, model: type) -> dict | None:
        fields = _fields_of(model)
        out: dict = {}
        realigned: set[str] = set()  # primitive arrays that lost items: their `_x` no longer fits
        for key, value in node.items():
            spec = fields.get(key)
            if spec is None:
                self.tally.unknown_elements_dropped += 1
                continue
            dropped = DROP_ELEMENTS.get((model.__name__, key.lstrip("_")), _KEEP)
            if dropped is not _KEEP:
                self._count_dropped(dropped, value, spec)
                continue
            if spec.primitive == "instant" and self._year_instants():
                self._put_year_instant(out, key, value, spec, fields)
                continue
            new = self._field(key, value, spec, model)
            if new is not None:
                out[key] = new
            if isinstance(value, list) and (new is None or len(new) != len(value)):
                realigned.add(key)
        for key in [k for k in out if k.startswith("_") and k[1:] in node]:
            if key[1:] not in out or key[1:] in realigned:
                del out[key]  # the extension of a primitive that was removed or moved
        return out or None

    def _count_dropped(self, category: Category | None, value: object, spec: _Field) -> None:
        if category is None:
            self._count_discarded(value, spec)
        else:
            self.tally.removed[category] += 1

    def _field(self, key: str, value: object, spec: _Field, owner: type) -> object | None:
        if not spec.is_list:
            return self._single(key, value, spec, owner)
        if not isinstance(value, list):
            return None
        items = [None if v is None else self._single(key, v, spec, owner) for v in value]
        if not key.startswith("_"):  # `_x` lists keep their nulls: they align with `x`
            items = [item for item in items if item is not None]
        return items if any(item is not None for item in items) else None

    def _single(self, key: str, value: object, spec: _Field, owner: type) -> object | None:
        if spec.primitive is not None:
            return self._primitive(key, value, spec)
        if not isinstance(value, dict) or spec.model is None:
            return None
        handler = self._handlers.get(spec.model.__name__)
        if handler is not None:
            return handler(value, spec.model, key)
        return self._element(value, spec.model)

    def _primitive(self, key: str, value: object, spec: _Field) -> object | None:
        kind = spec.primitive
        if kind in _DATE_KINDS:
            return self._date(value)
        if kind in ("string", "markdown"):
            return self._text(value) if isinstance(value, str) else None
        if kind == "base64Binary":
            self.tally.attachments_removed += 1
            return None
        if kind in ("xhtml", "resource", "unknown"):
            return None
        return value  # code, uri, id, boolean, numbers, time: not identifying by themselves

    def _date(self, value: object) -> str | None:
        self.tally.removed[Category.DATES] += 1
        if not isinstance(value, str) or self._reduced:
            return None
        if self.ctx.dates.mode == "shift":
            self.tally.dates_shifted += 1
        else:
            self.tally.dates_generalized += 1
        return self.ctx.dates.apply(value)

    def _year_instants(self) -> bool:
        return self.ctx.dates.mode == "year" and not self._reduced

    def _put_year_instant(
        self, out: dict, key: str, value: object, spec: _Field, fields: Mapping[str, _Field]
    ) -> None:
        """An instant cannot hold a year: use the dateTime choice, or Jan 1 if required, or drop."""
        self.tally.removed[Category.DATES] += 1
        if not isinstance(value, str):
            return
        year = self.ctx.dates.apply(value)
        alternative = key[: -len("Instant")] + "DateTime" if key.endswith("Instant") else ""
        self.tally.dates_generalized += 1
        if year is not None and alternative in fields:
            out[alternative] = year
        elif spec.required and year_instant(value) is not None:
            out[key] = year_instant(value)

    def _text(self, value: str, patterns: bool = True) -> str:
        result = scrub(value, self.ctx.known, patterns=patterns)
        if result.changed:
            self.tally.free_text_scrubbed += 1
            for tag, count in result.tags.items():
                self.tally.removed[TAG_CATEGORY[tag]] += count
        return result.text

    # element types with their own rules

    def _remove_name(self, node: dict, model: type, key: str) -> None:
        self.tally.removed[Category.NAMES] += 1

    def _remove_telecom(self, node: dict, model: type, key: str) -> None:
        self.tally.removed[telecom_category(node)] += 1

    def _remove_identifier(self, node: dict, model: type, key: str) -> None:
        self.tally.removed[identifier_category(node, self._type)] += 1

    def _remove_attachment(self, node: dict, model: type, key: str) -> None:
        self.tally.attachments_removed += 1
        content_type = node.get("contentType")
        if key == "photo" or (isinstance(content_type, str) and content_type.startswith("image/")):
            self.tally.removed[Category.PHOTO] += 1

    def _remove_signature(self, node: dict, model: type, key: str) -> None:
        self.tally.removed[Category.BIOMETRIC] += 1

    def _remove_narrative(self, node: dict, model: type, key: str) -> None:
        self.tally.narratives_dropped += 1

    def _address(self, node: dict, model: type, key: str) -> dict | None:
        out: dict = {}
        for name in ("use", "type", "country"):
            if isinstance(node.get(name), str):
                out[name] = node[name]
        if isinstance(node.get("state"), str) and self.ctx.keep_state:
            out["state"] = node["state"]
        elif "state" in node:
            self.tally.removed[Category.GEOGRAPHIC] += 1
        if "postalCode" in node:
            self.tally.removed[Category.GEOGRAPHIC] += 1
            zip3 = (
                None
                if self._reduced
                else generalize_postal_code(node["postalCode"], node.get("country"))
            )
            if zip3 is not None:
                out["postalCode"] = zip3
        for name in ("line", "city", "district", "text", "extension"):
            if name in node:
                self.tally.removed[Category.GEOGRAPHIC] += 1
        if "period" in node:
            period = self._field("period", node["period"], _fields_of(model)["period"], model)
            if period is not None:
                out["period"] = period
        return out or None

    def _reference(self, node: dict, model: type, key: str) -> dict | None:
        out: dict = {}
        target_type: str | None = None
        reference = node.get("reference")
        if isinstance(reference, str):
            self.tally.removed[Category.OTHER] += 1
            new, target_type = self.ctx.pseudonyms.reference(
                reference, self.ctx.types_by_id, self._locals
            )
            if new is not None:
                out["reference"] = new
        if isinstance(node.get("type"), str):
            target_type = target_type or node["type"].rsplit("/", 1)[-1]
        rest = {k: v for k, v in node.items() if k.lstrip("_") not in ("reference", "display")}
        out.update(self._element(rest, model) or {})
        display = node.get("display")
        if isinstance(display, str):
            if target_type is None or target_type in PERSON_TYPES:
                self.tally.removed[Category.NAMES] += 1
            else:
                out["display"] = self._text(display)
        return out or None

    def _coding(self, node: dict, model: type, key: str) -> dict | None:
        rest = {k: v for k, v in node.items() if k != "display"}
        out = self._element(rest, model) or {}
        display = node.get("display")
        if isinstance(display, str):
            out["display"] = self._text(display, patterns=not _is_standard(node.get("system")))
        return out or None

    def _extension(self, node: dict, model: type, key: str) -> dict | None:
        url = node.get("url")
        if not isinstance(url, str) or url in DROP_EXTENSIONS or self._reduced:
            self.tally.extensions_dropped += 1
            category = DROP_EXTENSIONS.get(url) if isinstance(url, str) else None
            if category is not None:
                self.tally.removed[category] += 1
            return None
        out = self._element(node, model)
        if out is None or not set(out) - {"url", "id"}:  # its value was removed: drop it whole
            self.tally.extensions_dropped += 1
            return None
        return out

    def _age(self, node: dict, model: type, key: str) -> dict | None:
        out = self._element(node, model)
        if out is None or _age_years(out) < 90:
            return out
        self.tally.removed[Category.DATES] += 1
        return {"value": 90, "comparator": ">=", "unit": "a", "system": UCUM, "code": "a"}

    def _count_discarded(self, value: object, spec: _Field) -> None:
        """Count the identifiers inside an element removed whole, for the report."""
        for item in value if spec.is_list and isinstance(value, list) else [value]:
            if spec.primitive in _DATE_KINDS:
                self.tally.removed[Category.DATES] += 1
            elif spec.model is not None and isinstance(item, dict):
                self._count_discarded_element(item, spec.model)

    def _count_discarded_element(self, item: dict, model: type) -> None:
        name = model.__name__
        if name in ("HumanName", "ContactPoint", "Identifier", "Attachment", "Signature"):
            self._handlers[name](item, model, "")
        elif name == "Address":
            self.tally.removed[Category.GEOGRAPHIC] += 1
        else:
            fields = _fields_of(model)
            for key, value in item.items():
                if key in fields:
                    self._count_discarded(value, fields[key])


_KEEP: Final = object()
_META_DROPPED: Final = frozenset({"versionId", "lastUpdated", "source"})


def _allowed_patient_ext(extension: Mapping) -> bool:
    return extension.get("url") in PATIENT_EXTENSIONS


def _contained_types(resource: Mapping) -> dict[str, str]:
    """Local id -> type of the contained resources that will be kept (for `#id` references)."""
    found: dict[str, str] = {}
    contained = resource.get("contained")
    for item in contained if isinstance(contained, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        if item.get("resourceType") in KEPT_TYPES:
            found[item["id"]] = item["resourceType"]
    return found


def _age_years(age: Mapping) -> float:
    value, code = age.get("value"), age.get("code") or age.get("unit")
    if not isinstance(value, int | float) or not isinstance(code, str):
        return 0.0
    return value * _AGE_YEARS_PER_UNIT.get(code, 0.0)
