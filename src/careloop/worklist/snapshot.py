"""The worklist's risk snapshot: each patient's sepsis risk, kept in the store as FHIR.

A refresh scores every patient's latest 48 h with the serving sepsis model (through the access
layer, as any read) and writes one RiskAssessment per patient. Its id is derived from the
patient's, so each refresh is a new version of the same resource and the store's history keeps
the past; an unchanged score writes nothing new. The RiskAssessment carries the last 24 hourly
risks in `prediction[]`, so one resource holds the trend the worklist draws.

When the model's alert policy says the current hour is an alert, the refresh also writes a Task
asking a nurse to review the sepsis risk, once per alert episode (not once per refresh), shaped
like the remote-monitoring alert Tasks so that both kinds are acknowledged and snoozed alike.
When the episode ends, its Task is closed: cancelled if nobody had taken it on, completed if
someone had.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from careloop.access.errors import AccessDenied
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal
from careloop.access.roles import Permission
from careloop.audit.events import AuditAction
from careloop.fhir.indexing import patient_id_of
from careloop.ingest.validation import structural_errors
from careloop.monitoring.fhir_alerts import NURSE
from careloop.sepsis.grid import HOUR
from careloop.sepsis.model import SepsisModel
from careloop.sepsis.scoring import RiskScore
from careloop.sepsis.service import score_patient
from careloop.store.repository import ResourceStore, SearchPage, WriteOutcome

WORKLIST_SYSTEM = "https://careloop.dev/fhir/CodeSystem/worklist"
SNAPSHOT_CODE = "sepsis-risk-snapshot"
SNAPSHOT_DISPLAY = "Sepsis risk snapshot"
SNAPSHOT_TOKEN = f"{WORKLIST_SYSTEM}|{SNAPSHOT_CODE}"
ALERT_REVIEW_SYSTEM = "https://careloop.dev/fhir/CodeSystem/alert-review"
SEPSIS_REVIEW_CODE = "review-sepsis-risk"
SEPSIS_REVIEW_TOKEN = f"{ALERT_REVIEW_SYSTEM}|{SEPSIS_REVIEW_CODE}"
SEPSIS_ALERT_ID_SYSTEM = "https://careloop.dev/fhir/sid/sepsis-alert"
MODEL_SYSTEM = "https://careloop.dev/fhir/CodeSystem/model-version"
SEPSIS_OUTCOME = "Sepsis (Sepsis-3 onset, PhysioNet 2019 definition)"
SNAPSHOT_NAMESPACE = uuid.UUID("6f1c2a4e-8d7b-5c3a-9e0f-1b2c3d4e5f60")
WINDOW_HOURS = 48
TREND_HOURS = 24
MAX_FACTORS = 5
# Task states in which an alert still waits for, or is in, someone's hands
OPEN_TASK_STATES = frozenset(
    {"requested", "received", "ready", "accepted", "in-progress", "on-hold"}
)
TAKEN_ON = frozenset({"accepted", "in-progress"})
WRITE_BATCH = 200  # resources per transaction
TASK_PAGE = 1000


class SnapshotError(Exception):
    """A snapshot resource careloop built is not valid FHIR R4 (a bug, never written)."""


def snapshot_id(patient_id: str) -> str:
    """The id of a patient's sepsis snapshot: the same on every refresh."""
    return str(uuid.uuid5(SNAPSHOT_NAMESPACE, f"sepsis-risk-snapshot/{patient_id}"))


def review_task_id(patient_id: str, episode_start: datetime) -> str:
    """One review Task per alert episode: the patient and the hour the episode began."""
    key = f"{patient_id}\x1f{_instant(episode_start)}"
    return "sepsis-review-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _percent(probability: float) -> str:
    return f"{probability * 100:.1f}%"


def scored_hour(risk: RiskScore) -> datetime | None:
    """The last hour scored (its start), or None when no score was given."""
    if not risk.probabilities:
        return None
    return risk.start + (len(risk.probabilities) - 1) * HOUR


def in_alert(risk: RiskScore) -> bool:
    """Whether the alert policy holds the current (last scored) hour as an alert."""
    return bool(risk.alert_states) and risk.alert_states[-1] == 1


def episode_start(risk: RiskScore) -> datetime | None:
    """The hour the current alert episode began (its run of alert hours, within the window)."""
    if not in_alert(risk):
        return None
    first = len(risk.alert_states) - 1
    while first > 0 and risk.alert_states[first - 1] == 1:
        first -= 1
    return risk.start + first * HOUR


def risk_assessment(risk: RiskScore) -> dict:
    """The snapshot as a FHIR RiskAssessment: the current risk, the last 24 hourly risks, the
    model version and its worded factors. A patient with too little data gets one too, saying
    why there is no score, so the worklist never shows a stale one."""
    patient_id = risk.patient_id
    resource: dict = {
        "resourceType": "RiskAssessment",
        "id": snapshot_id(patient_id),
        "meta": {
            "tag": [
                {
                    "system": WORKLIST_SYSTEM,
                    "code": SNAPSHOT_CODE,
                    "display": "Sepsis risk snapshot",
                }
            ]
        },
        "identifier": [{"system": WORKLIST_SYSTEM, "value": f"sepsis-snapshot/{patient_id}"}],
        "status": "final",
        "code": {
            "coding": [
                {
                    "system": WORKLIST_SYSTEM,
                    "code": SNAPSHOT_CODE,
                    "display": "Sepsis risk snapshot",
                }
            ],
            "text": f"Sepsis risk over the latest {WINDOW_HOURS} h",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "method": {
            "coding": [{"system": MODEL_SYSTEM, "code": risk.model_version}],
            "text": f"careloop sepsis model {risk.model_version}",
        },
    }
    last = scored_hour(risk)
    if last is None or risk.current is None:
        resource["note"] = [
            {"text": f"No score from {risk.model_version}: {risk.insufficient or 'no data'}."}
        ]
        return resource
    resource["occurrenceDateTime"] = _instant(last)
    factors = risk.factors[:MAX_FACTORS]
    if factors:
        resource["basis"] = [{"display": f"Factor: {factor}"} for factor in factors]
    first = max(0, len(risk.probabilities) - TREND_HOURS)
    resource["prediction"] = [
        _hourly_prediction(risk, hour, factors if hour == len(risk.probabilities) - 1 else [])
        for hour in range(first, len(risk.probabilities))
    ]
    state = "an alert" if in_alert(risk) else "below the alert threshold"
    why = f" Top factors: {'; '.join(factors)}." if factors else ""
    resource["note"] = [
        {
            "text": f"Sepsis risk {_percent(risk.current)} in the hour from {_instant(last)} "
            f"({state}), by careloop sepsis model {risk.model_version}.{why}"
        }
    ]
    return resource


def _hourly_prediction(risk: RiskScore, hour: int, factors: Sequence[str]) -> dict:
    start = risk.start + hour * HOUR
    alert = bool(risk.alert_states) and risk.alert_states[hour] == 1
    prediction: dict = {
        "outcome": {"text": SEPSIS_OUTCOME},
        "probabilityDecimal": round(risk.probabilities[hour], 4),
        "qualitativeRisk": {"text": "alert" if alert else "below the alert threshold"},
        "whenPeriod": {"start": _instant(start), "end": _instant(start + HOUR)},
    }
    if factors:
        prediction["rationale"] = "; ".join(factors)[:1000]
    return prediction


def review_task(risk: RiskScore, started: datetime, now: datetime) -> dict:
    """The Task asking a nurse to review a sepsis alert: the monitoring alert Task's shape
    (status, intent, code, focus, for, owner queue, due within the hour), focused on the
    patient's snapshot RiskAssessment."""
    patient_id = risk.patient_id
    factors = "; ".join(risk.factors[:2])
    current = _percent(risk.current or 0.0)
    description = (
        f"Sepsis risk {current}, an alert since {_instant(started)}: review the patient."
        + (f" Top factors: {factors}." if factors else "")
    )
    return {
        "resourceType": "Task",
        "id": review_task_id(patient_id, started),
        "identifier": [
            {"system": SEPSIS_ALERT_ID_SYSTEM, "value": f"{patient_id}/{_instant(started)}"}
        ],
        "status": "requested",
        "intent": "order",
        "priority": "urgent",
        "code": {
            "coding": [
                {
                    "system": ALERT_REVIEW_SYSTEM,
                    "code": SEPSIS_REVIEW_CODE,
                    "display": "Review sepsis risk",
                }
            ],
            "text": "Review sepsis risk alert",
        },
        "description": description,
        "focus": {"reference": f"RiskAssessment/{snapshot_id(patient_id)}"},
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": _instant(now),
        "lastModified": _instant(now),
        "performerType": [NURSE],
        "owner": {"display": "Nurse queue"},
        "restriction": {"period": {"end": _instant(now + HOUR)}},
    }


def closed_task(task: dict, now: datetime) -> dict:
    """A review Task whose alert episode ended: completed when someone had taken it on, else
    cancelled (the risk fell back before anyone had to act)."""
    closed = {key: value for key, value in task.items() if key != "meta"}
    taken = task.get("status") in TAKEN_ON
    previous = task.get("lastModified") or _instant(now)
    closed["status"] = "completed" if taken else "cancelled"
    closed["statusReason"] = {
        "text": f"The sepsis alert ended at {_instant(now)}: the risk fell below the threshold."
    }
    closed["lastModified"] = _instant(now)
    if taken:
        period = dict(closed.get("executionPeriod") or {})
        period.setdefault("start", previous)
        period["end"] = _instant(now)
        closed["executionPeriod"] = period
    return closed


def plan_patient(risk: RiskScore, tasks: Sequence[dict], now: datetime) -> list[dict]:
    """What one refresh writes for one patient (pure): the snapshot, and the episode's Task when
    an alert begins, or the closing of the open Tasks when it ended. `tasks` are the patient's
    sepsis review Tasks on record, whatever their status."""
    resources = [risk_assessment(risk)]
    open_tasks = [task for task in tasks if task.get("status") in OPEN_TASK_STATES]
    started = episode_start(risk)
    if started is not None:
        known = {str(task.get("id")) for task in tasks}
        if not open_tasks and review_task_id(risk.patient_id, started) not in known:
            resources.append(review_task(risk, started, now))
    elif risk.probabilities:  # a scored hour below the alert: the episode, if any, is over
        resources.extend(closed_task(task, now) for task in open_tasks)
    return resources


@dataclass
class RefreshReport:
    """What a refresh did."""

    patients: int = 0
    scored: int = 0
    no_score: int = 0  # too little data: a snapshot saying why, no risk
    withheld: int = 0  # consent withheld the patient's record from scoring
    in_alert: int = 0  # patients whose current hour is an alert
    tasks_opened: int = 0
    tasks_closed: int = 0
    written: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # outcome -> n
    model_version: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        written = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.written.items()))
        return (
            f"{self.patients} patients: {self.scored} scored, {self.no_score} without a score, "
            f"{self.withheld} withheld by consent; {self.in_alert} in alert, "
            f"{self.tasks_opened} review Tasks opened, {self.tasks_closed} closed; "
            f"resources {written or 'none'} ({self.model_version}, {self.seconds:.1f} s)"
        )


def refresh_patients(
    access: AccessLayer,
    model: SepsisModel,
    principal: Principal,
    ctx: AccessContext,
    patient_ids: Iterable[str],
    *,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> RefreshReport:
    """Score each patient and write their snapshot (and alert Task), in batches of one
    transaction each; every resource is checked as FHIR R4 first, and each patient written to
    is audited after the commit that wrote them."""
    started = time.perf_counter()
    now = now or access.clock()
    store = access.store
    access.authorize(principal, ctx, Permission.PATIENT_WRITE, action=AuditAction.CREATE)
    ids = list(dict.fromkeys(patient_ids))
    report = RefreshReport(patients=len(ids), model_version=model.version)
    tasks = review_tasks_of(access, principal, ctx, ids)
    pending: list[dict] = []
    for number, patient_id in enumerate(ids, start=1):
        try:
            risk = score_patient(access, model, principal, ctx, patient_id, WINDOW_HOURS)
        except AccessDenied:
            report.withheld += 1
            continue
        planned = plan_patient(risk, tasks.get(patient_id, []), now)
        _count(report, risk, planned)
        pending.extend(planned)
        if len(pending) >= WRITE_BATCH:
            _write(store, access, principal, ctx, pending, report)
            pending = []
        if progress is not None:
            progress(number)
    if pending:
        _write(store, access, principal, ctx, pending, report)
    report.seconds = time.perf_counter() - started
    return report


def _count(report: RefreshReport, risk: RiskScore, planned: list[dict]) -> None:
    if risk.probabilities:
        report.scored += 1
    else:
        report.no_score += 1
    if in_alert(risk):
        report.in_alert += 1
    for resource in planned[1:]:
        if resource.get("status") == "requested":
            report.tasks_opened += 1
        else:
            report.tasks_closed += 1


def review_tasks_of(
    access: AccessLayer, principal: Principal, ctx: AccessContext, patient_ids: Sequence[str]
) -> dict[str, list[dict]]:
    """The sepsis review Tasks on record of these patients, by patient: one search (consent
    judged and audited per patient who has any)."""
    wanted = set(patient_ids)

    def run(_patient: str | None) -> SearchPage:
        found = []
        offset = 0
        while True:
            page = access.store.search(
                "Task", codes=[SEPSIS_REVIEW_TOKEN], count=TASK_PAGE, offset=offset
            )
            found += [item for item in page.resources if patient_id_of(item.body) in wanted]
            offset += len(page.resources)
            if not page.resources or offset >= page.total:
                return SearchPage(total=len(found), resources=found)

    page, _withheld = access.search(
        principal,
        ctx,
        "Task",
        run,
        patient_id=None,
        query_text=f"code={SEPSIS_REVIEW_TOKEN}",
    )
    by_patient: dict[str, list[dict]] = defaultdict(list)
    for item in page.resources:
        by_patient[patient_id_of(item.body) or ""].append(item.body)
    return by_patient


def _write(
    store: ResourceStore,
    access: AccessLayer,
    principal: Principal,
    ctx: AccessContext,
    resources: list[dict],
    report: RefreshReport,
) -> None:
    for resource in resources:
        errors = structural_errors(resource)
        if errors:
            path, message = errors[0]
            raise SnapshotError(
                f"{resource['resourceType']}/{resource['id']} is not valid FHIR R4: "
                f"{path}: {message}"
            )
    with store.transaction() as tx:
        results = tx.put_resources(resources)
    by_patient: dict[str, list[str]] = defaultdict(list)
    for resource, result in zip(resources, results, strict=True):
        report.written[result.outcome.value] += 1
        if result.outcome is not WriteOutcome.UNCHANGED:
            entity = f"{resource['resourceType']}/{resource['id']}"
            by_patient[patient_id_of(resource) or ""].append(entity)
    # After the commit: an audit entry for a write that then rolled back would be false.
    for patient_id, entities in by_patient.items():
        access.record(
            principal,
            ctx,
            AuditAction.CREATE,
            patient_id=patient_id or None,
            entities=tuple(entities),
            detail=f"worklist sepsis snapshot: {len(entities)} resources",
        )


def refresh_all(
    store: ResourceStore,
    model_dir: Path,
    principal: Principal,
    ctx: AccessContext,
    limit: int | None = None,
    *,
    access: AccessLayer | None = None,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> RefreshReport:
    """Refresh the snapshot of every patient in the store (the first `limit` when given), with
    the model in `model_dir`, acting as `principal` (the local monitor or nurse)."""
    access = access or AccessLayer(store)
    model = SepsisModel.load(model_dir)
    ids: list[str] = []
    for patient_id in access.all_patient_ids():
        if limit is not None and len(ids) >= limit:
            break
        ids.append(patient_id)
    return refresh_patients(access, model, principal, ctx, ids, now=now, progress=progress)
