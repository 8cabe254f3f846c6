"""Intake service: thin Kafka subscribers on the three raw topics and `POST /v1/intake/{channel}`.

Each handler parses, calls the pure `normalize`, and saves complaints, dead letters and their outgoing
messages in one transaction; the outbox relay publishes them. Offsets are committed only after that commit.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from faststream.kafka.annotations import KafkaMessage
from pydantic import BaseModel, Field

from services.intake import store
from services.intake.normalize import MAX_BODY_BYTES, Rejection, normalize
from services.intake.portal_http import portal_guard
from services.intake.portal_http import router as portal_router
from services.intake.tracker import subscribe_tracker
from services.intake.visits import VisitRecord, normalize_visit_record
from services.intake.visits_http import router as visits_router
from services.intake.visits_http import visit_row
from shared.auth import Principal
from shared.db import bounded_transaction
from shared.domain import RAW_CHANNELS, Channel
from shared.events import ComplaintReceived, DeadLetter, SurveyResponded
from shared.kafka import RawRecord, dead_letter_of
from shared.observability import mask_phones_in_text
from shared.service import (
    CallerDep,
    ServiceContext,
    answers,
    batch_subscriber,
    consume_batch,
    context,
    create_service_app,
    db_or_503,
    read_limited,
    scopes,
)
from shared.settings import Settings

log = logging.getLogger(__name__)
SERVICE = "intake"
GROUP = "intake"
_HTTP_STATUS = {
    "too_large": 413,
    "invalid_utf8": 400,
    "invalid_json": 400,
    "not_an_object": 400,
    "unknown_channel": 404,  # visits and surveys have their own endpoints (contract 10.2)
}


class Intake:
    """The consume side: a batch of raw records in, one transaction out."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def ingest(self, records: list[RawRecord]) -> None:
        ctx = self.ctx
        now = ctx.clock()
        complaints: list[ComplaintReceived] = []
        letters: list[DeadLetter] = []
        visits: list[VisitRecord] = []
        for record in records:
            channel = ctx.topics.channel_of(record.topic)
            if channel is None:
                letters.append(
                    dead_letter_of(
                        record, "unknown_topic", f"intake does not read {record.topic}", now, service=SERVICE
                    )
                )
                continue
            if channel is Channel.VISIT:  # one record, several complaints (contract 10.2)
                visit = normalize_visit_record(record.value, now)
                if isinstance(visit, Rejection):
                    letters.append(dead_letter_of(record, visit.error_type, visit.reason, now, service=SERVICE))
                else:
                    visits.append(visit)
                    complaints.extend(visit.complaints)
                continue
            result = normalize(channel, record.value, now)
            if isinstance(result, Rejection):
                letters.append(dead_letter_of(record, result.error_type, result.reason, now, service=SERVICE))
            else:
                complaints.append(result)
        async with ctx.pool.acquire() as conn, conn.transaction():
            saved = await store.save(
                conn,
                complaints,
                letters,
                now=now,
                via="kafka",
                received_topic=ctx.topics.received,
                dlq_topic=ctx.topics.dlq,
            )
            await store.save_visits(conn, [visit_row(v) for v in visits], now=now, via="kafka")
        self._count(saved)
        ctx.relay.wake()

    def _count(self, saved: store.SaveResult) -> None:
        m = self.ctx.metrics
        for c in saved.new_complaints:
            m.received.labels(c.channel.value).inc()
        for c in saved.duplicates:
            m.duplicates.labels(c.channel.value).inc()
        for d in saved.new_dead_letters:
            channel = self.ctx.topics.channel_of(d.source_topic)
            m.rejected.labels(channel.value if channel else "unknown", d.error_type).inc()
            m.dead_letters.labels(d.source_topic).inc()
            log.warning(
                "dead letter",
                extra={
                    "source_topic": d.source_topic,
                    "offset": d.source_offset,
                    "error_type": d.error_type,
                    "reason": d.reason,
                },
            )

    async def give_up(self, record: RawRecord, exc: BaseException, attempts: int) -> None:
        """A record that failed for good for a reason other than its data (a bug): dead-lettered, counted."""
        now = self.ctx.clock()
        reason = f"{type(exc).__name__}: {exc}"[:500]
        letter = dead_letter_of(record, "processing_failed", reason, now, service=SERVICE, attempts=attempts)
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            saved = await store.save(
                conn,
                [],
                [letter],
                now=now,
                via="kafka",
                received_topic=self.ctx.topics.received,
                dlq_topic=self.ctx.topics.dlq,
            )
        self._count(saved)
        self.ctx.relay.wake()

    async def on_batch(self, msg: Any) -> None:
        await consume_batch(self.ctx, msg, self.ingest, self.give_up, group=f"{self.ctx.settings.topic_prefix}{GROUP}")


async def setup(ctx: ServiceContext) -> None:
    intake = Intake(ctx)
    ctx.extras["intake"] = intake
    raw_topics = [ctx.topics.intake(channel) for channel in RAW_CHANNELS]
    # One consumer for the raw topics: bigger batches and one commit per batch, rather than three consumers
    # taking turns on the event loop with small ones.
    subscriber = batch_subscriber(
        ctx,
        *raw_topics,
        group_id=ctx.group(GROUP, *raw_topics),
        title="intake.raw",
        description="Raw hotline, complaint-line and supervisor messages (contract 2), portal submissions and visit "
        "records (10.1, 10.2); each becomes complaint.received (a visit one per problem) or a dead letter.",
    )

    async def on_raw_batch(msg: KafkaMessage) -> None:
        await intake.on_batch(msg)

    subscriber(on_raw_batch)
    ctx.broker.publisher(
        ctx.topics.received,
        schema=ComplaintReceived,
        title="complaints.received",
        description="Canonical complaints (contract 3.1), keyed by complaint_id.",
    )
    ctx.broker.publisher(
        ctx.topics.survey_responses,
        schema=SurveyResponded,
        title="surveys.responses",
        description="Satisfaction-survey responses (contract 10.2), keyed by responseId, once each.",
    )
    subscribe_tracker(ctx)
    portal_guard(ctx)
    ctx.broker.publisher(
        ctx.topics.dlq,
        schema=DeadLetter,
        title="complaints.dlq",
        description="Raw messages that could not become complaints, with reason and bytes.",
    )


router = APIRouter(tags=["intake"])

_TEXT: dict[str, Any] = {"type": "string"}
_ID: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[^\s\x00-\x1f\x7f]+$"}
HOTLINE_ORDER: dict[str, Any] = {
    "title": "Hotline work order (contract 2.1)",
    "type": "object",
    "required": ["gdbh", "ldsj", "sqlx", "sqnr"],
    "properties": {
        "gdbh": {**_ID, "description": "工单编号, work-order number"},
        "ldsj": {
            "type": "string",
            "description": "来电时间, local `YYYY-MM-DD HH:MM:SS`",
            "example": "2026-11-26 10:02:11",
        },
        "ldhm": {**_TEXT, "description": "来电号码, caller's number"},
        "lxr": _TEXT,
        "qymc": _TEXT,
        "tyshxydm": {**_TEXT, "description": "统一社会信用代码, 18 characters"},
        "sqlx": {"type": "string", "enum": ["咨询", "求助", "投诉", "举报", "建议"]},
        "sqfl": _TEXT,
        "sqbt": _TEXT,
        "sqnr": {"type": "string", "minLength": 1},
        "ssqy": _TEXT,
        "jjcd": {"type": "string", "enum": ["一般", "紧急"]},
        "nm": {"type": "string", "enum": ["是", "否"]},
    },
}
_PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {"name": _TEXT, "mobile": _TEXT, "company": _TEXT, "creditCode": _TEXT},
}
COMPLAINT_LINE_TICKET: dict[str, Any] = {
    "title": "Complaint-line ticket (contract 2.2)",
    "type": "object",
    "required": ["ticketId", "createdAt", "description"],
    "properties": {
        "ticketId": _ID,
        "createdAt": {"type": "integer", "description": "epoch milliseconds"},
        "reporter": _PERSON,
        "subject": _TEXT,
        "description": {"type": "string", "minLength": 1},
        "district": {**_TEXT, "description": "6-digit division code"},
        "tags": {"type": "array", "items": _TEXT},
        "priority": {"type": "integer", "enum": [1, 2, 3]},
    },
}
SUPERVISOR_REPORT: dict[str, Any] = {
    "title": "Supervisor report (contract 2.3)",
    "type": "object",
    "required": ["report", "issue"],
    "properties": {
        "report": {
            "type": "object",
            "required": ["id", "observedAt"],
            "properties": {
                "id": _ID,
                "observedAt": {"type": "string", "format": "date-time"},
                "source": {"type": "string", "enum": ["supervisor", "monitoring_point"]},
            },
        },
        "reporter": {"type": "object", "properties": {"supervisorId": _TEXT, "name": _TEXT, "monitoringPoint": _TEXT}},
        "issue": {
            "type": "object",
            "properties": {
                "categoryCode": _TEXT,
                "summary": _TEXT,
                "detail": _TEXT,
                "enterprise": {"type": "object", "properties": {"name": _TEXT, "creditCode": _TEXT}},
            },
        },
        "location": {"type": "object", "properties": {"division": _TEXT, "address": _TEXT}},
        "evidence": {"type": "array", "items": {"type": "object"}},
    },
}


class IntakeAccepted(BaseModel):
    complaint_id: str = Field(description="`<channel>:<source id>`")
    duplicate: bool = Field(description="True when this work order was known already (nothing new was emitted).")


@router.post(
    "/v1/intake/{channel}",
    status_code=202,
    summary="Submit a raw complaint of a channel (contract 2)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The channel's raw message, as on its Kafka topic; at most 64 KiB.",
            "content": {
                "application/json": {"schema": {"anyOf": [HOTLINE_ORDER, COMPLAINT_LINE_TICKET, SUPERVISOR_REPORT]}}
            },
        },
        **scopes("channel:{channel}"),
    },
    responses={
        202: {"model": IntakeAccepted, "description": "Taken (or known already)."},
        **answers(400, 403, 404, 413),
    },
)
async def post_intake(
    channel: Annotated[
        str,
        Path(
            description="hotline, complaint_line or supervisor", json_schema_extra={"enum": [c.value for c in Channel]}
        ),
    ],
    request: Request,
    caller: Principal = CallerDep,
) -> JSONResponse:
    ctx = context(request)
    try:
        chan = Channel(channel)
    except ValueError:
        raise HTTPException(404, {"error": "unknown_channel", "reason": f"no channel {channel!r}"}) from None
    if not caller.may_post_channel(chan.value):
        raise HTTPException(403, {"error": "forbidden", "reason": f"this key may not post to channel {chan.value}"})
    raw = await read_limited(request, MAX_BODY_BYTES)
    now = ctx.clock()
    result = normalize(chan, raw, now)
    if isinstance(result, Rejection):
        ctx.metrics.rejected.labels(chan.value, result.error_type).inc()
        status = _HTTP_STATUS.get(result.error_type, 422)
        raise HTTPException(status, {"error": result.error_type, "reason": mask_phones_in_text(result.reason)})
    async with db_or_503(), bounded_transaction(ctx.pool, ctx.settings.http_db_timeout_s) as conn:
        saved = await store.save(
            conn, [result], [], now=now, via="http", received_topic=ctx.topics.received, dlq_topic=ctx.topics.dlq
        )
    duplicate = not saved.new_complaints
    if duplicate:
        ctx.metrics.duplicates.labels(chan.value).inc()
    else:
        ctx.metrics.received.labels(chan.value).inc()
        ctx.relay.wake()
    return JSONResponse({"complaint_id": result.complaint_id, "duplicate": duplicate}, status_code=202)


def create_app(settings: Settings | None = None) -> Any:
    return create_service_app(
        SERVICE,
        routers=[router, portal_router, visits_router],
        setup=setup,
        settings=settings,
        description="Normalizes raw hotline, complaint-line and supervisor messages, portal submissions, visit records "
        "and survey responses into complaint.received; serves the portal (/portal).",
    )
