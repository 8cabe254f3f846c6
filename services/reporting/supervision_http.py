"""Supervision items over HTTP (contract 10.3): list, open, follow up (督办), transfer (移交), conclude (办结). Each
change is saved with its `supervision.changed` message in the outbox, in one transaction. The router `api` is
included in the reporting service's app."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.reporting import supervision_store, warning_store
from services.reporting.supervision import (
    DueRule,
    Refused,
    SupervisionItem,
    changed_event,
    conclude,
    follow_up,
    item_view,
    open_item,
    required_text,
    transfer,
)
from shared.auth import Principal
from shared.calendar import WorkingCalendar
from shared.events import Phenomenon, SupervisionChange, SupervisionStatus
from shared.outbox import OutboxMessage, enqueue
from shared.service import CallerDep, ServiceContext, context, db_or_503, read_limited

log = logging.getLogger(__name__)

MAX_BODY: Final = 64 * 1024
READERS: Final = ("reports", "admin", "department:yshj", "department:jw")
WRITERS: Final = ("admin", "department:yshj")
CONCLUDERS: Final = ("admin", "department:yshj", "department:jw")

api = APIRouter(tags=["supervision"])


# --- shapes, for the OpenAPI document -------------------------------------------------------------------------


class OpenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    complaint_id: str = Field(description="The case to put under supervision.")
    phenomenon: Phenomenon = Field(description="corruption, judicial, government_integrity or law_enforcement.")
    reason: str = Field(description="Why the bureau supervises it.")


class FollowUpRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    note: str = Field(description="The 督办 note; dated by the service.")


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    note: str = Field(description="The transfer note.")
    to_department: str = Field(default="jw", description="Department code; `jw` (市纪委监委) by default.")


class ConcludeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    result: str = Field(description="The result text (办结情况).")
    decided_by: str = Field(description="The deciding department's code; a department key: its own code.")


class FollowUpView(BaseModel):
    at: datetime
    note: str
    by: str


class Conclusion(BaseModel):
    result: str
    decided_by: str
    concluded_at: datetime


class ItemView(BaseModel):
    item_id: str
    phenomenon: Phenomenon
    phenomenon_name: str = Field(description="涉企贪腐, 司法不公, 违约失信 or 执法混乱.")
    complaint_ids: list[str]
    opened_at: datetime
    opened_by: str = Field(description="`rule` (opened by the case's category) or the scope of the key that opened it.")
    reason: str | None
    status: SupervisionStatus
    status_name: str = Field(description="立项, 督办中, 移交 or 办结.")
    due_at: datetime = Field(description="Working days from opening, on the SLA calendar.")
    warn_at: datetime = Field(description="When 80% of the item's working time has run.")
    overdue: bool = Field(description="Not concluded and past due_at.")
    warned_at: datetime | None
    overdue_at: datetime | None = Field(description="When the `overdue` change was published.")
    transferred_to: str | None
    transfer_note: str | None
    transferred_at: datetime | None
    follow_ups: list[FollowUpView]
    conclusion: Conclusion | None


class ItemsPage(BaseModel):
    items: list[ItemView]
    total: int


class ErrorBody(BaseModel):
    error: str
    reason: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    said = {
        400: "The body is not valid JSON",
        401: "No key, or an unknown key",
        403: "The key's scope may not do this",
        404: "No such item, or no such case",
        409: "The item's state does not allow it (concluded, transferred already, under supervision already)",
        413: "The body is over 64 KiB",
        422: "Invalid parameters or body",
        503: "The database is not reachable; retry later",
    }
    return {code: {"model": ErrorBody, "description": said[code]} for code in codes}


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}


# --- helpers --------------------------------------------------------------------------------------------------


def _require(caller: Principal, scopes: Sequence[str]) -> None:
    if caller.scope not in scopes:
        raise HTTPException(403, {"error": "forbidden", "reason": f"this needs a key of scope {' or '.join(scopes)}"})


def _invalid(reason: str) -> HTTPException:
    return HTTPException(422, {"error": "invalid", "reason": reason})


def _refusal(exc: Refused) -> HTTPException:
    codes = {403: "forbidden", 404: "not_found", 409: "conflict", 422: "invalid"}
    return HTTPException(exc.status, {"error": codes.get(exc.status, "error"), "reason": exc.reason})


M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
E = TypeVar("E", Phenomenon, SupervisionStatus)


async def _parse(request: Request, model: type[M]) -> M:
    raw = await read_limited(request, MAX_BODY)
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        raise HTTPException(400, {"error": "invalid_json", "reason": "the body is not valid JSON"}) from None
    if not isinstance(body, dict):
        raise _invalid("the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        reason = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)[:5]
        )
        raise _invalid(reason) from None


def _message(
    ctx: ServiceContext, item: SupervisionItem, change: SupervisionChange, now: datetime, by: str
) -> OutboxMessage:
    event = changed_event(item, change, at=now, by=by)
    return OutboxMessage(ctx.topics.supervision, item.item_id.encode(), event.to_json_bytes())


async def _guarded(work: Callable[[], Awaitable[T]]) -> T:
    """Run a database step: a refusal becomes its 4xx, a database away a 503."""
    try:
        async with db_or_503(), asyncio.timeout(30):
            return await work()
    except Refused as exc:
        raise _refusal(exc) from None


Change = Callable[[SupervisionItem, datetime], SupervisionItem]


async def _change(request: Request, item_id: str, change: SupervisionChange, apply: Change, by: str) -> JSONResponse:
    """Lock the item, apply the pure change, save it with its message; 404 for an unknown item."""
    ctx = context(request)

    async def work() -> SupervisionItem:
        async with ctx.pool.acquire() as conn, conn.transaction():
            item = await supervision_store.lock_item(conn, item_id)
            if item is None:
                raise HTTPException(404, {"error": "not_found", "reason": f"no supervision item {item_id[:80]!r}"})
            now = ctx.clock()
            changed = apply(item, now)
            await supervision_store.save_item(conn, changed, now)
            await enqueue(conn, [_message(ctx, changed, change, now, by)])
            return changed

    changed = await _guarded(work)
    ctx.relay.wake()
    log.info("supervision item changed", extra={"item_id": item_id, "change": change.value, "by": by})
    return JSONResponse(item_view(changed, ctx.clock()))


def _enum(kind: type[E], value: str | None, name: str) -> E | None:
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        raise _invalid(f"unknown {name} {value[:40]!r}: one of {', '.join(v.value for v in kind)}") from None


# --- endpoints ------------------------------------------------------------------------------------------------


@api.get(
    "/v1/supervision/items",
    summary="Supervision items (督查事项), oldest first; `department:jw` sees the items transferred to it",
    openapi_extra={"x-scopes": list(READERS)},
    responses={200: {"model": ItemsPage, "description": "The items"}, **_errors(401, 403, 422, 503)},
)
async def list_items(
    request: Request,
    phenomenon: str | None = Query(
        default=None, description="corruption, judicial, government_integrity, law_enforcement"
    ),
    status: str | None = Query(default=None, description="opened, supervising, transferred or concluded"),
    caller: Principal = CallerDep,
) -> JSONResponse:
    _require(caller, READERS)
    wanted_phenomenon = _enum(Phenomenon, phenomenon, "phenomenon")
    wanted_status = _enum(SupervisionStatus, status, "status")
    ctx = context(request)
    only = caller.department() if caller.department() not in (None, "yshj") else None

    async def work() -> list[SupervisionItem]:
        return await supervision_store.list_items(
            ctx.pool, phenomenon=wanted_phenomenon, status=wanted_status, transferred_to=only
        )

    items = await _guarded(work)
    now = ctx.clock()
    return JSONResponse({"items": [item_view(i, now) for i in items], "total": len(items)})


@api.post(
    "/v1/supervision/items",
    status_code=201,
    summary="Put a case under supervision (立项); a corruption item opens transferred to jw",
    openapi_extra={"x-scopes": list(WRITERS), "requestBody": _body_schema(OpenRequest)},
    responses={
        201: {"model": ItemView, "description": "The item opened"},
        **_errors(400, 401, 403, 404, 409, 413, 422, 503),
    },
)
async def open_(request: Request, caller: Principal = CallerDep) -> JSONResponse:
    _require(caller, WRITERS)
    wanted = await _parse(request, OpenRequest)
    ctx = context(request)
    calendar: WorkingCalendar = ctx.extras["supervision_calendar"]
    rule: DueRule = ctx.extras["supervision_rule"]

    async def work() -> SupervisionItem:
        reason = required_text(wanted.reason, "reason")
        complaint_id = required_text(wanted.complaint_id, "complaint_id")
        async with ctx.pool.acquire() as conn, conn.transaction():
            if not await warning_store.case_known(conn, complaint_id):
                raise Refused(404, f"no case {complaint_id[:80]!r} is known to reporting")
            existing = await supervision_store.item_of(conn, complaint_id, wanted.phenomenon)
            if existing is not None:
                raise Refused(409, f"case {complaint_id} is under supervision already as item {existing.item_id}")
            now = ctx.clock()
            item = open_item(
                complaint_id, wanted.phenomenon, now, by=caller.scope, reason=reason, rule=rule, calendar=calendar
            )
            if not await supervision_store.insert_items(conn, [item], now):
                raise Refused(409, f"case {complaint_id} is under supervision already as item {item.item_id}")
            await enqueue(conn, [_message(ctx, item, SupervisionChange.OPENED, now, caller.scope)])
            return item

    item = await _guarded(work)
    ctx.relay.wake()
    log.info("supervision item opened", extra={"item_id": item.item_id, "by": caller.scope})
    return JSONResponse(item_view(item, ctx.clock()), status_code=201)


@api.post(
    "/v1/supervision/items/{item_id}/follow-ups",
    summary="A 督办 note; the first moves an opened item to supervising",
    openapi_extra={"x-scopes": list(WRITERS), "requestBody": _body_schema(FollowUpRequest)},
    responses={200: {"model": ItemView, "description": "The item"}, **_errors(400, 401, 403, 404, 409, 413, 422, 503)},
)
async def add_follow_up(item_id: str, request: Request, caller: Principal = CallerDep) -> JSONResponse:
    _require(caller, WRITERS)
    wanted = await _parse(request, FollowUpRequest)
    return await _change(
        request,
        item_id,
        SupervisionChange.FOLLOW_UP,
        lambda item, now: follow_up(item, wanted.note, by=caller.scope, at=now),
        caller.scope,
    )


@api.post(
    "/v1/supervision/items/{item_id}/transfer",
    summary="Transfer an item (移交), to jw unless another department is named, with a note",
    openapi_extra={"x-scopes": list(WRITERS), "requestBody": _body_schema(TransferRequest)},
    responses={200: {"model": ItemView, "description": "The item"}, **_errors(400, 401, 403, 404, 409, 413, 422, 503)},
)
async def transfer_item(item_id: str, request: Request, caller: Principal = CallerDep) -> JSONResponse:
    _require(caller, WRITERS)
    wanted = await _parse(request, TransferRequest)
    return await _change(
        request,
        item_id,
        SupervisionChange.TRANSFERRED,
        lambda item, now: transfer(item, wanted.to_department, wanted.note, at=now),
        caller.scope,
    )


@api.post(
    "/v1/supervision/items/{item_id}/conclude",
    summary="Conclude an item (办结) with its result and the deciding department; jw concludes the items it holds",
    openapi_extra={"x-scopes": list(CONCLUDERS), "requestBody": _body_schema(ConcludeRequest)},
    responses={200: {"model": ItemView, "description": "The item"}, **_errors(400, 401, 403, 404, 409, 413, 422, 503)},
)
async def conclude_item(item_id: str, request: Request, caller: Principal = CallerDep) -> JSONResponse:
    _require(caller, CONCLUDERS)
    wanted = await _parse(request, ConcludeRequest)
    return await _change(
        request,
        item_id,
        SupervisionChange.CONCLUDED,
        lambda item, now: conclude(item, wanted.result, wanted.decided_by, scope=caller.scope, at=now),
        caller.scope,
    )


__all__ = ["api"]
