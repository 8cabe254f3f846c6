"""The monthly bulletin (月度通报) over HTTP: `GET /v1/reports/bulletin?month=YYYY-MM`, key `reports` or `admin`.

Thin: one read-only snapshot of the read model (the month's rollups, the month before's total, the overdue cases,
the cases behind the repeats, the ledger), then `bulletin.build_bulletin` and `bulletin.render_bulletin` (pure).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import date, timedelta
from typing import Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from services.reporting import ledger_store, store
from services.reporting.bulletin import (
    MAX_OVERDUE,
    build_bulletin,
    parse_month,
    previous_month,
    render_bulletin,
)
from services.reporting.http import ERRORS, READ_SCOPES, _ctx, _invalid, _may_read, _observe
from services.reporting.ledger import previous_years, recurring_flags
from services.reporting.projections import CATEGORY_NAMES, TOTAL_DIMENSION, TOTAL_KEY, ZERO
from services.reporting.watch import bulletin_sections
from shared.auth import Principal
from shared.domain import LOCAL_TZ
from shared.service import CallerDep, db_or_503

api = APIRouter(tags=["reports"])

_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "The page"},
    **ERRORS,
    422: {**ERRORS[422], "description": "`month` is not a month YYYY-MM"},
}


@api.get(
    "/v1/reports/bulletin",
    summary="The monthly bulletin (月度通报): one printable HTML page in Chinese, charts inline (SVG)",
    response_class=HTMLResponse,
    responses=_RESPONSES,
    openapi_extra={"x-scopes": READ_SCOPES},
)
async def get_bulletin(
    request: Request,
    month: str | None = Query(default=None, description="YYYY-MM (local); default: the current local month"),
    caller: Principal = CallerDep,
) -> HTMLResponse:
    started = time.perf_counter()
    _may_read(caller)
    ctx = _ctx(request)
    as_of = ctx.clock()
    label = month if month is not None else as_of.astimezone(LOCAL_TZ).strftime("%Y-%m")
    try:
        first, last = parse_month(label)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    before_first, before_last = previous_month(first)
    look_back = min(date(first.year - 1, 1, 1), first - timedelta(days=90))
    # One snapshot, so the page's figures agree with one another.
    async with (
        db_or_503(),
        asyncio.timeout(20),
        ctx.pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        groups = await store.sum_rollups(conn, "department", first, last)
        total = (await store.sum_rollups(conn, TOTAL_DIMENSION, first, last)).get(TOTAL_KEY, ZERO)
        before = (await store.sum_rollups(conn, TOTAL_DIMENSION, before_first, before_last)).get(TOTAL_KEY, ZERO)
        overdue = await store.overdue_cases(conn, last, MAX_OVERDUE)
        repeat_cases = await store.repeat_cases(conn, first, last, look_back)
        items = await ledger_store.list_items(conn)
        flags = recurring_flags(items, await ledger_store.items_of_years(conn, previous_years(items)))
        sections = await bulletin_sections(conn, first, last, as_of)
    data = build_bulletin(
        label,
        as_of,
        groups=groups,
        total=total,
        previous_total=before,
        overdue=overdue,
        repeat_cases=repeat_cases,
        ledger_items=items,
        ledger_recurring=flags,
    )
    page = render_bulletin(replace(data, extra_sections=tuple(sections)), CATEGORY_NAMES)
    _observe(request, "bulletin", started)
    return HTMLResponse(page)
