"""Consumer lag per (group, topic), read from the broker (committed offsets against log ends), so the figure is
right with many replicas; and the readiness rule for a stalled consumer: lag waiting while nothing is committed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from shared.kafka import Health, security_kwargs
from shared.observability import Metrics
from shared.settings import Settings

log = logging.getLogger(__name__)

_ROUNDS_LOST = 2
"""Failed rounds in a row, while connected, that make an outage (said once; the clients reconnect by themselves)."""


def lag_by_topic(committed: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]) -> dict[str, int]:
    """Messages behind, per topic: log end minus committed offset (a partition never committed counts from 0)."""
    lag: dict[str, int] = {}
    for tp, end in ends.items():
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - committed.get(tp, 0))
    return lag


class LagMonitor:
    """Every `interval_s`, sets `consumer_lag_messages{group,topic}`; marks the service not ready when a group has
    lag but its committed offsets have not moved for `stall_after_s`."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        health: Health,
        groups: Mapping[str, Sequence[str]],
        *,
        interval_s: float = 10.0,
        stall_after_s: float = 120.0,
        retry_s: float = 1.0,
    ) -> None:
        self._settings, self._metrics, self._health = settings, metrics, health
        self._groups = groups
        self._interval_s, self._stall_after_s = interval_s, stall_after_s
        self._last_move: dict[str, float] = {}
        self._last_committed: dict[str, dict[TopicPartition, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._retry_s = retry_s
        self._away = False
        self.connections = 0
        """How many times the monitor has connected to Kafka (a figure for tests and debugging)."""

    def start(self) -> None:
        if self._groups:
            self._task = asyncio.create_task(self._run(), name="lag-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        """Measures for ever: a broker away at start, or lost later, is retried with a growing pause (said once per
        outage), never the end of the monitor."""
        pause = self._retry_s
        while True:
            try:
                await self._measure_while_connected()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker away: tried again after the pause
                self._say_away(exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, self._interval_s)

    def _say_away(self, exc: Exception) -> None:
        if not self._away:
            log.warning("lag not measured: Kafka not reachable, retrying", extra={"error": repr(exc)[:200]})
        self._away = True

    def _say_back(self) -> None:
        if self._away:
            log.info("lag measured again: Kafka reachable")
        self._away = False

    async def _measure_while_connected(self) -> None:
        kw: dict[str, Any] = security_kwargs(self._settings)
        admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.kafka_bootstrap_servers, **kw)
        ends_reader = AIOKafkaConsumer(bootstrap_servers=self._settings.kafka_bootstrap_servers, **kw)
        try:
            await admin.start()
            await ends_reader.start()
            self.connections += 1
            failed = 0
            while True:
                try:
                    await self.measure(admin, ends_reader)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a missed measurement is retried next round
                    # The clients reconnect by themselves when the broker is back; a broker lost while connected
                    # is said once, as one away at start is (a single missed round is not an outage).
                    failed += 1
                    log.debug("lag not measured", extra={"error": repr(exc)[:200]})
                    if failed >= _ROUNDS_LOST:
                        self._say_away(exc)
                else:
                    failed = 0
                    self._say_back()
                await asyncio.sleep(self._interval_s)
        finally:
            with contextlib.suppress(Exception):
                await ends_reader.stop()
            with contextlib.suppress(Exception):
                await admin.close()

    async def measure(self, admin: AIOKafkaAdminClient, ends_reader: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        for group, topics in self._groups.items():
            partitions = []
            for topic in topics:
                for p in ends_reader.partitions_for_topic(topic) or await _partitions(ends_reader, topic):
                    partitions.append(TopicPartition(topic, p))
            if not partitions:
                continue
            offsets = await admin.list_consumer_group_offsets(group)
            committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
            ends = await ends_reader.end_offsets(partitions)
            lag = lag_by_topic(committed, ends)
            for topic in topics:
                self._metrics.consumer_lag.labels(group, topic).set(lag.get(topic, 0))
            if committed != self._last_committed.get(group) or sum(lag.values()) == 0:
                self._last_committed[group] = committed
                self._last_move[group] = now
                self._health.clear(f"stalled:{group}")
            elif now - self._last_move.get(group, now) > self._stall_after_s:
                self._health.fault(f"stalled:{group}", RuntimeError(f"lag {sum(lag.values())} and no commit"))


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - metadata for topics we do not subscribe to
    return consumer.partitions_for_topic(topic) or set()
