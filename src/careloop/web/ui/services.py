"""What the page routers are given: the app's services, built once by `web.app.create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from careloop.cds.feedback import FeedbackBook
from careloop.cds.services import CdsEngine
from careloop.identity.ratelimit import RateLimiter
from careloop.store.repository import ResourceStore
from careloop.web.auth import WebSecurity
from careloop.web.fhir_routes import FhirService


@dataclass(frozen=True)
class UiServices:
    store: ResourceStore
    security: WebSecurity  # .access is the one door to patient data
    fhir: FhirService  # guarded writes (a Task acknowledged, a Consent, a Communication)
    cds: CdsEngine  # the same engine the EHR calls: a patient page is a patient-view
    feedback: FeedbackBook  # accept / override, the same loop as CDS Hooks feedback
    login_limiter: RateLimiter
    registry_root: Path | None  # the model registry's artifact directory; None: no registry
    sepsis_model_dir: Path | None  # the model serving now (its card), when there is one
    demo: bool = False  # demo mode: the sign-in page says how to get a demo account's code
