"""The patient portal (My care, My data, Sharing, Messages) and the care team's message inbox.

Every read of the patient's record goes through the access layer with the signed-in patient's
own id (`caller.principal.own_patient_id`), never an id from the URL or a form. The wording a
patient reads comes from `careloop.portal.catalogue`; the decisions about what may be said, the
consent grid and the message format from the rest of `careloop.portal`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from careloop.access import rights
from careloop.access.errors import AccessDenied
from careloop.access.roles import Permission
from careloop.audit.events import AuditAction
from careloop.ingest import IngestProblem
from careloop.portal import catalogue as words
from careloop.portal.care import AcceptedCard, care_view, data_counts
from careloop.portal.history import access_rows, erasure_requested_at
from careloop.portal.messages import (
    MAX_MESSAGE,
    MessageError,
    care_team_reply,
    conversation,
    message_view,
    send_patient_message,
)
from careloop.portal.sharing import (
    FIXED,
    RECIPIENTS,
    ROW_KEYS,
    SharingGrid,
    consent_from_grid,
    consent_id_for,
    field_name,
    grid_from_consents,
    grid_from_form,
)
from careloop.store.repository import SearchPage
from careloop.store.schema import cds_cards, cds_feedback
from careloop.web.auth import Caller, permission_extra
from careloop.web.fhir_routes import check_id
from careloop.web.outcomes import FhirError
from careloop.web.ui.framework import (
    UI_PREFIX,
    UiCaller,
    UiError,
    redirect,
    render,
    require_care_role,
    ui_caller,
)
from careloop.web.ui.services import UiServices

ME = f"{UI_PREFIX}/me"
INBOX = f"{UI_PREFIX}/inbox"
INBOX_LIMIT = 1000
HISTORY_LIMIT = 200


def build_router(services: UiServices) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    access = services.security.access

    # -- helpers --------------------------------------------------------------------------------

    def own_id(caller: UiCaller) -> str:
        patient_id = caller.principal.own_patient_id
        if patient_id is None:
            raise UiError(403, "Not available", "These pages are for a patient's own record.")
        return patient_id

    def record(caller: UiCaller, types: Sequence[str] = ()) -> list[dict]:
        """The patient's own current resources, through the access layer (audited)."""
        try:
            release = access.patient_compartment(
                caller.principal, caller.ctx, own_id(caller), types
            )
        except AccessDenied:
            raise UiError(403, "Not available", "Your record could not be opened.") from None
        return [item.body for item in release.resources]

    def write_one(resource: dict) -> None:
        """One resource written by a guarded operation: validated and stored like any FHIR
        write (the same ingestor and lock as the FHIR API)."""
        with services.fhir.write_lock:
            try:
                services.fhir.ingestor.ingest_document(orjson.dumps(resource), "patient portal")
            except IngestProblem:
                raise UiError(
                    422, "Not saved", "careloop could not store this. Nothing was changed."
                ) from None

    def guarded(operation: Callable[..., Any], caller: UiCaller, *args: Any) -> Any:
        try:
            return operation(caller.principal, caller.ctx, *args)
        except AccessDenied:
            raise UiError(403, "Not available", "This is not allowed for your account.") from None

    def page(
        caller: UiCaller, template: str, title_key: str, path: str, **context: Any
    ) -> HTMLResponse:
        return render(
            caller,
            template,
            title=words.say(words.LABELS, title_key, caller.lang),
            current_path=path,
            here=path,
            t=_translator(caller.lang),
            day=_day_formatter(caller.lang),
            when=lambda sent: _day_formatter(caller.lang)(_sent_at(sent), time=True),
            kind_label=lambda kind: words.say(words.DATA_KINDS, kind, caller.lang),
            kind_use=lambda kind: (
                words.say(words.DATA_USES, kind, caller.lang) if kind in words.DATA_USES else ""
            ),
            row_label=lambda key: words.say(words.SHARING_ROWS, key, caller.lang),
            row_help=lambda key: words.say(words.SHARING_ROW_HELP, key, caller.lang),
            column_label=lambda key: words.say(words.SHARING_COLUMNS, key, caller.lang),
            **context,
        )

    # -- My care ----------------------------------------------------------------------------------

    @router.get(ME, openapi_extra=permission_extra(Permission.PATIENT_READ))
    def my_care(caller: UiCaller = ui_caller(Permission.PATIENT_READ)) -> HTMLResponse:
        patient_id = own_id(caller)
        resources = record(caller)
        accepted = accepted_cards(services, caller, patient_id)
        view = care_view(resources, accepted, caller.lang)
        return page(caller, "portal_care.html", "care.title", ME, view=view)

    # -- My data ----------------------------------------------------------------------------------

    @router.get(f"{ME}/data", openapi_extra=permission_extra(Permission.PATIENT_READ))
    def my_data(
        mine: str = "", caller: UiCaller = ui_caller(Permission.PATIENT_READ)
    ) -> HTMLResponse:
        patient_id = own_id(caller)
        counts = data_counts(record(caller))
        events = list(access.audit.events(patient_id=patient_id))
        # the patient's own look at who looked is itself on the trail
        access.record(
            caller.principal,
            caller.ctx,
            AuditAction.AUDIT_REVIEW,
            patient_id=patient_id,
            detail="the patient read who accessed their record",
        )
        include_self = mine == "1"
        rows = access_rows(
            events,
            own_subject=caller.principal.subject,
            lang=caller.lang,
            include_self=include_self,
            limit=HISTORY_LIMIT,
        )
        return page(
            caller,
            "portal_data.html",
            "data.title",
            f"{ME}/data",
            counts=counts,
            rows=rows,
            include_self=include_self,
            erasure_asked=erasure_requested_at(events),
        )

    @router.get(f"{ME}/export", openapi_extra=permission_extra(Permission.RECORD_EXPORT))
    def export(caller: UiCaller = ui_caller(Permission.RECORD_EXPORT)) -> Response:
        patient_id = own_id(caller)
        bundle = guarded(lambda p, c: rights.export_record(access, p, c, patient_id), caller)
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        return Response(
            orjson.dumps(bundle, option=orjson.OPT_INDENT_2),
            media_type="application/fhir+json",
            headers={
                "Content-Disposition": f'attachment; filename="careloop-record-{day}.json"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    @router.post(f"{ME}/erasure", openapi_extra=permission_extra(Permission.ERASURE_REQUEST))
    def erasure(caller: UiCaller = ui_caller(Permission.ERASURE_REQUEST)) -> Response:
        patient_id = own_id(caller)
        if caller.form.get("confirm") != "yes":
            raise UiError(
                400,
                "Not sent",
                "Tick the box that says you understand, then send the request again.",
            )
        guarded(lambda p, c: rights.request_erasure(access, p, c, patient_id), caller)
        return redirect(f"{ME}/data#delete")

    # -- Sharing ----------------------------------------------------------------------------------

    @router.get(f"{ME}/sharing", openapi_extra=permission_extra(Permission.CONSENT_MANAGE))
    def sharing(
        saved: str = "", caller: UiCaller = ui_caller(Permission.CONSENT_MANAGE)
    ) -> HTMLResponse:
        patient_id = own_id(caller)
        consents = record(caller, ["Consent"])
        grid = grid_from_consents(patient_id, consents, access.consent_policy)
        portal_consent = any(
            c.get("id") == consent_id_for(patient_id) and c.get("status") == "active"
            for c in consents
        )
        return page(
            caller,
            "portal_sharing.html",
            "sharing.title",
            f"{ME}/sharing",
            grid=grid,
            rows=ROW_KEYS,
            recipients=tuple(RECIPIENTS),
            fixed=FIXED,
            field_name=field_name,
            saved=saved == "1",
            can_reset=portal_consent,
        )

    @router.post(f"{ME}/sharing", openapi_extra=permission_extra(Permission.CONSENT_MANAGE))
    async def save_sharing(caller: UiCaller = ui_caller(Permission.CONSENT_MANAGE)) -> Response:
        patient_id = own_id(caller)
        if caller.form.get("action") == "reset":
            # the portal's Consent withdrawn (kept as a version; an inactive consent is ignored)
            consent = consent_from_grid(patient_id, SharingGrid.everything(), active=False)
        else:
            consent = consent_from_grid(patient_id, grid_from_form(caller.form))
        await run_in_threadpool(
            guarded,
            lambda p, c: rights.record_consent(access, p, c, consent, write_one),
            caller,
        )
        return redirect(f"{ME}/sharing?saved=1")

    # -- Messages ---------------------------------------------------------------------------------

    def messages_page(
        caller: UiCaller,
        *,
        error: str = "",
        draft: str = "",
        status: int = 200,
        sent: bool = False,
    ) -> HTMLResponse:
        views = conversation(record(caller, ["Communication"]))
        response = page(
            caller,
            "portal_messages.html",
            "messages.title",
            f"{ME}/messages",
            messages=views,
            by_id={view.id: view for view in views},
            error=error,
            draft=draft,
            limit=MAX_MESSAGE,
            sent=sent,
        )
        response.status_code = status
        return response

    @router.get(f"{ME}/messages", openapi_extra=permission_extra(Permission.PATIENT_READ))
    def messages(
        sent: str = "", caller: UiCaller = ui_caller(Permission.PATIENT_READ)
    ) -> HTMLResponse:
        own_id(caller)
        return messages_page(caller, sent=sent == "1")

    @router.post(f"{ME}/messages", openapi_extra=permission_extra(Permission.MESSAGE_SEND))
    async def send(caller: UiCaller = ui_caller(Permission.MESSAGE_SEND)) -> Response:
        own_id(caller)
        text = caller.form.get("message", "")
        try:
            await run_in_threadpool(
                guarded,
                lambda p, c: send_patient_message(access, p, c, text, write_one),
                caller,
            )
        except MessageError as exc:
            problem = str(exc)
            return await run_in_threadpool(
                lambda: messages_page(caller, error=problem, draft=text[:MAX_MESSAGE], status=400)
            )
        return redirect(f"{ME}/messages?sent=1#sent")

    # -- the care team's inbox --------------------------------------------------------------------

    @router.get(INBOX, openapi_extra=permission_extra(Permission.PATIENT_READ))
    def inbox(
        replied: str = "", caller: UiCaller = ui_caller(Permission.PATIENT_READ)
    ) -> HTMLResponse:
        require_care_role(caller, "message inbox")
        threads = inbox_threads(services, caller)
        return render(
            caller,
            "inbox.html",
            title="Messages from patients",
            current_path=INBOX,
            when=lambda sent: _day_formatter("en")(_sent_at(sent), time=True),
            threads=threads,
            replied=replied == "1",
            limit=MAX_MESSAGE,
        )

    @router.post(
        f"{INBOX}/{{communication_id}}/reply",
        openapi_extra=permission_extra(Permission.PATIENT_WRITE),
    )
    async def reply(
        communication_id: str, caller: UiCaller = ui_caller(Permission.PATIENT_WRITE)
    ) -> Response:
        require_care_role(caller, "message inbox")
        try:
            check_id(communication_id)
        except FhirError:
            raise UiError(404, "Not found", "There is no such message.") from None
        text = caller.form.get("reply", "")
        await run_in_threadpool(write_reply, services, caller, communication_id, text)
        return redirect(f"{INBOX}?replied=1")

    return router


# -- reading the ledger of accepted cards ---------------------------------------------------------


def accepted_cards(services: UiServices, caller: UiCaller, patient_id: str) -> list[AcceptedCard]:
    """The cards a clinician accepted for this patient, from the CDS ledger (card keys and
    times only: no clinical wording), audited as a read of the patient's ledger rows."""
    query = (
        select(cds_cards.c.card_uuid, cds_cards.c.card_key, cds_feedback.c.outcome,
               cds_feedback.c.outcome_timestamp)
        .join(cds_feedback, cds_feedback.c.card_uuid == cds_cards.c.card_uuid)
        .where(cds_cards.c.patient_hash == services.store.patient_hash(patient_id))
        .order_by(cds_feedback.c.outcome_timestamp)
    )  # fmt: skip
    latest: dict[str, tuple[str, str, datetime]] = {}
    with services.store.engine.connect() as connection:
        for row in connection.execute(query):
            latest[row.card_uuid] = (row.card_key, row.outcome, row.outcome_timestamp)
    services.security.access.record(
        caller.principal,
        caller.ctx,
        AuditAction.READ,
        patient_id=patient_id,
        detail=f"accepted CDS cards for the patient portal ({len(latest)} with feedback)",
    )
    return [
        AcceptedCard(key, moment)
        for key, outcome, moment in latest.values()
        if outcome == "accepted"
    ]


# -- the inbox ------------------------------------------------------------------------------------


def inbox_threads(services: UiServices, caller: UiCaller) -> list[dict]:
    """Patients' messages, newest first, each with the replies to it, from the patients this
    person cares for. The access layer runs the search, judges consent and audits exactly what
    is shown; the search keeps only patients with a current care relationship, so patients this
    person does not care for are neither read nor audited as read."""
    access = services.security.access
    practitioner = caller.principal.fhir_user
    patients = (
        access.relationships.patients_of(practitioner, datetime.now(UTC)) if practitioner else []
    )

    def run(_patient: str | None) -> SearchPage:
        # the newest messages of the person's patients, read for all of them at once
        found = services.store.compartments(patients, ("Communication",))
        kept = sorted(found, key=lambda item: item.last_updated, reverse=True)[:INBOX_LIMIT]
        return SearchPage(total=len(kept), resources=kept)

    try:
        found, _withheld = access.search(
            caller.principal,
            caller.ctx,
            "Communication",
            run,
            patient_id=None,
            query_text="inbox: messages of patients in my care",
        )
    except AccessDenied:
        raise UiError(403, "Not available", "Your role does not open patients' messages.") from None
    views = conversation([item.body for item in found.resources], newest_first=True)
    replies: dict[str, list] = {}
    for view in views:
        if view.in_reply_to:
            replies.setdefault(view.in_reply_to, []).append(view)
    names: dict[str, str] = {}
    threads = []
    for view in views:
        if not view.from_patient:
            continue
        if view.patient_id not in names:
            names[view.patient_id] = patient_name(services, caller, view.patient_id)
        threads.append(
            {
                "message": view,
                "patient": names[view.patient_id],
                "replies": sorted(replies.get(view.id, []), key=lambda v: v.sent),
            }
        )
    return threads


def patient_name(services: UiServices, caller: UiCaller, patient_id: str) -> str:
    try:
        stored = services.security.access.read(caller.principal, caller.ctx, "Patient", patient_id)
    except AccessDenied:
        return "a patient"
    if stored is None:
        return "a patient"
    for name in stored.body.get("name", ()):
        if not isinstance(name, dict):
            continue
        given = " ".join(g for g in name.get("given", ()) if isinstance(g, str))
        text = name.get("text") or f"{given} {name.get('family', '')}".strip()
        if text:
            return str(text)
    return "a patient"


def write_reply(services: UiServices, caller: UiCaller, communication_id: str, text: str) -> None:
    access = services.security.access
    try:
        stored = access.read(caller.principal, caller.ctx, "Communication", communication_id)
    except AccessDenied:
        raise UiError(403, "Not available", "This message is not open to you.") from None
    view = message_view(stored.body) if stored is not None else None
    if stored is None or view is None or not view.from_patient:
        raise UiError(404, "Not found", "There is no such message from a patient.")
    practitioner = caller.principal.fhir_user
    if practitioner is None or not access.relationships.exists(
        practitioner, view.patient_id, datetime.now(UTC)
    ):
        raise UiError(403, "Not available", "You are not on this patient's care team.")
    try:
        reply = care_team_reply(stored.body, caller.principal, text)
    except MessageError as exc:
        raise UiError(400, "Not sent", str(exc)) from None
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{reply['id']}",
                "resource": reply,
                "request": {"method": "PUT", "url": f"Communication/{reply['id']}"},
            }
        ],
    }
    try:
        services.fhir.write_bundle(Caller(caller.principal, caller.ctx), orjson.dumps(bundle))
    except FhirError as exc:
        raise UiError(exc.status, "Not sent", "careloop could not store the reply.") from None


def _translator(lang: str) -> Callable[[str], str]:
    """`t("care.title")` in templates: a label, else a sentence, in the reader's language."""

    def translate(key: str) -> str:
        if key in words.LABELS:
            return words.say(words.LABELS, key, lang)
        return words.say(words.SENTENCES, key, lang)

    return translate


_MONTHS = {
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "es": ("ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"),
}


def _day_formatter(lang: str) -> Callable[..., str]:
    """`day(moment)` "22 Nov 2026", `day(moment, time=True)` "22 Nov 2026, 10:51 UTC"."""
    months = _MONTHS.get(lang, _MONTHS["en"])

    def day(moment: datetime | None, time: bool = False) -> str:
        if moment is None:
            return ""
        moment = moment.astimezone(UTC)
        text = f"{moment.day} {months[moment.month - 1]} {moment.year}"
        return f"{text}, {moment:%H:%M} UTC" if time else text

    return day


def _sent_at(sent: str) -> datetime | None:
    """A Communication's `sent` instant, or None when it is not one."""
    try:
        moment = datetime.fromisoformat(sent.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
