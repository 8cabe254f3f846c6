"""The batch consumers' poll (issue #9, latency): FastStream's own loop sleeps `batch_timeout_ms` after an empty poll,
so a record arriving in that sleep waited for it on every hop; `batch_subscriber` polls without sleeping."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import faststream.kafka.subscriber.usecase as faststream_usecase
import pytest
from faststream.kafka import KafkaBroker

from shared.service import IDLE_POLL_MS, batch_subscriber
from shared.settings import Settings


@dataclass
class _Consumer:
    """getmany answers from a script: each call takes the next answer."""

    answers: list[dict[str, list[str]]]
    calls: list[tuple[int, int | None]] = field(default_factory=list)

    async def getmany(self, *, timeout_ms: int, max_records: int | None = None) -> dict[str, list[str]]:
        self.calls.append((timeout_ms, max_records))
        return self.answers.pop(0)


@dataclass
class _Ctx:
    settings: Settings
    broker: KafkaBroker


def _subscriber() -> tuple[Any, Settings]:
    settings = Settings(consumer_max_records=123)
    ctx: Any = _Ctx(settings, KafkaBroker("127.0.0.1:9"))
    return batch_subscriber(ctx, "t", group_id="g", title="t", description="d"), settings


def test_an_empty_poll_returns_at_once_and_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(seconds: float) -> None:
        raise AssertionError(f"the consume loop slept {seconds} s after an empty poll")

    monkeypatch.setattr(faststream_usecase.anyio, "sleep", no_sleep)
    subscriber, settings = _subscriber()
    consumer = _Consumer([{}])
    assert asyncio.run(subscriber.get_msg(consumer)) == ()
    assert consumer.calls == [(IDLE_POLL_MS, settings.consumer_max_records)]


def test_a_poll_with_records_gives_every_partition_s_records_in_order() -> None:
    subscriber, _ = _subscriber()
    consumer = _Consumer([{"p0": ["a", "b"], "p1": ["c"]}])
    assert asyncio.run(subscriber.get_msg(consumer)) == ("a", "b", "c")
