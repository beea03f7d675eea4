"""The facts about one patient that playbooks are personalized on, read from FHIR resources.

Playbooks never read FHIR themselves: `facts_from` reads a patient's resources once (as plain
dicts, whatever their source) and answers the questions a playbook may ask: age, sex, pregnancy,
allergy classes, active medications, kidney function, weight, active conditions, goals of care,
the latest value of a measurement, and what was ordered or done when, by code.

Codes are compared as "system|code" keys, exactly as coded. Only what is in effect at `now`
counts: a resolved condition, a refuted allergy, a cancelled order or a future-dated result is
not a fact about the patient now.

Goals of care. A comfort-focused plan changes what is appropriate to suggest, so it is read from
every place an EHR records it, with the codes the eCQM value sets for palliative, comfort and
hospice care use (VSAC 2.16.840.1.113883.3.600.1.1579 "Palliative or Hospice Care" and
1.3.6.1.4.1.33895.1.3.0.45 "Comfort Measures"), LOINC 81351-9 (a do-not-resuscitate order is in
place) and ICD-10-CM Z66 (do not resuscitate) / Z51.5 (encounter for palliative care). Synthea
records terminal care as a CarePlan category (SNOMED CT 182964004) with a "Comfort measures"
activity. A do-not-resuscitate order and palliative care are kept apart from comfort care on
purpose: neither means "do not treat", and a playbook decides what each one changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from careloop.cds.medications import allergy_classes, medication_ingredients
from careloop.cds.renal import EgfrReading, latest_egfr
from careloop.fhir import codes
from careloop.fhir.timeutil import FhirDateError, parse_fhir_instant_range

# Goals of care a playbook can name, and the codes that record each.
COMFORT_CARE = "comfort-care"
HOSPICE = "hospice"
PALLIATIVE = "palliative"
DNR = "dnr"
GOALS_OF_CARE = (COMFORT_CARE, HOSPICE, PALLIATIVE, DNR)
_ICD10_CM = codes.ICD10_CM
GOAL_CODES: Mapping[str, str] = MappingProxyType(
    {
        f"{codes.SNOMED}|133918004": COMFORT_CARE,  # Comfort measures (regime/therapy)
        f"{codes.SNOMED}|182964004": COMFORT_CARE,  # Terminal care (regime/therapy)
        f"{codes.SNOMED}|385736008": COMFORT_CARE,  # Dying care (regime/therapy)
        f"{codes.SNOMED}|385763009": HOSPICE,  # Hospice care (regime/therapy)
        f"{codes.SNOMED}|103735009": PALLIATIVE,  # Palliative care (regime/therapy)
        f"{_ICD10_CM}|Z51.5": PALLIATIVE,  # Encounter for palliative care
        f"{codes.SNOMED}|304253006": DNR,  # Not for resuscitation (finding)
        f"{_ICD10_CM}|Z66": DNR,  # Do not resuscitate
    }
)
DNR_ORDER_LOINC = f"{codes.LOINC}|81351-9"  # DNR/DNAR/AND order is in place (Observation)

# Pregnancy: SNOMED CT 77386006 "Pregnant", 72892002 "Normal pregnancy" (Synthea's), 79586000
# "Tubal pregnancy"; ICD-10-CM Z33.1 "Pregnant state, incidental"; Z34.* "Encounter for
# supervision of normal pregnancy". Pregnancy status Observations: LOINC 82810-3 and 11449-6
# with SNOMED CT 77386006 (pregnant) or 60001007 (not pregnant) as the value.
PREGNANCY_CONDITIONS = frozenset(
    {
        f"{codes.SNOMED}|77386006",
        f"{codes.SNOMED}|72892002",
        f"{codes.SNOMED}|79586000",
        f"{_ICD10_CM}|Z33.1",
    }
)
PREGNANCY_ICD10_PREFIXES = ("Z34",)
PREGNANCY_STATUS_LOINC = frozenset({f"{codes.LOINC}|82810-3", f"{codes.LOINC}|11449-6"})
PREGNANT_VALUE = f"{codes.SNOMED}|77386006"
NOT_PREGNANT_VALUE = f"{codes.SNOMED}|60001007"
# No pregnancy lasts longer than this: an older pregnancy Condition never closed (Synthea leaves
# some ectopic pregnancies open for decades) is not evidence of a pregnancy now.
PREGNANCY_MAX = timedelta(days=300)

BODY_WEIGHT = f"{codes.LOINC}|{codes.BODY_WEIGHT}"
ANAPHYLAXIS = f"{codes.SNOMED}|39579001"
_POUNDS_PER_KG = 2.20462
# A result or order stamped a little after `now` is clock skew, not the future.
_CLOCK_SKEW = timedelta(minutes=5)

_ACTIVE_CONDITION = frozenset({"active", "recurrence", "relapse"})
_VOID_VERIFICATION = frozenset({"refuted", "entered-in-error"})
_ORDERED = frozenset({"active", "on-hold", "completed"})
_RESULTED = frozenset({"registered", "preliminary", "final", "amended", "corrected"})
_REPORTED = frozenset({"partial", "preliminary", "final", "amended", "corrected", "appended"})
_PROCEDURE_DONE = frozenset({"in-progress", "completed"})
_ENCOUNTER_HAPPENED = frozenset({"arrived", "triaged", "in-progress", "onleave", "finished"})
_ACTIVE_MEDICATION = frozenset({"active", "on-hold"})
_ADMINISTERED = frozenset({"in-progress", "completed"})
_GOAL_LIVE = frozenset({"proposed", "planned", "accepted", "active", "on-hold"})
_CAREPLAN_LIVE = frozenset({"active", "on-hold"})
# A completed "comfort measures" Procedure speaks for the patient's current goals only if recent.
_PROCEDURE_GOAL_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class Measurement:
    """One numeric result: the latest of its code, with when and where it came from."""

    value: float
    unit: str | None  # UCUM code when coded, else the unit text
    at: datetime
    reference: str  # "Observation/<id>"


@dataclass(frozen=True)
class DoneEvent:
    """Something ordered, resulted, performed or attended, by one of its codes."""

    at: datetime
    reference: str  # "ServiceRequest/<id>", "Observation/<id>", ...
    verb: str  # "ordered", "resulted", "done" or "attended": how a card says it


@dataclass(frozen=True)
class MedicationEvent:
    """A medication ordered or given, by its ingredients (for "already given" checks)."""

    at: datetime
    ingredients: frozenset[str]
    reference: str
    verb: str  # "ordered" or "given"


@dataclass(frozen=True)
class PatientFacts:
    patient_id: str
    now: datetime
    age: int | None = None  # whole years at `now`
    sex: str | None = None  # administrative gender as recorded
    deceased: bool = False
    pregnant: bool = False
    pregnancy_evidence: str | None = None  # the reference that says so
    allergy_classes: frozenset[str] = frozenset()  # class and ingredient names
    severe_allergy_classes: frozenset[str] = frozenset()  # high criticality, severe, anaphylaxis
    medication_ingredients: frozenset[str] = frozenset()  # of active medications
    egfr: EgfrReading | None = None
    weight: Measurement | None = None  # kg
    condition_codes: frozenset[str] = frozenset()  # "system|code" of active conditions
    goals_of_care: Mapping[str, str] = field(default_factory=dict)  # goal -> evidence reference
    latest: Mapping[str, Measurement] = field(default_factory=dict)  # code key -> latest value
    done: Mapping[str, tuple[DoneEvent, ...]] = field(default_factory=dict)  # newest first
    medication_events: tuple[MedicationEvent, ...] = ()  # newest first

    def last_done(self, code_keys: Iterable[str]) -> DoneEvent | None:
        """The most recent event carrying any of the codes."""
        events = [self.done[key][0] for key in code_keys if self.done.get(key)]
        return max(events, key=lambda event: event.at, default=None)

    def latest_value(self, code_keys: Iterable[str]) -> Measurement | None:
        found = [self.latest[key] for key in code_keys if key in self.latest]
        return max(found, key=lambda measurement: measurement.at, default=None)

    def last_medication(self, ingredients: Iterable[str]) -> MedicationEvent | None:
        wanted = {name.lower() for name in ingredients}
        return next((e for e in self.medication_events if e.ingredients & wanted), None)


def _text(resource: dict, name: str) -> str | None:
    """A code element's value, or None when the feed put something else there."""
    value = resource.get(name)
    return value if isinstance(value, str) else None


def _well_formed(observations: list[dict]) -> list[dict]:
    """Observations with a status that is a code: the rest are malformed and say nothing."""
    return [o for o in observations if _text(o, "status") is not None]


def _list(value: object) -> list:
    """A repeated element as a list; anything else (a malformed feed) as nothing."""
    return value if isinstance(value, list) else []


def code_keys(concept: object) -> list[str]:
    """The "system|code" keys of a CodeableConcept (or of a list of them)."""
    if isinstance(concept, list):
        return [key for item in concept for key in code_keys(item)]
    if not isinstance(concept, dict):
        return []
    keys = []
    for coding in _list(concept.get("coding")):
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str):
                keys.append(f"{system}|{code}")
    return keys


def facts_from(patient_id: str, resources: Sequence[dict], now: datetime) -> PatientFacts:
    """The facts about a patient at `now`, from their resources (any order, any mix of types).

    Resources of other patients are the caller's business to keep out (the CDS prefetch refuses
    them); resources that cannot be read (no date, a malformed one) are left out of the facts
    they would feed rather than failing the whole card.
    """
    by_type: dict[str, list[dict]] = {}
    for resource in resources:
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            by_type.setdefault(resource["resourceType"], []).append(resource)
    patient = next(iter(by_type.get("Patient", [])), None)
    observations = by_type.get("Observation", [])
    conditions = _active_condition_codes(by_type.get("Condition", []), now)
    allergies = [a for a in by_type.get("AllergyIntolerance", []) if _allergy_in_effect(a)]
    latest = _latest_values(observations, now)
    pregnant, pregnancy_evidence = _pregnancy(by_type, now)
    return PatientFacts(
        patient_id=patient_id,
        now=now,
        age=_age(patient, now),
        sex=patient.get("gender") if patient and isinstance(patient.get("gender"), str) else None,
        deceased=_deceased(patient, now),
        pregnant=pregnant,
        pregnancy_evidence=pregnancy_evidence,
        allergy_classes=frozenset().union(*(allergy_classes(a) for a in allergies)),
        severe_allergy_classes=frozenset().union(
            *(allergy_classes(a) for a in allergies if _severe(a))
        ),
        medication_ingredients=_active_ingredients(by_type),
        egfr=latest_egfr(_well_formed(observations), patient, now) if patient else None,
        weight=_weight(latest),
        condition_codes=frozenset(conditions),
        goals_of_care=MappingProxyType(_goals_of_care(by_type, now)),
        latest=MappingProxyType(latest),
        done=MappingProxyType(_done_events(by_type, now)),
        medication_events=_medication_events(by_type, now),
    )


# -- dates ------------------------------------------------------------------------------------


def instant(value: object) -> datetime | None:
    """The start of a FHIR date/dateTime as an aware UTC datetime, None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return parse_fhir_instant_range(value)[0]
    except FhirDateError:
        return None


def _period_start(resource: dict, *names: str) -> datetime | None:
    """The first readable of the named dateTime elements, or the start of a Period among them."""
    for name in names:
        value = resource.get(name)
        if isinstance(value, dict):
            value = value.get("start")
        moment = instant(value)
        if moment is not None:
            return moment
    return None


def _in_period(period: object, now: datetime) -> bool:
    """Whether `now` falls in a Period (open ends count as open)."""
    if not isinstance(period, dict):
        return True
    start, end = instant(period.get("start")), instant(period.get("end"))
    return (start is None or start <= now + _CLOCK_SKEW) and (end is None or end > now)


def _age(patient: dict | None, now: datetime) -> int | None:
    born = instant(patient.get("birthDate")) if patient else None
    if born is None or born > now:
        return None
    years = now.year - born.year
    return years - 1 if (now.month, now.day) < (born.month, born.day) else years


def _deceased(patient: dict | None, now: datetime) -> bool:
    if not patient:
        return False
    if patient.get("deceasedBoolean") is True:
        return True
    died = instant(patient.get("deceasedDateTime"))
    return died is not None and died <= now + _CLOCK_SKEW


# -- conditions, allergies, medications -------------------------------------------------------


def _status_code(concept: object) -> str | None:
    for key in code_keys(concept):
        return key.rsplit("|", 1)[1]
    return None


def _condition_in_effect(condition: dict, now: datetime) -> bool:
    if _status_code(condition.get("verificationStatus")) in _VOID_VERIFICATION:
        return False
    clinical = _status_code(condition.get("clinicalStatus"))
    if clinical is not None and clinical not in _ACTIVE_CONDITION:
        return False
    onset = _period_start(condition, "onsetDateTime", "onsetPeriod", "recordedDate")
    if onset is not None and onset > now + _CLOCK_SKEW:
        return False
    abated = instant(condition.get("abatementDateTime"))
    return abated is None or abated > now


def _active_condition_codes(conditions: list[dict], now: datetime) -> set[str]:
    return {
        key
        for condition in conditions
        if _condition_in_effect(condition, now)
        for key in code_keys(condition.get("code"))
    }


def _allergy_in_effect(allergy: dict) -> bool:
    clinical = _status_code(allergy.get("clinicalStatus"))
    verification = _status_code(allergy.get("verificationStatus"))
    return clinical not in ("inactive", "resolved") and verification not in _VOID_VERIFICATION


def _severe(allergy: dict) -> bool:
    """High criticality, or any severe or anaphylactic reaction: no cross-reactive challenge."""
    if allergy.get("criticality") == "high":
        return True
    for reaction in _list(allergy.get("reaction")):
        if not isinstance(reaction, dict):
            continue
        if reaction.get("severity") == "severe":
            return True
        if ANAPHYLAXIS in code_keys(_list(reaction.get("manifestation"))):
            return True
    return False


def _active_ingredients(by_type: Mapping[str, list[dict]]) -> frozenset[str]:
    active = [
        r for r in by_type.get("MedicationRequest", []) if _text(r, "status") in _ACTIVE_MEDICATION
    ]
    active += [r for r in by_type.get("MedicationStatement", []) if _text(r, "status") == "active"]
    return frozenset().union(*(medication_ingredients(r) for r in active))


def _medication_events(by_type: Mapping[str, list[dict]], now: datetime) -> tuple:
    events = []
    for resource_type, statuses, when, verb in (
        ("MedicationRequest", _ORDERED, ("authoredOn",), "ordered"),
        (
            "MedicationAdministration",
            _ADMINISTERED,
            ("effectiveDateTime", "effectivePeriod"),
            "given",
        ),
    ):
        for resource in by_type.get(resource_type, []):
            at = _period_start(resource, *when)
            if _text(resource, "status") not in statuses or at is None or at > now + _CLOCK_SKEW:
                continue
            ingredients = medication_ingredients(resource)
            if ingredients:
                reference = f"{resource_type}/{resource.get('id')}"
                events.append(MedicationEvent(at, ingredients, reference, verb))
    return tuple(sorted(events, key=lambda event: event.at, reverse=True))


# -- observations -----------------------------------------------------------------------------


def _quantity(node: dict) -> tuple[float, str | None] | None:
    quantity = node.get("valueQuantity")
    if not isinstance(quantity, dict):
        return None
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    unit = quantity.get("code") if quantity.get("system") == codes.UCUM else None
    return float(value), unit or quantity.get("unit")


def _latest_values(observations: list[dict], now: datetime) -> dict[str, Measurement]:
    """The latest numeric value of every code, components (blood pressure) included."""
    latest: dict[str, Measurement] = {}
    for observation in observations:
        at = _period_start(observation, "effectiveDateTime", "effectivePeriod", "effectiveInstant")
        if _text(observation, "status") not in _RESULTED or at is None or at > now + _CLOCK_SKEW:
            continue
        reference = f"Observation/{observation.get('id')}"
        parts = [
            observation,
            *(c for c in _list(observation.get("component")) if isinstance(c, dict)),
        ]
        for part in parts:
            quantity = _quantity(part)
            if quantity is None:
                continue
            for key in code_keys(part.get("code")):
                if key not in latest or latest[key].at < at:
                    latest[key] = Measurement(quantity[0], quantity[1], at, reference)
    return latest


def _weight(latest: Mapping[str, Measurement]) -> Measurement | None:
    """Body weight in kg; pounds are converted, other or missing units are not guessed."""
    measured = latest.get(BODY_WEIGHT)
    if measured is None:
        return None
    if measured.unit in ("kg", "kilogram", "kilograms"):
        return Measurement(measured.value, "kg", measured.at, measured.reference)
    if measured.unit in ("[lb_av]", "lb", "lbs"):
        kg = round(measured.value / _POUNDS_PER_KG, 1)
        return Measurement(kg, "kg", measured.at, measured.reference)
    return None


def _pregnancy(by_type: Mapping[str, list[dict]], now: datetime) -> tuple[bool, str | None]:
    """Pregnant now: an open pregnancy Condition, unless a later status Observation says not."""
    condition_since: tuple[datetime, str] | None = None
    for condition in by_type.get("Condition", []):
        keys = code_keys(condition.get("code"))
        if not any(_is_pregnancy_code(key) for key in keys):
            continue
        onset = _period_start(condition, "onsetDateTime", "onsetPeriod", "recordedDate")
        if not _condition_in_effect(condition, now) or onset is None or now - onset > PREGNANCY_MAX:
            continue
        if condition_since is None or onset > condition_since[0]:
            condition_since = (onset, f"Condition/{condition.get('id')}")
    status = _latest_pregnancy_status(by_type.get("Observation", []), now)
    if status is not None and (condition_since is None or status[0] >= condition_since[0]):
        return status[1], status[2] if status[1] else None
    if condition_since is not None:
        return True, condition_since[1]
    return False, None


def _is_pregnancy_code(key: str) -> bool:
    if key in PREGNANCY_CONDITIONS:
        return True
    system, _, code = key.rpartition("|")
    return system == _ICD10_CM and code.startswith(PREGNANCY_ICD10_PREFIXES)


def _latest_pregnancy_status(
    observations: list[dict], now: datetime
) -> tuple[datetime, bool, str] | None:
    latest: tuple[datetime, bool, str] | None = None
    for observation in observations:
        if not PREGNANCY_STATUS_LOINC.intersection(code_keys(observation.get("code"))):
            continue
        at = _period_start(observation, "effectiveDateTime", "effectivePeriod", "effectiveInstant")
        values = code_keys(observation.get("valueCodeableConcept"))
        if _text(observation, "status") not in _RESULTED or at is None or at > now + _CLOCK_SKEW:
            continue
        if now - at > PREGNANCY_MAX:
            continue
        known = PREGNANT_VALUE in values or NOT_PREGNANT_VALUE in values
        if known and (latest is None or at > latest[0]):
            latest = (at, PREGNANT_VALUE in values, f"Observation/{observation.get('id')}")
    return latest


# -- goals of care ----------------------------------------------------------------------------


def _goals_of_care(by_type: Mapping[str, list[dict]], now: datetime) -> dict[str, str]:
    found: dict[str, str] = {}

    def note(keys: Iterable[str], reference: str) -> None:
        for key in keys:
            goal = GOAL_CODES.get(key)
            if goal is not None:
                found.setdefault(goal, reference)

    for goal in by_type.get("Goal", []):
        started = instant(goal.get("startDate"))
        if _text(goal, "lifecycleStatus") in _GOAL_LIVE and (started is None or started <= now):
            concepts = [goal.get("description"), *_list(goal.get("category"))]
            note(code_keys(concepts), f"Goal/{goal.get('id')}")
    for plan in by_type.get("CarePlan", []):
        if _text(plan, "status") in _CAREPLAN_LIVE and _in_period(plan.get("period"), now):
            note(_careplan_codes(plan), f"CarePlan/{plan.get('id')}")
    for condition in by_type.get("Condition", []):
        if _condition_in_effect(condition, now):
            note(code_keys(condition.get("code")), f"Condition/{condition.get('id')}")
    for procedure in by_type.get("Procedure", []):
        if _procedure_speaks_now(procedure, now):
            note(code_keys(procedure.get("code")), f"Procedure/{procedure.get('id')}")
    dnr = _dnr_order(by_type.get("Observation", []), now)
    if dnr is not None:
        found.setdefault(DNR, dnr)
    return found


def _careplan_codes(plan: dict) -> list[str]:
    keys = code_keys(_list(plan.get("category")))
    for activity in _list(plan.get("activity")):
        detail = activity.get("detail") if isinstance(activity, dict) else None
        if isinstance(detail, dict) and _text(detail, "status") not in ("cancelled", "completed"):
            keys += code_keys(detail.get("code"))
    return keys


def _procedure_speaks_now(procedure: dict, now: datetime) -> bool:
    status = _text(procedure, "status")
    if status == "in-progress":
        return True
    performed = _period_start(procedure, "performedDateTime", "performedPeriod")
    return (
        status == "completed"
        and performed is not None
        and now - _PROCEDURE_GOAL_WINDOW <= performed <= now + _CLOCK_SKEW
    )


def _dnr_order(observations: list[dict], now: datetime) -> str | None:
    """The latest DNR-order Observation decides: a later "no" lifts an earlier "yes"."""
    latest: tuple[datetime, bool, str] | None = None
    for observation in observations:
        if DNR_ORDER_LOINC not in code_keys(observation.get("code")):
            continue
        at = _period_start(observation, "effectiveDateTime", "effectivePeriod", "effectiveInstant")
        if _text(observation, "status") not in _RESULTED or at is None or at > now + _CLOCK_SKEW:
            continue
        value = observation.get("valueBoolean")
        if not isinstance(value, bool):
            # LOINC answer list LL361-7: LA33-6 "Yes", LA32-8 "No"
            answers = code_keys(observation.get("valueCodeableConcept"))
            value = f"{codes.LOINC}|LA33-6" in answers
        if latest is None or at > latest[0]:
            latest = (at, value, f"Observation/{observation.get('id')}")
    return latest[2] if latest is not None and latest[1] else None


# -- what was done when -----------------------------------------------------------------------

# (resource type, statuses that count, where its time is, how a card says it, coded elements)
_DONE_SOURCES: tuple[tuple[str, frozenset[str], tuple[str, ...], str, tuple[str, ...]], ...] = (
    (
        "ServiceRequest",
        _ORDERED,
        ("authoredOn", "occurrenceDateTime", "occurrencePeriod"),
        "ordered",
        ("code",),
    ),
    ("MedicationRequest", _ORDERED, ("authoredOn",), "ordered", ("medicationCodeableConcept",)),
    (
        "Observation",
        _RESULTED,
        ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
        "resulted",
        ("code",),
    ),
    (
        "DiagnosticReport",
        _REPORTED,
        ("effectiveDateTime", "effectivePeriod", "issued"),
        "resulted",
        ("code",),
    ),
    ("Procedure", _PROCEDURE_DONE, ("performedDateTime", "performedPeriod"), "done", ("code",)),
    ("Encounter", _ENCOUNTER_HAPPENED, ("period",), "attended", ("type",)),
)


def _done_events(by_type: Mapping[str, list[dict]], now: datetime) -> dict[str, tuple]:
    events: dict[str, list[DoneEvent]] = {}
    for resource_type, statuses, when, verb, coded in _DONE_SOURCES:
        for resource in by_type.get(resource_type, []):
            at = _period_start(resource, *when)
            if _text(resource, "status") not in statuses or at is None or at > now + _CLOCK_SKEW:
                continue
            event = DoneEvent(at, f"{resource_type}/{resource.get('id')}", verb)
            for element in coded:
                for key in code_keys(resource.get(element)):
                    events.setdefault(key, []).append(event)
    return {
        key: tuple(sorted(found, key=lambda event: event.at, reverse=True))
        for key, found in events.items()
    }
