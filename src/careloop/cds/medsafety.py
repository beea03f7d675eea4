"""Medication safety checks for draft orders (CDS Hooks order-select / order-sign).

Each draft MedicationRequest is checked against the patient's active medications, allergies
and kidney function: drug-drug interactions (ONC lists), allergy conflicts (same drug or a
cross-reacting class), duplicate therapy (same ingredient or same class) and renal dosing
(latest eGFR). The checks are pure functions over plain FHIR dicts; the CDS service turns the
findings into cards. A finding's `key` is stable across calls so repeated hooks can be
de-duplicated and overrides remembered.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from careloop.cds.evidence import Citation
from careloop.cds.interactions import (
    HIGH_PRIORITY,
    Guidance,
    Interaction,
    InteractionIndex,
    guidance_for,
    load_guidance,
)
from careloop.cds.medications import (
    KNOWLEDGE_DIR,
    RXNORM,
    SEVERITIES,
    DrugVocabulary,
    KnowledgeFileError,
    allergy_is_current,
    line_of,
    load_knowledge_yaml,
    require_mapping,
    require_severity,
    require_text,
)
from careloop.cds.renal import DEFAULT_MAX_AGE, EgfrReading, latest_egfr

__all__ = [
    "Citation",
    "MedicationContext",
    "RenalRule",
    "RenalThreshold",
    "SafetyFinding",
    "SafetyKnowledge",
    "check_orders",
]

SUMMARY_LIMIT = 140
_ACTIVE_REQUEST = frozenset({"active", "on-hold"})
_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}
_BENEFIT = ("benefit-outweighs-risk", "Benefit outweighs risk")
_MONITOR = ("will-monitor", "Will monitor the patient")
_TOLERATED = ("patient-tolerated-before", "Patient has tolerated this before")
_NOT_CURRENT = ("not-current", "Medication list is out of date")
_OVERRIDES = {
    "interaction": (_BENEFIT, _MONITOR, _TOLERATED, _NOT_CURRENT),
    "allergy": (
        _TOLERATED,
        ("allergy-evaluated", "Allergy evaluated and ruled out"),
        _BENEFIT,
        ("not-current", "Allergy list is out of date"),
    ),
    "duplicate": (
        ("intentional-overlap", "Intended overlap (switching, tapering or bridging)"),
        _NOT_CURRENT,
        _BENEFIT,
    ),
    "renal": (
        ("dose-adjusted", "Dose already adjusted for kidney function"),
        ("lab-not-current", "eGFR does not reflect current kidney function"),
        _BENEFIT,
        _MONITOR,
    ),
}


@dataclass(frozen=True)
class SafetyFinding:
    kind: str  # "interaction" | "allergy" | "duplicate" | "renal"
    key: str  # stable, e.g. "interaction:clarithromycin+simvastatin" (sorted)
    severity: str  # "info" | "warning" | "critical"
    summary: str  # < 140 characters, no patient identifiers
    detail: str  # GitHub-flavoured markdown: what, why (this patient's values), what to consider
    order_ref: str  # "MedicationRequest/<draft id>"
    involved: tuple[str, ...]  # references of active meds / allergies / the eGFR observation
    evidence: tuple[Citation, ...]
    alternatives: tuple[str, ...]  # options considered, plain text
    replacement: dict | None  # a MedicationRequest to propose instead, or None
    override_reasons: tuple[tuple[str, str], ...]  # (code, display)


@dataclass(frozen=True)
class MedicationContext:
    active_medications: Sequence[Mapping[str, Any]] = ()  # MedicationRequest/-Statement
    allergies: Sequence[Mapping[str, Any]] = ()  # AllergyIntolerance
    observations: Sequence[Mapping[str, Any]] = ()  # labs (eGFR, creatinine)
    patient: Mapping[str, Any] | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    referenced: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # Medications
    egfr_max_age: timedelta = DEFAULT_MAX_AGE


@dataclass(frozen=True)
class RenalThreshold:
    below: float  # applies when eGFR < below
    severity: str
    advice: str
    adjusted_dose: str | None = None
    continuing: tuple[str, str] | None = None  # (severity, advice) for a renewal


@dataclass(frozen=True)
class RenalRule:
    subject: str  # ingredient or class key
    thresholds: tuple[RenalThreshold, ...]  # lowest `below` first
    citations: tuple[Citation, ...]

    def threshold_for(self, reading: EgfrReading) -> RenalThreshold | None:
        """The strictest band the reading falls in; a ">60" reading is only a lower bound."""
        for threshold in self.thresholds:
            if _below(reading, threshold.below):
                return threshold
        return None


def _below(reading: EgfrReading, limit: float) -> bool:
    if reading.comparator in (">", ">="):
        return False  # the true value could be anywhere above; no band can be claimed
    return reading.value < limit or (reading.comparator in ("<", "<=") and reading.value <= limit)


@dataclass(frozen=True)
class SafetyKnowledge:
    vocabulary: DrugVocabulary
    interactions: InteractionIndex | None  # None when no DDI directory is configured
    guidance: tuple[Guidance, ...]
    renal_rules: Mapping[str, RenalRule]

    @property
    def interactions_loaded(self) -> bool:
        return self.interactions is not None

    @classmethod
    def load(cls, ddi_dir: Path | None, knowledge_dir: Path = KNOWLEDGE_DIR) -> SafetyKnowledge:
        """Load once at start-up; raises KnowledgeFileError (a ValueError) naming file and line."""
        vocabulary = DrugVocabulary.load(knowledge_dir / "drug_classes.yaml")
        return cls(
            vocabulary=vocabulary,
            interactions=InteractionIndex.load(ddi_dir, vocabulary) if ddi_dir else None,
            guidance=load_guidance(knowledge_dir / "interaction_guidance.yaml"),
            renal_rules=load_renal_rules(knowledge_dir / "renal_dosing.yaml", vocabulary),
        )

    def renal_rules_for(self, ingredient: str) -> list[RenalRule]:
        subjects = [ingredient, *sorted(self.vocabulary.drug_classes(ingredient))]
        return [self.renal_rules[s] for s in subjects if s in self.renal_rules]


# ---------------------------------------------------------------------------------------------
# Loading renal rules


def load_renal_rules(path: Path, vocabulary: DrugVocabulary) -> dict[str, RenalRule]:
    data = load_knowledge_yaml(path)
    source = path.name
    rules = require_mapping(data.get("rules"), "rules", source, data)
    loaded = {}
    for subject, node in rules.items():
        body = require_mapping(node, f"rule {subject!r}", source, rules)
        key = subject if subject in vocabulary.classes else vocabulary.normalise(str(subject))
        if not key:
            raise KnowledgeFileError(f"{source} line {line_of(body)}: {subject!r} is not a drug")
        loaded[key] = RenalRule(
            subject=key,
            thresholds=_thresholds(body.get("thresholds"), source, body),
            citations=_citations(body.get("citations"), source, body),
        )
    return loaded


def _thresholds(node: object, source: str, parent: object) -> tuple[RenalThreshold, ...]:
    if not isinstance(node, list) or not node:
        raise KnowledgeFileError(f"{source} line {line_of(parent)}: thresholds must be a list")
    thresholds = [_threshold(item, source, node) for item in node]
    return tuple(sorted(thresholds, key=lambda t: t.below))


def _threshold(node: object, source: str, parent: object) -> RenalThreshold:
    entry = require_mapping(node, "a threshold", source, parent)
    below = entry.get("below")
    if isinstance(below, bool) or not isinstance(below, int | float) or not 0 < below <= 200:
        raise KnowledgeFileError(
            f"{source} line {line_of(entry)}: below must be an eGFR between 0 and 200"
        )
    dose = entry.get("adjusted_dose")
    if dose is not None:
        dose = _prose(require_text(dose, "adjusted_dose", source, entry))
    return RenalThreshold(
        below=float(below),
        severity=require_severity(entry.get("severity"), "severity", source, entry),
        advice=_prose(require_text(entry.get("advice"), "advice", source, entry)),
        adjusted_dose=dose,
        continuing=_continuing(entry.get("when_continuing"), source, entry),
    )


def _continuing(node: object, source: str, parent: object) -> tuple[str, str] | None:
    if node is None:
        return None
    entry = require_mapping(node, "when_continuing", source, parent)
    return (
        require_severity(entry.get("severity"), "when_continuing severity", source, entry),
        _prose(require_text(entry.get("advice"), "when_continuing advice", source, entry)),
    )


def _citations(node: object, source: str, parent: object) -> tuple[Citation, ...]:
    if not isinstance(node, list) or not node:
        raise KnowledgeFileError(f"{source} line {line_of(parent)}: citations must be a list")
    citations = []
    for item in node:
        entry = require_mapping(item, "a citation", source, node)
        url = entry.get("url")
        if url is not None and not (isinstance(url, str) and url.startswith("https://")):
            raise KnowledgeFileError(f"{source} line {line_of(entry)}: url must be https://")
        citations.append(
            Citation(_prose(require_text(entry.get("title"), "title", source, entry)), url)
        )
    return tuple(citations)


def _prose(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# The checks


@dataclass(frozen=True)
class _Med:
    """A medication with what the checks need: reference, name shown, ingredients, classes."""

    reference: str
    name: str
    ingredients: frozenset[str]
    resource: Mapping[str, Any]


def check_orders(
    draft_orders: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    context: MedicationContext,
    knowledge: SafetyKnowledge,
) -> list[SafetyFinding]:
    """Findings for every draft MedicationRequest, most severe first within each draft.

    `draft_orders` is the hook's `draftOrders` Bundle or a list of resources; resources other
    than MedicationRequest are ignored. Raises ValueError for an entry that is not a resource.
    """
    resources = _draft_resources(draft_orders)
    drafts = [_med(r, f"draft-{i}", knowledge) for i, r in enumerate(resources)]
    draft_ids = {_identity(r) for r in resources} - {None}
    active = [
        _med(r, str(i), knowledge)
        for i, r in enumerate(context.active_medications)
        if isinstance(r, Mapping) and _is_active(r) and _identity(r) not in draft_ids
    ]
    reading = latest_egfr(context.observations, context.patient, context.now, context.egfr_max_age)
    findings: list[SafetyFinding] = []
    for index, draft in enumerate(drafts):
        per_draft = [
            *_interaction_findings(draft, active, drafts[:index], knowledge),
            *_allergy_findings(draft, context.allergies, knowledge),
            *_duplicate_findings(draft, active, knowledge),
            *_renal_findings(draft, active, reading, knowledge),
        ]
        findings.extend(sorted(per_draft, key=lambda f: (-_RANK[f.severity], f.kind, f.key)))
    return findings


def _draft_resources(
    draft_orders: Mapping[str, Any] | Iterable[Mapping[str, Any]],
) -> list[Mapping[str, Any]]:
    if isinstance(draft_orders, Mapping):
        if draft_orders.get("resourceType") != "Bundle":
            return _only_requests([draft_orders])
        entries = draft_orders.get("entry") or []
        if not isinstance(entries, list):
            raise ValueError("draftOrders.entry must be a list")
        resources = []
        for number, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("resource"), Mapping):
                raise ValueError(f"draftOrders.entry[{number}] has no resource")
            resources.append(entry["resource"])
        return _only_requests(resources)
    return _only_requests(list(draft_orders))


def _only_requests(resources: list[object]) -> list[Mapping[str, Any]]:
    for number, resource in enumerate(resources):
        if not isinstance(resource, Mapping):
            raise ValueError(f"draft order {number} is not a FHIR resource")
    return [r for r in resources if r.get("resourceType") == "MedicationRequest"]  # type: ignore[union-attr]


def _is_active(resource: Mapping[str, Any]) -> bool:
    kind, status = resource.get("resourceType"), resource.get("status")
    if kind == "MedicationRequest":
        return status in _ACTIVE_REQUEST
    return kind == "MedicationStatement" and status == "active"


def _identity(resource: Mapping[str, Any]) -> tuple[str, str] | None:
    """(type, id) of a resource that has an id; the draft itself may be on the active list."""
    identifier = resource.get("id")
    if not isinstance(identifier, str) or not identifier:
        return None
    return str(resource.get("resourceType")), identifier


def _reference(resource: Mapping[str, Any], stand_in: str) -> str:
    """Type/id, or Type/#stand-in for a resource without an id, so it stays distinct."""
    identity = _identity(resource)
    kind = resource.get("resourceType") or "Resource"
    return f"{identity[0]}/{identity[1]}" if identity else f"{kind}/#{stand_in}"


def _med(resource: Mapping[str, Any], stand_in: str, knowledge: SafetyKnowledge) -> _Med:
    ingredients = knowledge.vocabulary.medication_ingredients(resource)
    reference = _reference(resource, stand_in)
    return _Med(reference, _display(resource, ingredients), ingredients, resource)


def _display(resource: Mapping[str, Any], ingredients: frozenset[str]) -> str:
    concept = resource.get("medicationCodeableConcept")
    if isinstance(concept, Mapping):
        codings = concept.get("coding") if isinstance(concept.get("coding"), list) else []
        for coding in codings:
            rxnorm = isinstance(coding, Mapping) and coding.get("system") == RXNORM
            if rxnorm and isinstance(coding.get("display"), str):
                return coding["display"]
        if isinstance(concept.get("text"), str):
            return concept["text"]
    return " / ".join(sorted(ingredients)) or "unnamed medication"


def _finding(kind: str, draft: _Med, **fields: Any) -> SafetyFinding:
    return SafetyFinding(
        kind=kind,
        order_ref=draft.reference,
        override_reasons=_OVERRIDES[kind],
        summary=_shorten(fields.pop("summary")),
        replacement=fields.pop("replacement", None),
        **fields,
    )


def _shorten(text: str) -> str:
    return text if len(text) < SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 2].rstrip() + "…"


# --- interactions -----------------------------------------------------------------------------


def _interaction_findings(
    draft: _Med, active: list[_Med], earlier_drafts: list[_Med], knowledge: SafetyKnowledge
) -> list[SafetyFinding]:
    """Interactions with active medications and with drafts listed before this one (so a
    pair of drafts is reported once); never between ingredients of the same order."""
    if knowledge.interactions is None:
        return []
    hits: dict[str, tuple[Interaction, list[_Med]]] = {}
    for other in [*active, *earlier_drafts]:
        for interaction in knowledge.interactions.between(draft.ingredients, other.ingredients):
            hits.setdefault(interaction.key, (interaction, []))[1].append(other)
    return [
        _interaction_finding(draft, interaction, others, knowledge)
        for interaction, others in hits.values()
    ]


def _interaction_finding(
    draft: _Med, interaction: Interaction, others: list[_Med], knowledge: SafetyKnowledge
) -> SafetyFinding:
    guidance = guidance_for(interaction, knowledge.guidance)
    first, second = (d.capitalize() for d in interaction.drugs)
    high = interaction.list_name == HIGH_PRIORITY
    label = "high-priority interaction" if high else "interaction (usually non-interruptive)"
    summary = f"{first} + {second.lower()}: {label}"
    if guidance:
        summary += f" ({guidance.risk})"
    return _finding(
        "interaction",
        draft,
        key=f"interaction:{interaction.key}",
        severity=interaction.severity,
        summary=summary,
        detail=_interaction_detail(draft, interaction, others, guidance),
        involved=tuple(o.reference for o in others),
        evidence=guidance.citations if guidance else (interaction.citation,),
        alternatives=guidance.alternatives if guidance else (),
    )


def _interaction_detail(
    draft: _Med, interaction: Interaction, others: list[_Med], guidance: Guidance | None
) -> str:
    where = ", ".join(f"{o.name} (`{o.reference}`)" for o in others)
    classes = " and ".join(
        f"{drug} ({label})" if label else drug
        for drug, label in zip(interaction.drugs, interaction.classes, strict=True)
    )
    group = f", group {interaction.group}" if interaction.group else ""
    lines = [
        f"**What:** the order for {draft.name} meets {where}.",
        f"**Why:** {classes} are a pair on the {interaction.list_name} list{group}.",
    ]
    if guidance:
        lines += [f"**Risk:** {guidance.consequence}", f"**Consider:** {guidance.management}"]
    elif interaction.list_name == HIGH_PRIORITY:
        lines.append(
            "**Consider:** this pair is on the list of interactions serious enough to interrupt "
            "ordering; avoid the combination unless the benefit clearly outweighs the risk, "
            "and review the product labels."
        )
    else:
        lines.append(
            "**Consider:** an expert panel judged this interaction manageable without "
            "interrupting the prescriber; monitor as the product labels advise."
        )
    return "\n\n".join(lines)


# --- allergies --------------------------------------------------------------------------------


def _allergy_findings(
    draft: _Med, allergies: Sequence[Mapping[str, Any]], knowledge: SafetyKnowledge
) -> list[SafetyFinding]:
    """One finding per ingredient of the draft that conflicts with a current allergy."""
    vocabulary = knowledge.vocabulary
    conflicts: dict[str, list[tuple[str, str, str]]] = {}  # ingredient -> (severity, why, ref)
    for index, allergy in enumerate(allergies):
        if not isinstance(allergy, Mapping) or not allergy_is_current(allergy):
            continue
        substances = vocabulary.allergy_classes(allergy)
        reference = _reference(allergy, str(index))
        recorded = _allergy_facts(allergy)
        for ingredient in sorted(draft.ingredients):
            for severity, why in _allergy_matches(ingredient, substances, vocabulary):
                conflicts.setdefault(ingredient, []).append((severity, why + recorded, reference))
    return [_allergy_finding(draft, ing, hits) for ing, hits in sorted(conflicts.items())]


def _allergy_matches(
    ingredient: str, substances: frozenset[str], vocabulary: DrugVocabulary
) -> list[tuple[str, str]]:
    if ingredient in substances:
        return [("critical", f"The patient has a recorded allergy to {ingredient}.")]
    classes = vocabulary.drug_classes(ingredient)
    return [
        (rule.severity, _class_reason(ingredient, rule.allergy_class, rule.note, vocabulary))
        for rule in vocabulary.cross_reactivity
        if rule.allergy_class in substances and rule.order_class in classes
    ]


def _class_reason(
    ingredient: str, allergy_class: str, note: str, vocabulary: DrugVocabulary
) -> str:
    display = vocabulary.classes[allergy_class].display.lower()
    if allergy_class in vocabulary.drug_classes(ingredient):
        return f"Recorded allergy to {display}, and {ingredient} is one of them. {note}"
    return f"Recorded allergy to {display}; {ingredient} may cross-react. {note}"


def _allergy_facts(allergy: Mapping[str, Any]) -> str:
    """What the record says about the reaction: criticality and manifestations, when given."""
    facts = []
    if isinstance(allergy.get("criticality"), str):
        facts.append(f"criticality {allergy['criticality']}")
    reactions = allergy.get("reaction") if isinstance(allergy.get("reaction"), list) else []
    for reaction in reactions:
        manifestations = reaction.get("manifestation") if isinstance(reaction, Mapping) else None
        for concept in manifestations if isinstance(manifestations, list) else []:
            text = _concept_text(concept)
            if text:
                facts.append(f"reaction: {text}")
    return f" Recorded: {'; '.join(facts)}." if facts else ""


def _concept_text(concept: object) -> str | None:
    """A CodeableConcept's text, else its first coding's display."""
    if not isinstance(concept, Mapping):
        return None
    if isinstance(concept.get("text"), str):
        return concept["text"]
    codings = concept.get("coding")
    first = codings[0] if isinstance(codings, list) and codings else None
    display = first.get("display") if isinstance(first, Mapping) else None
    return display if isinstance(display, str) else None


def _allergy_finding(
    draft: _Med, ingredient: str, hits: list[tuple[str, str, str]]
) -> SafetyFinding:
    severity = max((h[0] for h in hits), key=_RANK.__getitem__)
    reasons = list(dict.fromkeys(h[1] for h in hits))
    wording = {
        "critical": "conflicts with",
        "warning": "may cross-react with",
        "info": "is related to",
    }
    return _finding(
        "allergy",
        draft,
        key=f"allergy:{ingredient}",
        severity=severity,
        summary=f"{ingredient.capitalize()} {wording[severity]} a recorded drug allergy",
        detail="\n\n".join(
            [f"**What:** the order for {draft.name} contains {ingredient}."]
            + [f"**Why:** {reason}" for reason in reasons]
            + [
                "**Consider:** review the original reaction (type, severity, date) with the "
                "patient."
            ]
        ),
        involved=tuple(dict.fromkeys(h[2] for h in hits)),
        evidence=(_ALLERGY_CITATION,),
        alternatives=(
            "A drug from an unrelated class",
            "Allergy evaluation (skin test or graded challenge)",
        ),
    )


_ALLERGY_CITATION = Citation(
    "Khan DA, et al. Drug allergy: a 2022 practice parameter update. "
    "J Allergy Clin Immunol 2022;150(6):1333-1393",
    "https://doi.org/10.1016/j.jaci.2022.08.028",
)


# --- duplicate therapy ------------------------------------------------------------------------


def _duplicate_findings(
    draft: _Med, active: list[_Med], knowledge: SafetyKnowledge
) -> list[SafetyFinding]:
    """Same ingredient as an active medication, or another member of a duplicate class."""
    by_key: dict[str, tuple[str, list[_Med]]] = {}
    for other in active:
        for key, what in _duplicates(draft.ingredients, other.ingredients, knowledge.vocabulary):
            by_key.setdefault(key, (what, []))[1].append(other)
    return [
        _duplicate_finding(draft, key, what, others)
        for key, (what, others) in sorted(by_key.items())
    ]


def _duplicates(
    mine: frozenset[str], theirs: frozenset[str], vocabulary: DrugVocabulary
) -> list[tuple[str, str]]:
    shared = mine & theirs
    found = [
        (f"duplicate:{ingredient}", f"the same ingredient, {ingredient}")
        for ingredient in sorted(shared)
    ]
    for ingredient in sorted(mine - shared):
        for class_key in sorted(vocabulary.drug_classes(ingredient)):
            drug_class = vocabulary.classes[class_key]
            if drug_class.duplicate_therapy and (theirs - shared) & drug_class.members:
                found.append(
                    (f"duplicate:{class_key}", f"two drugs of one class, {drug_class.display}")
                )
    return found


def _duplicate_finding(draft: _Med, key: str, what: str, others: list[_Med]) -> SafetyFinding:
    where = ", ".join(f"{o.name} (`{o.reference}`)" for o in others)
    return _finding(
        "duplicate",
        draft,
        key=key,
        severity="warning",
        summary=f"Possible duplicate therapy: {what}",
        detail=(
            f"**What:** the order for {draft.name} and the active {where} give {what}.\n\n"
            "**Why:** two drugs with the same action add up to a higher dose and more side "
            "effects without more benefit, unless the overlap is a planned switch or bridge.\n\n"
            "**Consider:** stopping the active medication if this order replaces it."
        ),
        involved=tuple(o.reference for o in others),
        evidence=(_DUPLICATE_CITATION,),
        alternatives=("Discontinue the active medication", "Keep one agent at an adjusted dose"),
    )


# The classes come from careloop's reviewed drug_classes.yaml, built on the ATC classification.
_DUPLICATE_CITATION = Citation(
    "WHO Collaborating Centre for Drug Statistics Methodology, ATC/DDD Index",
    "https://atcddd.fhi.no/atc_ddd_index/",
)


# --- renal dosing -----------------------------------------------------------------------------


def _renal_findings(
    draft: _Med, active: list[_Med], reading: EgfrReading | None, knowledge: SafetyKnowledge
) -> list[SafetyFinding]:
    if reading is None:
        return []
    taking = frozenset().union(*(o.ingredients for o in active)) if active else frozenset()
    findings = []
    for ingredient in sorted(draft.ingredients):
        for rule in knowledge.renal_rules_for(ingredient):
            threshold = rule.threshold_for(reading)
            if threshold is not None:
                findings.append(
                    _renal_finding(
                        draft, ingredient, rule, threshold, reading, ingredient in taking
                    )
                )
    return findings


def _renal_finding(
    draft: _Med,
    ingredient: str,
    rule: RenalRule,
    threshold: RenalThreshold,
    reading: EgfrReading,
    continuing: bool,
) -> SafetyFinding:
    severity, advice = threshold.severity, threshold.advice
    if continuing and threshold.continuing:
        severity, advice = threshold.continuing
    limit = f"{threshold.below:g}"
    return _finding(
        "renal",
        draft,
        key=f"renal:{ingredient}",
        severity=severity,
        summary=(
            f"{ingredient.capitalize()} with eGFR {reading.comparator or ''}{reading.value:.0f} "
            f"(below {limit}): {_RENAL_ACTION[severity]}"
        ),
        detail="\n\n".join(
            [
                f"**What:** the order for {draft.name} contains {ingredient}.",
                f"**Why:** latest {reading.describe()}, below the limit of {limit}.",
                f"**Consider:** {advice}",
                "_Label limits are often creatinine clearance (Cockcroft-Gault); eGFR is used in "
                "their place. Compute clearance from weight at extremes of body size._",
            ]
        ),
        involved=(reading.reference,) if reading.reference else (),
        evidence=rule.citations,
        alternatives=(threshold.adjusted_dose,) if threshold.adjusted_dose else (),
        replacement=_replacement(draft.resource, threshold.adjusted_dose),
    )


_RENAL_ACTION = {
    "critical": "contraindicated or to be avoided",
    "warning": "adjust the dose or avoid",
    "info": "review the dose",
}


def _replacement(draft: Mapping[str, Any], dose: str | None) -> dict | None:
    """The draft with its dosage replaced by the renally adjusted dose, for the clinician to
    accept or edit. It has no id: the EHR assigns one when it creates the proposed order."""
    if dose is None:
        return None
    proposal = copy.deepcopy(dict(draft))
    proposal.pop("id", None)
    proposal.pop("meta", None)
    proposal["status"] = "draft"
    proposal["dosageInstruction"] = [{"text": f"Renally adjusted: {dose}"}]
    return proposal
