"""The batch consumers' poll (issue #9, latency): FastStream's own loop sleeps `batch_timeout_ms` after an empty poll,
so a record arriving in that sleep waited for it on every hop; `batch_subscriber` polls without sleeping."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import faststream.kafka.subscriber.usecase as faststream_usecase
import pytest
from faststream.kafka import KafkaBroker

from shared.service import CATCH_UP_MS, IDLE_POLL_MS, batch_subscriber, poll_without_sleeping
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
    consumer = _Consumer([{"p0": ["a", "b"], "p1": ["c"]}, {}])
    assert asyncio.run(subscriber.get_msg(consumer)) == ("a", "b", "c")


class _Subscriber:
    get_msg: Any


def _ticks(*values: float) -> Any:
    it = iter(values)
    return lambda: next(it)


def test_a_busy_consumer_also_takes_what_came_while_it_worked_in_the_same_batch() -> None:
    """The buffer was there at once (busy): the fetch its drain started is waited for, up to CATCH_UP_MS, and its
    records join the batch, each partition's in order, bounded by max_records in all."""
    sub = _Subscriber()
    poll_without_sleeping(sub, max_records=10, monotonic=_ticks(5.0, 5.0))
    consumer = _Consumer([{"p0": ["a", "b"], "p1": ["c"]}, {"p0": ["d"], "p2": ["e"]}])
    assert asyncio.run(sub.get_msg(consumer)) == ("a", "b", "c", "d", "e")
    assert consumer.calls == [(IDLE_POLL_MS, 10), (CATCH_UP_MS, 7)]


def test_a_consumer_that_waited_for_its_records_or_has_a_full_batch_does_not_wait_again() -> None:
    waited = _Subscriber()
    poll_without_sleeping(waited, max_records=10, monotonic=_ticks(5.0, 5.2))
    consumer = _Consumer([{"p0": ["a"]}])
    assert asyncio.run(waited.get_msg(consumer)) == ("a",)
    assert consumer.calls == [(IDLE_POLL_MS, 10)]

    full = _Subscriber()
    poll_without_sleeping(full, max_records=2, monotonic=_ticks(5.0, 5.0))
    consumer = _Consumer([{"p0": ["a", "b"]}])
    assert asyncio.run(full.get_msg(consumer)) == ("a", "b")
    assert consumer.calls == [(IDLE_POLL_MS, 2)]
