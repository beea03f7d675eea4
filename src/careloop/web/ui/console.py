"""The governance console: the AI committee's, the data scientists' and the auditors' pages.

- `/app/governance/models`: the model registry, every version with its state history;
- `/app/governance/models/{version}`: one version's facts and metrics, its model card, the
  fairness dashboard (from the artifact's `fairness.json`) and the drift dashboard (from the
  recorded drift checks);
- `/app/governance/alerts`: alert burden and override analytics from the CDS ledger;
- `/app/governance/audit` (auditors only): the audit review for a period, audited itself.

Aggregates only: no page here reads a patient's record or shows one patient's data, and counts
of fewer than 5 per subgroup or per unit are shown as "fewer than 5" (see
`careloop.governance.console_data`). The audit page is the exception the auditor is entitled
to: like the audit review report it names agents and patient ids (who accessed whose record)
and break-glass reasons, never clinical content.

The committee's HTML report (`careloop report model`) is not offered for download here: it
scores labelled data files, which the web server does not hold; the console shows the same
fairness and drift figures from the artifact and the drift history, and the models page says
which command writes the report.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from careloop.access.roles import Permission
from careloop.audit.events import AuditAction
from careloop.audit.review import review
from careloop.governance import console_data
from careloop.governance.console_data import PeriodError, parse_period
from careloop.governance.registry import ModelRegistry
from careloop.web.auth import permission_extra
from careloop.web.ui.framework import UI_PREFIX, UiCaller, UiError, render, ui_caller
from careloop.web.ui.services import UiServices

MODELS = f"{UI_PREFIX}/governance/models"
ALERTS = f"{UI_PREFIX}/governance/alerts"
AUDIT = f"{UI_PREFIX}/governance/audit"
MAX_QUERY = 32  # characters of a since/until field read


def build_router(services: UiServices) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    governance = permission_extra(Permission.MODEL_GOVERNANCE)

    def registry() -> ModelRegistry | None:
        if services.registry_root is None:
            return None
        return ModelRegistry(services.store, services.registry_root, services.security.access.audit)

    @router.get(MODELS, openapi_extra=governance)
    def models(caller: UiCaller = ui_caller(Permission.MODEL_GOVERNANCE)) -> HTMLResponse:
        found = registry()
        groups = console_data.registry_overview(found) if found is not None else None
        return render(
            caller,
            "console_models.html",
            title="Models",
            current_path=MODELS,
            groups=groups,
            models_path=MODELS,
        )

    @router.get(f"{MODELS}/{{version}}", openapi_extra=governance)
    def model_version(
        version: str, caller: UiCaller = ui_caller(Permission.MODEL_GOVERNANCE)
    ) -> HTMLResponse:
        if not console_data.valid_version(version):
            raise UiError(
                400,
                "Not a model version",
                "A model version is letters, digits, '.', '_' or '-' (at most 128 characters), "
                "starting with a letter or digit.",
            )
        found = registry()
        detail = (
            None if found is None else console_data.version_detail(found, services.store, version)
        )
        if detail is None:
            raise UiError(
                404,
                "No such model version",
                "No registered model has this version. The models page lists every version.",
            )
        return render(
            caller,
            "console_version.html",
            title=f"Model {version}",
            current_path=MODELS,
            d=detail,
            models_path=MODELS,
        )

    @router.get(ALERTS, openapi_extra=governance)
    def alerts(
        since: str = "",
        until: str = "",
        caller: UiCaller = ui_caller(Permission.MODEL_GOVERNANCE),
    ) -> HTMLResponse:
        period = _period(since, until)
        burden = console_data.alert_burden(services.store, period)
        budget = services.cds.budget
        return render(
            caller,
            "console_alerts.html",
            title="Alerts and overrides",
            current_path=ALERTS,
            b=burden,
            budget_per_day=budget.per_day,
            repeat_hours=round(budget.repeat_after.total_seconds() / 3600, 1),
            form_path=ALERTS,
        )

    @router.get(AUDIT, openapi_extra=permission_extra(Permission.AUDIT_READ))
    async def audit(
        since: str = "",
        until: str = "",
        caller: UiCaller = ui_caller(Permission.AUDIT_READ),
    ) -> HTMLResponse:
        period = _period(since, until, default_days=7)
        access = services.security.access
        report = await run_in_threadpool(
            review, access.audit, access.store, since=period.start, until=period.end
        )
        refusals = await run_in_threadpool(console_data.refused_pages, access.audit, period)
        access.record(
            caller.principal,
            caller.ctx,
            AuditAction.AUDIT_REVIEW,
            detail=f"review page {period.since.isoformat()} to {period.until.isoformat()}",
        )
        return render(
            caller,
            "console_audit.html",
            title="Audit review",
            current_path=AUDIT,
            r=report,
            period=period,
            refusals=refusals,
            moment=console_data.moment_text,
            form_path=AUDIT,
        )

    return router


def _period(since: str, until: str, default_days: int = 30) -> console_data.Period:
    try:
        return parse_period(since[:MAX_QUERY], until[:MAX_QUERY], default_days=default_days)
    except PeriodError as exc:
        raise UiError(400, f"Check the '{exc.field}' date", str(exc)) from None
