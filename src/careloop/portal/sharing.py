"""A patient's sharing choices: a grid of parts of the record × who may use them, as one FHIR
Consent, and back again by asking the consent engine itself.

Writing: one `patient-privacy` Consent per patient (a stable id, so saving again makes a new
version of the same resource) whose root provision *permits* the grid's purposes and whose
nested provisions *deny* each part to the recipients the patient said no to. The engine lets the
deepest matching provision decide, so a nested deny wins over the root permit; the root names
the grid's purposes only, so every other purpose (the patient's own requests, operations) is
left to the site's default and to any other consent.

Reading: for every cell the engine is asked what it would decide for a typical resource of that
part read by that recipient, over *all* the patient's consents (whoever recorded them). So the
page shows what is enforced, not what the portal last wrote, and a round trip (grid → Consent →
grid) is the identity for every grid the page can express (tests check it).

What the engine can express, and so what a row means:
- the five sensitive classes by security label (`careloop.access.labels`, explicit or inferred);
- medicines by resource type (`class`);
- vital signs, lab tests and wearable data by LOINC code (`code`): the codes careloop's models
  and checks read. Readings that are vital signs stay vital signs when a home device sends them
  (the engine cannot tell a ward's heart rate from a watch's), which the page says in words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from careloop.access.consent import (
    CONSENT_CATEGORY_LOINC,
    CONSENT_SCOPE_SYSTEM,
    DENY,
    PERMIT,
    RESOURCE_TYPES_SYSTEM,
    AccessRequest,
    ConsentPolicy,
    evaluate,
)
from careloop.access.labels import BEHAVIORAL_HEALTH_LABEL, CLASS_LABELS, CONFIDENTIALITY_SYSTEM
from careloop.access.labels import DataClass as Sensitive
from careloop.access.principal import Purpose
from careloop.fhir import codes
from careloop.monitoring.signals import CATALOGUE as HOME_SIGNALS
from careloop.monitoring.signals import Signal as HomeSignal
from careloop.sepsis.signals import SIGNALS as WARD_SIGNALS

RECIPIENTS: Final[Mapping[str, tuple[Purpose, ...]]] = {
    # the care team treats (and in an emergency, break-glass is the separate, audited way past
    # a denial); the monitoring worker also reads for treatment, so a "no" stops it too
    "care-team": (Purpose.TREATMENT, Purpose.EMERGENCY_TREATMENT),
    "research": (Purpose.RESEARCH,),
    "model-training": (Purpose.MODEL_TRAINING,),
}
# Recipients a row may not be withheld from (the care team needs the record as a whole; parts
# of it can be held back row by row).
FIXED: Final[frozenset[tuple[str, str]]] = frozenset({("whole-record", "care-team")})

_WEARABLE = (
    HomeSignal.STEPS,
    HomeSignal.SLEEP_MINUTES,
    HomeSignal.HRV_RMSSD,
    HomeSignal.RESTING_HEART_RATE,
)
WEARABLE_CODES: Final = tuple(
    sorted({HOME_SIGNALS[signal].loinc for signal in _WEARABLE} | {codes.STEPS_24H})
)
VITAL_CODES: Final = tuple(
    sorted(
        {signal.loinc for signal in WARD_SIGNALS if signal.vital}
        | {
            codes.BLOOD_PRESSURE_PANEL,
            codes.BODY_WEIGHT,
            codes.BODY_HEIGHT,
            codes.BMI,
            codes.OXYGEN_SATURATION_ARTERIAL,
        }
    )
)
LAB_CODES: Final = tuple(
    sorted(
        (
            {signal.loinc for signal in WARD_SIGNALS if not signal.vital}
            | {
                codes.GLUCOSE,
                codes.EGFR,
                codes.SODIUM,
                codes.BICARBONATE,
                "4548-4",  # HbA1c (the diabetes follow-up)
                "9318-7",  # urine albumin/creatinine ratio (CKD monitoring)
                "14959-1",  # microalbumin/creatinine ratio in urine
            }
        )
        - set(VITAL_CODES)
    )
)
MEDICATION_TYPES: Final = (
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
)


@dataclass(frozen=True)
class Row:
    """A part of the record: the provision criterion that names it, and a typical resource of
    it (what the engine is asked about when the grid is read back)."""

    key: str
    criterion: Mapping[str, list]  # merged into a nested provision; {} = the whole record
    sample_type: str
    sample_codes: frozenset[tuple[str, str]] = frozenset()
    sample_labels: frozenset[str] = frozenset()


def _codes(values: Sequence[str]) -> dict[str, list]:
    return {"code": [{"coding": [{"system": codes.LOINC, "code": code}]} for code in values]}


def _labels(data_class: Sensitive) -> dict[str, list]:
    return {
        "securityLabel": [
            {"system": CONFIDENTIALITY_SYSTEM, "code": label}
            for label in sorted(CLASS_LABELS[data_class])
        ]
    }


def _sensitive(key: str, data_class: Sensitive) -> Row:
    labels = set(CLASS_LABELS[data_class])
    if data_class in (Sensitive.MENTAL_HEALTH, Sensitive.SUBSTANCE_USE):
        labels.add(BEHAVIORAL_HEALTH_LABEL)
    return Row(key, _labels(data_class), "Condition", sample_labels=frozenset(labels))


ROWS: Final[tuple[Row, ...]] = (
    Row("whole-record", {}, "Patient"),
    Row("vital-signs", _codes(VITAL_CODES), "Observation",
        frozenset({(codes.LOINC, codes.HEART_RATE)})),
    Row("lab-tests", _codes(LAB_CODES), "Observation", frozenset({(codes.LOINC, codes.LACTATE)})),
    Row("home-devices", _codes(WEARABLE_CODES), "Observation",
        frozenset({(codes.LOINC, codes.STEPS_24H)})),
    Row("medicines", {"class": [{"system": RESOURCE_TYPES_SYSTEM, "code": kind}
                                for kind in MEDICATION_TYPES]}, "MedicationRequest"),
    _sensitive("mental-health", Sensitive.MENTAL_HEALTH),
    _sensitive("substance-use", Sensitive.SUBSTANCE_USE),
    _sensitive("reproductive-health", Sensitive.REPRODUCTIVE_HEALTH),
    _sensitive("hiv", Sensitive.HIV),
    _sensitive("genetics", Sensitive.GENETICS),
)  # fmt: skip
ROW_KEYS: Final = tuple(row.key for row in ROWS)
_BY_KEY: Final = {row.key: row for row in ROWS}
# Who stands for "the care team" when the grid is read back: no real person, so a consent
# that permits one named practitioner does not make the whole care team look allowed.
CARE_TEAM_PROBE: Final = "Practitioner/careloop-portal-care-team"

Cell = tuple[str, str]  # (row key, recipient key)


@dataclass(frozen=True)
class SharingGrid:
    """The cells the patient allows; every other cell is denied."""

    allowed: frozenset[Cell]

    @classmethod
    def everything(cls) -> SharingGrid:
        return cls(frozenset((row, who) for row in ROW_KEYS for who in RECIPIENTS))

    def allows(self, row: str, recipient: str) -> bool:
        return (row, recipient) in self.allowed

    def normalized(self) -> SharingGrid:
        """What the engine will enforce: fixed cells always allowed, and a recipient denied the
        whole record is denied every part of it."""
        allowed = set(self.allowed) | set(FIXED)
        for who in RECIPIENTS:
            if ("whole-record", who) not in allowed:
                allowed = {cell for cell in allowed if cell[1] != who}
        return SharingGrid(frozenset(allowed))


def consent_id_for(patient_id: str) -> str:
    """The portal's one Consent per patient (a FHIR id: at most 64 of [A-Za-z0-9-.])."""
    return f"sharing-{patient_id}"[:64]


def grid_from_form(form: Mapping[str, str]) -> SharingGrid:
    """Checkbox fields named `share.<row>.<recipient>` (checked: present)."""
    allowed = {
        (row, who)
        for row in ROW_KEYS
        for who in RECIPIENTS
        if form.get(field_name(row, who)) in ("on", "yes", "1")
    }
    return SharingGrid(frozenset(allowed)).normalized()


def field_name(row: str, recipient: str) -> str:
    return f"share.{row}.{recipient}"


def consent_from_grid(
    patient_id: str, grid: SharingGrid, *, at: datetime | None = None, active: bool = True
) -> dict:
    """The FHIR R4 Consent that enforces the grid (see the module docstring)."""
    grid = grid.normalized()
    moment = (at or datetime.now(UTC)).astimezone(UTC)
    purposes = [purpose for who in RECIPIENTS for purpose in RECIPIENTS[who]]
    root: dict = {"type": PERMIT, "purpose": _purpose_codings(purposes)}
    nested = []
    for row in ROWS:
        denied = [who for who in RECIPIENTS if not grid.allows(row.key, who)]
        if not denied:
            continue
        provision = {"type": DENY, "purpose": _purpose_codings(_purposes_of(denied))}
        provision.update(row.criterion)
        nested.append(provision)
    if nested:
        root["provision"] = nested
    return {
        "resourceType": "Consent",
        "id": consent_id_for(patient_id),
        "status": "active" if active else "inactive",
        "scope": {"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": codes.LOINC, "code": CONSENT_CATEGORY_LOINC}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "policyRule": {
            "coding": [{"system": CONFIDENTIALITY_SYSTEM, "code": "OPTOUT" if nested else "OPTIN"}]
        },
        "provision": root,
    }


def grid_from_consents(
    patient_id: str,
    consents: Iterable[dict],
    policy: ConsentPolicy,
    *,
    at: datetime | None = None,
) -> SharingGrid:
    """What the engine decides for each cell under all of the patient's consents."""
    consents = list(consents)
    moment = at or datetime.now(UTC)
    allowed = set()
    for row in ROWS:
        for who, purposes in RECIPIENTS.items():
            if (row.key, who) in FIXED:
                allowed.add((row.key, who))
                continue
            if decide(patient_id, consents, policy, row.key, purposes[0], moment):
                allowed.add((row.key, who))
    return SharingGrid(frozenset(allowed))


def decide(
    patient_id: str,
    consents: Sequence[dict],
    policy: ConsentPolicy,
    row_key: str,
    purpose: Purpose,
    at: datetime,
) -> bool:
    """The engine's decision for a typical resource of one row, read for one purpose."""
    row = _BY_KEY[row_key]
    sample_id = patient_id if row.sample_type == "Patient" else "portal-sample"
    actors = frozenset({CARE_TEAM_PROBE}) if purpose in RECIPIENTS["care-team"] else frozenset()
    request = AccessRequest(
        patient_id=patient_id,
        actor_references=actors,
        purpose=purpose,
        resource_type=row.sample_type,
        at=at,
        security_labels=row.sample_labels,
        resource_reference=f"{row.sample_type}/{sample_id}",
        resource_codes=row.sample_codes,
    )
    return evaluate(consents, request, policy).permitted


def _purposes_of(recipients: Iterable[str]) -> list[Purpose]:
    return [purpose for who in recipients for purpose in RECIPIENTS[who]]


def _purpose_codings(purposes: Iterable[Purpose]) -> list[dict]:
    return [
        {"system": purpose.system, "code": purpose.value} for purpose in dict.fromkeys(purposes)
    ]
