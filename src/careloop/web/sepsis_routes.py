"""Sepsis risk for one patient over HTTP: the call CDS Hooks and the worklist make."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from careloop.access.errors import AccessDenied
from careloop.access.roles import Permission
from careloop.sepsis.model import SepsisModel
from careloop.sepsis.service import score_patient
from careloop.web import openapi_docs as docs
from careloop.web.auth import Caller, WebSecurity, caller_for, denied, permission_extra
from careloop.web.fhir_routes import check_id
from careloop.web.outcomes import FhirError


def build_sepsis_router(security: WebSecurity, model: SepsisModel | None) -> APIRouter:
    router = APIRouter(tags=["Risk"])

    @router.get(
        "/sepsis/Patient/{patient_id}/risk",
        summary="Hourly sepsis risk, alert state and top factors over the latest window",
        responses=docs.responses(
            docs.JSON_OBJECT, (400, 403, 404, 503), ok_media_type="application/json"
        ),
        openapi_extra=permission_extra(Permission.PATIENT_READ),
    )
    def risk(
        patient_id: str, hours: int = 48, caller: Caller = caller_for(Permission.PATIENT_READ)
    ) -> dict[str, Any]:
        check_id(patient_id)
        if model is None:
            raise FhirError.of(503, "not-supported", "no sepsis model is installed")
        try:
            score = score_patient(
                security.access, model, caller.principal, caller.ctx, patient_id, hours
            )
        except AccessDenied as exc:
            raise denied(exc) from None
        except ValueError as exc:
            raise FhirError.of(400, "value", str(exc)) from None
        return {
            "patient": patient_id,
            "model": score.model_version,
            "insufficient": score.insufficient,
            "window_start": score.start.isoformat() if score.insufficient is None else None,
            "probabilities": score.probabilities,
            "alert_states": score.alert_states,
            "current": score.current,
            "alert": bool(score.alert_states[-1]) if score.alert_states else False,
            "factors": score.factors,
        }

    return router
