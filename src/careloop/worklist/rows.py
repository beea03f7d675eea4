"""The worklist rows: a care-role person's patients, ranked for triage.

What a row says comes from three kinds of FHIR resources, read through the access layer in one
guarded search (authorized for each type, consent judged and audited once per patient):

- the patient's sepsis snapshot (`snapshot.risk_assessment`): current risk, the 24-hour trend,
  the top factor;
- the alert Tasks: sepsis review Tasks (`snapshot.review_task`) and remote-monitoring alert
  Tasks (`monitoring.fhir_alerts.alert_task`), both acknowledged (status `accepted`) and snoozed
  (`on-hold`, until the time in the `SNOOZED_UNTIL` extension) the same way;
- the Patient, for the name.

Ranking: patients with an unacknowledged alert first (a snooze that has run out counts as
unacknowledged again), then by current risk, highest first. "Last acknowledged" is the latest
`executionPeriod.start` of the patient's alert Tasks (set when someone accepts one), else the
`lastModified` of an accepted Task that has no execution period (a Task accepted elsewhere).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal
from careloop.access.roles import Permission
from careloop.fhir.indexing import patient_id_of
from careloop.monitoring.fhir_alerts import TASK_CODE_SYSTEM
from careloop.store.repository import ResourceStore, SearchPage, StoredResource
from careloop.worklist.snapshot import (
    ALERT_REVIEW_SYSTEM,
    SEPSIS_REVIEW_CODE,
    SEPSIS_REVIEW_TOKEN,
    SNAPSHOT_TOKEN,
    TAKEN_ON,
    snapshot_id,
)

MONITORING_REVIEW_CODE = "review-monitoring-alert"
MONITORING_REVIEW_TOKEN = f"{TASK_CODE_SYSTEM}|{MONITORING_REVIEW_CODE}"
ALERT_TASK_TOKENS = (SEPSIS_REVIEW_TOKEN, MONITORING_REVIEW_TOKEN)
ALERT_TASK_CODES = frozenset(
    {(ALERT_REVIEW_SYSTEM, SEPSIS_REVIEW_CODE), (TASK_CODE_SYSTEM, MONITORING_REVIEW_CODE)}
)
SNOOZED_UNTIL = "https://careloop.dev/fhir/StructureDefinition/snoozed-until"
WAITING = frozenset({"requested", "received", "ready"})
ACTIVE_ALERT = WAITING | TAKEN_ON | {"on-hold"}
READ_TYPES = ("Patient", "RiskAssessment", "Task")


class AlertState(StrEnum):
    NEW = "new"  # nobody has taken it on (or its snooze ran out)
    SNOOZED = "snoozed"
    ACKNOWLEDGED = "acknowledged"
    NONE = "none"


STATE_WORDS = {
    AlertState.NEW: "New alert",
    AlertState.SNOOZED: "Snoozed",
    AlertState.ACKNOWLEDGED: "Acknowledged",
    AlertState.NONE: "No alert",
}


@dataclass(frozen=True)
class AlertItem:
    """One active alert Task of a patient."""

    task_id: str
    kind: str  # "sepsis" or "monitoring"
    state: AlertState
    text: str  # what the Task asks, as written on it
    raised: datetime | None
    snoozed_until: datetime | None = None
    owner: str | None = None


@dataclass(frozen=True)
class WorklistRow:
    patient_id: str
    name: str
    risk: float | None  # current sepsis risk, 0-1; None without a score
    withheld: bool  # the patient's consent withholds the risk from this person
    no_score: str | None  # why there is no score, when there is none and it is not withheld
    scored_at: datetime | None
    trend: list[float | None]
    top_factor: str | None
    state: AlertState
    alerts: list[AlertItem]
    last_acknowledged: datetime | None

    @property
    def unacknowledged(self) -> bool:
        return self.state is AlertState.NEW


@dataclass(frozen=True)
class Worklist:
    rows: list[WorklistRow]
    withheld: int  # resources consent withheld (the access layer's count)
    as_of: datetime
    model_versions: list[str] = field(default_factory=list)


def parse_instant(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def is_alert_task(task: dict) -> bool:
    """A sepsis review Task or a remote-monitoring alert Task (by its code)."""
    codings = (task.get("code") or {}).get("coding") or []
    return task.get("resourceType") == "Task" and any(
        (coding.get("system"), coding.get("code")) in ALERT_TASK_CODES for coding in codings
    )


def alert_kind(task: dict) -> str:
    codings = (task.get("code") or {}).get("coding") or []
    sepsis = any(coding.get("code") == SEPSIS_REVIEW_CODE for coding in codings)
    return "sepsis" if sepsis else "monitoring"


def snoozed_until(task: dict) -> datetime | None:
    for extension in task.get("extension") or []:
        if extension.get("url") == SNOOZED_UNTIL:
            return parse_instant(extension.get("valueDateTime"))
    return None


def task_state(task: dict, now: datetime) -> AlertState | None:
    """The alert state an active alert Task stands for; None when it is not active."""
    status = task.get("status")
    if status in WAITING:
        return AlertState.NEW
    if status in TAKEN_ON:
        return AlertState.ACKNOWLEDGED
    if status == "on-hold":
        until = snoozed_until(task)
        return AlertState.NEW if until is not None and until <= now else AlertState.SNOOZED
    return None


def acknowledged_at(task: dict) -> datetime | None:
    """When the Task was taken on: its executionPeriod.start, else the lastModified of a Task
    accepted without one."""
    start = parse_instant((task.get("executionPeriod") or {}).get("start"))
    if start is not None:
        return start
    if task.get("status") in TAKEN_ON:
        return parse_instant(task.get("lastModified"))
    return None


def patient_name(patient: dict | None) -> str | None:
    if not patient:
        return None
    names = patient.get("name") or []
    official = next((n for n in names if n.get("use") == "official"), names[0] if names else None)
    if not official:
        return None
    if official.get("text"):
        return str(official["text"])
    parts = [*official.get("given", []), official.get("family", "")]
    text = " ".join(str(part) for part in parts if part)
    return text or None


def trend_of(assessment: dict) -> list[float | None]:
    """The hourly risks of the snapshot's predictions, in time order."""
    predictions = sorted(
        (p for p in assessment.get("prediction") or [] if isinstance(p, dict)),
        key=lambda p: str((p.get("whenPeriod") or {}).get("start", "")),
    )
    values: list[float | None] = []
    for prediction in predictions:
        value = prediction.get("probabilityDecimal")
        values.append(float(value) if isinstance(value, int | float) else None)
    return values


def top_factor(assessment: dict) -> str | None:
    for basis in assessment.get("basis") or []:
        display = basis.get("display")
        if isinstance(display, str) and display:
            return display.removeprefix("Factor: ")
    return None


def no_score_reason(assessment: dict) -> str:
    notes = assessment.get("note") or []
    text = str(notes[0].get("text", "")) if notes else ""
    _, _, reason = text.partition(": ")
    return reason.rstrip(".") or "no score"


def build_row(
    patient_id: str,
    patient: dict | None,
    assessment: dict | None,
    tasks: Sequence[dict],
    *,
    risk_withheld: bool,
    now: datetime,
) -> WorklistRow:
    """One patient's row from what the access layer released (pure)."""
    alerts: list[AlertItem] = []
    acknowledgements: list[datetime] = []
    for task in tasks:
        moment = acknowledged_at(task)
        if moment is not None:
            acknowledgements.append(moment)
        state = task_state(task, now)
        if state is None:
            continue
        owner = task.get("owner") or {}
        kind = alert_kind(task)
        text = str(task.get("description") or (task.get("code") or {}).get("text", ""))
        if risk_withheld and kind == "sepsis":
            text = ""  # the review Task quotes the risk the patient's consent withholds
        alerts.append(
            AlertItem(
                task_id=str(task.get("id")),
                kind=kind,
                state=state,
                text=text,
                raised=parse_instant(task.get("authoredOn")),
                snoozed_until=snoozed_until(task) if state is AlertState.SNOOZED else None,
                owner=owner.get("display") or owner.get("reference"),
            )
        )
    order = [AlertState.NEW, AlertState.SNOOZED, AlertState.ACKNOWLEDGED]
    alerts.sort(key=lambda a: (order.index(a.state), a.raised or now))
    state = alerts[0].state if alerts else AlertState.NONE
    risk = trend = None
    factor = reason = scored_at = None
    if assessment is not None:
        trend = trend_of(assessment)
        scored = [value for value in trend if value is not None]
        risk = scored[-1] if scored else None
        factor = top_factor(assessment)
        scored_at = parse_instant(assessment.get("occurrenceDateTime"))
        if risk is None:
            reason = no_score_reason(assessment)
    elif not risk_withheld:
        reason = "not scored yet"
    return WorklistRow(
        patient_id=patient_id,
        name=patient_name(patient) or ("Name withheld by consent" if patient is None else "-"),
        risk=risk,
        withheld=risk_withheld,
        no_score=reason,
        scored_at=scored_at,
        trend=trend or [],
        top_factor=factor,
        state=state,
        alerts=alerts,
        last_acknowledged=max(acknowledgements) if acknowledgements else None,
    )


def rank(rows: Iterable[WorklistRow]) -> list[WorklistRow]:
    """Unacknowledged alerts first, then current risk, highest first (no score last), then
    name, so the order is stable."""
    return sorted(
        rows,
        key=lambda row: (
            not row.unacknowledged,
            row.risk is None,
            -(row.risk or 0.0),
            row.name.lower(),
            row.patient_id,
        ),
    )


def build_rows(
    patient_ids: Sequence[str],
    released: Sequence[StoredResource],
    fetched_risk: set[str],
    now: datetime,
) -> list[WorklistRow]:
    """Rows for `patient_ids` from the released resources (pure): a patient whose snapshot was
    read but not released has their risk shown as withheld by consent."""
    patients: dict[str, dict] = {}
    assessments: dict[str, dict] = {}
    tasks: dict[str, list[dict]] = defaultdict(list)
    for item in released:
        owner = patient_id_of(item.body)
        if owner is None:
            continue
        if item.resource_type == "Patient":
            patients[owner] = item.body
        elif item.resource_type == "RiskAssessment":
            assessments[owner] = item.body
        elif item.resource_type == "Task" and is_alert_task(item.body):
            tasks[owner].append(item.body)
    return rank(
        build_row(
            patient_id,
            patients.get(patient_id),
            assessments.get(patient_id),
            tasks.get(patient_id, []),
            risk_withheld=patient_id in fetched_risk and patient_id not in assessments,
            now=now,
        )
        for patient_id in patient_ids
    )


def load_worklist(
    access: AccessLayer, principal: Principal, ctx: AccessContext, now: datetime | None = None
) -> Worklist:
    """The signed-in care-role person's worklist: their patients (care relationships), each
    one's snapshot, active alert Tasks and name, read in one guarded search."""
    now = now or access.clock()
    for resource_type in READ_TYPES[1:]:  # the search below authorizes as Patient
        access.authorize(
            principal, ctx, Permission.PATIENT_READ, resource_type=resource_type, interaction="s"
        )
    patient_ids = (
        access.relationships.patients_of(principal.fhir_user, now) if principal.fhir_user else []
    )
    fetched_risk: set[str] = set()

    def run(_patient: str | None) -> SearchPage:
        found = worklist_resources(access.store, patient_ids)
        fetched_risk.update(
            patient_id_of(item.body) or ""
            for item in found
            if item.resource_type == "RiskAssessment"
        )
        return SearchPage(total=len(found), resources=found)

    if not patient_ids:
        return Worklist(rows=[], withheld=0, as_of=now)
    page, withheld = access.search(
        principal,
        ctx,
        "Patient",
        run,
        patient_id=None,
        query_text=(
            f"worklist: Patient, RiskAssessment?code={SNAPSHOT_TOKEN}, "
            f"Task?code={','.join(ALERT_TASK_TOKENS)} of {len(patient_ids)} patients in care"
        ),
    )
    rows = build_rows(patient_ids, page.resources, fetched_risk, now)
    versions = sorted(
        {
            str(((item.body.get("method") or {}).get("coding") or [{}])[0].get("code", ""))
            for item in page.resources
            if item.resource_type == "RiskAssessment"
        }
        - {""}
    )
    return Worklist(rows=rows, withheld=withheld, as_of=now, model_versions=versions)


def worklist_resources(store: ResourceStore, patient_ids: Sequence[str]) -> list[StoredResource]:
    """The Patient, the sepsis snapshot and the alert Tasks (in any status: the last
    acknowledgement may be on a closed one) of each of these patients.

    One look-up on the store's index on patient and type for the whole list, which costs what
    the person's list costs. A search by type across the whole store would scan every resource
    row (there is no index on type alone), and grow with the store rather than with the list.
    The other RiskAssessments of the compartment (a CDS card's record) are read and dropped."""
    snapshots = {snapshot_id(patient_id) for patient_id in patient_ids}
    return [
        item
        for item in store.compartments(patient_ids, READ_TYPES)
        if item.resource_type == "Patient"
        or (item.resource_type == "Task" and is_alert_task(item.body))
        or (item.resource_type == "RiskAssessment" and item.body.get("id") in snapshots)
    ]
