"""Scoring a patient from careloop's store, through the access layer: what CDS Hooks and the
worklist call. The patient's record is read as any other read is (role, consent, audit), turned
into a timeline, and scored over a window that ends at the latest vital sign."""

from __future__ import annotations

from datetime import datetime

from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal
from careloop.audit.events import AuditAction, AuditOutcome
from careloop.sepsis.grid import HOUR
from careloop.sepsis.model import SepsisModel
from careloop.sepsis.scoring import RiskScore, score_timeline
from careloop.sepsis.signals import SIGNALS
from careloop.timeline import build_timeline

VITAL_CODES = [signal.loinc for signal in SIGNALS if signal.vital]
MAX_WINDOW_HOURS = 24 * 14


def score_patient(
    access: AccessLayer,
    model: SepsisModel,
    principal: Principal,
    ctx: AccessContext,
    patient_id: str,
    window_hours: int = 48,
) -> RiskScore:
    """Hourly sepsis risk for the `window_hours` ending at the patient's latest vital sign."""
    if not 2 <= window_hours <= MAX_WINDOW_HOURS:
        raise ValueError(f"the window must be 2 to {MAX_WINDOW_HOURS} hours")
    release = access.patient_compartment(principal, ctx, patient_id, action=AuditAction.SCORE)
    timeline = build_timeline(patient_id, [item.body for item in release.resources])
    latest = [point.time for code in VITAL_CODES if (point := timeline.latest(code))]
    if not latest:
        risk = RiskScore(patient_id, model.version, datetime.min)
        risk.insufficient = "no vital signs on record"
    else:
        end = max(latest)
        start = _hour_floor(end) - (window_hours - 1) * HOUR
        risk = score_timeline(model, timeline, start, end)
    outcome = AuditOutcome.SUCCESS if risk.insufficient is None else AuditOutcome.MINOR_FAILURE
    access.record(
        principal,
        ctx,
        AuditAction.SCORE,
        outcome,
        patient_id=patient_id,
        detail=f"{model.version}: " + (risk.insufficient or f"risk {risk.current:.3f}"),
    )
    return risk


def _hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)
