"""The lag monitor outlives a broker that is away when the service starts: it was a task that ended on the first
failed connection, so `consumer_lag_messages` and the stalled-consumer readiness rule went silent for good."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.devtools.infra.ports import free_port
from shared.kafka import Health
from shared.lag import LagMonitor
from shared.observability import Metrics
from shared.settings import Settings


async def test_a_broker_away_at_start_is_retried_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    nobody = free_port()  # nothing listens there: every connection is refused
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{nobody}", database_url="postgresql://x@127.0.0.1:1/x")
    monitor = LagMonitor(settings, Metrics("intake"), Health(), {"intake": ["intake.hotline"]}, interval_s=0.2,
                         retry_s=0.05)  # fmt: skip
    caplog.set_level(logging.INFO, logger="shared.lag")
    monitor.start()
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if any(r.name == "shared.lag" for r in caplog.records):
                break
        await asyncio.sleep(1.0)  # several more attempts
        assert monitor._task is not None
        assert not monitor._task.done(), "the monitor ended on a refused connection"
        said = [r.getMessage() for r in caplog.records if r.name == "shared.lag"]
        assert said == ["lag not measured: Kafka not reachable, retrying"]
        assert monitor.connections == 0
    finally:
        await monitor.stop()
    assert monitor._task.done()
