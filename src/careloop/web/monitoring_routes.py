"""Remote monitoring over HTTP: the chart a monitoring card links to.

`GET /monitoring/alerts/{alert_id}/chart/{signal}` answers the SVG stored in the alert's Media
for that signal, read through the access layer like any other patient data (role, purpose,
the patient's consents, a patient only their own record; audited). The SVG is served as an
image under a Content-Security-Policy that forbids everything but inline styles, and with
`nosniff`, so even a tampered chart could not run a script or fetch anything when opened.
"""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Path
from fastapi.responses import Response

from careloop.access.roles import Permission
from careloop.monitoring.fhir_alerts import ALERT_ID_SYSTEM, SVG, chart_media_id
from careloop.monitoring.signals import Signal
from careloop.web import openapi_docs as docs
from careloop.web.auth import Caller, WebSecurity, caller_for, permission_extra
from careloop.web.fhir_routes import check_id, guarded
from careloop.web.outcomes import FhirError

CHART_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


def build_monitoring_router(security: WebSecurity) -> APIRouter:
    router = APIRouter(tags=["Monitoring"])

    @router.get(
        "/monitoring/alerts/{alert_id}/chart/{signal}",
        summary="The chart of one signal of a monitoring alert against the person's baseline",
        responses=docs.responses({"type": "string"}, (400, 404), ok_media_type=SVG),
        openapi_extra=permission_extra(Permission.PATIENT_READ),
        response_class=Response,
    )
    def alert_chart(
        alert_id: str = Path(json_schema_extra=docs.ID_SCHEMA),
        signal: str = Path(json_schema_extra={"enum": [s.value for s in Signal]}),
        caller: Caller = caller_for(Permission.PATIENT_READ),
    ) -> Response:
        check_id(alert_id)
        known = _signal(signal)
        media_id = chart_media_id(alert_id, known)
        stored = guarded(security.access.read, caller, "Media", media_id)
        if stored is None or not _names_alert(stored.body, alert_id):
            raise _no_chart()
        return Response(_svg_of(stored.body), media_type=SVG, headers=CHART_HEADERS)

    return router


def _signal(value: str) -> Signal:
    try:
        return Signal(value)
    except ValueError:
        raise _no_chart() from None


def _names_alert(media: dict, alert_id: str) -> bool:
    """The Media is this alert's: its id is shortened to fit FHIR, its identifier is not."""
    return any(
        isinstance(identifier, dict)
        and identifier.get("system") == ALERT_ID_SYSTEM
        and identifier.get("value") == alert_id
        for identifier in media.get("identifier") or []
    )


def _svg_of(media: dict) -> bytes:
    content = media.get("content") or {}
    if content.get("contentType") != SVG or not isinstance(content.get("data"), str):
        raise _no_chart()
    try:
        return base64.b64decode(content["data"], validate=True)
    except (binascii.Error, ValueError):
        raise _no_chart() from None


def _no_chart() -> FhirError:
    return FhirError.of(404, "not-found", "no chart for this alert and signal")
