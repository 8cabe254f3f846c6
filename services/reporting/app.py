"""Reporting service: a read model of every case, folded from the project's own facts (complaints.received,
.assigned, .lifecycle, .sla) in any order, with rollups per day and group, and the reports of contract 7.1 over
HTTP. See docs/reporting.md.

The table of contents:
- worker.py: the projection (consume, fold, roll up, one transaction per batch); projections.py and repeats.py its
  pure core; store.py its SQL; http.py the report endpoints (7.1 summary as JSON, CSV, XLSX; repeats).
- ledger.py (pure), ledger_store.py, ledger_http.py: the rectification ledger (8).
- bulletin.py (pure), bulletin_http.py: the monthly bulletin page.
- supervision.py and warnings.py (pure), watch.py (their consumer and ticker), supervision_store.py,
  warning_store.py, supervision_http.py, warnings_http.py: supervision items and early warnings (10.3, 10.4).
- surveys.py (pure), surveys_http.py: survey scores and their report (10.2).
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter

from services.reporting.bulletin_http import api as bulletin_api
from services.reporting.http import api
from services.reporting.ledger_http import api as ledger_api
from services.reporting.supervision_http import api as supervision_api
from services.reporting.surveys_http import api as surveys_api
from services.reporting.surveys_http import subscribe_surveys
from services.reporting.warnings_http import api as warnings_api
from services.reporting.watch import setup_watch, stop_watch
from services.reporting.worker import Projection, ReportingMetrics, subscribe
from shared.clock import Clock, system_clock
from shared.service import ServiceContext, create_service_app
from shared.settings import Settings

SERVICE: Final = "reporting"
ROUTERS: Final[list[APIRouter]] = [api, ledger_api, supervision_api, warnings_api, surveys_api, bulletin_api]
"""Every HTTP router the service serves."""


async def setup(ctx: ServiceContext) -> None:
    metrics = ReportingMetrics(ctx)
    projection = Projection(ctx, metrics)
    ctx.extras.update(reporting_metrics=metrics, projection=projection)
    subscribe(ctx, projection)
    subscribe_surveys(ctx)
    await setup_watch(ctx)  # supervision items and early warnings: own consumer group, the due-time ticker


async def teardown(ctx: ServiceContext) -> None:
    await stop_watch(ctx)


def create_app(
    settings: Settings | None = None, clock: Clock = system_clock, routers: list[APIRouter] | None = None
) -> Any:
    return create_service_app(
        SERVICE,
        routers=[*ROUTERS, *(routers or [])],
        setup=setup,
        teardown=teardown,
        settings=settings,
        clock=clock,
        description="Reports: the rates of contract 7.1 per period and group, repeats, the rectification ledger.",
    )


__all__ = ["ROUTERS", "create_app", "setup"]
