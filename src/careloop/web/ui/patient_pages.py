"""The clinician's patient page: timeline charts against the person's own baseline band, the
CDS cards of opening the chart with their rationale, confidence and alternatives, and the next
best actions to accept or override with a reason.

- **Who.** Care roles only (clinician, nurse, pharmacist, care coordinator): a patient holds
  the patient-read right too, for their own record, but this page is the care team's. The record
  is read through the access layer as the signed-in person (role, purpose, consent, audited);
  what the patient's consent withholds is not shown, only counted.
- **Cards.** Opening the page is opening the chart: careloop's own CDS Hooks engine is called
  in-process with `patient-view`, as an EHR would, by a client registered for the purpose
  (`WEB_PAGES_ISSUER`, public key only, its private half discarded so nobody can call over HTTP
  as it), with `context.userId` the signed-in person, so the cards are recorded in the ledger,
  budgeted and attributed to them like any other.
- **Feedback.** Accept (some of the suggestions) or override (a reason the card offered, an
  optional comment) goes to `FeedbackBook.submit`, the same loop as CDS Hooks feedback, checked
  against the card; roles without the patient-write right see the cards without the forms.
- **Text.** A card's detail is markdown; it is read into paragraphs, lists, bold and links and
  every piece is escaped by the template. Only careloop's own links stay links. Free text (an
  override comment) is shown escaped.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse
from jwt.algorithms import ECAlgorithm
from sqlalchemy import select

from careloop.access.errors import AccessDenied
from careloop.access.roles import Permission, allows
from careloop.cds.client_auth import CdsCaller, CdsClient, CdsClientRegistry
from careloop.cds.feedback import MAX_COMMENT, FeedbackError, parse_feedback
from careloop.cds.hooks import CdsRequestError
from careloop.fhir.structure import FHIR_ID
from careloop.personal_band import chart_series, split_device_data
from careloop.store.schema import cds_cards, cds_feedback
from careloop.timeline import TimelineError, build_timeline
from careloop.web.auth import permission_extra
from careloop.web.ui.charts import Chart, render_chart
from careloop.web.ui.framework import (
    CARE_ROLE_NAMES,
    UI_PREFIX,
    UiCaller,
    UiError,
    redirect,
    render,
    require_care_role,
    ui_caller,
)
from careloop.web.ui.services import UiServices

WEB_PAGES_ISSUER = "https://careloop.invalid/web-pages"
WEB_PAGES_NAME = "careloop web pages (the clinician's patient page)"
PATIENT_VIEW = "careloop-patient-view"
RECORDED_DAYS = 7  # decisions shown on the page: those of the last week
MAX_RECORDED = 20
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SUGGESTION_FIELD = "suggestion-"
INDICATOR_WORDS = {"critical": "Critical", "warning": "Warning", "info": "Information"}
_INLINE = re.compile(r"\*\*(?P<strong>.+?)\*\*|\[(?P<label>[^\]]+)\]\((?P<url>[^)\s]+)\)")
CONFIDENCE_MARKERS = ("How sure", "calibrated probability", "The alert fires from", "NEWS2 ")
ALTERNATIVES_HEADING = "Alternatives considered"


@dataclass(frozen=True)
class Span:
    kind: str  # "text", "strong" or "link"
    text: str
    href: str = ""  # a link's relative URL; "" for text


@dataclass(frozen=True)
class Block:
    kind: str  # "p" or "ul"
    lines: tuple[tuple[Span, ...], ...]  # one line for "p", one per item for "ul"


@dataclass(frozen=True)
class Suggestion:
    uuid: str
    label: str
    recommended: bool
    actions: tuple[str, ...]


@dataclass(frozen=True)
class Reason:
    code: str
    display: str


@dataclass(frozen=True)
class CardView:
    uuid: str
    summary: str
    indicator: str
    indicator_words: str
    source: str
    source_href: str
    detail: tuple[Block, ...]
    confidence: tuple[tuple[Span, ...], ...]
    alternatives: tuple[tuple[Span, ...], ...]
    suggestions: tuple[Suggestion, ...]
    at_most_one: bool
    reasons: tuple[Reason, ...]
    links: tuple[Span, ...]
    monitoring: bool
    recorded: list[str] = field(default_factory=list)  # earlier decisions on the same alert


def own_href(url: object, public_url: str) -> str:
    """The relative URL of a link into careloop, or "" when the link leads elsewhere."""
    if not isinstance(url, str) or not url or any(ch.isspace() for ch in url):
        return ""
    base = public_url.rstrip("/")
    if base and url.startswith(base + "/"):
        url = url[len(base) :]
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not url.startswith("/") or url.startswith("//"):
        return ""
    if "\\" in url:
        return ""
    return url


def spans(text: str, public_url: str) -> tuple[Span, ...]:
    """A line of markdown as text, bold and link spans (external links become text)."""
    out: list[Span] = []
    position = 0
    for match in _INLINE.finditer(text):
        if match.start() > position:
            out.append(Span("text", text[position : match.start()]))
        if match.group("strong") is not None:
            out.append(Span("strong", match.group("strong")))
        else:
            label, url = match.group("label"), match.group("url")
            href = own_href(url, public_url)
            out.append(Span("link", label, href) if href else Span("text", f"{label} ({url})"))
        position = match.end()
    if position < len(text):
        out.append(Span("text", text[position:]))
    return tuple(span for span in out if span.text)


def detail_blocks(markdown: str, public_url: str) -> tuple[Block, ...]:
    """Paragraphs (one per line) and bulleted lists; nothing else of markdown is honoured."""
    blocks: list[Block] = []
    items: list[tuple[Span, ...]] = []
    for raw in markdown.splitlines():
        line = raw.strip()
        if line.startswith(("- ", "* ")):
            items.append(spans(line[2:].strip(), public_url))
            continue
        if items:
            blocks.append(Block("ul", tuple(items)))
            items = []
        if line:
            if len(line) > 2 and line.startswith("_") and line.endswith("_"):
                line = line[1:-1]  # an emphasised note (the alert budget's demotion)
            blocks.append(Block("p", (spans(line, public_url),)))
    if items:
        blocks.append(Block("ul", tuple(items)))
    return tuple(blocks)


def _plain(line: tuple[Span, ...]) -> str:
    return "".join(span.text for span in line)


def confidence_lines(blocks: tuple[Block, ...]) -> tuple[tuple[Span, ...], ...]:
    """The lines of a detail that say how sure the card is (calibrated risk, how sure)."""
    return tuple(
        line
        for block in blocks
        if block.kind == "p"
        for line in block.lines
        if any(marker in _plain(line) for marker in CONFIDENCE_MARKERS)
        or _plain(line).startswith("Sepsis risk")
    )


def alternative_lines(blocks: tuple[Block, ...]) -> tuple[tuple[Span, ...], ...]:
    """The list that follows the detail's 'Alternatives considered' heading."""
    for index, block in enumerate(blocks[:-1]):
        if block.kind == "p" and _plain(block.lines[0]).startswith(ALTERNATIVES_HEADING):
            following = blocks[index + 1]
            return following.lines if following.kind == "ul" else ()
    return ()


def card_view(card: dict, public_url: str, current_path: str) -> CardView:
    """What the template shows of one card (see the module docstring)."""
    detail = detail_blocks(str(card.get("detail") or ""), public_url)
    source = card.get("source") if isinstance(card.get("source"), dict) else {}
    indicator = str(card.get("indicator") or "info")
    suggestions = tuple(
        Suggestion(
            uuid=str(s.get("uuid", "")),
            label=str(s.get("label", "")),
            recommended=bool(s.get("isRecommended")),
            actions=tuple(
                str(a.get("description", ""))
                for a in s.get("actions") or []
                if isinstance(a, dict) and a.get("description")
            ),
        )
        for s in card.get("suggestions") or []
        if isinstance(s, dict) and s.get("uuid")
    )
    reasons = tuple(
        Reason(str(r.get("code")), str(r.get("display") or r.get("code")))
        for r in card.get("overrideReasons") or []
        if isinstance(r, dict) and r.get("code")
    )
    links: list[Span] = []
    for link in card.get("links") or []:
        if not isinstance(link, dict):
            continue
        href = own_href(link.get("url"), public_url)
        label = str(link.get("label") or "link")
        if href == current_path:
            continue  # "open the patient in careloop": this page
        links.append(Span("link", label, href) if href else Span("text", label))
    topic = source.get("topic") if isinstance(source.get("topic"), dict) else {}
    return CardView(
        uuid=str(card.get("uuid", "")),
        summary=str(card.get("summary", "")),
        indicator=indicator if indicator in INDICATOR_WORDS else "info",
        indicator_words=INDICATOR_WORDS.get(indicator, "Information"),
        source=str(source.get("label") or "careloop"),
        source_href=own_href(source.get("url"), public_url),
        detail=detail,
        confidence=confidence_lines(detail),
        alternatives=alternative_lines(detail),
        suggestions=suggestions,
        at_most_one=card.get("selectionBehavior") == "at-most-one",
        reasons=reasons,
        links=tuple(links),
        monitoring=topic.get("code") == "remote-monitoring",
    )


# -- the web pages' CDS client -----------------------------------------------------------------


class WebPagesClient:
    """careloop's web pages as a registered CDS client: registered once, with the public half of
    a key whose private half is thrown away at once (as the demo EHR), so its cards are issued,
    recorded and answered like an EHR's while nobody can call over HTTP in its name."""

    def __init__(self, registry: CdsClientRegistry) -> None:
        self.registry = registry
        self._client: CdsClient | None = None
        self._lock = threading.Lock()

    def client(self) -> CdsClient:
        with self._lock:
            if self._client is None:
                self._client = self.registry.get(WEB_PAGES_ISSUER) or self._register()
            return self._client

    def _register(self) -> CdsClient:
        public = ECAlgorithm.to_jwk(
            ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True
        )
        public.update({"kid": "web-pages", "alg": "ES384"})
        try:
            return self.registry.register(WEB_PAGES_ISSUER, WEB_PAGES_NAME, jwks={"keys": [public]})
        except ValueError:  # registered meanwhile by another process
            client = self.registry.get(WEB_PAGES_ISSUER)
            if client is None:
                raise
            return client

    def caller(self, subject: str) -> CdsCaller:
        return CdsCaller(
            client=self.client(),
            subject=subject[:255],
            jti=uuid.uuid4().hex,
            tenant=None,
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )


# -- what the page reads ------------------------------------------------------------------------


@dataclass
class PatientRecord:
    name: str
    birth_date: str
    gender: str
    charts: list[Chart]
    single: list[tuple[str, str]]  # signals with one reading in their window: (name, sentence)
    withheld: int
    unreadable: str  # why the record could not be charted, or ""


@dataclass(frozen=True)
class Recorded:
    card_uuid: str
    key: str
    at: datetime
    outcome: str
    accepted: tuple[str, ...]
    reason: str | None
    comment: str | None
    suggestion_ids: tuple[str, ...]


@dataclass
class CardsResult:
    cards: list[CardView] = field(default_factory=list)
    problem: str = ""


def check_patient_id(patient_id: str) -> None:
    if not FHIR_ID.match(patient_id):
        raise UiError(
            400,
            "Not a patient id",
            "A patient id is 1 to 64 letters, digits, '-' and '.'; check the address.",
        )


def read_record(services: UiServices, caller: UiCaller, patient_id: str) -> PatientRecord:
    """The patient's record as this person may see it; UiError 403/404 otherwise."""
    try:
        release = services.security.access.patient_compartment(
            caller.principal,
            caller.ctx,
            patient_id,
            resource_types=("Patient", "Observation"),
        )
    except AccessDenied:
        raise _denied() from None
    bodies = [item.body for item in release.resources]
    patient = next((b for b in bodies if b.get("resourceType") == "Patient"), None)
    if patient is None:
        if release.withheld:
            raise _denied()
        raise UiError(404, "No such patient", "careloop has no patient with this id.")
    record = PatientRecord(
        name=_name(patient),
        birth_date=str(patient.get("birthDate") or "not recorded"),
        gender=str(patient.get("gender") or "not recorded"),
        charts=[],
        single=[],
        withheld=release.withheld,
        unreadable="",
    )
    clinical, device = split_device_data(bodies)
    try:
        every = chart_series(
            build_timeline(patient_id, clinical), build_timeline(patient_id, device)
        )
    except TimelineError:
        record.unreadable = "Some observations could not be read, so no charts are drawn."
        return record
    for series in every:
        if len(series.points) > 1:
            record.charts.append(render_chart(series))
        else:
            record.single.append((series.signal.name, render_chart(series).summary))
    return record


def _denied() -> UiError:
    return UiError(
        403,
        "Not available to you",
        "You may not see this patient's record: the patient's consent, or your role, does not "
        "allow it. The attempt is recorded in the audit trail.",
    )


def _name(patient: dict) -> str:
    for name in patient.get("name") or []:
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return str(name["text"])
        given = " ".join(str(g) for g in name.get("given") or [])
        text = f"{given} {name.get('family') or ''}".strip()
        if text:
            return text
    return "Name not recorded"


def open_chart_cards(
    services: UiServices, client: WebPagesClient, caller: UiCaller, patient_id: str, path: str
) -> CardsResult:
    """The patient-view cards, asked of the engine as an EHR opening the chart would."""
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": caller.principal.fhir_user or "", "patientId": patient_id},
    }
    if not body["context"]["userId"]:
        del body["context"]["userId"]
    try:
        answer = services.cds.call(
            PATIENT_VIEW,
            orjson.dumps(body),
            client.caller(caller.principal.subject),
            caller.ctx.source or "web-pages",
        )
    except CdsRequestError as exc:
        return CardsResult(problem=f"careloop could not make its cards: {exc}")
    except AccessDenied:
        return CardsResult(problem="The patient's consent withholds the data the cards need.")
    public = services.cds.public_url
    return CardsResult(cards=[card_view(card, public, path) for card in answer["cards"]])


def recorded_decisions(services: UiServices, patient_id: str, now: datetime) -> list[Recorded]:
    """Decisions recorded on this patient's cards from the web pages in the last week, newest
    first (the ledger's bookkeeping, no clinical content; comments are opened separately)."""
    query = (
        select(
            cds_feedback.c.card_uuid,
            cds_feedback.c.outcome_timestamp,
            cds_feedback.c.outcome,
            cds_feedback.c.accepted_suggestions,
            cds_feedback.c.override_reason,
            cds_feedback.c.override_comment.is_not(None).label("has_comment"),
            cds_cards.c.card_key,
            cds_cards.c.suggestion_ids,
        )
        .join(cds_cards, cds_cards.c.card_uuid == cds_feedback.c.card_uuid)
        .where(
            cds_cards.c.patient_hash == services.store.patient_hash(patient_id),
            cds_feedback.c.issuer == WEB_PAGES_ISSUER,
            cds_feedback.c.received_at >= now - timedelta(days=RECORDED_DAYS),
        )
        .order_by(cds_feedback.c.outcome_timestamp.desc())
        .limit(MAX_RECORDED)
    )
    with services.store.engine.connect() as connection:
        rows = list(connection.execute(query))
    return [
        Recorded(
            card_uuid=row.card_uuid,
            key=row.card_key,
            at=row.outcome_timestamp,
            outcome=row.outcome,
            accepted=tuple(orjson.loads(row.accepted_suggestions)),
            reason=row.override_reason,
            comment="" if row.has_comment else None,
            suggestion_ids=tuple(orjson.loads(row.suggestion_ids)),
        )
        for row in rows
    ]


def describe(decision: Recorded, card: CardView | None) -> str:
    """'Accepted: a; b' or 'Overridden: reason', in the words of the card shown now about the
    same thing when there is one (suggestions in the same place, reasons by code)."""
    if decision.outcome == "accepted":
        labels = []
        current = card.suggestions if card else ()
        for suggestion_id in decision.accepted:
            index = (
                decision.suggestion_ids.index(suggestion_id)
                if suggestion_id in decision.suggestion_ids
                else -1
            )
            if 0 <= index < len(current) and len(current) == len(decision.suggestion_ids):
                labels.append(current[index].label)
        if labels:
            return "Accepted: " + "; ".join(labels)
        if decision.accepted:
            return f"Accepted: {len(decision.accepted)} suggestion(s)"
        return "Accepted"
    reasons = {r.code: r.display for r in card.reasons} if card else {}
    reason = reasons.get(decision.reason or "", decision.reason or "no reason")
    return f"Overridden: {reason}"


def topic_of(key: str) -> str:
    """A ledger card key as words: 'playbook:diabetes-followup' -> 'diabetes followup'."""
    return key.split(":", 1)[-1].replace("-", " ").replace("_", " ")


# -- the routes -----------------------------------------------------------------------------------


def build_router(services: UiServices) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    client = WebPagesClient(CdsClientRegistry(services.store))

    @router.get(
        f"{UI_PREFIX}/patients/{{patient_id}}",
        openapi_extra=permission_extra(Permission.PATIENT_READ),
    )
    def patient_page(
        patient_id: str, caller: UiCaller = ui_caller(Permission.PATIENT_READ)
    ) -> HTMLResponse:
        require_care_role(caller, "patient page")
        check_patient_id(patient_id)
        path = f"{UI_PREFIX}/patients/{patient_id}"
        record = read_record(services, caller, patient_id)
        result = open_chart_cards(services, client, caller, patient_id, path)
        shown = decisions_shown(services, caller, patient_id, result.cards)
        return render(
            caller,
            "patient.html",
            title=f"Patient {record.name}",
            current_path="",
            patient_id=patient_id,
            record=record,
            cards=result.cards,
            cards_problem=result.problem,
            decisions=shown,
            can_write=allows(caller.role, Permission.PATIENT_WRITE),
            max_comment=MAX_COMMENT,
            care_roles=CARE_ROLE_NAMES,
            path=path,
        )

    @router.post(
        f"{UI_PREFIX}/patients/{{patient_id}}/cards/{{card_uuid}}/feedback",
        openapi_extra=permission_extra(Permission.PATIENT_WRITE),
    )
    def card_feedback(
        patient_id: str, card_uuid: str, caller: UiCaller = ui_caller(Permission.PATIENT_WRITE)
    ) -> RedirectResponse:
        require_care_role(caller, "patient page")
        check_patient_id(patient_id)
        _may_see(services, caller, patient_id)
        item = feedback_item(services, caller, patient_id, card_uuid)
        try:
            services.feedback.submit(
                PATIENT_VIEW,
                WEB_PAGES_ISSUER,
                parse_feedback({"feedback": [item]}),
                caller.principal,
                caller.ctx,
            )
        except FeedbackError as exc:
            raise UiError(
                exc.status, "Not recorded", f"Nothing was saved: {exc.message}."
            ) from None
        except AccessDenied:
            raise _denied() from None
        return redirect(f"{UI_PREFIX}/patients/{patient_id}#decisions")

    return router


def decisions_shown(
    services: UiServices, caller: UiCaller, patient_id: str, cards: list[CardView]
) -> list[dict]:
    """The table of recorded decisions, worded after the cards shown now; each card about the
    same thing as a decision also says it was already decided (and how)."""
    now = datetime.now(UTC)
    keys = _current_keys(services, patient_id, cards, now)
    by_key = {keys.get(card.uuid, ""): card for card in cards}
    shown = []
    for decision in recorded_decisions(services, patient_id, now):
        card = by_key.get(decision.key)
        comment = None
        if decision.comment is not None:  # unsealed by the book, which audits the read
            comment = services.feedback.comment(
                decision.card_uuid, decision.at, caller.principal, caller.ctx
            )
        text = describe(decision, card)
        shown.append(
            {
                "at": decision.at.strftime("%d %b %Y %H:%M UTC"),
                "topic": card.summary if card else topic_of(decision.key),
                "text": text,
                "comment": comment,
            }
        )
        if card is not None and len(card.recorded) < 3:
            card.recorded.append(f"{text} ({decision.at.strftime('%d %b %Y %H:%M UTC')})")
    return shown


def _current_keys(
    services: UiServices, patient_id: str, cards: list[CardView], now: datetime
) -> dict[str, str]:
    """card uuid -> the ledger's key (what the card is about) for the cards just issued."""
    wanted = {card.uuid.lower() for card in cards}
    if not wanted:
        return {}
    recent = services.cds.ledger.recent(patient_id, now - timedelta(minutes=10))
    return {c.card_uuid: c.key for c in recent if c.card_uuid in wanted}


def _may_see(services: UiServices, caller: UiCaller, patient_id: str) -> None:
    """Feedback is about a patient: the person must be allowed to see them (audited)."""
    try:
        release = services.security.access.patient_compartment(
            caller.principal, caller.ctx, patient_id, resource_types=("Patient",)
        )
    except AccessDenied:
        raise _denied() from None
    if not release.resources:
        if release.withheld:
            raise _denied()
        raise UiError(404, "No such patient", "careloop has no patient with this id.")


def feedback_item(services: UiServices, caller: UiCaller, patient_id: str, card_uuid: str) -> dict:
    """The CDS Hooks feedback item the form says, checked against the card (UiError 400/404
    naming what is wrong; FeedbackBook checks it again)."""
    if not _UUID.match(card_uuid):
        raise UiError(404, "No such card", "careloop issued no card with this id.")
    card_uuid = card_uuid.lower()
    card = services.cds.ledger.card(card_uuid)
    if card is None:
        raise UiError(404, "No such card", "careloop issued no card with this id.")
    own = services.cds.ledger.recent(patient_id, card.created_at)
    if not any(c.card_uuid == card_uuid for c in own):
        raise UiError(
            400,
            "Card of another patient",
            "This card is not about this patient; nothing was saved.",
        )
    form = caller.form
    outcome = form.get("outcome", "")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if outcome == "accepted":
        chosen = [
            name.removeprefix(_SUGGESTION_FIELD).lower()
            for name, value in form.items()
            if name.startswith(_SUGGESTION_FIELD) and value
        ]
        if form.get("suggestion"):  # a card that allows at most one: radio buttons
            chosen.append(form["suggestion"].lower())
        unknown = [s for s in chosen if s not in card.suggestion_ids]
        if unknown:
            raise UiError(400, "Not recorded", "A chosen suggestion is not one of this card's.")
        if card.suggestion_ids and not chosen:
            raise UiError(
                400,
                "Choose a suggestion",
                "To accept, tick at least one suggested action (or override with a reason).",
            )
        return {
            "card": card_uuid,
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": s} for s in chosen],
            "outcomeTimestamp": now,
        }
    if outcome != "overridden":
        raise UiError(400, "Not recorded", "Choose accept or override.")
    reason = form.get("reason", "")
    comment = form.get("comment", "").strip()
    if not reason:
        raise UiError(400, "Reason missing", "To override, choose a reason from the list.")
    if reason not in card.override_reasons:
        raise UiError(400, "Not recorded", "That reason is not one this card offers.")
    if len(comment) > MAX_COMMENT:
        raise UiError(
            400,
            "Comment too long",
            f"A comment is at most {MAX_COMMENT:,} characters (this one has {len(comment):,}); "
            "nothing was saved.",
        )
    override: dict = {"reason": {"code": reason}}
    if comment:
        override["userComment"] = comment
    return {
        "card": card_uuid,
        "outcome": "overridden",
        "overrideReason": override,
        "outcomeTimestamp": now,
    }
