"""The ledger's HTTP side (contract section 8): import, list, export as CSV, close. Writing needs `admin`, reading
`reports` or `admin`. The router `api` is included in the reporting service's app."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import asyncpg
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from services.reporting import ledger_store
from services.reporting.ledger import (
    XLSX_TYPE,
    CloseRequest,
    ItemStatus,
    LedgerImportError,
    LedgerItem,
    close_item,
    completion,
    describe,
    file_kind,
    item_view,
    parse_file,
    previous_years,
    recurring_flags,
    to_csv,
)
from services.reporting.ledger_store import Executor
from shared.auth import Principal
from shared.service import CallerDep, context, db_or_503, read_limited

log = logging.getLogger(__name__)

MAX_IMPORT_BYTES: Final = 5 * 1024 * 1024
MAX_CLOSE_BYTES: Final = 64 * 1024
WRITERS: Final = ("admin",)
READERS: Final = ("reports", "admin")

api = APIRouter(tags=["ledger"])


# --- shapes, for the OpenAPI document -------------------------------------------------------------------------


class ItemView(LedgerItem):
    """An item as answered: its fields, `recurring`, and the closing (null until closed)."""

    recurring: bool = Field(description="An item of the previous year's source has the same area and problem.")


class ItemsPage(BaseModel):
    items: list[ItemView]
    total: int = Field(description="Items that match the filters.")
    closed: int = Field(description="Of them, closed.")
    completion_rate: float | None = Field(description="closed / total, rounded half up to 4 decimals; null if 0.")


class Imported(BaseModel):
    imported: int = Field(description="Items inserted or updated.")


class ImportRefused(BaseModel):
    error: str = Field(description="`invalid_row`, or `invalid_file` when no row is at fault.")
    row: int | None = Field(description="The line of the file (header = 1); for JSON the item's position from 1.")
    reason: str


class ErrorBody(BaseModel):
    error: str
    reason: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    said = {
        400: "The body is not valid JSON",
        401: "No key, or an unknown key",
        403: "The key's scope may not do this",
        404: "No such item",
        409: "The item is closed already",
        413: "The body is over the size limit",
        415: "The body is neither JSON, CSV nor XLSX",
        422: "Invalid parameters or body",
        503: "The database is not reachable; retry later",
    }
    return {code: {"model": ErrorBody, "description": said[code]} for code in codes}


def _inline(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` inlined, to declare a hand-parsed request body in OpenAPI."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_IMPORT_BODY: Final = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    _inline(LedgerItem),
                    {
                        "type": "object",
                        "required": ["items"],
                        "properties": {"items": {"type": "array", "items": _inline(LedgerItem)}},
                    },
                ]
            }
        },
        "text/csv": {
            "schema": {"type": "string"},
            "example": "item_id,source,area,problem,measures,departments,due_date,status\r\n"
            "ZG-2025-001,2025 自治区营商环境评估反馈,政务服务,审批时限过长,压缩时限,fgw;zwfw,2025-12-31,open\r\n",
        },
        XLSX_TYPE: {"schema": {"type": "string", "format": "binary"}},
    },
}


# --- helpers --------------------------------------------------------------------------------------------------


def _require(caller: Principal, scopes: Sequence[str]) -> None:
    if caller.scope not in scopes:
        raise HTTPException(403, {"error": "forbidden", "reason": f"this needs a key of scope {' or '.join(scopes)}"})


async def _close_locked(conn: asyncpg.Connection[Any], item_id: str, wanted: CloseRequest, now: datetime) -> LedgerItem:
    item = await ledger_store.lock_item(conn, item_id)
    if item is None:
        raise HTTPException(404, {"error": "not_found", "reason": f"no ledger item {item_id!r}"})
    if item.status is ItemStatus.CLOSED:
        raise HTTPException(409, {"error": "conflict", "reason": f"item {item_id!r} is closed already"})
    closed = close_item(item, wanted, now)
    await ledger_store.save_closing(conn, closed)
    return closed


async def _flagged(db: Executor, items: list[LedgerItem]) -> list[bool]:
    return recurring_flags(items, await ledger_store.items_of_years(db, previous_years(items)))


async def _filtered(
    request: Request, source: str | None, status: str | None, department: str | None
) -> tuple[list[LedgerItem], list[bool]]:
    wanted: ItemStatus | None = None
    if status is not None:
        try:
            wanted = ItemStatus(status)
        except ValueError:
            raise HTTPException(
                422,
                {
                    "error": "invalid",
                    "reason": f"unknown status {status!r}: one of {', '.join(s.value for s in ItemStatus)}",
                },
            ) from None
    ctx = context(request)
    async with db_or_503(), asyncio.timeout(30), ctx.pool.acquire() as conn, conn.transaction(readonly=True):
        items = await ledger_store.list_items(conn, source=source or None, status=wanted, department=department or None)
        flags = await _flagged(conn, items)
    return items, flags


_SOURCE = Query(default=None, description="Only items of this source, as written in the ledger.")
_STATUS = Query(default=None, description="Only items in this status: open, in_progress or closed.")
_DEPARTMENT = Query(default=None, description="Only items one of whose departments is this.")


# --- endpoints ------------------------------------------------------------------------------------------------


@api.post(
    "/v1/ledger/items",
    status_code=201,
    summary="Import ledger items: one JSON item, {items: [...]}, or a whole CSV or XLSX file; all or nothing",
    openapi_extra={"x-scopes": list(WRITERS), "requestBody": _IMPORT_BODY},
    responses={
        201: {"model": Imported, "description": "Every item inserted, or updated when its item_id exists"},
        422: {"model": ImportRefused, "description": "A bad row refuses the whole import; nothing is applied"},
        **_errors(401, 403, 413, 415, 503),
    },
)
async def import_items(request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx = context(request)
    _require(caller, WRITERS)
    raw = await read_limited(request, MAX_IMPORT_BYTES)
    kind = file_kind(request.headers.get("content-type"), raw)
    if kind is None:
        raise HTTPException(
            415,
            {
                "error": "unsupported_media_type",
                "reason": f"send application/json, text/csv or {XLSX_TYPE} (an .xlsx file as the body)",
            },
        )
    try:
        # openpyxl is slow on a big sheet: parse beside the event loop, not on it.
        items = await asyncio.to_thread(parse_file, kind, raw)
    except LedgerImportError as exc:
        error = "invalid_row" if exc.row is not None else "invalid_file"
        raise HTTPException(422, {"error": error, "row": exc.row, "reason": exc.reason}) from None
    async with db_or_503(), asyncio.timeout(30), ctx.pool.acquire() as conn, conn.transaction():
        count = await ledger_store.import_items(conn, items, ctx.clock())
    log.info("ledger imported", extra={"items": count, "format": kind})
    return JSONResponse({"imported": count}, status_code=201)


@api.get(
    "/v1/ledger/items",
    summary="The ledger's items, with the completion rate of those that match",
    openapi_extra={"x-scopes": list(READERS)},
    responses={200: {"model": ItemsPage, "description": "The items"}, **_errors(401, 403, 422, 503)},
)
async def list_items(
    request: Request,
    source: str | None = _SOURCE,
    status: str | None = _STATUS,
    department: str | None = _DEPARTMENT,
    caller: Principal = CallerDep,
) -> JSONResponse:
    _require(caller, READERS)
    items, flags = await _filtered(request, source, status, department)
    total, closed, completion_rate = completion(items)
    return JSONResponse(
        {
            "items": [item_view(i, f) for i, f in zip(items, flags, strict=True)],
            "total": total,
            "closed": closed,
            "completion_rate": completion_rate,
        }
    )


@api.get(
    "/v1/ledger/items.csv",
    summary="The same items as CSV (UTF-8 with a byte order mark, CRLF), importable again as it is",
    openapi_extra={"x-scopes": list(READERS)},
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "The ledger as CSV"},
        **_errors(401, 403, 422, 503),
    },
)
async def export_items(
    request: Request,
    source: str | None = _SOURCE,
    status: str | None = _STATUS,
    department: str | None = _DEPARTMENT,
    caller: Principal = CallerDep,
) -> Response:
    _require(caller, READERS)
    items, flags = await _filtered(request, source, status, department)
    return Response(
        to_csv(items, flags),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="ledger.csv"'},
    )


@api.post(
    "/v1/ledger/items/{item_id}/close",
    summary="Close an item (销号) with its evidence and the approving department",
    openapi_extra={
        "x-scopes": list(WRITERS),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(CloseRequest)}},
        },
    },
    responses={
        200: {"model": ItemView, "description": "The item, closed"},
        **_errors(400, 401, 403, 404, 409, 413, 422, 503),
    },
)
async def close(item_id: str, request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx = context(request)
    _require(caller, WRITERS)
    raw = await read_limited(request, MAX_CLOSE_BYTES)
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        raise HTTPException(400, {"error": "invalid_json", "reason": "the body is not valid JSON"}) from None
    try:
        wanted = CloseRequest.model_validate(body)
    except ValidationError as exc:
        raise HTTPException(422, {"error": "invalid", "reason": describe(exc)}) from None
    async with db_or_503(), asyncio.timeout(30), ctx.pool.acquire() as conn:
        async with conn.transaction():
            closed = await _close_locked(conn, item_id, wanted, ctx.clock())
        (recurring,) = await _flagged(conn, [closed])
    log.info("ledger item closed", extra={"item_id": item_id})
    return JSONResponse(item_view(closed, recurring))
