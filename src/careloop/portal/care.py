"""My care: what a patient reads about their plan, built from their released record and the
cards a clinician accepted. Pure: the web page reads the record and the ledger, this decides
what may be said.

What may be said (the clinical-safety rule): plan items only for cards a clinician accepted,
worded from the reviewed catalogue by kind; whether the sepsis check ran, never its number or
its model's words; a home-monitoring alert only once a nurse has taken it on (its Task
accepted, in progress or completed). Ground-truth labels of the synthetic data are never read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from careloop.fhir import codes
from careloop.fhir.timeutil import FhirDateError, parse_fhir_instant_range
from careloop.monitoring.fhir import ORIGIN_SYSTEM
from careloop.monitoring.fhir_alerts import PATTERN_SYSTEM, TASK_CODE_SYSTEM
from careloop.portal.catalogue import DATA_USES, WRITTEN_BY_CARELOOP, plan_item_text

GROUND_TRUTH = "ground-truth"
SEPSIS_METHOD = "careloop sepsis model"
# A nurse has taken the alert on (fhir_alerts.TASK_STATUS: acknowledged → accepted).
TAKEN_ON = frozenset({"accepted", "in-progress", "completed"})
_OBSERVATION_KINDS = {"vital-signs": "vital-signs", "laboratory": "lab-tests"}
_TYPE_KINDS = {
    "Condition": "conditions",
    "AllergyIntolerance": "allergies",
    "Encounter": "visits",
    "MedicationRequest": "medicines",
    "MedicationStatement": "medicines",
    "MedicationDispense": "medicines",
    "MedicationAdministration": "medicines",
    "Immunization": "medicines",
    "RiskAssessment": "careloop-findings",
    "DetectedIssue": "careloop-findings",
    "Flag": "careloop-findings",
    "Task": "careloop-findings",
    "Media": "careloop-findings",
    "Device": "home-devices",
    "Communication": "messages",
    "Consent": "sharing",
    "Patient": "about-you",
}
DATA_KIND_ORDER = (
    "vital-signs",
    "lab-tests",
    "home-devices",
    "conditions",
    "medicines",
    "allergies",
    "visits",
    "careloop-findings",
    "messages",
    "sharing",
    "about-you",
    "other",
)


@dataclass(frozen=True)
class AcceptedCard:
    """A card a clinician accepted, as the ledger holds it (no clinical wording)."""

    key: str  # cds_cards.card_key: "playbook:<id>", "interaction:a+b", "monitoring:<alert>"
    accepted_at: datetime


@dataclass(frozen=True)
class PlanItem:
    kind: str
    text: str
    accepted_at: datetime


@dataclass(frozen=True)
class CareView:
    items: tuple[PlanItem, ...]
    last_risk_check: datetime | None
    home_monitored: bool
    home_alerts_reviewed: int
    data_used: tuple[tuple[str, int], ...]  # (kind, count), only kinds careloop reads


def item_kind(card_key: str) -> str:
    """The catalogue kind of a card: the playbook for a playbook card, else the key's prefix."""
    prefix, _, rest = card_key.partition(":")
    if prefix == "playbook" and rest:
        return f"playbook:{rest}"
    return prefix


def is_ground_truth(resource: dict) -> bool:
    tags = resource.get("meta", {}).get("tag", ())
    return any(isinstance(tag, dict) and tag.get("code") == GROUND_TRUTH for tag in tags)


def data_kind(resource: dict) -> str:
    """The plain kind of a resource: a home-device reading, a vital sign, a lab test ..."""
    resource_type = resource.get("resourceType")
    if resource_type == "Observation":
        if _from_home_device(resource):
            return "home-devices"
        for category in resource.get("category", ()):
            for coding in category.get("coding", ()) if isinstance(category, dict) else ():
                kind = _OBSERVATION_KINDS.get(coding.get("code"))
                if kind and coding.get("system") == codes.OBSERVATION_CATEGORY:
                    return kind
        return "other"
    return _TYPE_KINDS.get(str(resource_type), "other")


def _from_home_device(resource: dict) -> bool:
    device = resource.get("device")
    if isinstance(device, dict) and str(device.get("reference", "")).startswith("Device/"):
        return True
    return any(
        isinstance(tag, dict)
        and tag.get("system") == ORIGIN_SYSTEM
        and tag.get("code") in ("device", "derived")
        for tag in resource.get("meta", {}).get("tag", ())
    )


def data_counts(resources: Iterable[dict]) -> list[tuple[str, int]]:
    """How many resources of each kind, in the page's order, leaving out empty kinds."""
    counts = Counter(data_kind(r) for r in resources if not is_ground_truth(r))
    return [(kind, counts[kind]) for kind in DATA_KIND_ORDER if counts[kind]]


def care_view(resources: Sequence[dict], accepted: Sequence[AcceptedCard], lang: str) -> CareView:
    """My care from the patient's released resources and their accepted cards."""
    record = [r for r in resources if not is_ground_truth(r)]
    items: dict[str, PlanItem] = {}
    for card in sorted(accepted, key=lambda c: c.accepted_at, reverse=True):
        kind = item_kind(card.key)
        if kind and kind != "notice" and kind not in items:  # newest acceptance per kind
            items[kind] = PlanItem(kind, plan_item_text(kind, lang), card.accepted_at)
    risk_times = [
        moment
        for r in record
        if r.get("resourceType") == "RiskAssessment" and _is_sepsis_check(r)
        if (moment := _instant(r.get("occurrenceDateTime"))) is not None
    ]
    flags = {
        r.get("id")
        for r in record
        if r.get("resourceType") == "Flag"
        and _coded(r, PATTERN_SYSTEM)
        and r.get("status") == "active"
    }
    reviewed = sum(
        1
        for r in record
        if r.get("resourceType") == "Task"
        and _coded(r, TASK_CODE_SYSTEM)
        and r.get("status") in TAKEN_ON
        and str(r.get("focus", {}).get("reference", "")).removeprefix("Flag/") in flags
    )
    counts = dict(data_counts(record))
    return CareView(
        items=tuple(items.values()),
        last_risk_check=max(risk_times, default=None),
        home_monitored=counts.get("home-devices", 0) > 0,
        home_alerts_reviewed=reviewed,
        data_used=tuple(
            (kind, n)
            for kind, n in counts.items()
            if kind in DATA_USES and kind not in WRITTEN_BY_CARELOOP
        ),
    )


def _is_sepsis_check(resource: dict) -> bool:
    method = resource.get("method", {})
    return isinstance(method, dict) and str(method.get("text", "")).startswith(SEPSIS_METHOD)


def _coded(resource: dict, system: str) -> bool:
    code = resource.get("code", {})
    return any(
        isinstance(coding, dict) and coding.get("system") == system
        for coding in (code.get("coding", ()) if isinstance(code, dict) else ())
    )


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_fhir_instant_range(value)[0]
    except (FhirDateError, ValueError):
        return None
