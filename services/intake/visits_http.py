"""Visits and surveys over HTTP (contract 10.2): `POST /v1/visits` and `GET /v1/visits/{visitId}` (key
`channel:visit`), `POST /v1/surveys/responses` (key `channel:survey`). Thin: read with visits.py / surveys.py, save
in one transaction with the outbox."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, TypeVar

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from services.intake import store
from services.intake.normalize import MAX_BODY_BYTES, Rejection
from services.intake.portal_http import transaction
from services.intake.surveys import normalize_survey_response
from services.intake.visits import VisitRecord, normalize_visit_record, problem_source_id
from shared.auth import Principal
from shared.domain import Channel
from shared.events import ComplaintReceived
from shared.observability import mask_phones_in_text
from shared.service import CallerDep, ServiceContext, context, read_limited

router = APIRouter(tags=["visits and surveys"])
T = TypeVar("T")
_HTTP_STATUS: Final = {"too_large": 413, "invalid_utf8": 400, "invalid_json": 400, "not_an_object": 400}
VISIT_READERS: Final = ("channel:visit", "reports", "admin")
_S: Final = {"type": "string"}
_ERROR: Final = {
    "description": "",
    "content": {"application/json": {"schema": {"type": "object", "properties": {"error": _S, "reason": _S}}}},
}


def _answer(description: str) -> dict[str, Any]:
    return {**_ERROR, "description": description}


REFUSALS: Final[dict[int | str, dict[str, Any]]] = {
    400: _answer("Not UTF-8 JSON, or not an object."),
    401: _answer("No key, or an unknown key."),
    403: _answer("The key's scope does not allow this."),
    413: _answer("Over 64 KiB."),
    422: _answer("A field missing or wrong; `reason` names it."),
    503: _answer("The database is not reachable; retry later."),
}
VISIT_SCHEMA: Final[dict[str, Any]] = {
    "title": "Visit record (contract 10.2)",
    "type": "object",
    "required": ["visitId", "kind", "heldAt", "problems"],
    "properties": {
        "visitId": {**_S, "maxLength": 56},
        "kind": {"type": "string", "enum": ["roundtable", "service_day", "site_visit"]},
        "heldAt": {"type": "string", "format": "date-time"},
        "region": {**_S, "description": "A division code or name of contract 6"},
        "officials": {"type": "array", "items": _S},
        "enterprises": {"type": "array", "items": {"type": "object", "properties": {"name": _S, "creditCode": _S}}},
        "problems": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["content"],
                "properties": {
                    "enterprise": {"type": "integer", "minimum": 0, "description": "Index into enterprises"},
                    "category": {**_S, "description": "A category code of 3.1 (or its Chinese name)"},
                    "title": _S,
                    "content": _S,
                    "urgency": {"type": "string", "enum": ["normal", "urgent"]},
                },
            },
        },
    },
}
SURVEY_SCHEMA: Final[dict[str, Any]] = {
    "title": "Survey response (contract 10.2)",
    "type": "object",
    "required": ["responseId", "answeredAt", "scores"],
    "properties": {
        "responseId": {**_S, "maxLength": 40},
        "answeredAt": {"type": "string", "format": "date-time"},
        "enterprise": {"type": "object", "properties": {"name": _S, "creditCode": _S}},
        "region": _S,
        "scores": {
            "type": "object",
            "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 5},
            "description": "Category code of 3.1 → 1-5",
        },
        "comment": _S,
    },
}


def _taken(id_field: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {id_field: _S, "complaint_ids": {"type": "array", "items": _S}, "duplicate": {"type": "boolean"}},
    }


def _body(schema: dict[str, Any], scope: str) -> dict[str, Any]:
    return {
        "x-scopes": [scope],
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
    }


def _refused(result: Rejection) -> HTTPException:
    status = _HTTP_STATUS.get(result.error_type, 422)
    return HTTPException(status, {"error": result.error_type, "reason": mask_phones_in_text(result.reason)})


async def _read_input(
    request: Request,
    caller: Principal,
    channel: Channel,
    refusal: str,
    normalize: Callable[[bytes, datetime], T | Rejection],
) -> tuple[ServiceContext, datetime, T]:
    """The scope check, the bounded read and the pure reading of a posted input; a refusal raises its HTTP answer."""
    ctx = context(request)
    if not caller.may_post_channel(channel.value):
        raise HTTPException(403, {"error": "forbidden", "reason": refusal})
    raw = await read_limited(request, MAX_BODY_BYTES)
    now = ctx.clock()
    taken = normalize(raw, now)
    if isinstance(taken, Rejection):
        ctx.metrics.rejected.labels(channel.value, taken.error_type).inc()
        raise _refused(taken)
    return ctx, now, taken


def _count(ctx: ServiceContext, channel: Channel, new: list[ComplaintReceived], dupes: list[ComplaintReceived]) -> None:
    if new:
        ctx.metrics.received.labels(channel.value).inc(len(new))
        ctx.relay.wake()
    if dupes:
        ctx.metrics.duplicates.labels(channel.value).inc(len(dupes))


def visit_row(visit: VisitRecord) -> store.VisitRow:
    return store.VisitRow(
        visit.visit_id,
        visit.kind,
        visit.held_at,
        visit.region_code,
        len(visit.complaints),
        json.dumps(visit.summary(), ensure_ascii=False),
    )


@router.post(
    "/v1/visits",
    status_code=202,
    summary="Record a visit or round-table; each problem becomes its own complaint (contract 10.2)",
    openapi_extra=_body(VISIT_SCHEMA, "channel:visit"),
    responses={
        202: {
            "description": "Taken (or known already: `duplicate`).",
            "content": {"application/json": {"schema": _taken("visit_id")}},
        },
        **REFUSALS,
    },
)
async def post_visit(request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx, now, visit = await _read_input(
        request, caller, Channel.VISIT, "visits need a `channel:visit` key", normalize_visit_record
    )
    async with transaction(ctx) as conn:
        saved = await store.save(
            conn,
            visit.complaints,
            [],
            now=now,
            via="http",
            received_topic=ctx.topics.received,
            dlq_topic=ctx.topics.dlq,
        )
        fresh = await store.save_visits(conn, [visit_row(visit)], now=now, via="http")
    _count(ctx, Channel.VISIT, saved.new_complaints, saved.duplicates)
    return JSONResponse(
        {
            "visit_id": visit.visit_id,
            "complaint_ids": [c.complaint_id for c in visit.complaints],
            "duplicate": visit.visit_id not in fresh,
        },
        status_code=202,
    )


@router.get(
    "/v1/visits/{visit_id}",
    summary="A visit and its problems' states (contract 10.2)",
    openapi_extra={"x-scopes": list(VISIT_READERS)},
    responses={404: _answer("No such visit."), 401: REFUSALS[401], 403: REFUSALS[403], 503: REFUSALS[503]},
)
async def get_visit(visit_id: str, request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx = context(request)
    if caller.scope not in VISIT_READERS:
        raise HTTPException(
            403, {"error": "forbidden", "reason": "visits are read with a channel:visit, reports or admin key"}
        )
    async with transaction(ctx) as conn:
        row = await store.get_visit(conn, visit_id)
        if row is None:
            raise HTTPException(404, {"error": "not_found", "reason": f"no visit {visit_id[:64]!r}"})
        ids = [f"{Channel.VISIT.value}:{problem_source_id(visit_id, n)}" for n in range(1, row["problems"] + 1)]
        cases = await store.get_cases(conn, ids)
    problems = []
    for n, cid in enumerate(ids, 1):
        case = cases.get(cid)
        if case is None:
            continue
        event = ComplaintReceived.model_validate_json(case["event"])
        problems.append(
            {
                "n": n,
                "complaint_id": cid,
                "title": event.title,
                "category": event.category.value,
                "enterprise": event.enterprise.model_dump(mode="json") if event.enterprise else None,
                "state": case["state"] or "received",
                "lead_department": case["lead_department"],
                "note": case["note"],
            }
        )
    detail = json.loads(row["detail"])
    return JSONResponse(
        {
            "visit_id": row["visit_id"],
            "kind": row["kind"],
            "held_at": row["held_at"].isoformat().replace("+00:00", "Z"),
            "region_code": row["region_code"],
            "officials": detail.get("officials", []),
            "enterprises": detail.get("enterprises", []),
            "problems": problems,
        }
    )


@router.post(
    "/v1/surveys/responses",
    status_code=202,
    summary="A survey response: published on surveys.responses; a low score with a comment opens a complaint",
    openapi_extra=_body(SURVEY_SCHEMA, "channel:survey"),
    responses={
        202: {
            "description": "Taken (or known already: `duplicate`, nothing published again).",
            "content": {"application/json": {"schema": _taken("response_id")}},
        },
        **REFUSALS,
    },
)
async def post_survey(request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx, now, taken = await _read_input(
        request, caller, Channel.SURVEY, "survey responses need a `channel:survey` key", normalize_survey_response
    )
    async with transaction(ctx) as conn:
        new = await store.save_response(conn, taken.response, now=now, via="http", topic=ctx.topics.survey_responses)
        saved = await store.save(
            conn,
            taken.complaints,
            [],
            now=now,
            via="http",
            received_topic=ctx.topics.received,
            dlq_topic=ctx.topics.dlq,
        )
    if new:
        ctx.relay.wake()
    _count(ctx, Channel.SURVEY, saved.new_complaints, saved.duplicates)
    return JSONResponse(
        {
            "response_id": taken.response.response_id,
            "complaint_ids": list(taken.response.complaint_ids),
            "duplicate": not new,
        },
        status_code=202,
    )
