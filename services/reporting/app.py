"""Reporting service: a read model of every case, folded from the project's own facts (complaints.received,
.assigned, .lifecycle, .sla) in any order, with rollups per day and group, and the reports of contract 7.1 over
HTTP. See docs/reporting.md.

The table of contents: worker.py (the projection: consume, fold, roll up, one transaction per batch), http.py (the
report endpoints), projections.py and repeats.py (the pure core), store.py (SQL); the rectification ledger in
ledger.py (pure), ledger_store.py and ledger_http.py; the monthly bulletin: bulletin.py (pure) and bulletin_http.py.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter

from services.reporting.bulletin_http import api as bulletin_api
from services.reporting.http import api
from services.reporting.ledger_http import api as ledger_api
from services.reporting.worker import Projection, ReportingMetrics, subscribe
from shared.clock import Clock, system_clock
from shared.service import ServiceContext, create_service_app
from shared.settings import Settings

SERVICE: Final = "reporting"
ROUTERS: Final[list[APIRouter]] = [api, ledger_api, bulletin_api]
"""Every HTTP router the service serves."""


async def setup(ctx: ServiceContext) -> None:
    metrics = ReportingMetrics(ctx)
    projection = Projection(ctx, metrics)
    ctx.extras.update(reporting_metrics=metrics, projection=projection)
    subscribe(ctx, projection)


def create_app(
    settings: Settings | None = None, clock: Clock = system_clock, routers: list[APIRouter] | None = None
) -> Any:
    return create_service_app(
        SERVICE,
        routers=[*ROUTERS, *(routers or [])],
        setup=setup,
        settings=settings,
        clock=clock,
        description="Reports: the rates of contract 7.1 per period and group, repeats, the rectification ledger.",
    )


__all__ = ["ROUTERS", "create_app", "setup"]
