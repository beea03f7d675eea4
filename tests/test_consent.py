"""Consent evaluation: a table of named scenarios, the builders, and generated provision trees."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.access.consent import (
    AccessRequest,
    ConsentDecision,
    ConsentPolicy,
    DefaultPolicy,
    consent_is_applicable,
    data_class_restriction,
    evaluate,
    opt_out_consent,
    parse_consent,
)
from careloop.access.labels import CONFIDENTIALITY_SYSTEM, DataClass, security_labels
from careloop.access.principal import V3_ACT_REASON, Purpose
from careloop.fhir import codes
from careloop.fhir.indexing import clinical_period
from careloop.fhir.structure import conforms
from careloop.fhir.terminology import binding_errors
from careloop.ingest.validation import structural_errors

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PATIENT = "pat-7f3a"
OTHER_PATIENT = "pat-0b21"
DR_X = "Practitioner/dr-x"
DR_Y = "Practitioner/dr-y"
NORTH = "Organization/north"
SOUTH = "Organization/south"
SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
ACTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentaction"

OPT_IN = ConsentPolicy(default=DefaultPolicy.OPT_IN)
OPT_OUT = ConsentPolicy()


# -- building blocks -----------------------------------------------------------------------------


def consent(
    provision: dict,
    *,
    cid: str = "c1",
    status: str = "active",
    patient: str = f"Patient/{PATIENT}",
    when: str | None = "2025-01-01T00:00:00Z",
    scope: str | None = "patient-privacy",
) -> dict:
    resource = {
        "resourceType": "Consent",
        "id": cid,
        "status": status,
        "category": [{"coding": [{"system": codes.LOINC, "code": "59284-0"}]}],
        "patient": {"reference": patient},
        "policyRule": {"coding": [{"system": CONFIDENTIALITY_SYSTEM, "code": "OPTOUT"}]},
        "provision": provision,
    }
    if scope is not None:
        resource["scope"] = {"coding": [{"system": SCOPE_SYSTEM, "code": scope}]}
    if when is not None:
        resource["dateTime"] = when
    return resource


def deny(**criteria: object) -> dict:
    return {"type": "deny", **criteria}


def permit(**criteria: object) -> dict:
    return {"type": "permit", **criteria}


def actors(*references: str) -> list[dict]:
    role = {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
        ]
    }
    return [{"role": role, "reference": {"reference": ref}} for ref in references]


def purposes(*items: Purpose) -> list[dict]:
    return [{"system": item.system, "code": item.value} for item in items]


def labels(*codes_: str) -> list[dict]:
    return [{"system": CONFIDENTIALITY_SYSTEM, "code": code} for code in codes_]


def concept(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


def request(**overrides: object) -> AccessRequest:
    base: dict = {
        "patient_id": PATIENT,
        "actor_references": frozenset({DR_X, NORTH}),
        "actor_role": "clinician",
        "purpose": Purpose.TREATMENT,
        "resource_type": "Observation",
        "security_labels": frozenset(),
        "data_period": (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
        "resource_reference": "Observation/obs-1",
        "at": NOW,
    }
    base.update(overrides)
    return AccessRequest(**base)


def request_for(resource: dict, **overrides: object) -> AccessRequest:
    """The request the access layer makes for one resource."""
    start, end = clinical_period(resource)
    fields: dict = {
        "resource_type": resource["resourceType"],
        "security_labels": security_labels(resource),
        "data_period": (start, end) if start or end else None,
        "resource_reference": f"{resource['resourceType']}/{resource['id']}",
    }
    fields.update(overrides)
    return request(**fields)


# Real-looking resources, coded as Synthea and EHR feeds code them, unlabelled.
def _condition(cid: str, system: str, code: str) -> dict:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{PATIENT}"},
        "code": concept(system, code),
        "onsetDateTime": "2023-04-02T10:00:00Z",
    }


DEPRESSION = _condition("cond-dep", codes.SNOMED, "370143000")
ALCOHOLISM = _condition("cond-alc", codes.SNOMED, "7200002")
HIV_DISEASE = _condition("cond-hiv", codes.ICD10_CM, "B20")
PREGNANCY = _condition("cond-preg", codes.SNOMED, "72892002")
GENETIC_VARIANT = {
    "resourceType": "Observation",
    "id": "obs-gen",
    "status": "final",
    "subject": {"reference": f"Patient/{PATIENT}"},
    "code": concept(codes.LOINC, "69548-6"),
    "effectiveDateTime": "2022-09-06",
}
HEART_RATE = {
    "resourceType": "Observation",
    "id": "obs-hr",
    "status": "final",
    "category": [concept(codes.OBSERVATION_CATEGORY, "vital-signs")],
    "subject": {"reference": f"Patient/{PATIENT}"},
    "code": concept(codes.LOINC, codes.HEART_RATE),
    "effectiveDateTime": "2024-03-01T08:00:00Z",
    "valueQuantity": {"value": 72, "unit": "/min", "system": codes.UCUM, "code": "/min"},
}

DENY_ALL = deny()
# deny everything > permit Dr X > deny mental health for Dr X
THREE_LEVELS = deny(
    provision=[permit(actor=actors(DR_X), provision=[deny(securityLabel=labels("PSY"))])]
)
MENTAL_HEALTH_ONLY = data_class_restriction(
    PATIENT, [DataClass.MENTAL_HEALTH], consent_id="mh", at=NOW.replace(year=2024)
)


def _class_restriction(data_class: DataClass) -> dict:
    return data_class_restriction(PATIENT, [data_class], consent_id="dc", at=NOW.replace(year=2024))


# -- the scenarios ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    consents: tuple[dict, ...]
    request: AccessRequest
    permitted: bool
    policy: ConsentPolicy = OPT_OUT
    consent_id: str | None = None  # the consent expected to decide (None: the default did)
    path: str | None = None
    basis_has: tuple[str, ...] = field(default_factory=tuple)


S = Scenario
SCENARIOS: list[Scenario] = [
    # defaults
    S("no-consent-opt-out-default-permits", (), request(), True, basis_has=("default opt-out",)),
    S("no-consent-opt-in-default-denies", (), request(), False, OPT_IN, basis_has=("opt-in",)),
    S(
        "per-purpose-default-research-opt-in-denies",
        (),
        request(purpose=Purpose.RESEARCH),
        False,
        ConsentPolicy(purpose_defaults={Purpose.RESEARCH: DefaultPolicy.OPT_IN}),
    ),
    S(
        "per-purpose-default-leaves-treatment-opt-out",
        (),
        request(),
        True,
        ConsentPolicy(purpose_defaults={Purpose.RESEARCH: DefaultPolicy.OPT_IN}),
    ),
    S(
        "per-purpose-opt-out-under-global-opt-in",
        (),
        request(purpose=Purpose.MODEL_TRAINING),
        True,
        ConsentPolicy(
            default=DefaultPolicy.OPT_IN,
            purpose_defaults={Purpose.MODEL_TRAINING: DefaultPolicy.OPT_OUT},
        ),
    ),
    S(
        "always-permitted-purpose-skips-consent",
        (consent(DENY_ALL),),
        request(purpose=Purpose.PATIENT_REQUEST),
        True,
        ConsentPolicy(always_permitted_purposes=frozenset({Purpose.PATIENT_REQUEST})),
        basis_has=("always permitted",),
    ),
    # deny by purpose
    S(
        "opt-out-research-denies-research",
        (opt_out_consent(PATIENT, [Purpose.RESEARCH], consent_id="oo", at=NOW.replace(year=2024)),),
        request(purpose=Purpose.RESEARCH),
        False,
        consent_id="oo",
        path="1",
        basis_has=("Consent/oo provision 1 (deny: purpose HRESCH)",),
    ),
    S(
        "opt-out-research-leaves-treatment-to-default",
        (opt_out_consent(PATIENT, [Purpose.RESEARCH], consent_id="oo"),),
        request(),
        True,
    ),
    S(
        "opt-out-research-under-opt-in-default-treatment-still-denied",
        (opt_out_consent(PATIENT, [Purpose.RESEARCH], consent_id="oo"),),
        request(),
        False,
        OPT_IN,
    ),
    S(
        "opt-out-model-training-denies-model-training",
        (consent(deny(purpose=purposes(Purpose.MODEL_TRAINING)), cid="mt"),),
        request(purpose=Purpose.MODEL_TRAINING),
        False,
        consent_id="mt",
        basis_has=("purpose MODELTRAIN",),
    ),
    S(
        "model-training-code-under-wrong-system-does-not-match",
        (consent(deny(purpose=[{"system": V3_ACT_REASON, "code": "MODELTRAIN"}])),),
        request(purpose=Purpose.MODEL_TRAINING),
        True,
    ),
    S(
        "opt-out-quality-improvement-denies",
        (consent(deny(purpose=purposes(Purpose.QUALITY_IMPROVEMENT))),),
        request(purpose=Purpose.QUALITY_IMPROVEMENT),
        False,
        consent_id="c1",
    ),
    S(
        "purpose-coding-without-system-matches-by-code",
        (consent(deny(purpose=[{"code": "HRESCH"}])),),
        request(purpose=Purpose.RESEARCH),
        False,
    ),
    # actors
    S(
        "deny-all-permit-dr-x-lets-dr-x-in",
        (consent(deny(provision=[permit(actor=actors(DR_X))])),),
        request(),
        True,
        consent_id="c1",
        path="1.1",
    ),
    S(
        "deny-all-permit-dr-x-keeps-dr-y-out",
        (consent(deny(provision=[permit(actor=actors(DR_X))])),),
        request(actor_references=frozenset({DR_Y, NORTH})),
        False,
        consent_id="c1",
        path="1",
    ),
    S(
        "organization-actor-covers-its-members",
        (consent(deny(provision=[permit(actor=actors(NORTH))])),),
        request(actor_references=frozenset({DR_Y, NORTH})),
        True,
        path="1.1",
    ),
    S(
        "organization-actor-does-not-cover-another-organization",
        (consent(deny(provision=[permit(actor=actors(NORTH))])),),
        request(actor_references=frozenset({DR_Y, SOUTH})),
        False,
        path="1",
    ),
    S(
        "absolute-url-actor-reference-matches",
        (consent(deny(provision=[permit(actor=actors(f"https://ehr.example/fhir/{DR_X}"))])),),
        request(),
        True,
        path="1.1",
    ),
    # security labels, inferred from real-looking unlabelled resources
    S(
        "mental-health-restriction-denies-depression",
        (_class_restriction(DataClass.MENTAL_HEALTH),),
        request_for(DEPRESSION),
        False,
        consent_id="dc",
        basis_has=("securityLabel MH,PSY",),
    ),
    S(
        "substance-use-restriction-denies-alcoholism",
        (_class_restriction(DataClass.SUBSTANCE_USE),),
        request_for(ALCOHOLISM),
        False,
        consent_id="dc",
    ),
    S(
        "hiv-restriction-denies-icd10-hiv",
        (_class_restriction(DataClass.HIV),),
        request_for(HIV_DISEASE),
        False,
        consent_id="dc",
    ),
    S(
        "genetics-restriction-denies-variant-observation",
        (_class_restriction(DataClass.GENETICS),),
        request_for(GENETIC_VARIANT),
        False,
        consent_id="dc",
    ),
    S(
        "reproductive-restriction-denies-pregnancy",
        (_class_restriction(DataClass.REPRODUCTIVE_HEALTH),),
        request_for(PREGNANCY),
        False,
        consent_id="dc",
    ),
    S(
        "class-restriction-leaves-heart-rate-alone",
        (_class_restriction(DataClass.MENTAL_HEALTH),),
        request_for(HEART_RATE),
        True,
    ),
    S(
        "mental-health-restriction-does-not-hide-substance-use",
        (MENTAL_HEALTH_ONLY,),
        request_for(ALCOHOLISM),
        True,
    ),
    S(
        "behavioral-health-label-deny-covers-substance-use",
        (consent(deny(securityLabel=labels("BH"))),),
        request_for(ALCOHOLISM),
        False,
    ),
    S(
        "explicit-meta-security-label-is-honoured",
        (MENTAL_HEALTH_ONLY,),
        request_for({**HEART_RATE, "meta": {"security": labels("PSYTHPN")}}),
        False,
        consent_id="mh",
    ),
    S(
        "search-level-check-is-not-denied-by-a-label-provision",
        (MENTAL_HEALTH_ONLY,),
        request(security_labels=frozenset(), resource_reference=None, data_period=None),
        True,
    ),
    S(
        "restriction-exception-actor-sees-mental-health",
        (data_class_restriction(PATIENT, [DataClass.MENTAL_HEALTH], except_actors=[DR_X]),),
        request_for(DEPRESSION),
        True,
        path="1.1",
    ),
    # consent period
    S(
        "consent-period-not-yet-started",
        (consent(deny(period={"start": "2025-07-01"})),),
        request(),
        True,
    ),
    S("consent-period-ended", (consent(deny(period={"end": "2025-05-31"})),), request(), True),
    S(
        "consent-period-in-force",
        (consent(deny(period={"start": "2025-01-01", "end": "2025-12-31"})),),
        request(),
        False,
        path="1",
    ),
    S(
        "partial-end-date-covers-its-whole-year",
        (consent(deny(period={"end": "2025"})),),
        request(at=datetime(2025, 12, 31, 23, 59, tzinfo=UTC)),
        False,
    ),
    S(
        "expired-exception-no-longer-applies",
        (consent(deny(provision=[permit(actor=actors(DR_X), period={"end": "2025-03-01"})])),),
        request(),
        False,
        path="1",
    ),
    # dataPeriod
    S(
        "data-period-overlapping-is-denied",
        (consent(deny(dataPeriod={"start": "2024-01-01", "end": "2024-12-31"})),),
        request(),
        False,
        basis_has=("dataPeriod",),
    ),
    S(
        "data-period-outside-is-permitted",
        (consent(deny(dataPeriod={"start": "2010-01-01", "end": "2015-12-31"})),),
        request(),
        True,
    ),
    S(
        "data-period-does-not-match-data-without-clinical-time",
        (consent(deny(dataPeriod={"start": "2010-01-01", "end": "2015-12-31"})),),
        request(data_period=None),
        True,
    ),
    S(
        "data-period-open-ended-request-overlaps",
        (consent(deny(dataPeriod={"start": "2024-01-01"})),),
        request(data_period=(datetime(2023, 1, 1, tzinfo=UTC), None)),
        False,
    ),
    # nested exceptions, three levels deep
    S(
        "three-levels-dr-x-reads-ordinary-data",
        (consent(THREE_LEVELS),),
        request(),
        True,
        path="1.1",
    ),
    S(
        "three-levels-dr-x-denied-mental-health",
        (consent(THREE_LEVELS),),
        request_for(DEPRESSION),
        False,
        path="1.1.1",
        basis_has=("provision 1.1.1 (deny: securityLabel PSY)",),
    ),
    S(
        "three-levels-dr-y-denied-everything",
        (consent(THREE_LEVELS),),
        request(actor_references=frozenset({DR_Y, SOUTH})),
        False,
        path="1",
    ),
    S(
        "sibling-exceptions-at-same-depth-deny-wins",
        (consent(permit(provision=[permit(actor=actors(DR_X)), deny(actor=actors(NORTH))])),),
        request(),
        False,
        path="1.2",
    ),
    # several consents
    S(
        "newer-permit-overrides-older-deny",
        (
            consent(DENY_ALL, cid="old", when="2024-01-01"),
            consent(permit(), cid="new", when="2025-02-01"),
        ),
        request(),
        True,
        OPT_IN,
        consent_id="new",
    ),
    S(
        "newer-deny-overrides-older-permit",
        (
            consent(DENY_ALL, cid="new", when="2025-02-01T09:00:00+01:00"),
            consent(permit(), cid="old", when="2025-02-01T07:00:00Z"),
        ),
        request(),
        False,
        consent_id="new",
    ),
    S(
        "same-datetime-deny-wins",
        (consent(permit(), cid="p"), consent(DENY_ALL, cid="d"), consent(permit(), cid="q")),
        request(),
        False,
        consent_id="d",
    ),
    S(
        "missing-datetime-counts-as-oldest",
        (consent(DENY_ALL, cid="undated", when=None), consent(permit(), cid="dated")),
        request(),
        True,
        OPT_IN,
        consent_id="dated",
    ),
    S(
        "non-applicable-newer-consent-does-not-mask-older",
        (
            consent(DENY_ALL, cid="old", when="2020-01-01"),
            consent(permit(purpose=purposes(Purpose.RESEARCH)), cid="new", when="2025-01-01"),
        ),
        request(),
        False,
        consent_id="old",
    ),
    # which consents count
    S("draft-consent-ignored", (consent(DENY_ALL, status="draft"),), request(), True),
    S("rejected-consent-ignored", (consent(DENY_ALL, status="rejected"),), request(), True),
    S("inactive-consent-ignored", (consent(DENY_ALL, status="inactive"),), request(), True),
    S(
        "another-patients-consent-ignored",
        (consent(DENY_ALL, patient=f"Patient/{OTHER_PATIENT}"),),
        request(),
        True,
    ),
    S(
        "absolute-patient-url-accepted",
        (consent(DENY_ALL, patient=f"https://ehr.example/fhir/Patient/{PATIENT}/_history/3"),),
        request(),
        False,
    ),
    S(
        "research-scope-consent-ignored-for-treatment",
        (consent(DENY_ALL, scope="research"),),
        request(),
        True,
    ),
    S(
        "research-scope-consent-applies-to-model-training",
        (consent(DENY_ALL, scope="research"),),
        request(purpose=Purpose.MODEL_TRAINING),
        False,
    ),
    S(
        "treatment-scope-consent-is-not-an-access-rule",
        (consent(permit(), scope="treatment"),),
        request(),
        False,
        OPT_IN,
    ),
    # malformed consents fail closed
    S(
        "bad-period-date-fails-closed",
        (consent(permit(period={"start": "yesterday-ish"}), cid="bad"),),
        request(),
        False,
        consent_id="bad",
        basis_has=("Consent/bad is malformed at provision.period.start",),
    ),
    S(
        "unknown-provision-type-fails-closed",
        (consent({"type": "maybe"}, cid="bad"),),
        request(),
        False,
        consent_id="bad",
        basis_has=("provision.type",),
    ),
    S(
        "nested-provision-without-type-fails-closed",
        (consent(permit(provision=[{"actor": actors(DR_Y)}]), cid="bad"),),
        request(),
        False,
        consent_id="bad",
        basis_has=("provision.provision[0].type",),
    ),
    S(
        "malformed-consent-overrides-a-newer-permit",
        (
            consent(permit(period={"end": "2025-02-30"}), cid="bad", when="2020-01-01"),
            consent(permit(), cid="good", when="2025-05-01"),
        ),
        request(),
        False,
        consent_id="bad",
    ),
    S(
        "missing-scope-fails-closed",
        (consent(permit(), scope=None, cid="bad"),),
        request(),
        False,
        consent_id="bad",
        basis_has=("at scope",),
    ),
    S(
        "bad-datetime-fails-closed",
        (consent(permit(), when="01/02/2025", cid="bad"),),
        request(),
        False,
        consent_id="bad",
        basis_has=("at dateTime",),
    ),
    S(
        "period-ending-before-it-starts-fails-closed",
        (consent(permit(period={"start": "2025-05-01", "end": "2025-01-01"}), cid="bad"),),
        request(),
        False,
        consent_id="bad",
    ),
    S(
        "label-coding-without-code-fails-closed",
        (consent(deny(securityLabel=[{"system": CONFIDENTIALITY_SYSTEM}]), cid="bad"),),
        request(),
        False,
        consent_id="bad",
    ),
    S(
        "malformed-draft-consent-ignored",
        (consent({"type": "maybe"}, status="draft"),),
        request(),
        True,
    ),
    # data references
    S(
        "data-reference-denies-that-resource",
        (
            consent(
                deny(
                    data=[{"meaning": "instance", "reference": {"reference": "Observation/obs-1"}}]
                )
            ),
        ),
        request(),
        False,
        basis_has=("deny: data",),
    ),
    S(
        "data-reference-leaves-other-resources",
        (
            consent(
                deny(
                    data=[{"meaning": "instance", "reference": {"reference": "Observation/obs-9"}}]
                )
            ),
        ),
        request(),
        True,
    ),
    S(
        "data-reference-to-the-patient-means-the-whole-record",
        (
            consent(
                deny(
                    data=[{"meaning": "related", "reference": {"reference": f"Patient/{PATIENT}"}}]
                )
            ),
        ),
        request(resource_type="Condition", resource_reference="Condition/cond-1"),
        False,
    ),
    # action, class, code
    S(
        "action-use-covers-a-read",
        (consent(deny(action=[concept(ACTION_SYSTEM, "use")])),),
        request(),
        False,
        basis_has=("action use",),
    ),
    S(
        "action-disclose-does-not-cover-a-read",
        (consent(deny(action=[concept(ACTION_SYSTEM, "disclose")])),),
        request(),
        True,
    ),
    S(
        "class-observation-denies-observations",
        (
            consent(
                deny(
                    **{
                        "class": [
                            {"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}
                        ]
                    }
                )
            ),
        ),
        request(),
        False,
        basis_has=("class Observation",),
    ),
    S(
        "class-observation-leaves-conditions",
        (
            consent(
                deny(
                    **{
                        "class": [
                            {"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}
                        ]
                    }
                )
            ),
        ),
        request(resource_type="Condition", resource_reference="Condition/c9"),
        True,
    ),
    S(
        "code-criterion-matches-resource-codes",
        (consent(deny(code=[concept(codes.LOINC, codes.HEART_RATE)])),),
        request(resource_codes=frozenset({(codes.LOINC, codes.HEART_RATE)})),
        False,
    ),
    S(
        "code-criterion-leaves-other-codes",
        (consent(deny(code=[concept(codes.LOINC, codes.HEART_RATE)])),),
        request(resource_codes=frozenset({(codes.LOINC, codes.BODY_WEIGHT)})),
        True,
    ),
]
print(f"test_consent: {len(SCENARIOS)} named consent scenarios")


def test_scenario_table_is_large_and_uniquely_named() -> None:
    names = [scenario.name for scenario in SCENARIOS]
    assert len(SCENARIOS) >= 40
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    decision = evaluate(scenario.consents, scenario.request, scenario.policy)
    assert decision.permitted is scenario.permitted, decision.basis
    if scenario.consent_id is not None:
        assert decision.consent_id == scenario.consent_id, decision.basis
    if scenario.path is not None:
        assert decision.provision_path == scenario.path, decision.basis
    for text in scenario.basis_has:
        assert text in decision.basis
    # the basis is for people and audit trails: never a patient id or a resource reference
    assert PATIENT not in decision.basis
    assert "obs-1" not in decision.basis and "cond-" not in decision.basis
    # the same consents, already parsed, decide the same way
    parsed = [parse_consent(item) for item in scenario.consents]
    assert evaluate(parsed, scenario.request, scenario.policy) == decision


def test_default_decision_names_no_consent() -> None:
    decision = evaluate([], request(), OPT_OUT)
    assert decision == ConsentDecision(True, decision.basis, None, None)


def test_malformed_basis_never_echoes_the_bad_value() -> None:
    secret = "2025-13-45-Jane-Doe"
    decision = evaluate([consent(permit(period={"start": secret}), cid="bad")], request(), OPT_OUT)
    assert not decision.permitted
    assert secret not in decision.basis and "Jane" not in decision.basis


def test_consent_is_applicable() -> None:
    research_opt_out = opt_out_consent(PATIENT, [Purpose.RESEARCH])
    assert consent_is_applicable(research_opt_out, request(purpose=Purpose.RESEARCH))
    assert not consent_is_applicable(research_opt_out, request())
    assert not consent_is_applicable(research_opt_out, request(patient_id=OTHER_PATIENT))
    assert not consent_is_applicable(consent(DENY_ALL, status="draft"), request())
    # malformed but active and for this patient: applies, so that it can fail closed
    assert consent_is_applicable(consent({"type": "maybe"}), request())


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        request(at=datetime(2025, 6, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        request(data_period=(datetime(2024, 1, 1), None))


def test_parse_is_cached_by_content_not_by_id() -> None:
    original = consent(DENY_ALL, cid="same")
    assert parse_consent(original) is parse_consent(copy.deepcopy(original))
    changed = copy.deepcopy(original)
    changed["provision"] = permit()
    # same id, new content: the cache must not hand back the old parse
    assert evaluate([changed], request(), OPT_IN).permitted
    assert not evaluate([original], request(), OPT_IN).permitted


def test_content_that_is_not_json_is_parsed_uncached_and_fails_closed() -> None:
    weird = consent(permit(period={"start": datetime(2025, 1, 1, tzinfo=UTC)}), cid="weird")
    decision = evaluate([weird], request(), OPT_OUT)
    assert not decision.permitted and "period.start" in decision.basis


# -- builders ------------------------------------------------------------------------------------


BUILT = [
    opt_out_consent(PATIENT, [Purpose.RESEARCH, Purpose.MODEL_TRAINING], at=NOW),
    data_class_restriction(PATIENT, list(DataClass), at=NOW),
    data_class_restriction(PATIENT, [DataClass.HIV], except_actors=[DR_X, NORTH], consent_id="x"),
]


@pytest.mark.parametrize("resource", BUILT, ids=["opt-out", "all-classes", "with-exceptions"])
def test_builders_produce_valid_r4_consents(resource: dict) -> None:
    assert structural_errors(resource, "library") == []
    assert conforms(resource)
    assert binding_errors(resource) == []
    assert resource["scope"]["coding"][0]["code"] == "patient-privacy"
    assert resource["category"] and resource["policyRule"]["coding"]
    assert parse_consent(resource).malformed is None


def test_opt_out_builder_denies_only_its_purposes() -> None:
    built = opt_out_consent(PATIENT, [Purpose.RESEARCH, Purpose.MODEL_TRAINING], at=NOW)
    for purpose in Purpose:
        decision = evaluate([built], request(purpose=purpose), OPT_OUT)
        assert decision.permitted is (purpose not in (Purpose.RESEARCH, Purpose.MODEL_TRAINING))


def test_data_class_restriction_exception_covers_organization_members() -> None:
    built = data_class_restriction(PATIENT, [DataClass.HIV], except_actors=[NORTH])
    member = request_for(HIV_DISEASE, actor_references=frozenset({DR_Y, NORTH}))
    outsider = request_for(HIV_DISEASE, actor_references=frozenset({DR_Y, SOUTH}))
    assert evaluate([built], member, OPT_OUT).permitted
    assert not evaluate([built], outsider, OPT_OUT).permitted


def test_builders_refuse_empty_input() -> None:
    with pytest.raises(ValueError):
        opt_out_consent(PATIENT, [])
    with pytest.raises(ValueError):
        data_class_restriction(PATIENT, [])


# -- generated provision trees -------------------------------------------------------------------

ACTOR_POOL = [DR_X, DR_Y, NORTH, SOUTH]
LABEL_POOL = ["PSY", "MH", "BH", "ETH", "SUD", "HIV", "GDIS", "SEX", "STD"]
TYPE_POOL = ["Observation", "Condition", "MedicationRequest"]
PERIODS = [
    {"start": "2025-01-01"},
    {"end": "2025-03-01"},
    {"start": "2025-05-01", "end": "2025-07-01"},
    {"start": "2026-01-01"},
]
DATA_PERIODS = [{"start": "2024-01-01", "end": "2024-12-31"}, {"end": "2019"}, {"start": "2023"}]
REFERENCES = ["Observation/obs-1", "Observation/obs-2", f"Patient/{PATIENT}"]


def _criteria() -> st.SearchStrategy[dict]:
    options = {
        "actor": st.lists(st.sampled_from(ACTOR_POOL), min_size=1, max_size=2).map(
            lambda refs: actors(*refs)
        ),
        "purpose": st.lists(st.sampled_from(list(Purpose)), min_size=1, max_size=2).map(
            lambda items: purposes(*items)
        ),
        "securityLabel": st.lists(st.sampled_from(LABEL_POOL), min_size=1, max_size=2).map(
            lambda items: labels(*items)
        ),
        "class": st.lists(st.sampled_from(TYPE_POOL), min_size=1, max_size=2).map(
            lambda items: [
                {"system": "http://hl7.org/fhir/resource-types", "code": t} for t in items
            ]
        ),
        "action": st.sampled_from(["access", "use", "disclose", "collect"]).map(
            lambda code: [concept(ACTION_SYSTEM, code)]
        ),
        "period": st.sampled_from(PERIODS),
        "dataPeriod": st.sampled_from(DATA_PERIODS),
        "data": st.sampled_from(REFERENCES).map(
            lambda ref: [{"meaning": "instance", "reference": {"reference": ref}}]
        ),
    }
    return st.fixed_dictionaries({}, optional=options)


def _valid_tree(max_leaves: int = 12) -> st.SearchStrategy[dict]:
    leaf = st.tuples(st.sampled_from(["permit", "deny"]), _criteria()).map(
        lambda pair: {"type": pair[0], **pair[1]}
    )

    def extend(children: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
        return st.tuples(leaf, st.lists(children, min_size=1, max_size=3)).map(
            lambda pair: {**pair[0], "provision": pair[1]}
        )

    return st.recursive(leaf, extend, max_leaves=max_leaves)


REQUESTS = st.builds(
    lambda refs, purpose, rtype, labels_, data_period, ref, at: request(
        actor_references=frozenset(refs),
        purpose=purpose,
        resource_type=rtype,
        security_labels=frozenset(labels_),
        data_period=data_period,
        resource_reference=ref,
        at=at,
    ),
    st.sets(st.sampled_from(ACTOR_POOL), max_size=2),
    st.sampled_from(list(Purpose)),
    st.sampled_from(TYPE_POOL),
    st.sets(st.sampled_from(LABEL_POOL), max_size=3),
    st.sampled_from(
        [
            None,
            (datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 6, 2, tzinfo=UTC)),
            (datetime(2018, 1, 1, tzinfo=UTC), None),
        ]
    ),
    st.sampled_from([None, "Observation/obs-1", "Observation/obs-3"]),
    st.sampled_from([NOW, datetime(2025, 2, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)]),
)

JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=12)
    | st.sampled_from(["permit", "deny", "2025-01-01", "2025-02-30", "Patient/" + PATIENT]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "period",
                    "start",
                    "end",
                    "actor",
                    "reference",
                    "provision",
                    "purpose",
                    "securityLabel",
                    "class",
                    "code",
                    "coding",
                    "system",
                    "action",
                    "data",
                    "dataPeriod",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(
    provision=JUNK,
    scope=st.sampled_from([None, "patient-privacy", "research", "bogus"]),
    when=st.sampled_from([None, "2025-01-01", "not a date", "2025"]),
    req=REQUESTS,
    policy=st.sampled_from([OPT_IN, OPT_OUT]),
)
def test_random_provision_trees_never_raise(
    provision: object,
    scope: str | None,
    when: str | None,
    req: AccessRequest,
    policy: ConsentPolicy,
) -> None:
    item = consent({}, scope=scope, when=when)
    item["provision"] = provision
    decision = evaluate([item], req, policy)
    assert isinstance(decision, ConsentDecision)
    assert consent_is_applicable(item, req) in (True, False)
    # whatever the junk, content that cannot be read never permits
    if parse_consent(item).malformed is not None:
        assert not decision.permitted


@settings(max_examples=300, deadline=None)
@given(criteria=_criteria(), req=REQUESTS, policy=st.sampled_from([OPT_IN, OPT_OUT]))
def test_root_deny_without_exceptions_denies_everything_it_applies_to(
    criteria: dict, req: AccessRequest, policy: ConsentPolicy
) -> None:
    item = consent(deny(**criteria))
    decision = evaluate([item], req, policy)
    if consent_is_applicable(item, req):
        assert not decision.permitted
        assert decision.provision_path == "1"
    else:
        assert decision.permitted is (policy is OPT_OUT)
        assert decision.consent_id is None


def _append_at_depth(tree: dict, extra: dict, depth: int) -> dict:
    """Append `extra` to the nested provisions of the node `depth` levels down the first branch."""
    tree = copy.deepcopy(tree)
    node = tree
    for _ in range(depth):
        children = node.get("provision")
        if not children:
            break
        node = children[0]
    node.setdefault("provision", []).append(extra)
    return tree


@settings(max_examples=300, deadline=None)
@given(
    tree=_valid_tree(),
    below=_valid_tree(max_leaves=4),
    req=REQUESTS,
    depth=st.integers(min_value=0, max_value=3),
    kind=st.sampled_from(["permit", "deny"]),
    blocker=st.sampled_from(["actor", "purpose", "period"]),
    policy=st.sampled_from([OPT_IN, OPT_OUT]),
)
def test_adding_a_non_matching_nested_provision_never_changes_the_decision(
    tree: dict,
    below: dict,
    req: AccessRequest,
    depth: int,
    kind: str,
    blocker: str,
    policy: ConsentPolicy,
) -> None:
    # a criterion this request cannot meet, with a whole subtree under it that might
    blockers = {
        "actor": {"actor": actors("Practitioner/nobody")},
        "purpose": {
            "purpose": purposes(
                Purpose.OPERATIONS if req.purpose is not Purpose.OPERATIONS else Purpose.RESEARCH
            )
        },
        "period": {"period": {"start": "2099-01-01"}},
    }
    extra = {"type": kind, **blockers[blocker], "provision": [below]}
    before = evaluate([consent(tree)], req, policy)
    after = evaluate([consent(_append_at_depth(tree, extra, depth))], req, policy)
    assert after == before


@settings(max_examples=200, deadline=None)
@given(trees=st.lists(_valid_tree(max_leaves=6), min_size=2, max_size=3), req=REQUESTS)
def test_order_of_consents_does_not_matter(trees: list[dict], req: AccessRequest) -> None:
    dated = [
        consent(tree, cid=f"c{index}", when=f"2025-0{1 + index % 2}-01")
        for index, tree in enumerate(trees)
    ]
    forward = evaluate(dated, req, OPT_IN)
    backward = evaluate(list(reversed(dated)), req, OPT_IN)
    assert forward.permitted == backward.permitted


def test_request_helper_really_builds_what_the_layer_builds() -> None:
    built = request_for(DEPRESSION)
    assert built.security_labels == {"PSY", "MH", "BH"}
    assert built.resource_reference == "Condition/cond-dep"
    assert built.data_period is not None and built.data_period[0] == datetime(
        2023, 4, 2, 10, tzinfo=UTC
    )


def test_labels_are_needed_only_when_a_consent_states_a_label_criterion() -> None:
    from careloop.access.consent import needs_security_labels

    opt_out = opt_out_consent("p1", [Purpose.RESEARCH], consent_id="c1")
    restriction = data_class_restriction("p1", [DataClass.HIV], consent_id="c2")
    assert not needs_security_labels([])
    assert not needs_security_labels([opt_out])
    assert needs_security_labels([opt_out, restriction])
    nested = {**opt_out, "provision": {"type": "permit", "provision": [restriction["provision"]]}}
    assert needs_security_labels([nested])
