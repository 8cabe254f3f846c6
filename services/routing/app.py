"""Routing service: places each received complaint on a department (派单), takes the departments' actions and the
hotline's callbacks through the case state machine, keeps a read model of the SLA deadlines, and serves cases,
dry runs and rule sets over HTTP.

The table of contents: rulebook.py (the rules in force), worker.py (the consumers and the one `apply` that the
HTTP side shares), http.py (the endpoints), casework.py / lifecycle.py / rules.py (the pure core), store.py (SQL).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from services.routing.http import api
from services.routing.rulebook import RulesFileError, load_rule_book
from services.routing.rules import RulesError
from services.routing.worker import RoutingWorker, subscribe
from shared.events import ComplaintAssigned, DeadLetter, LifecycleChanged
from shared.service import ServiceContext, create_service_app
from shared.settings import Settings

log = logging.getLogger(__name__)
SERVICE: Final = "routing"


async def setup(ctx: ServiceContext) -> None:
    try:
        rules = load_rule_book(ctx.settings)
    except (RulesError, RulesFileError) as exc:
        log.critical("routing rules refused, not starting: %s", exc)
        raise
    log.info("routing rules loaded", extra={"source": rules.source, "version": rules.base.version})
    worker = RoutingWorker(ctx, rules)
    ctx.extras["worker"] = worker
    t = ctx.topics
    subscribe(
        ctx,
        worker,
        t.received,
        "received",
        worker.take_received,
        "complaint.received (3.1): each new complaint is routed and assigned.",
    )
    subscribe(
        ctx,
        worker,
        t.actions,
        "actions",
        worker.take_actions,
        "Department actions (3.3); refused ones become dead letters.",
    )
    subscribe(
        ctx,
        worker,
        t.callbacks,
        "callbacks",
        worker.take_callbacks,
        "Callback results (3.4): close or reopen (重办) resolved cases.",
    )
    subscribe(
        ctx, worker, t.sla, "sla", worker.take_sla, "SLA events (3.5), kept as routing's read model of the deadlines."
    )
    ctx.broker.publisher(
        t.assigned,
        schema=ComplaintAssigned,
        title="complaints.assigned",
        description="Assignments (3.2, 派单), keyed by complaint_id; round +1 after each return or reopening.",
    )
    ctx.broker.publisher(
        t.lifecycle,
        schema=LifecycleChanged,
        title="complaints.lifecycle",
        description="State changes of cases (3.6), and extension facts with from_state == to_state.",
    )
    ctx.broker.publisher(
        t.dlq,
        schema=DeadLetter,
        title="complaints.dlq",
        description="Records routing could not take (invalid, refused, unknown case), with reason and bytes.",
    )
    worker.start()


async def teardown(ctx: ServiceContext) -> None:
    worker: RoutingWorker | None = ctx.extras.get("worker")
    if worker is not None:
        await worker.stop()



def create_app(settings: Settings | None = None) -> Any:
    return create_service_app(
        SERVICE,
        routers=[api],
        setup=setup,
        teardown=teardown,
        settings=settings,
        description="Routes complaints to departments (派单), takes their actions and the callbacks, serves cases.",
    )
