"""The projection: one batch of facts from the four topics in, one transaction out (facts kept by event id, the
touched cases locked and folded again by `projections.fold_case` from their kept folded state plus the new facts,
their old contribution subtracted from the rollups and the new one added), then the offsets are committed."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Final

from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from services.reporting import store
from services.reporting.projections import Contribution, Fact, FoldState, SlimFact, fold_batch, slim
from services.reporting.store import StoredFact
from shared.deadletters import save_dead_letters
from shared.events import ComplaintAssigned, ComplaintReceived, DeadLetter, LifecycleChanged, SlaEvent
from shared.kafka import RawRecord, dead_letter_of
from shared.service import ServiceContext, batch_subscriber, consume_batch, give_up_as_dead_letter

log = logging.getLogger(__name__)
SERVICE: Final = "reporting"
GROUP: Final = "reporting"

MODELS: Final[dict[str, type[Fact]]] = {
    "received": ComplaintReceived,
    "assigned": ComplaintAssigned,
    "lifecycle": LifecycleChanged,
    "sla": SlaEvent,
}
"""The facts reporting reads, by the base name of their topic (the kind kept with each stored fact)."""

FETCH_BYTES_PER_PARTITION: Final = 256 * 1024
"""What each of reporting's consumers fetches ahead per partition (aiokafka's default is 1 MiB). The service has six
consumers (the four topics here, the watch, the surveys) of six partitions each: on a backlog the default holds up to
36 MiB of raw records before a batch takes them, this about 9 MiB; a batch of 500 events of a few KiB still fills
from one fetch of its partitions (issue #9, docs/performance.md)."""


def parse_fact(kind: str, body: dict[str, Any]) -> Fact:
    return MODELS[kind].model_validate(body)


class ReportingMetrics:
    """Reporting's own metrics, in the process's one registry."""

    def __init__(self, ctx: ServiceContext) -> None:
        r = ctx.metrics.registry
        self.lag = Gauge(
            "reporting_projection_lag_seconds",
            "From the newest fact of the last projected batch (its occurred_at) to its commit.",
            registry=r,
        )
        self.facts = Counter(
            "reporting_facts", "Facts consumed by the projection, by outcome.", ["outcome"], registry=r
        )
        self.report_seconds = Histogram(
            "reporting_report_seconds",
            "Time to answer a report request.",
            ["report"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )


class Projection:
    """The consume side of the read model."""

    def __init__(self, ctx: ServiceContext, metrics: ReportingMetrics) -> None:
        self.ctx, self.metrics = ctx, metrics
        t = ctx.topics
        self.kinds = {t.received: "received", t.assigned: "assigned", t.lifecycle: "lifecycle", t.sla: "sla"}

    def decode(self, record: RawRecord, now: datetime) -> StoredFact | DeadLetter:
        kind = self.kinds.get(record.topic)
        if kind is None:
            reason = f"the reporting service does not read {record.topic}"
            return dead_letter_of(record, "unknown_topic", reason, now, service=SERVICE)
        model = MODELS[kind]
        try:
            event = model.model_validate_json(record.value)
        except ValidationError as exc:
            reason = f"not a valid {model.__name__}: {exc.errors(include_url=False, include_input=False)}"
            return dead_letter_of(record, "invalid_event", reason, now, service=SERVICE)
        return StoredFact(
            str(event.event_id), event.complaint_id, kind, event.occurred_at, event.model_dump_json(), slim(event)
        )

    async def ingest(self, records: list[RawRecord]) -> None:
        ctx = self.ctx
        now = ctx.clock()
        facts: list[StoredFact] = []
        letters: list[DeadLetter] = []
        for record in records:
            decoded = self.decode(record, now)
            (letters if isinstance(decoded, DeadLetter) else facts).append(decoded)  # type: ignore[arg-type]
        async with ctx.pool.acquire() as conn, conn.transaction():
            stored = await store.insert_facts(conn, facts, now)
            fresh: dict[str, list[SlimFact]] = {}
            for f in facts:
                if f.event_id in stored:
                    fresh.setdefault(f.complaint_id, []).append(f.fact)
            if fresh:
                await self.project(conn, fresh, now)
            new_letters = await save_dead_letters(conn, letters, ctx.topics.dlq)
        self.metrics.facts.labels("applied").inc(len(stored))
        self.metrics.facts.labels("duplicate").inc(len(facts) - len(stored))
        if facts:
            self.metrics.lag.set(max(0.0, (ctx.clock() - max(f.occurred_at for f in facts)).total_seconds()))
        for letter in new_letters:
            ctx.metrics.dead_letters.labels(letter.source_topic).inc()
            log.warning(
                "dead letter",
                extra={"source_topic": letter.source_topic, "offset": letter.source_offset, "reason": letter.reason},
            )
        if new_letters:
            ctx.relay.wake()

    async def project(self, conn: Any, fresh: dict[str, list[SlimFact]], now: datetime) -> None:
        """Fold the cases that got new facts (stored already in this transaction) and move the rollups.

        Each case is folded from its kept state (its compact facts) plus the new ones: no stored fact is read back
        or validated again. A case without a kept state (stored before migration 004) is folded once from all its
        stored facts, and keeps its state from then on."""
        locked = await store.lock_cases(conn, fresh, now)
        missing = sorted(cid for cid, case in locked.items() if case.state is None)
        from_store = await store.case_facts(conn, missing) if missing else {}
        cases: dict[str, tuple[Contribution, FoldState]] = {}
        for cid, new in fresh.items():
            case = locked[cid]
            if case.state is None:
                kept = [parse_fact(kind, body) for kind, body in from_store.get(cid, [])]
                cases[cid] = (case.contribution, FoldState().with_facts(kept))
            else:
                cases[cid] = (case.contribution, case.state.with_facts(new))
        folded, delta = fold_batch(cases)
        await store.save_cases(conn, folded, [cases[f.profile.complaint_id][1] for f in folded], now)
        await store.add_rollups(conn, delta)

    async def give_up(self, record: RawRecord, exc: BaseException, attempts: int) -> None:
        """A record that failed for good for a reason other than its data: a dead letter, counted."""
        await give_up_as_dead_letter(self.ctx, record, exc, attempts, service=SERVICE)

    async def on_batch(self, msg: Any) -> None:
        await consume_batch(
            self.ctx, msg, self.ingest, self.give_up, group=f"{self.ctx.settings.topic_prefix}{GROUP}", where=GROUP
        )


def subscribe(ctx: ServiceContext, projection: Projection) -> None:
    """One subscriber per topic, all in the consumer group `reporting`."""
    t = ctx.topics
    for topic, what in (
        (t.received, "complaint.received (3.1): the case, its day and its groups."),
        (t.assigned, "complaint.assigned (3.2): assignments, counted for their department."),
        (t.lifecycle, "complaints.lifecycle (3.6): accepts, contacts, returns, resolves, callbacks."),
        (t.sla, "complaints.sla (3.5): deadlines, breaches and `met` (the latest word per stage and round wins)."),
    ):
        subscriber = batch_subscriber(
            ctx,
            topic,
            group_id=ctx.group(GROUP, topic),
            title=f"reporting:{topic}",
            description=what,
            max_partition_fetch_bytes=FETCH_BYTES_PER_PARTITION,
        )

        async def handler(msg: KafkaMessage) -> None:
            await projection.on_batch(msg)

        subscriber(handler)
    ctx.broker.publisher(
        t.dlq,
        schema=DeadLetter,
        title="complaints.dlq",
        description="Records the reporting service could not read, with reason and bytes.",
    )
