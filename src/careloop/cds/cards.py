"""CDS Hooks cards, and the FHIR record kept of each.

A card supports a decision and never makes it, so each one carries, in this order of reading:
a summary under 140 characters; the indicator from its severity; a detail with the rationale (the
top factors with this patient's own values against their baseline), the calibrated probability
with its uncertainty, what was not suggested and why, the alternatives considered and the
evidence; its source (the model or knowledge base and version, linked to the model card); the
next best actions as FHIR resources to create, with how many may be chosen and the reasons a
clinician may give for declining; and a link to the patient in careloop.

Each card is kept as a FHIR RiskAssessment (a risk) or DetectedIssue (a safety finding or a gap
in care); the ledger adds the Provenance naming the model version and the data used.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from careloop.cds.evidence import Citation
from careloop.cds.ledger import IssuedCard
from careloop.cds.medsafety import SafetyFinding
from careloop.cds.playbooks import PlaybookPlan
from careloop.cds.risk import RiskPicture

SUMMARY_LIMIT = 140
OVERRIDE_SYSTEM = "https://careloop.dev/fhir/CodeSystem/override-reason"
TOPIC_SYSTEM = "https://careloop.dev/fhir/CodeSystem/cds-topic"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CAREGAP_SYSTEM = "https://careloop.dev/fhir/CodeSystem/care-gap"
FINDING_CODES = {
    "interaction": ("DRG", "Drug Interaction Alert"),
    "allergy": ("ALGY", "Allergy Alert"),
    "duplicate": ("DUPTHPY", "Duplicate Therapy Alert"),
    "renal": ("DOSECOND", "dosage-condition alert"),
}
DETECTED_SEVERITY = {"critical": "high", "warning": "moderate", "info": "low"}
SAFETY_NOTE = "careloop supports, and does not replace, the clinician's judgement."


@dataclass(frozen=True)
class CardContext:
    """What every card of one call shares."""

    patient_id: str
    now: datetime
    patient_url: str  # the patient's page in careloop
    model_card_url: str
    knowledge_url: str  # the documentation of careloop's medication-safety knowledge


def short(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """Text cut to `limit` characters on a word boundary, marked when cut."""
    if len(text) < limit:
        return text
    return text[: limit - 2].rsplit(" ", 1)[0] + " …"


def _coding(code: str, display: str, system: str = OVERRIDE_SYSTEM) -> dict:
    return {"system": system, "code": code, "display": display}


def _evidence_lines(evidence: Sequence[Citation]) -> list[str]:
    return [f"- [{c.title}]({c.url})" if c.url else f"- {c.title}" for c in evidence]


def _suggestion(label: str, actions: list[dict], recommended: bool = True) -> dict:
    return {
        "label": short(label, 80),
        "uuid": str(uuid.uuid4()),
        "isRecommended": recommended,
        "actions": actions,
    }


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%" if value >= 0.01 else f"{value * 100:.1f}%"


# -- patient-view: risk and playbooks -------------------------------------------------------


def playbook_card(
    plan: PlaybookPlan, picture: RiskPicture, ctx: CardContext, used: tuple[str, ...]
) -> IssuedCard:
    """A card for a triggered playbook: the risk that triggered it and its next best actions."""
    trigger = plan.playbook.trigger.kind
    risk_lines = _risk_lines(picture, trigger)
    lines = [*risk_lines, ""]
    if plan.excluded:
        lines.append(f"**No actions suggested:** {plan.excluded}")
    if plan.actions:
        lines.append(f"**Next best actions** ({plan.playbook.title}):")
        for action in plan.actions:
            note = f" ({action.personalization})" if action.personalization else ""
            lines.append(f"- {action.label}{note}")
    if plan.skipped:
        lines.append("")
        lines.append("**Not suggested again:**")
        lines.extend(f"- {skipped.label}: {skipped.reason}" for skipped in plan.skipped)
    if plan.alternatives:
        lines += ["", "**Alternatives considered:**", *[f"- {a}" for a in plan.alternatives]]
    if plan.evidence:
        lines += ["", "**Evidence:**", *_evidence_lines(plan.evidence)]
    lines += ["", SAFETY_NOTE]
    suggestions = [
        _suggestion(
            action.label,
            [{"type": "create", "description": action.label, "resource": action.resource}],
        )
        for action in plan.actions
    ]
    model_version = picture.sepsis.model_version if picture.sepsis else None
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": short(plan.summary),
        "indicator": plan.indicator,
        "detail": "\n".join(lines),
        "source": _risk_source(trigger, model_version, ctx),
        "links": [_patient_link(ctx)],
    }
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = plan.selection_behavior
    if plan.override_reasons:
        card["overrideReasons"] = [_coding(code, text) for code, text in plan.override_reasons]
    record = (
        risk_assessment(picture, plan, ctx)
        if trigger in ("sepsis-alert", "news2")
        else care_gap_issue(plan, ctx)
    )
    return IssuedCard(
        card=card,
        key=f"playbook:{plan.playbook.id}",
        model_version=model_version if trigger == "sepsis-alert" else None,
        playbook=f"{plan.playbook.id}@{plan.playbook.version}",
        record=record,
        used=used,
    )


def _risk_lines(picture: RiskPicture, trigger: str) -> list[str]:
    lines = []
    score = picture.sepsis
    if trigger == "sepsis-alert" and score is not None and score.current is not None:
        lines.append(
            f"**Sepsis risk {_percent(score.current)}**: the model's calibrated probability "
            "that sepsis (Sepsis-3) is under way or follows within hours."
        )
        lines.append(
            f"The alert fires from {_percent(picture.alert_threshold)}: the threshold chosen in "
            "validation to catch most sepsis early at a bounded number of alerts."
        )
        if picture.interval is not None:
            band = picture.interval
            lines.append(
                f"How sure: in validation on other patients, hours predicted "
                f"{band.band_low:.0%} to {band.band_high:.0%} were followed by sepsis "
                f"{_percent(band.observed)} of the time (95% CI {_percent(band.low)} to "
                f"{_percent(band.high)}; {band.support:,} patient-hours)."
            )
        if score.factors:
            lines.append("")
            lines.append("**Why:** the factors that raised this hour's risk most:")
            lines.extend(f"- {factor}" for factor in score.factors)
    if picture.news2 is not None and trigger in ("sepsis-alert", "news2"):
        parts = ", ".join(
            f"{name} {points}" for name, points in picture.news2_parts.items() if points
        )
        lines.append("")
        lines.append(f"**NEWS2 {picture.news2}**" + (f" ({parts})" if parts else "") + ".")
    if picture.as_of is not None and trigger in ("sepsis-alert", "news2"):
        lines.append(f"As of {picture.as_of.isoformat(timespec='minutes')} (latest vital sign).")
    return lines


def _risk_source(trigger: str, model_version: str | None, ctx: CardContext) -> dict:
    if trigger == "sepsis-alert" and model_version:
        return {
            "label": f"careloop sepsis model {model_version}",
            "url": ctx.model_card_url,
            "topic": _coding("sepsis", "Sepsis early warning", TOPIC_SYSTEM),
        }
    if trigger == "news2":
        return {
            "label": "careloop deterioration (NEWS2, Royal College of Physicians 2017)",
            "url": ctx.knowledge_url,
            "topic": _coding("deterioration", "Clinical deterioration", TOPIC_SYSTEM),
        }
    return {
        "label": "careloop care gaps",
        "url": ctx.knowledge_url,
        "topic": _coding("care-gap", "Overdue follow-up", TOPIC_SYSTEM),
    }


def _patient_link(ctx: CardContext) -> dict:
    return {"label": "Open the patient in careloop", "url": ctx.patient_url, "type": "absolute"}


def risk_assessment(picture: RiskPicture, plan: PlaybookPlan, ctx: CardContext) -> dict:
    """The FHIR RiskAssessment kept for a risk card."""
    prediction: dict = {"outcome": {"text": plan.playbook.title}}
    score = picture.sepsis
    method = "NEWS2 (Royal College of Physicians 2017)"
    if plan.playbook.trigger.kind == "sepsis-alert" and score and score.current is not None:
        prediction = {
            "outcome": {"text": "Sepsis (Sepsis-3 onset, PhysioNet 2019 definition)"},
            "probabilityDecimal": round(score.current, 4),
            "qualitativeRisk": {"text": "high" if picture.sepsis_alert else "low"},
            "rationale": "; ".join(score.factors)[:1000] or None,
        }
        prediction = {k: v for k, v in prediction.items() if v is not None}
        method = f"careloop sepsis model {score.model_version}"
    elif picture.news2 is not None:
        prediction["qualitativeRisk"] = {"text": f"NEWS2 {picture.news2}"}
    resource = {
        "resourceType": "RiskAssessment",
        "id": str(uuid.uuid4()),
        "status": "final",
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "occurrenceDateTime": (picture.as_of or ctx.now).isoformat(),
        "method": {"text": method},
        "prediction": [prediction],
        "note": [{"text": plan.summary}],
    }
    return resource


def care_gap_issue(plan: PlaybookPlan, ctx: CardContext) -> dict:
    """The FHIR DetectedIssue kept for a gap in care (an overdue follow-up)."""
    return {
        "resourceType": "DetectedIssue",
        "id": str(uuid.uuid4()),
        "status": "final",
        "code": {
            "coding": [_coding(plan.playbook.id, plan.playbook.title, CAREGAP_SYSTEM)],
            "text": plan.playbook.title,
        },
        "severity": DETECTED_SEVERITY.get(plan.indicator, "low"),
        "patient": {"reference": f"Patient/{ctx.patient_id}"},
        "identifiedDateTime": ctx.now.isoformat(),
        "detail": plan.summary,
    }


# -- order-select / order-sign: medication safety ------------------------------------------


def safety_card(finding: SafetyFinding, draft: dict | None, ctx: CardContext) -> IssuedCard:
    """A card for one medication-safety finding on a draft order."""
    lines = [finding.detail]
    if finding.alternatives:
        lines += ["", "**Alternatives considered:**", *[f"- {a}" for a in finding.alternatives]]
    if finding.evidence:
        lines += ["", "**Evidence:**", *_evidence_lines(finding.evidence)]
    lines += ["", SAFETY_NOTE]
    suggestions = _safety_suggestions(finding, draft)
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": short(finding.summary),
        "indicator": finding.severity,
        "detail": "\n".join(lines),
        "source": {
            "label": "careloop medication safety (ONC interaction lists, reviewed knowledge)",
            "url": ctx.knowledge_url,
            "topic": _coding(finding.kind, f"Medication safety: {finding.kind}", TOPIC_SYSTEM),
        },
        "links": [_patient_link(ctx)],
    }
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    if finding.override_reasons:
        card["overrideReasons"] = [_coding(code, text) for code, text in finding.override_reasons]
    return IssuedCard(
        card=card,
        key=short(finding.key, 128),
        model_version=None,
        playbook=None,
        record=detected_issue(finding, ctx),
        used=tuple(finding.involved),
    )


def _safety_suggestions(finding: SafetyFinding, draft: dict | None) -> list[dict]:
    if draft is None:
        return []
    name = _medication_name(draft)
    remove = {
        "type": "delete",
        "description": f"Remove the draft order for {name}",
        "resourceId": finding.order_ref,
    }
    suggestions = []
    if finding.replacement is not None:
        replacement_name = _medication_name(finding.replacement)
        dosage = finding.replacement.get("dosageInstruction") or [{}]
        how = dosage[0].get("text") if isinstance(dosage[0], dict) else None
        label = f"{replacement_name}: {how}" if how else f"Order {replacement_name} instead"
        suggestions.append(
            _suggestion(
                label,
                [
                    remove,
                    {
                        "type": "create",
                        "description": replacement_name,
                        "resource": finding.replacement,
                    },
                ],
            )
        )
    suggestions.append(_suggestion(f"Remove {name} from the order", [remove]))
    return suggestions


def _medication_name(resource: dict) -> str:
    concept = resource.get("medicationCodeableConcept")
    if isinstance(concept, dict):
        if isinstance(concept.get("text"), str):
            return concept["text"]
        for coding in concept.get("coding", []):
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                return coding["display"]
    return "this medication"


def detected_issue(finding: SafetyFinding, ctx: CardContext) -> dict:
    """The FHIR DetectedIssue kept for a medication-safety finding."""
    code, display = FINDING_CODES[finding.kind]
    implicated = [finding.order_ref, *finding.involved]
    issue = {
        "resourceType": "DetectedIssue",
        "id": str(uuid.uuid4()),
        "status": "preliminary",  # raised on a draft: final once the order is signed or dropped
        "code": {"coding": [_coding(code, display, ACT_CODE)], "text": finding.summary},
        "severity": DETECTED_SEVERITY[finding.severity],
        "patient": {"reference": f"Patient/{ctx.patient_id}"},
        "identifiedDateTime": ctx.now.isoformat(),
        "implicated": [{"reference": ref} for ref in implicated if "/" in ref][:20],
        "detail": finding.detail[:4000],
    }
    reference = next((c.url for c in finding.evidence if c.url), None)
    if reference:
        issue["reference"] = reference
    return issue


def notice_card(summary: str, detail: str, ctx: CardContext) -> IssuedCard:
    """An information card about careloop itself (e.g. a check it could not run)."""
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": short(summary),
        "indicator": "info",
        "detail": detail,
        "source": {"label": "careloop", "url": ctx.knowledge_url},
    }
    return IssuedCard(
        card=card, key="notice", model_version=None, playbook=None, record=None, used=()
    )
