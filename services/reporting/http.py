"""Reports over HTTP (contract 7.1): the summary as JSON, CSV and XLSX, and the repeats; key `reports` or `admin`."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, create_model

from services.reporting import store
from services.reporting.projections import FIGURES, GROUP_BY, TOTAL_DIMENSION, TOTAL_KEY, ZERO, summary
from services.reporting.repeats import find_repeats
from shared.auth import Principal
from shared.domain import LOCAL_TZ
from shared.service import CallerDep, ServiceContext, db_or_503

api = APIRouter(tags=["reports"])
READ_SCOPES: Final = ["reports", "admin"]
XLSX_TYPE: Final = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ErrorAnswer(BaseModel):
    error: str
    reason: str


_figure_fields: dict[str, Any] = {
    name: ((float | None) if name.endswith("_rate") else int, Field(description=name)) for name in FIGURES
}
GroupFigures = create_model("GroupFigures", key=(str, ...), name=(str, ...), **_figure_fields)


class SummaryAnswer(BaseModel):
    from_: str = Field(alias="from")
    to: str
    group_by: str
    as_of: str
    groups: list[GroupFigures]
    total: GroupFigures


class RepeatEnterprise(BaseModel):
    name: str | None
    uscc: str | None


class Repeat(BaseModel):
    kind: str = Field(description="same_enterprise_90d or consecutive_years")
    enterprise: RepeatEnterprise
    category: str
    complaint_ids: list[str]


class RepeatsAnswer(BaseModel):
    repeats: list[Repeat]


ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ErrorAnswer, "description": "No key, or an unknown key"},
    403: {"model": ErrorAnswer, "description": "A key whose scope is neither `reports` nor `admin`"},
    422: {"model": ErrorAnswer, "description": "A date that does not parse, `from` after `to`, an unknown group_by"},
    503: {"model": ErrorAnswer, "description": "The database is not reachable; retry later"},
}
_PERIOD_DOC: Final = "Local date (Asia/Shanghai) YYYY-MM-DD, included"


def _ctx(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


def _may_read(caller: Principal) -> None:
    if caller.scope not in READ_SCOPES:
        raise HTTPException(403, {"error": "forbidden", "reason": "reports need a `reports` or `admin` key"})


def _invalid(reason: str) -> HTTPException:
    return HTTPException(422, {"error": "invalid", "reason": reason})


def _date(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _invalid(f"`{name}` must be a date YYYY-MM-DD, not {value[:40]!r}") from None


def period(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    """from/to of 7.1: both given; only `to` → from its month's first day; only `from` → to today; neither → the
    current month so far."""
    to = _date(end, "to") if end is not None else today
    frm = _date(start, "from") if start is not None else to.replace(day=1)
    if frm > to:
        raise _invalid(f"`from` ({frm}) is after `to` ({to})")
    return frm, to


async def _summary(request: Request, start: str | None, end: str | None, group_by: str) -> dict[str, Any]:
    ctx = _ctx(request)
    if group_by not in GROUP_BY:
        raise _invalid(f"group_by must be one of {', '.join(GROUP_BY)}, not {group_by[:40]!r}")
    now = ctx.clock()
    frm, to = period(start, end, now.astimezone(LOCAL_TZ).date())
    async with db_or_503(), asyncio.timeout(10), ctx.pool.acquire() as conn:
        groups, totals = await store.sum_summary(conn, group_by, TOTAL_DIMENSION, frm, to)
        total = totals.get(TOTAL_KEY, ZERO)
    return summary(group_by, groups, total, start=frm, end=to, as_of=now)


def _observe(request: Request, report: str, started: float) -> None:
    metrics = _ctx(request).extras.get("reporting_metrics")
    if metrics is not None:
        metrics.report_seconds.labels(report).observe(time.perf_counter() - started)


def _rows(answer: dict[str, Any]) -> list[list[Any]]:
    header = ["key", "name", *FIGURES]
    return [header] + [[row[c] for c in header] for row in [*answer["groups"], answer["total"]]]


def summary_csv(answer: dict[str, Any]) -> bytes:
    """RFC 4180 with CRLF line ends, UTF-8 with a byte order mark; null is an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in _rows(answer):
        writer.writerow(["" if v is None else v for v in row])
    return b"\xef\xbb\xbf" + out.getvalue().encode("utf-8")


def summary_xlsx(answer: dict[str, Any]) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "summary"
    for row in _rows(answer):
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


_GROUP_BY_DOC: Final = "department | channel | region | category"


@dataclass(frozen=True)
class SummaryQuery:
    """The summary's query (7.1), the same for its JSON, CSV and XLSX forms."""

    start: str | None
    end: str | None
    group_by: str


def summary_query(
    start: str | None = Query(default=None, alias="from", description=_PERIOD_DOC),
    end: str | None = Query(default=None, alias="to", description=_PERIOD_DOC),
    group_by: str = Query(default="department", description=_GROUP_BY_DOC),
) -> SummaryQuery:
    return SummaryQuery(start, end, group_by)


SummaryQueryDep = Depends(summary_query)


async def _summary_of(request: Request, caller: Principal, query: SummaryQuery, report: str) -> dict[str, Any]:
    """Checks the caller's scope, then answers the query; the time it took is observed under `report`."""
    started = time.perf_counter()
    _may_read(caller)
    answer = await _summary(request, query.start, query.end, query.group_by)
    _observe(request, report, started)
    return answer


def _attachment(answer: dict[str, Any], extension: str, body: bytes, media_type: str) -> Response:
    name = f"summary_{answer['from']}_{answer['to']}_{answer['group_by']}.{extension}"
    return Response(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@api.get(
    "/v1/reports/summary",
    summary="The rates of contract 7.1 for a period, per group and in total",
    response_model=SummaryAnswer,
    response_model_by_alias=True,
    responses=ERRORS,
    openapi_extra={"x-scopes": READ_SCOPES},
)
async def get_summary(
    request: Request, query: SummaryQuery = SummaryQueryDep, caller: Principal = CallerDep
) -> JSONResponse:
    return JSONResponse(await _summary_of(request, caller, query, "summary"))


@api.get(
    "/v1/reports/summary.csv",
    summary="The summary as CSV (UTF-8 with BOM, CRLF), the total last",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"}, **ERRORS},
    response_class=Response,
    openapi_extra={"x-scopes": READ_SCOPES},
)
async def get_summary_csv(
    request: Request, query: SummaryQuery = SummaryQueryDep, caller: Principal = CallerDep
) -> Response:
    answer = await _summary_of(request, caller, query, "summary.csv")
    return _attachment(answer, "csv", summary_csv(answer), "text/csv; charset=utf-8")


@api.get(
    "/v1/reports/summary.xlsx",
    summary="The summary as an Excel workbook (same header in row 1)",
    responses={200: {"content": {XLSX_TYPE: {"schema": {"type": "string", "format": "binary"}}}}, **ERRORS},
    response_class=Response,
    openapi_extra={"x-scopes": READ_SCOPES},
)
async def get_summary_xlsx(
    request: Request, query: SummaryQuery = SummaryQueryDep, caller: Principal = CallerDep
) -> Response:
    answer = await _summary_of(request, caller, query, "summary.xlsx")
    return _attachment(answer, "xlsx", summary_xlsx(answer), XLSX_TYPE)


@api.get(
    "/v1/reports/repeats",
    summary="Recurring problems: same enterprise and category twice in 90 days, or in two consecutive years",
    response_model=RepeatsAnswer,
    responses=ERRORS,
    openapi_extra={"x-scopes": READ_SCOPES},
)
async def get_repeats(
    request: Request,
    start: str | None = Query(default=None, alias="from", description=_PERIOD_DOC),
    end: str | None = Query(default=None, alias="to", description=_PERIOD_DOC),
    caller: Principal = CallerDep,
) -> JSONResponse:
    started = time.perf_counter()
    _may_read(caller)
    ctx = _ctx(request)
    frm, to = period(start, end, ctx.clock().astimezone(LOCAL_TZ).date())
    look_back = min(date(frm.year - 1, 1, 1), frm - timedelta(days=90))
    async with db_or_503(), asyncio.timeout(10), ctx.pool.acquire() as conn:
        cases = await store.repeat_cases(conn, frm, to, look_back)
    answer = {"repeats": find_repeats(cases, frm, to)}
    _observe(request, "repeats", started)
    return JSONResponse(answer)
