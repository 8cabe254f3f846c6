"""The portal over HTTP (contract 10.1): the page `GET /portal`, the public `POST /v1/portal/submissions` (a form in
gets a page or a 303 out, JSON in gets JSON out), and the tracking page `GET /portal/track/{number}`.

Public, so guarded: a sliding-minute limit per client address, a 64 KiB cap, a honeypot field; every refusal is a
clear 4xx (a page for a form). The decisions are portal.py's; the pages portal_page.py's."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

import asyncpg
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.intake import store
from services.intake.normalize import MAX_BODY_BYTES, Rejection, decode_body
from services.intake.portal import (
    FIELDS,
    HONEYPOT,
    FieldError,
    PortalForm,
    SlidingWindowLimiter,
    client_address,
    form_fields,
    honeypot_filled,
    portal_complaint,
    read_submission,
    same_submission_since,
    tracking_number,
    trusted_networks,
)
from services.intake.portal_page import TrackView, form_page, message_page, track_page
from shared.domain import LOCAL_TZ, Channel
from shared.events import ComplaintReceived
from shared.service import ServiceContext, context, db_or_503, read_limited

router = APIRouter(tags=["portal"])
PUBLIC: Final[dict[str, Any]] = {"x-scopes": []}
_NUMBER = re.compile(r"^[^\s\x00-\x1f\x7f/]{1,64}$")
_HTML: Final = {"text/html": {"schema": {"type": "string"}}}


@dataclass
class PortalGuard:
    """The process's limiter and the proxies it believes, built once from the settings."""

    limiter: SlidingWindowLimiter
    proxies: tuple[Any, ...]


def portal_guard(ctx: ServiceContext) -> PortalGuard:
    guard: PortalGuard | None = ctx.extras.get("portal_guard")
    if guard is None:
        guard = PortalGuard(
            SlidingWindowLimiter(ctx.settings.portal_rate_limit), trusted_networks(ctx.settings.portal_trusted_proxies)
        )
        ctx.extras["portal_guard"] = guard
    return guard


@asynccontextmanager
async def transaction(ctx: ServiceContext) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A connection in a transaction, answered with 503 and Retry-After when the database is away."""
    async with db_or_503(), asyncio.timeout(10), ctx.pool.acquire() as conn, conn.transaction():
        yield conn


# --- the documents ---------------------------------------------------------------------------------------------

_S: Final = {"type": "string"}
SUBMISSION_SCHEMA: Final[dict[str, Any]] = {
    "title": "Portal submission (contract 10.1)",
    "type": "object",
    "required": ["enterprise_name", "region", "category", "kind", "title", "content"],
    "properties": {
        "enterprise_name": {**_S, "maxLength": 100, "description": "企业名称"},
        "credit_code": {**_S, "description": "统一社会信用代码: 18 characters passing the GB 32100-2015 check"},
        "region": {**_S, "description": "A division code or name of contract 6 (150523, 开鲁县)"},
        "category": {**_S, "description": "A category code of contract 3.1 (financing)"},
        "kind": {"type": "string", "enum": ["complaint", "suggestion"], "description": "问题线索 or 意见建议"},
        "title": {**_S, "maxLength": 100},
        "content": {**_S, "maxLength": 5000},
        "contact_name": {**_S, "maxLength": 50},
        "contact_phone": {**_S, "description": "Mobile or landline; never shown on the tracking page"},
        "anonymous": {"type": "boolean", "default": False},
        "website": {**_S, "description": "The honeypot: leave empty (filled: 400, nothing taken)"},
    },
}
ERROR_SCHEMA: Final = {"type": "object", "properties": {"error": _S, "reason": _S}}
FIELD_ERROR_SCHEMA: Final = {"type": "object", "properties": {"error": _S, "field": _S, "reason": _S}}


def _json_answer(schema: Mapping[str, Any], description: str, html: bool = True) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if html:
        content.update(_HTML)
    return {"description": description, "content": content}


SUBMISSION_ANSWERS: Final[dict[int | str, dict[str, Any]]] = {
    201: _json_answer(
        {"type": "object", "properties": {"tracking_number": _S, "complaint_id": _S}},
        "Taken (JSON in): the tracking number, PT + local date + the day's sequence, and the complaint id. The same "
        "enterprise, title and content from the same address within 10 minutes answers the same number.",
        html=False,
    ),
    303: {"description": "Taken (a form in): to the tracking page, which shows the number."},
    400: _json_answer(ERROR_SCHEMA, "Not JSON, not an object, or the honeypot filled (nothing is taken)."),
    413: _json_answer(ERROR_SCHEMA, "Over 64 KiB."),
    422: _json_answer(FIELD_ERROR_SCHEMA, "A field missing or wrong: `field` names it (a form: the page again)."),
    429: {
        **_json_answer(ERROR_SCHEMA, "Over the limit of submissions a minute from this address."),
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
    },
    503: _json_answer(ERROR_SCHEMA, "The database is not reachable; retry later."),
}


# --- the pages -------------------------------------------------------------------------------------------------


@router.get(
    "/portal",
    response_class=HTMLResponse,
    summary="The portal's page (问题线索和意见建议征集), public",
    openapi_extra=PUBLIC,
    responses={
        200: {"description": "The form, in Chinese.", "content": _HTML},
        303: {"description": "`?track=N`: to its tracking page."},
    },
)
async def get_portal(request: Request, track: str | None = None) -> Response:
    if track is not None and track.strip():
        return RedirectResponse(f"/portal/track/{quote(track.strip()[:64], safe='')}", status_code=303)
    return HTMLResponse(form_page())


@router.get(
    "/portal/track/{number}",
    response_class=HTMLResponse,
    summary="A submission's state and its department's reply (never the contact's phone), public",
    openapi_extra=PUBLIC,
    responses={
        200: {"description": "The tracking page.", "content": _HTML},
        404: {"description": "No such number.", "content": _HTML},
    },
)
async def get_tracking(number: str, request: Request, new: int = 0) -> HTMLResponse:
    ctx = context(request)
    view = None
    if _NUMBER.match(number):
        async with transaction(ctx) as conn:
            view = await _track_view(conn, number)
    if view is None:
        return HTMLResponse(
            message_page("未找到该查询编号", f"没有编号为 {number[:64]} 的问题线索，请核对后再查。"), 404
        )
    return HTMLResponse(track_page(view, new=bool(new)))


async def _track_view(conn: asyncpg.Connection[Any], number: str) -> TrackView | None:
    complaint_id = f"{Channel.PORTAL.value}:{number}"
    row = (await store.get_cases(conn, [complaint_id])).get(complaint_id)
    if row is None:
        return None
    event = ComplaintReceived.model_validate_json(row["event"])
    return TrackView(
        number=number,
        title=event.title,
        category=event.category.value,
        region_code=event.region_code,
        received_at=event.received_at,
        state=row["state"] or "received",
        lead_department=row["lead_department"],
        note=row["note"],
        changed_at=row["changed_at"],
    )


# --- the submission --------------------------------------------------------------------------------------------


def _refuse(is_form: bool, status: int, error: str, reason: str, title: str, text: str, **headers: str) -> Response:
    if is_form:
        return HTMLResponse(message_page(title, text), status_code=status, headers=headers or None)
    return JSONResponse({"error": error, "reason": reason}, status_code=status, headers=headers or None)


@router.post(
    "/v1/portal/submissions",
    status_code=201,
    summary="Submit a problem clue or a suggestion (public; a form or JSON)",
    openapi_extra={
        **PUBLIC,
        "requestBody": {
            "required": True,
            "description": "The portal fields, a form (`application/x-www-form-urlencoded`) or JSON; 64 KiB at most.",
            "content": {
                "application/json": {"schema": SUBMISSION_SCHEMA},
                "application/x-www-form-urlencoded": {"schema": SUBMISSION_SCHEMA},
            },
        },
    },
    responses=SUBMISSION_ANSWERS,
)
async def post_submission(request: Request) -> Response:
    ctx = context(request)
    guard = portal_guard(ctx)
    is_form = request.headers.get("content-type", "").split(";")[0].strip().lower() == (
        "application/x-www-form-urlencoded"
    )
    peer = request.client.host if request.client else None
    client = client_address(peer, request.headers.get("x-forwarded-for"), guard.proxies)
    wait = guard.limiter.hit(client, ctx.clock().timestamp())
    if wait is not None:
        ctx.metrics.rejected.labels(Channel.PORTAL.value, "rate_limited").inc()
        return _refuse(
            is_form, 429, "too_many_requests",
            f"more than {guard.limiter.limit} submissions a minute from this address; retry after {wait} s",
            "提交过于频繁", f"同一地址每分钟最多提交{guard.limiter.limit}次，请{wait}秒后再试。",
            **{"Retry-After": str(wait)},
        )  # fmt: skip
    try:
        raw = await read_limited(request, MAX_BODY_BYTES)
    except HTTPException as exc:
        ctx.metrics.rejected.labels(Channel.PORTAL.value, "too_large").inc()
        return _refuse(
            is_form,
            exc.status_code,
            "too_large",
            "body is over 64 KiB",
            "内容过长",
            "提交的内容超过64KB，请精简后再提交。",
        )
    values = _values(raw, is_form)
    if isinstance(values, Rejection):
        ctx.metrics.rejected.labels(Channel.PORTAL.value, values.error_type).inc()
        return _refuse(is_form, 400, values.error_type, values.reason, "无法识别的提交", "请通过本页面的表单提交。")
    if honeypot_filled(values):
        ctx.metrics.rejected.labels(Channel.PORTAL.value, "honeypot").inc()
        return _refuse(
            is_form, 400, "rejected", "the submission was refused", "提交未被接受", "请通过本页面的表单提交。"
        )
    form = read_submission(values)
    if isinstance(form, FieldError):
        ctx.metrics.rejected.labels(Channel.PORTAL.value, form.error).inc()
        if is_form:
            kept = {k: v for k, v in values.items() if k in FIELDS and isinstance(v, str) and k != HONEYPOT}
            return HTMLResponse(form_page(kept, {form.field: form.message}), status_code=422)
        return JSONResponse({"error": form.error, "field": form.field, "reason": form.reason}, status_code=422)
    tracked = await take_submission(ctx, form, client, ctx.clock())
    if is_form:
        return RedirectResponse(f"/portal/track/{tracked.tracking_number}?new=1", status_code=303)
    return JSONResponse(
        {"tracking_number": tracked.tracking_number, "complaint_id": tracked.complaint_id}, status_code=201
    )


def _values(raw: bytes, is_form: bool) -> Mapping[str, Any] | Rejection:
    if is_form:
        try:
            return form_fields(raw)
        except ValueError as exc:
            return Rejection("invalid_form", f"body is not a usable form: {exc}")
    return decode_body(raw)


async def take_submission(ctx: ServiceContext, form: PortalForm, client: str, now: datetime) -> store.Tracked:
    """The same submission from the same address within 10 minutes: its number again; else a new number and the
    complaint, in one transaction (the outbox publishes `complaint.received`)."""
    fingerprint = form.fingerprint()
    async with transaction(ctx) as conn:
        known = await store.recent_submission(conn, client, fingerprint, same_submission_since(now))
        if known is not None:
            tracked = known
        else:
            day = now.astimezone(LOCAL_TZ).date()
            number = tracking_number(day, await store.next_sequence(conn, day))
            complaint = portal_complaint(form, number, now)
            await store.save(
                conn, [complaint], [], now=now, via="http", received_topic=ctx.topics.received, dlq_topic=ctx.topics.dlq
            )
            tracked = store.Tracked(number, complaint.complaint_id, False)
            await store.save_submission(conn, tracked, client, fingerprint, now)
    if tracked.duplicate:
        ctx.metrics.duplicates.labels(Channel.PORTAL.value).inc()
    else:
        ctx.metrics.received.labels(Channel.PORTAL.value).inc()
        ctx.relay.wake()
    return tracked
