"""The scheduler: fires the warnings and breaches of deadlines that fall due, from the `deadlines` table.

One loop per process. Each round claims up to `batch_size` due rows with `FOR UPDATE SKIP LOCKED` (so replicas
never fire the same deadline, and a row a consumer holds is left for the next round), decides with the pure
`clockwork.fire_batch` (`clockwork.fire` for the whole batch at once), writes the rows' new state and the events into
the outbox in one statement of the same transaction, then commits.
A replica killed mid-round never committed: its claims are released with its connection and claimed again.

Between rounds it sleeps until the earliest next_fire_at, at most `poll_interval_s` (rows set by another replica
are seen within that), and `wake()` cuts the sleep short when this process's consumer sets an earlier deadline.
After a downtime, the backlog goes out in rounds of `batch_size`, each its own short transaction, so the consumer
keeps running alongside; while a backlog is due (a round came back full), `parallel_rounds` rounds run at once on
separate connections, so the database works on one while Python builds the other's events.

Event time (docs/sla.md, "Judging by event time"): a breach due at T goes out only once sla has read every fact
published up to T plus a grace for upstream publishing (SLA_BREACH_GRACE_SECONDS). `CatchUpWatch` notes, every
round, the time and the end offsets of every input partition, and reads the group's committed offsets (committed
after each batch's transaction, so the facts are in the database); once the group has reached an observation made
at t, `BreachHorizon` moves to t - grace and the scheduler may fire every breach due up to it. A past-due row
beyond the horizon waits (so do its warning: after the due it tells nobody anything); warnings before the due
fire on the wall clock. While sla is behind (a restart, a stalled partition) no breach goes out, and
`sla_breach_horizon_lag_seconds` shows how far behind the horizon is.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from prometheus_client import Gauge, Histogram

from services.sla import store
from services.sla.clockwork import FiredBatch, fire_batch
from shared.clock import Clock
from shared.db import is_transient
from shared.events.sla import SlaEventType
from shared.kafka import Backoff, Health, security_kwargs
from shared.observability import Metrics
from shared.settings import Settings

log = logging.getLogger(__name__)

# When the earliest due row is held by someone else (another replica is firing it, a consumer is deciding on it),
# wait this long rather than spin.
HELD_ROWS_WAIT_S = 0.05


@dataclass(frozen=True)
class FireReport:
    """One round: what fired, and how late (committed minus meant-to-fire time, in seconds) each firing was."""

    claimed: int = 0
    warnings: int = 0
    breaches: int = 0
    lateness_s: list[float] = field(default_factory=list)

    @property
    def fired(self) -> int:
        return self.warnings + self.breaches


class Scheduler:
    """The firing loop of one process."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        *,
        sla_topic: str,
        metrics: Metrics,
        health: Health,
        clock: Clock,
        late_after: timedelta,
        batch_size: int = 1000,
        parallel_rounds: int = 2,
        poll_interval_s: float = 1.0,
        on_commit: Callable[[], None] | None = None,
        on_report: Callable[[FireReport], None] | None = None,
        lateness: Histogram | None = None,
        horizon: Callable[[], datetime | None] | None = None,
        grace: timedelta = timedelta(0),
    ) -> None:
        """`horizon` says up to when breaches may fire (None: hold them all); left out, breaches fire on the wall
        clock (benches and tests of the scheduler alone). `grace` is the hold every breach gets, for lateness."""
        self._pool, self._metrics, self._health, self._clock = pool, metrics, health, clock
        self._sla_topic = sla_topic
        self._late_after, self._batch_size, self._poll_s = late_after, batch_size, poll_interval_s
        self._parallel = max(1, parallel_rounds)
        self._on_commit, self._on_report = on_commit, on_report
        self._lateness = lateness
        self._horizon = horizon if horizon is not None else self._clock
        self._grace = grace
        self._wakeup = asyncio.Event()
        self._sleeping_until: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sla-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self, at: datetime | None = None) -> None:
        """A deadline was set or moved to fire at `at`: look again now if that is before the planned wake-up."""
        if at is None or self._sleeping_until is None or at < self._sleeping_until:
            self._wakeup.set()

    async def fire_due(self) -> FireReport:
        """One round: claim, fire and commit up to `batch_size` due deadlines."""
        now = self._clock()
        horizon = self._horizon()
        async with self._pool.acquire() as conn, conn.transaction():
            claimed = await store.claim_due(conn, now, horizon, self._batch_size)
            if not claimed:
                return FireReport()
            fired = fire_batch(claimed, now, late_after=self._late_after, horizon=horizon, grace=self._grace)
            await store.save_fired(conn, fired, now, self._sla_topic)
        committed = self._clock()
        if self._on_commit is not None:
            self._on_commit()
        report = self._count(len(claimed), fired, committed)
        if self._on_report is not None:
            self._on_report(report)
        return report

    def _count(self, claimed: int, fired: FiredBatch, committed: datetime) -> FireReport:
        breaches = 0
        for (kind, stage, department), n in fired.labels.items():
            if kind is SlaEventType.BREACHED:
                counter = self._metrics.sla_breaches
                breaches += n
            else:
                counter = self._metrics.sla_warnings
            counter.labels(stage, department).inc(n)
        committed_s = committed.timestamp()
        lateness = [committed_s - meant_s for meant_s in fired.meant]
        if self._lateness is not None:
            for late_s in lateness:
                self._lateness.observe(max(late_s, 0.0))
        return FireReport(claimed, fired.fired - breaches, breaches, lateness)

    async def _run(self) -> None:
        backoff = Backoff(first_s=0.2, cap_s=5.0)
        backlog = False
        while True:
            # Cleared before the round, so a wake-up that comes while it runs is not lost.
            self._wakeup.clear()
            try:
                reports = await self._rounds(self._parallel if backlog else 1)
                backlog = any(r.claimed >= self._batch_size for r in reports)
                nxt = None if backlog else await store.next_fire_at(self._pool, self._clock(), self._horizon())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database away or a bug: the rows stay due, retry the round
                self._health.fault("scheduler", exc)
                self._metrics.transient_retries.labels("scheduler").inc()
                level = logging.WARNING if is_transient(exc) else logging.ERROR
                log.log(level, "scheduler round failed, will retry", extra={"error": repr(exc)[:300]})
                await backoff.wait()
                continue
            self._health.clear("scheduler")
            backoff.attempt = 0
            if backlog:
                await asyncio.sleep(0)  # more are due: go on, letting the consumer and the relay have a turn
                continue
            await self._sleep(nxt, nothing_fired=not any(r.claimed for r in reports))

    async def _rounds(self, parallel: int) -> list[FireReport]:
        """`parallel` rounds at once, each in its own transaction (SKIP LOCKED shares the rows out): while one
        builds its events, the other's statements run in the database. Raises the first failure, after all end."""
        if parallel == 1:
            return [await self.fire_due()]
        results = await asyncio.gather(*(self.fire_due() for _ in range(parallel)), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, FireReport)]

    async def _sleep(self, nxt: datetime | None, *, nothing_fired: bool) -> None:
        now = self._clock()
        delay = self._poll_s if nxt is None else min(self._poll_s, max(0.0, (nxt - now).total_seconds()))
        if nxt is not None and nxt <= now and nothing_fired:
            delay = min(self._poll_s, HELD_ROWS_WAIT_S)  # due, yet none could be claimed: someone holds them
        self._sleeping_until = now + timedelta(seconds=delay)
        try:
            async with asyncio.timeout(delay):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        finally:
            self._sleeping_until = None


class BreachHorizon:
    """Up to when breaches may fire: the time of the latest observation of the input partitions' end offsets that
    the consumer group has reached, minus the grace. Pure: observations and committed offsets are passed in.

    An observation is kept until the group reaches it; at most `max_pending` are kept, and while that many wait no
    new one is taken, so the horizon keeps moving as long as the group does (however far behind it is)."""

    def __init__(self, grace: timedelta, *, max_pending: int = 256) -> None:
        self.grace = grace
        self.value: datetime | None = None
        self._pending: deque[tuple[datetime, dict[TopicPartition, int]]] = deque()
        self._max_pending = max_pending

    def __call__(self) -> datetime | None:
        return self.value

    def observe(self, at: datetime, ends: Mapping[TopicPartition, int]) -> None:
        """The end offsets of every input partition, read at `at` (after `at`, the clock's reading)."""
        if len(self._pending) < self._max_pending:
            self._pending.append((at, dict(ends)))

    def reached(self, committed: Mapping[TopicPartition, int]) -> bool:
        """The group's committed offsets (a partition never committed counts as 0); True if the horizon moved."""
        newest: datetime | None = None
        while self._pending:
            at, ends = self._pending[0]
            if any(committed.get(tp, 0) < end for tp, end in ends.items()):
                break
            newest = at
            self._pending.popleft()
        if newest is None:
            return False
        moved = newest - self.grace
        if self.value is not None and moved <= self.value:
            return False
        self.value = moved
        return True


class CatchUpWatch:
    """Feeds a BreachHorizon from the broker: every `interval_s`, the clock's time and the end offsets of the input
    topics, then the consumer group's committed offsets; wakes the scheduler when the horizon moves."""

    def __init__(
        self,
        settings: Settings,
        horizon: BreachHorizon,
        *,
        group: str,
        topics: Sequence[str],
        clock: Clock,
        interval_s: float,
        on_move: Callable[[], None],
        lag_gauge: Gauge | None = None,
    ) -> None:
        self._settings, self._horizon, self._group, self._topics = settings, horizon, group, list(topics)
        self._clock, self._interval_s, self._on_move, self._lag_gauge = clock, interval_s, on_move, lag_gauge
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sla-catch-up")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        kw: dict[str, Any] = security_kwargs(self._settings)
        admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.kafka_bootstrap_servers, **kw)
        ends_reader = AIOKafkaConsumer(bootstrap_servers=self._settings.kafka_bootstrap_servers, **kw)
        backoff = Backoff(first_s=0.2, cap_s=5.0)
        try:
            while True:
                try:
                    await admin.start()
                    await ends_reader.start()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the broker is away: no horizon yet, breaches wait
                    log.warning("breach horizon: broker not reachable", extra={"error": repr(exc)[:200]})
                    await backoff.wait()
            while True:
                try:
                    await self.measure(admin, ends_reader)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the horizon stays where it is until the next round
                    log.warning("breach horizon not measured", extra={"error": repr(exc)[:200]})
                self._show()
                await asyncio.sleep(self._interval_s)
        finally:
            await ends_reader.stop()
            await admin.close()

    async def measure(self, admin: AIOKafkaAdminClient, ends_reader: AIOKafkaConsumer) -> None:
        partitions = [TopicPartition(t, p) for t in self._topics for p in await _partitions(ends_reader, t)]
        if not partitions:
            return
        at = self._clock()  # before reading the ends: everything published by `at` is below them
        self._horizon.observe(at, await ends_reader.end_offsets(partitions))
        offsets = await admin.list_consumer_group_offsets(self._group)
        committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        if self._horizon.reached(committed):
            self._on_move()

    def _show(self) -> None:
        if self._lag_gauge is None:
            return
        value = self._horizon.value
        self._lag_gauge.set(float("nan") if value is None else (self._clock() - value).total_seconds())


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    found = consumer.partitions_for_topic(topic)
    if not found:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - metadata for topics we do not subscribe to
        found = consumer.partitions_for_topic(topic)
    return set(found or ())
