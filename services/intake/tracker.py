"""Intake's reader of `complaints.lifecycle`: keeps, for the cases it shows (portal, visits, surveys), the latest
state and resolve note (tracking.py decides; this saves, one transaction per batch, then commits the offsets)."""

from __future__ import annotations

from typing import Any, Final

from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from services.intake import store
from services.intake.tracking import is_shown, latest_facts
from shared.events import DeadLetter, LifecycleChanged
from shared.kafka import RawRecord, dead_letter_of
from shared.service import ServiceContext, batch_subscriber, consume_batch

GROUP: Final = "intake.tracking"


class Tracker:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def ingest(self, records: list[RawRecord]) -> None:
        now = self.ctx.clock()
        events: list[LifecycleChanged] = []
        letters: list[DeadLetter] = []
        for record in records:
            if record.key is not None and not is_shown(record.key_text or ""):
                continue  # keyed by complaint_id: most cases are not shown by intake, skip them unparsed
            try:
                events.append(LifecycleChanged.model_validate_json(record.value))
            except ValidationError as exc:
                reason = f"not a valid LifecycleChanged: {exc.errors(include_url=False, include_input=False)}"[:500]
                letters.append(dead_letter_of(record, "invalid_event", reason, now, service="intake"))
        states, notes = latest_facts(events)
        if not (states or letters):
            return
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            await store.save_states(conn, states, notes)
            saved = await store.save(
                conn,
                [],
                letters,
                now=now,
                via="kafka",
                received_topic=self.ctx.topics.received,
                dlq_topic=self.ctx.topics.dlq,
            )
        if saved.new_dead_letters:
            for letter in saved.new_dead_letters:
                self.ctx.metrics.dead_letters.labels(letter.source_topic).inc()
            self.ctx.relay.wake()

    async def give_up(self, record: RawRecord, exc: BaseException, attempts: int) -> None:
        now = self.ctx.clock()
        letter = dead_letter_of(
            record, "processing_failed", f"{type(exc).__name__}: {exc}"[:500], now, service="intake", attempts=attempts
        )
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            await store.save(
                conn,
                [],
                [letter],
                now=now,
                via="kafka",
                received_topic=self.ctx.topics.received,
                dlq_topic=self.ctx.topics.dlq,
            )
        self.ctx.relay.wake()

    async def on_batch(self, msg: Any) -> None:
        await consume_batch(
            self.ctx, msg, self.ingest, self.give_up, group=f"{self.ctx.settings.topic_prefix}{GROUP}", where=GROUP
        )


def subscribe_tracker(ctx: ServiceContext) -> Tracker:
    tracker = Tracker(ctx)
    topic = ctx.topics.lifecycle
    subscriber = batch_subscriber(
        ctx,
        topic,
        group_id=ctx.group(GROUP, topic),
        title="intake.tracking",
        description="complaints.lifecycle (3.6): the state and resolve note of portal, visit and survey cases, for "
        "the tracking page and the visit listing.",
    )

    async def on_lifecycle_batch(msg: KafkaMessage) -> None:
        await tracker.on_batch(msg)

    subscriber(on_lifecycle_batch)
    return tracker
