"""Survey scores' I/O (contract 10.2): the subscriber on `surveys.responses` (its own consumer group, one
transaction per batch, deduped on response and category) and `GET /v1/reports/surveys` (key `reports` or `admin`).
The rules are surveys.py's."""

from __future__ import annotations

import asyncio
from typing import Any, Final

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from services.reporting.http import ERRORS, READ_SCOPES, period
from services.reporting.surveys import GROUP_BY, ScoreRow, Tally, score_rows, survey_report
from services.reporting.worker import FETCH_BYTES_PER_PARTITION
from shared.auth import Principal
from shared.deadletters import save_dead_letters
from shared.domain import LOCAL_TZ
from shared.events import DeadLetter, SurveyResponded
from shared.kafka import RawRecord, dead_letter_of
from shared.service import CallerDep, ServiceContext, batch_subscriber, consume_batch, db_or_503, give_up_as_dead_letter

GROUP: Final = "reporting.surveys"
api = APIRouter(tags=["reports"])

SQL_INSERT_SCORES = """
INSERT INTO reporting.survey_scores (response_id, category, score, answered_at, answered_day, region_code)
SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], $4::timestamptz[], $5::date[], $6::text[])
ON CONFLICT (response_id, category) DO NOTHING
"""
SQL_BY_REGION = """
SELECT region_code AS key, count(DISTINCT response_id) AS responses, count(*) AS scores, sum(score) AS score_sum,
       count(*) FILTER (WHERE score >= 4) AS high
FROM reporting.survey_scores WHERE answered_day BETWEEN $1 AND $2 GROUP BY region_code
"""
SQL_BY_CATEGORY = """
SELECT category AS key, count(DISTINCT response_id) AS responses, count(*) AS scores, sum(score) AS score_sum,
       count(*) FILTER (WHERE score >= 4) AS high
FROM reporting.survey_scores WHERE answered_day BETWEEN $1 AND $2 GROUP BY category
"""
SQL_TOTAL = """
SELECT 'all' AS key, count(DISTINCT response_id) AS responses, count(*) AS scores, coalesce(sum(score), 0) AS score_sum,
       count(*) FILTER (WHERE score >= 4) AS high
FROM reporting.survey_scores WHERE answered_day BETWEEN $1 AND $2
"""


class SurveyScores:
    """The consume side: responses in, score rows kept."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def ingest(self, records: list[RawRecord]) -> None:
        now = self.ctx.clock()
        rows: list[ScoreRow] = []
        letters: list[DeadLetter] = []
        for record in records:
            try:
                rows.extend(score_rows(SurveyResponded.model_validate_json(record.value)))
            except ValidationError as exc:
                reason = f"not a valid SurveyResponded: {exc.errors(include_url=False, include_input=False)}"[:500]
                letters.append(dead_letter_of(record, "invalid_event", reason, now, service="reporting"))
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            if rows:
                await conn.execute(
                    SQL_INSERT_SCORES,
                    [r.response_id for r in rows],
                    [r.category for r in rows],
                    [r.score for r in rows],
                    [r.answered_at for r in rows],
                    [r.answered_day for r in rows],
                    [r.region_code for r in rows],
                )
            fresh = await save_dead_letters(conn, letters, self.ctx.topics.dlq)
        for letter in fresh:
            self.ctx.metrics.dead_letters.labels(letter.source_topic).inc()
        if fresh:
            self.ctx.relay.wake()

    async def give_up(self, record: RawRecord, exc: BaseException, attempts: int) -> None:
        """A record that failed for good for a reason other than its data: a dead letter, counted."""
        await give_up_as_dead_letter(self.ctx, record, exc, attempts, service="reporting")

    async def on_batch(self, msg: Any) -> None:
        await consume_batch(
            self.ctx, msg, self.ingest, self.give_up, group=f"{self.ctx.settings.topic_prefix}{GROUP}", where=GROUP
        )


def subscribe_surveys(ctx: ServiceContext) -> SurveyScores:
    scores = SurveyScores(ctx)
    topic = ctx.topics.survey_responses
    subscriber = batch_subscriber(
        ctx,
        topic,
        group_id=ctx.group(GROUP, topic),
        title=f"reporting:{topic}",
        description="surveys.responses (10.2): each response's scores, for GET /v1/reports/surveys.",
        max_partition_fetch_bytes=FETCH_BYTES_PER_PARTITION,
    )

    async def on_survey_batch(msg: KafkaMessage) -> None:
        await scores.on_batch(msg)

    subscriber(on_survey_batch)
    return scores


def _tally(row: Any) -> Tally:
    return Tally(int(row["responses"]), int(row["scores"]), int(row["score_sum"] or 0), int(row["high"]))


@api.get(
    "/v1/reports/surveys",
    summary="Satisfaction-survey scores for a period: responses, mean score, share of 4-5, per region or category",
    responses={
        200: {
            "description": "Groups and the total: key, name, responses, scores, mean_score, share_4_5.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **ERRORS,
    },
    openapi_extra={"x-scopes": READ_SCOPES},
)
async def get_surveys(
    request: Request,
    start: str | None = Query(default=None, alias="from", description="Local date YYYY-MM-DD, included"),
    end: str | None = Query(default=None, alias="to", description="Local date YYYY-MM-DD, included"),
    group_by: str = Query(default="region", description="region | category"),
    caller: Principal = CallerDep,
) -> JSONResponse:
    ctx: ServiceContext = request.app.state.ctx
    if caller.scope not in READ_SCOPES:
        raise HTTPException(403, {"error": "forbidden", "reason": "reports need a `reports` or `admin` key"})
    if group_by not in GROUP_BY:
        raise HTTPException(
            422, {"error": "invalid", "reason": f"group_by must be region or category, not {group_by[:40]!r}"}
        )
    now = ctx.clock()
    frm, to = period(start, end, now.astimezone(LOCAL_TZ).date())
    async with db_or_503(), asyncio.timeout(10), ctx.pool.acquire() as conn:
        rows = await conn.fetch(SQL_BY_REGION if group_by == "region" else SQL_BY_CATEGORY, frm, to)
        total = await conn.fetchrow(SQL_TOTAL, frm, to)
    groups = {str(r["key"]): _tally(r) for r in rows}
    return JSONResponse(survey_report(group_by, groups, _tally(total), start=frm, end=to, as_of=now))
