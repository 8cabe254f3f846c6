"""SLA service (the clock): thin batch subscribers on complaints.received, complaints.assigned and
complaints.lifecycle, the scheduler that fires warnings and breaches, and the overdue gauge.

Each consumed batch is one transaction: the new event ids are marked processed, the batch's cases and their
deadlines are locked, the pure `clockwork.fold_batch` decides, and cases, deadlines and the `complaint.sla`
events (through the outbox) are saved together; the offsets are committed after that. See docs/sla.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import yaml
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.sla import store
from services.sla.clockwork import BatchOutcome, ClockRules, Fact, fact_of_assigned, fact_of_lifecycle, fact_of_received
from services.sla.clockwork import fold_batch as fold
from services.sla.policy import SlaPolicy
from services.sla.scheduler import BreachHorizon, CatchUpWatch, Scheduler
from shared.calendar import WorkingCalendar, as_local, calendar_from_settings
from shared.clock import Clock, system_clock
from shared.deadletters import store_dead_letters
from shared.domain import DEPARTMENTS
from shared.events import ComplaintAssigned, ComplaintReceived, DeadLetter, LifecycleChanged, SlaEvent, Stage
from shared.events.sla import SlaEventType
from shared.kafka import RawRecord
from shared.kafka import dead_letter_of as shared_dead_letter
from shared.observability import Metrics
from shared.service import ServiceContext, batch_subscriber, consume_batch, create_service_app
from shared.settings import Settings

log = logging.getLogger(__name__)
SERVICE = "sla"
GROUP = "sla"


class SlaSettings(BaseSettings):
    """The clock's own settings (`SLA_*`); SLA_CALENDAR_OVERRIDES is a contract setting and lives in Settings."""

    model_config = SettingsConfigDict(env_prefix="SLA_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    policy: Path | None = Field(
        default=None, description="YAML or JSON file of the SLA policy (windows per stage, category, urgency)."
    )
    poll_interval_s: float = Field(default=1.0, gt=0, le=60, description="Longest sleep of the scheduler.")
    batch_size: int = Field(default=1000, ge=1, le=50_000, description="Deadlines claimed per scheduler round.")
    parallel_rounds: int = Field(
        default=2, ge=1, le=8, description="Scheduler rounds run at once while a backlog is due (own connections)."
    )
    late_after_s: float = Field(
        default=60.0, ge=0, description="An SLA event sent more than this after its time is marked `late: true`."
    )
    gauge_interval_s: float = Field(default=15.0, gt=0, description="How often sla_overdue_open is recomputed.")


def load_policy(path: Path | None) -> SlaPolicy:
    """The policy file (YAML, or JSON which is YAML too); the built-in defaults of contract 7 without one."""
    if path is None:
        return SlaPolicy()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"SLA_POLICY {path}: cannot read it: {exc}") from exc
    try:
        return SlaPolicy.model_validate(data or {})
    except ValidationError as exc:
        raise ValueError(f"SLA_POLICY {path} is not a valid policy: {exc}") from exc


def build_calendar(settings: Settings, metrics: Metrics) -> WorkingCalendar:
    """The working calendar (shared.calendar.calendar_from_settings); an unknown year is logged and shown in
    sla_calendar_year_missing{year}."""

    def unknown_year(year: int) -> None:
        metrics.calendar_year_missing.labels(str(year)).set(1)
        log.warning(
            "no published schedule for this year, 调休 unknown: statutory holidays and weekends rest, other days "
            "are worked; add the year's schedule to SLA_CALENDAR_OVERRIDES",
            extra={"year": year},
        )

    return calendar_from_settings(settings, on_unknown_year=unknown_year)


def dead_letter_of(record: RawRecord, error_type: str, reason: str, now: datetime, attempts: int = 1) -> DeadLetter:
    """A record the clock cannot read; its id comes from the record's place, so a redelivery makes no second one."""
    return shared_dead_letter(record, error_type, reason, now, service=SERVICE, attempts=attempts)


class ClockConsumer:
    """The consume side: a batch of records in, one transaction out."""

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        rules: ClockRules,
        policy: SlaPolicy,
        policy_id: str,
        scheduler: Scheduler,
        facts_counter: Counter,
        superseded_counter: Counter | None = None,
    ) -> None:
        self.ctx, self.rules, self.scheduler, self.facts_counter = ctx, rules, scheduler, facts_counter
        self.superseded_counter = superseded_counter
        self.policy_id = policy_id
        self.policies: dict[str, SlaPolicy] = {policy_id: policy}  # bodies never change under an id: cache them
        self._models: dict[str, type[ComplaintReceived | ComplaintAssigned | LifecycleChanged]] = {
            ctx.topics.received: ComplaintReceived,
            ctx.topics.assigned: ComplaintAssigned,
            ctx.topics.lifecycle: LifecycleChanged,
        }

    def decode(self, record: RawRecord, now: datetime) -> Fact | DeadLetter | None:
        """The clock fact of a record; a dead letter if it cannot be read; None if it does not concern the clock."""
        model = self._models.get(record.topic)
        if model is None:
            return dead_letter_of(record, "unknown_topic", f"the sla service does not read {record.topic}", now)
        try:
            event = model.model_validate_json(record.value)
        except ValidationError as exc:
            reason = f"not a valid {model.__name__}: {exc.errors(include_url=False, include_input=False)}"
            return dead_letter_of(record, "invalid_event", reason, now)
        if isinstance(event, ComplaintReceived):
            return fact_of_received(event)
        if isinstance(event, ComplaintAssigned):
            return fact_of_assigned(event)
        return fact_of_lifecycle(event)

    async def ingest(self, records: list[RawRecord]) -> None:
        ctx = self.ctx
        now = ctx.clock()
        facts: list[tuple[Fact, str]] = []
        letters: list[DeadLetter] = []
        for record in records:
            decoded = self.decode(record, now)
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
            elif decoded is not None:
                facts.append((decoded, record.topic))
        async with ctx.pool.acquire() as conn, conn.transaction():
            fresh = await self._fresh(conn, facts, now)
            ids = {f.complaint_id for f in fresh}
            cases = await store.lock_cases(conn, ids, now)
            deadlines = await store.lock_deadlines(conn, ids)
            missing = {c.policy_id for c in cases.values()} - self.policies.keys()
            if missing:
                self.policies.update(await store.load_policies(conn, missing))
            now = ctx.clock()  # after the locks: the time the decision is taken
            result = fold(
                cases,
                deadlines,
                fresh,
                policies=self.policies,
                current_policy_id=self.policy_id,
                rules=self.rules,
                now=now,
            )
            await store.save_cases(conn, list(result.cases.values()), now)
            await store.save_deadlines(conn, result.deadlines, now)
            new_letters = await store_dead_letters(conn, letters)
            await store.publish(conn, result.events, new_letters, sla_topic=ctx.topics.sla, dlq_topic=ctx.topics.dlq)
        self._count(fresh, result, new_letters)
        ctx.relay.wake()
        fire_times = [t for t in (r.next_fire_at for r in result.deadlines) if t is not None]
        if fire_times:
            self.scheduler.wake(min(fire_times))

    async def _fresh(
        self, conn: asyncpg.Connection[Any], facts: Sequence[tuple[Fact, str]], now: datetime
    ) -> list[Fact]:
        """The facts not processed before (a redelivered or replayed event, or a copy in the same batch, is skipped)."""
        keys = [UUID(f.event_id) for f, _ in facts]  # parsed once: this runs for every fact
        new = await store.mark_processed(conn, [(key, topic) for key, (_, topic) in zip(keys, facts, strict=True)], now)
        fresh: list[Fact] = []
        for key, (fact, _) in zip(keys, facts, strict=True):
            if key in new:
                new.discard(key)
                fresh.append(fact)
        return fresh

    def _count(self, fresh: list[Fact], result: BatchOutcome, letters: list[DeadLetter]) -> None:
        m = self.ctx.metrics
        self.facts_counter.labels("applied").inc(len(fresh))
        for note in result.notes:
            self.facts_counter.labels(note.code).inc()
            log.info("fact not applied as is", extra={"code": note.code, "fact": note.fact.value, "why": note.detail})
        for event in result.events:
            if event.type is SlaEventType.BREACHED:
                m.sla_breaches.labels(event.stage.value, event.department).inc()
            elif event.type is SlaEventType.MET:
                m.sla_met.labels(event.stage.value, event.department).inc()
                if event.supersedes_event_id is not None:
                    if self.superseded_counter is not None:
                        self.superseded_counter.labels(event.stage.value, event.department).inc()
                    log.warning(
                        "a breach is superseded: the fact happened in time but was read after the breach went out",
                        extra={"complaint_id": event.complaint_id, "stage": event.stage.value,
                               "superseded": event.supersedes_event_id},
                    )  # fmt: skip
        for letter in letters:
            m.dead_letters.labels(letter.source_topic).inc()
            log.warning(
                "dead letter",
                extra={"source_topic": letter.source_topic, "offset": letter.source_offset, "reason": letter.reason},
            )

    async def give_up(self, record: RawRecord, exc: BaseException, attempts: int) -> None:
        """A record that failed for good for a reason other than its data (a bug): dead-lettered, counted."""
        now = self.ctx.clock()
        letter = dead_letter_of(record, "processing_failed", f"{type(exc).__name__}: {exc}"[:500], now, attempts)
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            new_letters = await store_dead_letters(conn, [letter])
            await store.publish(conn, [], new_letters, sla_topic=self.ctx.topics.sla, dlq_topic=self.ctx.topics.dlq)
        for fresh in new_letters:
            self.ctx.metrics.dead_letters.labels(fresh.source_topic).inc()
        self.ctx.relay.wake()

    async def on_batch(self, msg: Any) -> None:
        await consume_batch(self.ctx, msg, self.ingest, self.give_up, group=f"{self.ctx.settings.topic_prefix}{GROUP}")


class OverdueGauge:
    """sla_overdue_open{department,stage}, recomputed from the database (right whatever the number of replicas)."""

    def __init__(self, ctx: ServiceContext, interval_s: float, horizon: BreachHorizon) -> None:
        self.ctx, self.interval_s, self.horizon = ctx, interval_s, horizon
        # Every department and stage shows from the start, at 0 until a deadline of theirs is overdue: "none overdue"
        # is a figure a dashboard should show, not a missing series.
        self._shown: set[tuple[str, str]] = {(d, stage.value) for d in DEPARTMENTS for stage in Stage}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sla-overdue-gauge")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def refresh(self) -> None:
        now, horizon = self.ctx.clock(), self.horizon()
        counts = await store.overdue_open(self.ctx.pool, None if horizon is None else min(now, horizon))
        gauge = self.ctx.metrics.sla_overdue_open
        for department, stage in self._shown - counts.keys():
            gauge.labels(department, stage).set(0)
        for (department, stage), n in counts.items():
            gauge.labels(department, stage).set(n)
        self._shown |= counts.keys()

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a gauge can wait for the next round
                log.warning("overdue gauge not refreshed", extra={"error": repr(exc)[:300]})
            await asyncio.sleep(self.interval_s)


def _setup(sla: SlaSettings | None) -> Any:
    async def setup(ctx: ServiceContext) -> None:
        cfg = sla or SlaSettings()
        policy = load_policy(cfg.policy)
        calendar = build_calendar(ctx.settings, ctx.metrics)
        now = ctx.clock()
        ctx.metrics.calendar_year_missing.labels(str(as_local(now).year)).set(0)  # set to 1 just below if unknown
        calendar.is_working_day(
            as_local(now).date()
        )  # an unknown current year is reported at start, not at its first case
        registry = ctx.metrics.registry
        lateness = Histogram(
            "sla_fire_lateness_seconds",
            "From the time a warning or breach was due to its commit.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600),
            registry=registry,
        )
        facts_counter = Counter(
            "sla_facts", "Facts consumed by the clock, by what became of them.", ["outcome"], registry=registry
        )
        superseded_counter = Counter(
            "sla_breaches_superseded",
            "Breaches overridden by a `met`: the fact happened in time but was read after the breach went out.",
            ["stage", "department"],
            registry=registry,
        )
        horizon_lag = Gauge(
            "sla_breach_horizon_lag_seconds",
            "How far behind now breaches may fire (NaN until sla has caught up once): the grace, plus sla's own lag.",
            registry=registry,
        )
        async with ctx.pool.acquire() as conn:
            policy_id = await store.save_policy(conn, policy, now)
        rules = ClockRules(calendar=calendar, late_after=timedelta(seconds=cfg.late_after_s))
        grace = timedelta(seconds=ctx.settings.sla_breach_grace_seconds)
        # Breaches wait for the horizon, which starts unknown: a scheduler that starts before the consumers have
        # read what happened while the service was away fires no breach until they have.
        horizon = BreachHorizon(grace)
        scheduler = Scheduler(
            ctx.pool,
            sla_topic=ctx.topics.sla,
            metrics=ctx.metrics,
            health=ctx.health,
            clock=ctx.clock,
            late_after=rules.late_after,
            batch_size=cfg.batch_size,
            parallel_rounds=cfg.parallel_rounds,
            poll_interval_s=cfg.poll_interval_s,
            on_commit=ctx.relay.wake,
            lateness=lateness,
            horizon=horizon,
            grace=grace,
        )
        consumer = ClockConsumer(
            ctx,
            rules=rules,
            policy=policy,
            policy_id=policy_id,
            scheduler=scheduler,
            facts_counter=facts_counter,
            superseded_counter=superseded_counter,
        )
        gauge = OverdueGauge(ctx, cfg.gauge_interval_s, horizon)
        inputs = (ctx.topics.received, ctx.topics.assigned, ctx.topics.lifecycle)
        watch = CatchUpWatch(
            ctx.settings,
            horizon,
            group=ctx.group(GROUP, *inputs),
            topics=inputs,
            clock=ctx.clock,
            interval_s=min(cfg.poll_interval_s, 1.0),
            on_move=scheduler.wake,
            lag_gauge=horizon_lag,
        )
        ctx.extras.update(consumer=consumer, scheduler=scheduler, gauge=gauge, watch=watch, sla_settings=cfg)
        log.info(
            "sla clock configured",
            extra={
                "policy_id": policy_id,
                "working_hours": ctx.settings.sla_working_hours,
                "calendar": repr(calendar),
                "breach_grace_s": grace.total_seconds(),
            },
        )
        for topic, model, what in (
            (ctx.topics.received, ComplaintReceived, "starts the resolve deadline (from received_at)"),
            (ctx.topics.assigned, ComplaintAssigned, "starts the accept and first_contact deadlines of each round"),
            (ctx.topics.lifecycle, LifecycleChanged, "meets, moves and supersedes deadlines"),
        ):
            subscriber = batch_subscriber(
                ctx,
                topic,
                group_id=ctx.group(GROUP, topic),
                title=f"sla:{topic}",
                description=f"{model.__name__}: {what}.",
            )

            async def handler(msg: KafkaMessage) -> None:
                await consumer.on_batch(msg)

            subscriber(handler)
        ctx.broker.publisher(
            ctx.topics.sla,
            schema=SlaEvent,
            title="complaints.sla",
            description="SLA events (contract 3.5): deadline_set, warning, breached (escalated to yshj), met.",
        )
        ctx.broker.publisher(
            ctx.topics.dlq,
            schema=DeadLetter,
            title="complaints.dlq",
            description="Records the clock could not read, with reason and bytes.",
        )
        watch.start()
        scheduler.start()
        gauge.start()

    return setup


async def _teardown(ctx: ServiceContext) -> None:
    for name in ("scheduler", "watch", "gauge"):
        part = ctx.extras.get(name)
        if part is not None:
            await part.stop()


def create_app(settings: Settings | None = None, sla: SlaSettings | None = None, clock: Clock = system_clock) -> Any:
    return create_service_app(
        SERVICE,
        routers=[],
        setup=_setup(sla),
        teardown=_teardown,
        settings=settings,
        clock=clock,
        description="The SLA clock: deadlines per stage and round, warnings at 80%, breaches escalated to yshj.",
    )


__all__ = ["SlaSettings", "build_calendar", "create_app", "load_policy"]
