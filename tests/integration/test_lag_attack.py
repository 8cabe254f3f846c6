"""The lag monitor against a real broker that goes away and comes back (a LocalKafka of its own, stopped and
started again on the same port and data): `consumer_lag_messages` must follow the log again after the outage, and
the outage is said (once) and its end too, as the monitor promises. Every wait is bounded."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.devtools.infra.kafka_local import LocalKafka
from shared.kafka import Health, ensure_topics, make_producer
from shared.lag import LagMonitor
from shared.observability import Metrics
from shared.settings import Settings

GROUP, TOPIC = "lagattack", "lagattack.events"


async def _produce(settings: Settings, n: int) -> None:
    producer = make_producer(settings, "lag-attack")
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(TOPIC, f"m{i}".encode(), key=b"k")
    finally:
        await producer.stop()


async def _until(pred: Callable[[], bool], timeout_s: float) -> bool:
    for _ in range(int(timeout_s / 0.1)):
        if pred():
            return True
        await asyncio.sleep(0.1)
    return pred()


async def test_lag_is_measured_again_after_the_broker_went_away_and_came_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="shared.lag")
    kafka = await asyncio.to_thread(LocalKafka(data_dir=tmp_path / "kafka", keep_data=True, partitions=1).start)
    try:
        settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, database_url="postgresql://x@127.0.0.1:1/x")
        await ensure_topics(settings, [TOPIC], partitions=1)
        await _produce(settings, 3)  # the group never committed: 3 behind
        metrics = Metrics("intake")
        monitor = LagMonitor(settings, metrics, Health(), {GROUP: [TOPIC]}, interval_s=0.3, retry_s=0.1)

        def lag() -> float | None:
            return metrics.registry.get_sample_value("consumer_lag_messages", {"group": GROUP, "topic": TOPIC})

        def said(text: str) -> int:
            return sum(text in r.getMessage() for r in caplog.records if r.name == "shared.lag")

        monitor.start()
        try:
            assert await _until(lambda: lag() == 3, 60), f"lag never measured: {lag()}"
            await asyncio.to_thread(kafka.stop)  # the broker goes away
            noticed = await _until(lambda: said("Kafka not reachable") + said("lag not measured") > 0, 90)
            assert noticed, "no measurement failed while the broker was away"
            await asyncio.to_thread(kafka.start)  # same port, same data
            await _produce(settings, 2)
            assert await _until(lambda: lag() == 5, 90), f"lag not measured again after the broker came back: {lag()}"
            assert said("Kafka not reachable") == 1, "the outage was not said (once)"
            assert said("measured again") == 1, "the outage's end was not said"
            assert monitor._task is not None
            assert not monitor._task.done()
        finally:
            await monitor.stop()
        assert monitor._task.done()
    finally:
        await asyncio.to_thread(kafka.stop)
