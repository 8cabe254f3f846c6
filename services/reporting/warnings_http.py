"""Early warnings over HTTP (contract 10.4): `GET /v1/reports/warnings` (keys `reports`, `admin`). The router `api`
is included in the reporting service's app."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import Any, Final

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.reporting import warning_store
from services.reporting.http import period
from services.reporting.warnings import describe_key, week_label
from services.reporting.watch import week_start_of
from shared.auth import Principal
from shared.calendar import as_utc
from shared.domain import LOCAL_TZ
from shared.events import WarningKind
from shared.service import CallerDep, context, db_or_503

READERS: Final = ("reports", "admin")

api = APIRouter(tags=["reports"])


class WarningView(BaseModel):
    warning_id: str
    kind: WarningKind
    key: dict[str, str] = Field(
        description='{"region_code", "category"}, {"category"}, {"uscc"} or {"enterprise_name"}.'
    )
    key_name: str = Field(description="The key in Chinese words (region · category, or the enterprise).")
    week: str = Field(description="ISO week, local, e.g. 2026-W48.")
    count: int
    baseline: float | None
    p_value: float | None
    complaint_ids: list[str]
    raised_at: datetime


class WarningsPage(BaseModel):
    from_: date = Field(alias="from")
    to: date
    warnings: list[WarningView]


class ErrorBody(BaseModel):
    error: str
    reason: str


def _z(moment: datetime) -> str:
    return as_utc(moment).isoformat().replace("+00:00", "Z")


def warning_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "warning_id": row["warning_id"],
        "kind": row["kind"],
        "key": row["key"],
        "key_name": describe_key(row["key"]),
        "week": week_label(row["week_start"]),
        "count": row["count"],
        "baseline": row["baseline"],
        "p_value": row["p_value"],
        "complaint_ids": row["complaint_ids"],
        "raised_at": _z(row["raised_at"]),
    }


@api.get(
    "/v1/reports/warnings",
    summary="Early warnings (防未病) of the weeks that touch the period, oldest week first",
    openapi_extra={"x-scopes": list(READERS)},
    responses={
        200: {"model": WarningsPage, "description": "The warnings"},
        401: {"model": ErrorBody, "description": "No key, or an unknown key"},
        403: {"model": ErrorBody, "description": "The key's scope may not read reports"},
        422: {"model": ErrorBody, "description": "A date that does not parse, `from` after `to`, an unknown kind"},
        503: {"model": ErrorBody, "description": "The database is not reachable; retry later"},
    },
)
async def list_warnings(
    request: Request,
    start: str | None = Query(default=None, alias="from", description="Local date YYYY-MM-DD, included"),
    end: str | None = Query(default=None, alias="to", description="Local date YYYY-MM-DD, included"),
    kind: str | None = Query(default=None, description="rising or enterprise_repeat"),
    caller: Principal = CallerDep,
) -> JSONResponse:
    if caller.scope not in READERS:
        raise HTTPException(403, {"error": "forbidden", "reason": f"this needs a key of scope {' or '.join(READERS)}"})
    if kind not in (None, "", *(k.value for k in WarningKind)):
        raise HTTPException(
            422, {"error": "invalid", "reason": f"unknown kind {str(kind)[:40]!r}: rising or enterprise_repeat"}
        )
    ctx = context(request)
    frm, to = period(start, end, ctx.clock().astimezone(LOCAL_TZ).date())
    async with db_or_503(), asyncio.timeout(10):
        rows = await warning_store.list_warnings(ctx.pool, week_start_of(frm), to, kind or None)
    return JSONResponse({"from": frm.isoformat(), "to": to.isoformat(), "warnings": [warning_view(r) for r in rows]})


__all__ = ["api"]
