"""careloop's CDS Hooks services: discovery, patient-view, order-select and order-sign.

One call runs: parse and check the request; refuse a hookInstance already answered; gather the
data (prefetch, the EHR's FHIR server, or careloop's store, all through the access layer); decide
(risk and playbooks on patient-view, medication safety when ordering); ration interruptions with
the alert budget; record the call, every card and its FHIR record in one transaction; answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Role
from careloop.cds.budget import AlertBudget
from careloop.cds.cards import CardContext, notice_card, playbook_card, safety_card
from careloop.cds.client_auth import CdsCaller
from careloop.cds.facts import facts_from
from careloop.cds.hooks import CdsRequestError, HookRequest, draft_resources, parse_hook_request
from careloop.cds.ledger import CardLedger, DuplicateHookInstance, HookCall, IssuedCard
from careloop.cds.medsafety import MedicationContext, SafetyKnowledge, check_orders
from careloop.cds.monitoring_cards import monitoring_cards
from careloop.cds.playbooks import PlaybookLibrary, TriggerSignals
from careloop.cds.prefetch import DataGatherer, PatientData, PrefetchKey
from careloop.cds.renal import CREATININE_LOINC, EGFR_LOINC
from careloop.cds.risk import WINDOW_HOURS, CalibrationBins, RiskPicture, assess
from careloop.fhir.indexing import clinical_period, patient_id_of
from careloop.sepsis.model import SepsisModel
from careloop.timeline import TimelineError, build_timeline

PATIENT = PrefetchKey("patient", "Patient/{{context.patientId}}")
MEDICATIONS = PrefetchKey(
    "medications", "MedicationRequest?patient={{context.patientId}}&_count=1000"
)
ALLERGIES = PrefetchKey("allergies", "AllergyIntolerance?patient={{context.patientId}}&_count=1000")
# eGFR (measured or reported) and serum creatinine: the codes renal dosing reads
RENAL_LOINC = tuple(sorted(EGFR_LOINC | CREATININE_LOINC))
RENAL_LABS = PrefetchKey(
    "renal",
    "Observation?patient={{context.patientId}}&code="
    + ",".join(f"http://loinc.org|{code}" for code in RENAL_LOINC)
    + "&_count=1000",
)


def _search(name: str, resource_type: str) -> PrefetchKey:
    return PrefetchKey(name, f"{resource_type}?patient={{{{context.patientId}}}}&_count=1000")


PATIENT_VIEW_KEYS = (
    PATIENT,
    _search("observations", "Observation"),
    _search("conditions", "Condition"),
    ALLERGIES,
    MEDICATIONS,
    _search("orders", "ServiceRequest"),
    _search("procedures", "Procedure"),
    _search("encounters", "Encounter"),
    _search("careplans", "CarePlan"),
    _search("goals", "Goal"),
)
ORDER_KEYS = (PATIENT, MEDICATIONS, ALLERGIES, RENAL_LABS)


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: tuple[PrefetchKey, ...]

    def discovery(self) -> dict:
        return {
            "hook": self.hook,
            "title": self.title,
            "description": self.description,
            "id": self.id,
            "prefetch": {key.name: key.template for key in self.prefetch},
            "usageRequirements": (
                "Register the EHR with `careloop cds-clients register` (its JWT issuer, jku or "
                "JWK Set, and the FHIR servers careloop may query for it)."
            ),
        }


SERVICES = {
    service.id: service
    for service in (
        CdsService(
            "careloop-patient-view",
            "patient-view",
            "careloop: deterioration, sepsis risk and overdue follow-ups",
            "Sepsis risk from careloop's validated model and NEWS2 deterioration, with the next "
            "best actions from reviewed playbooks, personalized to allergies, kidney function, "
            "what is already ordered and goals of care; overdue follow-ups; and live remote "
            "monitoring alerts, each signal against the person's own baseline.",
            PATIENT_VIEW_KEYS,
        ),
        CdsService(
            "careloop-order-select",
            "order-select",
            "careloop: medication safety as orders are chosen",
            "Drug-drug interactions (ONC high-priority and non-interruptive lists), allergy "
            "conflicts, duplicate therapy and renal dosing for the selected draft orders.",
            ORDER_KEYS,
        ),
        CdsService(
            "careloop-order-sign",
            "order-sign",
            "careloop: medication safety before orders are signed",
            "Drug-drug interactions (ONC high-priority and non-interruptive lists), allergy "
            "conflicts, duplicate therapy and renal dosing for every draft order.",
            ORDER_KEYS,
        ),
    )
}


@dataclass
class CdsEngine:
    """Everything a call needs; built once per app."""

    ledger: CardLedger
    gatherer: DataGatherer
    playbooks: PlaybookLibrary
    safety: SafetyKnowledge
    model: SepsisModel | None
    calibration: CalibrationBins
    public_url: str
    budget: AlertBudget = field(default_factory=AlertBudget)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def discovery(self) -> dict:
        return {"services": [service.discovery() for service in SERVICES.values()]}

    def call(self, service_id: str, body: bytes, caller: CdsCaller, source: str) -> dict:
        service = SERVICES.get(service_id)
        if service is None:
            raise CdsRequestError(404, "no such CDS service; GET /cds-services lists them")
        request = parse_hook_request(body, service.hook)
        principal = principal_for(caller, request.user_id)
        ctx = AccessContext(Purpose.TREATMENT, request.hook_instance, source)
        if self.ledger.seen(request.hook_instance):
            raise CdsRequestError(409, "this hookInstance has already been answered")
        _check_drafts(request)
        data = self.gatherer.gather(service.prefetch, request, caller.client, principal, ctx)
        now = self.clock()
        card_ctx = CardContext(
            patient_id=request.patient_id,
            now=now,
            patient_url=f"{self.public_url}/app/patients/{request.patient_id}",
            model_card_url=f"{self.public_url}/models/sepsis/card",
            knowledge_url=f"{self.public_url}/knowledge/cds",
        )
        if service.hook == "patient-view":
            cards = self._patient_view(data, card_ctx, principal, ctx)
        else:
            cards = self._medication_safety(request, data, card_ctx)
        recent = self.ledger.recent(request.patient_id, now - timedelta(hours=24))
        cards = self.budget.apply(
            cards, recent, now, repeats_interrupt=service.hook != "patient-view"
        )
        call = HookCall(
            hook_instance=request.hook_instance,
            service_id=service.id,
            issuer=caller.client.issuer,
            patient_id=request.patient_id,
            received_at=now,
            unit=unit_of(data, request.encounter_id),
        )
        try:
            self.ledger.record(call, cards, principal, ctx)
        except DuplicateHookInstance:
            raise CdsRequestError(409, "this hookInstance has already been answered") from None
        return {"cards": [issued.card for issued in cards]}

    def _patient_view(
        self, data: PatientData, ctx: CardContext, principal: Principal, access: AccessContext
    ) -> list[IssuedCard]:
        resources = data.resources()
        try:
            timeline = build_timeline(data.patient_id, resources)
        except TimelineError as exc:
            raise CdsRequestError(400, f"the patient's data cannot be read: {exc}") from None
        picture = assess(timeline, self.model, self.calibration)
        signals = TriggerSignals(sepsis_alert=picture.sepsis_alert, news2=picture.news2)
        facts = facts_from(data.patient_id, resources, ctx.now)
        used = _observations_used(data, picture)
        cards = [
            playbook_card(plan, picture, ctx, used)
            for plan in self.playbooks.plans(signals, facts, ctx.now)
        ]
        # home-monitoring alerts live in careloop's store whatever the EHR sent
        monitoring = monitoring_cards(self.gatherer.access, principal, access, ctx, self.public_url)
        return cards + monitoring

    def _medication_safety(
        self, request: HookRequest, data: PatientData, ctx: CardContext
    ) -> list[IssuedCard]:
        drafts = draft_resources(request)
        draft_ids = {(d["resourceType"], d["id"]) for d in drafts}
        active = [
            m
            for m in data.by_key.get("medications", [])
            if (m.get("resourceType"), m.get("id")) not in draft_ids
        ]
        context = MedicationContext(
            active_medications=active,
            allergies=data.by_key.get("allergies", []),
            observations=data.by_key.get("renal", []),
            patient=data.patient,
            now=ctx.now,
        )
        findings = check_orders(drafts, context, self.safety)
        if request.hook == "order-select":
            findings = [f for f in findings if f.order_ref in request.selections]
        by_ref = {f"{d['resourceType']}/{d['id']}": d for d in drafts}
        cards = [safety_card(f, by_ref.get(f.order_ref), ctx) for f in findings]
        if not self.safety.interactions_loaded:
            cards.append(
                notice_card(
                    "Drug interactions were not checked: no interaction list is configured",
                    "careloop checked allergies, duplicate therapy and renal dosing, but no "
                    "drug-drug interaction list is installed (set CARELOOP_DDI_DIR).",
                    ctx,
                )
            )
        return cards


def principal_for(caller: CdsCaller, user_id: str | None) -> Principal:
    """The EHR as a principal, acting for the clinician the hook names."""
    acts_for = user_id if user_id and user_id.startswith("Practitioner") else None
    return Principal(
        subject=f"cds:{caller.client.issuer}"[:128],
        kind="client",
        role=Role.EHR,
        fhir_user=acts_for,
    )


def _check_drafts(request: HookRequest) -> None:
    for index, resource in enumerate(draft_resources(request)):
        about = patient_id_of(resource)
        if about is not None and about != request.patient_id:
            raise CdsRequestError(
                400,
                f"context.draftOrders.entry[{index}] is about another patient than "
                "context.patientId",
            )


def _observations_used(data: PatientData, picture: RiskPicture) -> tuple[str, ...]:
    """References of the observations in the scored window (Provenance entities), capped."""
    if picture.as_of is None:
        return ()
    start = picture.as_of - timedelta(hours=WINDOW_HOURS)
    refs = []
    for resource in data.by_key.get("observations", []):
        begins, _ends = clinical_period(resource)
        if begins is not None and start <= begins <= picture.as_of:
            refs.append(f"Observation/{resource.get('id')}")
    return tuple(refs[-200:])


def unit_of(data: PatientData, encounter_id: str | None) -> str | None:
    """The ward or unit of the hook's encounter (else the latest one), for the override report."""
    encounters = data.by_key.get("encounters", [])
    chosen = next((e for e in encounters if e.get("id") == encounter_id), None)
    if chosen is None and encounters:
        chosen = max(encounters, key=lambda e: str((e.get("period") or {}).get("start", "")))
    if chosen is None:
        return None
    for location in chosen.get("location", []) or []:
        display = (location.get("location") or {}).get("display")
        if isinstance(display, str):
            return display[:128]
    for concept in chosen.get("type", []) or []:
        if isinstance(concept, dict) and isinstance(concept.get("text"), str):
            return concept["text"][:128]
    return None
