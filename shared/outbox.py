"""Transactional outbox: facts are written in the same transaction as the effect that causes them, and a relay
publishes them afterwards, so a crash between commit and publish loses nothing.

The relay claims rows in id order under a transaction-scoped advisory lock (one relay per schema publishes at a
time, so a case's facts leave in the order they were written), publishes them with acks=all, waits for every
acknowledgement (with a timeout), then deletes them. A crash after publishing but before the delete republishes
the same events: consumers dedupe on `event_id`.

The relay sends through `shared.kafka.Producers`: an error that spoils the idempotent producer's state (the broker
restarted and refuses its sequence numbers, an unknown producer id, a fenced epoch, a closed producer) replaces the
producer, and the unacknowledged rows, still in the outbox, go again through the new one in id order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.kafka import Backoff, Health, Producers
from shared.observability import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    key: bytes | None
    value: bytes


SQL_ENQUEUE = """
INSERT INTO outbox (topic, key, value)
SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[])
"""
SQL_CLAIM = "SELECT id, topic, key, value FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
SQL_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('complaints-outbox:' || current_schema()))"
SQL_DELETE = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
SQL_PENDING = "SELECT count(*) FROM outbox"


async def enqueue(conn: asyncpg.Connection[Any], messages: Sequence[OutboxMessage]) -> None:
    """Add messages to the outbox inside the caller's transaction."""
    if not messages:
        return
    await conn.execute(SQL_ENQUEUE, [m.topic for m in messages], [m.key for m in messages], [m.value for m in messages])


class OutboxRelay:
    """Publishes a schema's outbox. `wake()` after a commit makes it publish at once; otherwise it polls."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        producers: Producers,
        metrics: Metrics,
        health: Health,
        *,
        batch_size: int = 500,
        send_timeout_s: float = 10.0,
        poll_interval_s: float = 0.5,
    ) -> None:
        self._pool, self._producers, self._metrics, self._health = pool, producers, metrics, health
        self._batch_size, self._send_timeout_s, self._poll_s = batch_size, send_timeout_s, poll_interval_s
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending_task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        self._pending_task = asyncio.create_task(self._watch_pending(), name="outbox-pending")

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Stop the loop, then publish what is left (bounded by a timeout: what is not sent stays in the outbox)."""
        for task in (self._task, self._pending_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        try:
            async with asyncio.timeout(drain_timeout_s):
                while await self.publish_once():
                    pass
        except Exception as exc:  # noqa: BLE001 - left rows are published by the next start
            log.warning("outbox not drained at stop", extra={"error": repr(exc)[:300]})

    async def _run(self) -> None:
        backoff = Backoff(first_s=0.2, cap_s=5.0)
        while True:
            self._wakeup.clear()  # before publishing: a wake() during the publish must start another round
            try:
                sent = await self.publish_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - broker or database away: keep the rows, retry
                self._health.fault("outbox", exc)
                self._metrics.transient_retries.labels("outbox").inc()
                log.warning("outbox publish failed, will retry", extra={"error": repr(exc)[:300]})
                await backoff.wait()
                continue
            self._health.clear("outbox")
            backoff.attempt = 0
            if sent < self._batch_size:
                try:
                    async with asyncio.timeout(self._poll_s):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass

    async def publish_once(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(SQL_LOCK):
                return 0
            rows = await conn.fetch(SQL_CLAIM, self._batch_size)
            if not rows:
                return 0
            # Not acknowledged: the rows stay (the transaction rolls back); a spoilt producer is replaced first.
            await self._producers.send_all([(r["topic"], r["key"], r["value"]) for r in rows], self._send_timeout_s)
            await conn.execute(SQL_DELETE, [r["id"] for r in rows])
        for r in rows:
            self._metrics.published.labels(r["topic"]).inc()
        return len(rows)

    async def _watch_pending(self) -> None:
        while True:
            try:
                pending = await self._pool.fetchval(SQL_PENDING)
                self._metrics.outbox_pending.labels(self._metrics.service).set(pending)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001, S110 - a gauge can wait for the next round
                pass
            await asyncio.sleep(5)
