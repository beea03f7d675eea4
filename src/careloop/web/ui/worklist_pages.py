"""The clinician triage worklist: the signed-in nurse's or clinician's patients, ranked by
unacknowledged alerts and current sepsis risk, with a 24-hour trend, the time since an alert
was last acknowledged, and buttons to acknowledge or snooze each alert.

Everything is read through the access layer (`worklist.rows.load_worklist`); acknowledging or
snoozing rewrites the alert Task through the FHIR write path (a transaction Bundle: validated,
authorized, audited), after reading it through the access layer, which decides whether this
person may see it. The monitoring worker reads those Task states back into its alert manager.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

import orjson
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup

from careloop.access.errors import AccessDenied
from careloop.access.roles import Permission, allows
from careloop.web.auth import Caller, permission_extra
from careloop.web.outcomes import FhirError
from careloop.web.ui.framework import (
    UI_PREFIX,
    UiCaller,
    UiError,
    now_utc,
    redirect,
    render,
    require_care_role,
    since_text,
    ui_caller,
)
from careloop.web.ui.services import UiServices
from careloop.web.ui.svg import sparkline
from careloop.worklist.rows import (
    SNOOZED_UNTIL,
    STATE_WORDS,
    AlertState,
    WorklistRow,
    is_alert_task,
    load_worklist,
)

WORKLIST = f"{UI_PREFIX}/worklist"
SNOOZE_HOURS = (1, 4, 8)
USER_SYSTEM = "https://careloop.dev/fhir/sid/user"  # a careloop user's fhirUser or name
MIN_CEILING = 0.05  # the sparklines' scale reaches at least 5% risk
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
CLOSED = frozenset({"completed", "cancelled", "failed", "rejected", "entered-in-error"})
DONE_WORDS = {
    "acknowledged": "Alert acknowledged.",
    "snoozed": "Alert snoozed.",
}
STATE_BADGE = {
    AlertState.NEW: "alert",
    AlertState.SNOOZED: "warn",
    AlertState.ACKNOWLEDGED: "ok",
    AlertState.NONE: "",
}
KIND_WORDS = {"sepsis": "Sepsis risk", "monitoring": "Remote monitoring"}


@dataclass(frozen=True)
class AlertView:
    task_id: str
    kind: str
    state: str
    badge: str
    text: str
    detail: str  # since when, until when, by whom
    actionable: bool


@dataclass(frozen=True)
class RowView:
    patient_id: str
    href: str
    name: str
    risk_text: str
    risk_note: str
    state: str
    badge: str
    spark: Markup | None
    last_ack: str
    factor: str
    alerts: list[AlertView]


def build_router(services: UiServices) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    access = services.security.access

    @router.get(WORKLIST, openapi_extra=permission_extra(Permission.PATIENT_READ))
    def worklist(
        done: str = "", caller: UiCaller = ui_caller(Permission.PATIENT_READ)
    ) -> HTMLResponse:
        require_care_role(caller, "worklist")
        now = now_utc()
        try:
            result = load_worklist(access, caller.principal, caller.ctx, now)
        except AccessDenied:
            raise UiError(403, "Not available", "Your role does not open the worklist.") from None
        ceiling = trend_ceiling(result.rows)
        rows = [row_view(row, now, ceiling) for row in result.rows]
        return render(
            caller,
            "worklist.html",
            title="Worklist",
            current_path=WORKLIST,
            rows=rows,
            withheld=result.withheld,
            withheld_rows=sum(1 for row in result.rows if row.withheld),
            alerts_new=sum(1 for row in result.rows if row.state is AlertState.NEW),
            model_versions=result.model_versions,
            can_act=allows(caller.role, Permission.PATIENT_WRITE),
            snooze_hours=SNOOZE_HOURS,
            done=DONE_WORDS.get(done, ""),
            as_of=now.strftime("%d %b %Y %H:%M UTC"),
        )

    @router.post(
        f"{WORKLIST}/alerts/{{task_id}}/acknowledge",
        openapi_extra=permission_extra(Permission.PATIENT_WRITE),
    )
    def acknowledge(
        task_id: str, caller: UiCaller = ui_caller(Permission.PATIENT_WRITE)
    ) -> RedirectResponse:
        require_care_role(caller, "worklist")
        task = alert_task_for(services, caller, task_id)
        now = now_utc()
        updated = acknowledged_task(task, caller, now)
        write_task(services, caller, updated)
        return redirect(f"{WORKLIST}?done=acknowledged#row-{quote(patient_of(task))}")

    @router.post(
        f"{WORKLIST}/alerts/{{task_id}}/snooze",
        openapi_extra=permission_extra(Permission.PATIENT_WRITE),
    )
    def snooze(
        task_id: str, caller: UiCaller = ui_caller(Permission.PATIENT_WRITE)
    ) -> RedirectResponse:
        require_care_role(caller, "worklist")
        hours = snooze_hours_of(caller.form.get("hours", ""))
        task = alert_task_for(services, caller, task_id)
        updated = snoozed_task(task, caller, now_utc(), hours)
        write_task(services, caller, updated)
        return redirect(f"{WORKLIST}?done=snoozed#row-{quote(patient_of(task))}")

    return router


def snooze_hours_of(value: str) -> int:
    if value.strip() not in {str(hours) for hours in SNOOZE_HOURS}:
        choices = ", ".join(str(hours) for hours in SNOOZE_HOURS[:-1])
        raise UiError(
            400, "Not snoozed", f"Choose a snooze of {choices} or {SNOOZE_HOURS[-1]} hours."
        )
    return int(value)


def alert_task_for(services: UiServices, caller: UiCaller, task_id: str) -> dict:
    """The alert Task, read as this person (role, consent, audit): refused when it is not
    there, not an alert Task, closed, or withheld from them."""
    if not FHIR_ID.fullmatch(task_id):
        raise UiError(404, "No such alert", "There is no alert with that id.")
    try:
        stored = services.security.access.read(caller.principal, caller.ctx, "Task", task_id)
    except AccessDenied:
        raise UiError(
            403, "Not available", "This alert is about a patient whose record you may not see."
        ) from None
    if stored is None:
        raise UiError(404, "No such alert", "There is no alert with that id.")
    if not is_alert_task(stored.body):
        raise UiError(
            400, "Not an alert", "That task is not an alert; only alerts are acknowledged here."
        )
    if stored.body.get("status") in CLOSED:
        raise UiError(409, "Alert closed", "This alert is already closed; reload the worklist.")
    return stored.body


def patient_of(task: dict) -> str:
    return str((task.get("for") or {}).get("reference", "")).removeprefix("Patient/")


def _instant(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _owner(caller: UiCaller) -> dict:
    """The person, as a logical reference: their fhirUser need not exist as a resource in this
    store (a reference to it would have to), and the monitoring worker reads the display."""
    principal = caller.principal
    owner: dict = {
        "identifier": {"system": USER_SYSTEM, "value": principal.fhir_user or principal.subject},
        "display": principal.subject,
    }
    if principal.fhir_user and principal.fhir_user.startswith("Practitioner/"):
        owner["type"] = "Practitioner"
    return owner


def _note(caller: UiCaller, now: datetime, text: str) -> dict:
    return {"authorString": caller.principal.subject, "time": _instant(now), "text": text}


def _base(task: dict) -> dict:
    """The Task as stored, without what the store sets (version, last updated)."""
    updated = {key: value for key, value in task.items() if key != "meta"}
    meta = {
        k: v for k, v in (task.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")
    }
    if meta:
        updated["meta"] = meta
    updated["extension"] = [
        ext for ext in task.get("extension") or [] if ext.get("url") != SNOOZED_UNTIL
    ]
    if not updated["extension"]:
        del updated["extension"]
    return updated


def acknowledged_task(task: dict, caller: UiCaller, now: datetime) -> dict:
    """Taken on: status accepted, owned by this person, executionPeriod.start = now (what the
    worklist's "last acknowledged" reads), and a note saying who and when."""
    updated = _base(task)
    updated["status"] = "accepted"
    updated.pop("statusReason", None)
    updated["owner"] = _owner(caller)
    updated["lastModified"] = _instant(now)
    updated["executionPeriod"] = {"start": _instant(now)}
    updated["note"] = [
        *task.get("note", []),
        _note(caller, now, f"Acknowledged on the worklist by {caller.principal.subject}."),
    ]
    return updated


def snoozed_task(task: dict, caller: UiCaller, now: datetime, hours: int) -> dict:
    """Put off: status on-hold until now + hours (in an extension), owned by this person."""
    until = now + timedelta(hours=hours)
    updated = _base(task)
    updated["status"] = "on-hold"
    updated["statusReason"] = {"text": f"Snoozed for {hours} h, until {_instant(until)}"}
    updated["owner"] = _owner(caller)
    updated["lastModified"] = _instant(now)
    updated["extension"] = [
        *updated.get("extension", []),
        {"url": SNOOZED_UNTIL, "valueDateTime": _instant(until)},
    ]
    updated["note"] = [
        *task.get("note", []),
        _note(caller, now, f"Snoozed for {hours} h on the worklist by {caller.principal.subject}."),
    ]
    return updated


def write_task(services: UiServices, caller: UiCaller, task: dict) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": task, "request": {"method": "PUT", "url": f"Task/{task['id']}"}}],
    }
    try:
        services.fhir.write_bundle(Caller(caller.principal, caller.ctx), orjson.dumps(bundle))
    except FhirError as error:
        status = error.status if 400 <= error.status < 600 else 500
        why = "; ".join(issue.diagnostics for issue in error.issues if issue.diagnostics)
        raise UiError(
            status,
            "Not saved",
            "careloop could not save the alert's new state, so nothing changed"
            + (f": {why[:300]}" if why else "."),
        ) from None


# -- what the template shows ---------------------------------------------------------------


def trend_ceiling(rows: list[WorklistRow]) -> float:
    """One vertical scale for every sparkline of the page (0 to the highest risk shown, at
    least 5%), so a flat 1% line does not look like a 40% one."""
    values = [v for row in rows if not row.withheld for v in row.trend if v is not None]
    return max([MIN_CEILING, *values])


def row_view(row: WorklistRow, now: datetime, ceiling: float = 1.0) -> RowView:
    if row.withheld:
        risk_text, risk_note = "Withheld by consent", ""
    elif row.risk is None:
        risk_text, risk_note = "No score", row.no_score or ""
    else:
        risk_text = f"{row.risk * 100:.1f}%"
        risk_note = f"at {row.scored_at:%d %b %H:%M}" if row.scored_at else ""
    spark = None
    if row.trend and not row.withheld:
        spark = sparkline(
            row.trend,
            label=f"Sepsis risk of {row.name}, last 24 hours",
            domain=(0.0, ceiling),
        )
    return RowView(
        patient_id=row.patient_id,
        href=f"{UI_PREFIX}/patients/{quote(row.patient_id)}",
        name=row.name,
        risk_text=risk_text,
        risk_note=risk_note,
        state=STATE_WORDS[row.state],
        badge=STATE_BADGE[row.state],
        spark=spark,
        last_ack=since_text(row.last_acknowledged, now),
        factor="" if row.withheld else (row.top_factor or ""),
        alerts=[
            AlertView(
                task_id=alert.task_id,
                kind=KIND_WORDS.get(alert.kind, alert.kind),
                state=STATE_WORDS[alert.state],
                badge=STATE_BADGE[alert.state],
                text=alert.text,
                detail=_alert_detail(alert.state, alert.raised, alert.snoozed_until, alert.owner),
                actionable=alert.state is not AlertState.ACKNOWLEDGED,
            )
            for alert in row.alerts
        ],
    )


def _alert_detail(
    state: AlertState, raised: datetime | None, until: datetime | None, owner: str | None
) -> str:
    parts = []
    if raised is not None:
        parts.append(f"raised {raised:%d %b %H:%M}")
    if state is AlertState.SNOOZED and until is not None:
        parts.append(f"snoozed until {until:%d %b %H:%M}")
    if state is not AlertState.NEW and owner:
        parts.append(f"by {owner}")
    return ", ".join(parts)
