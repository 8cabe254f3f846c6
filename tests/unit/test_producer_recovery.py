"""A producer whose idempotent state the broker refuses is replaced, and the outbox relay goes on through the new one.

aiokafka 0.14 never resets a partition's sequence numbers: once the broker answers OUT_OF_ORDER_SEQUENCE_NUMBER (it
restarted and lost or truncated the producer's state) every later batch of that producer is refused the same way.
`FakeProducer` does the same; `World` is a broker log and an in-memory outbox table (no I/O here: the real broker
restarted under the relay is tests/integration/test_producer_recovery.py and tests/integration/test_attack_session9.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError, OutOfOrderSequenceNumber, ProducerClosed

from shared.kafka import Health, Producers, spoils_producer
from shared.observability import Metrics
from shared.outbox import OutboxRelay


class FakeClient:
    def __init__(self, world: World, name: str) -> None:
        self.world, self.name = world, name

    async def close(self) -> None:
        self.world.events.append(f"close {self.name}")


class FakeProducer:
    """Delivers to the world's log until `spoil_after` messages were taken, then refuses every batch for good."""

    def __init__(self, world: World, name: str, spoil_after: int | None) -> None:
        self.world, self.name, self.spoil_after = world, name, spoil_after
        self.client = FakeClient(world, name)
        self._closed = False
        self.taken = 0

    async def start(self) -> None:
        if self.world.broker_away:
            raise KafkaTimeoutError()
        self.world.events.append(f"start {self.name}")

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
        if self._closed:
            raise ProducerClosed()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.taken += 1
        if self.spoil_after is not None and self.taken > self.spoil_after:
            fut.set_exception(OutOfOrderSequenceNumber())
        else:
            self.world.log.append((topic, key, value))
            fut.set_result(None)
        return fut

    async def stop(self) -> None:
        self._closed = True
        self.world.events.append(f"stop {self.name}")


class FakeConn:
    def __init__(self, world: World) -> None:
        self.world = world

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return True if "advisory" in sql else len(self.world.outbox)

    async def fetch(self, sql: str, limit: int) -> list[dict[str, Any]]:
        return [
            {"id": i, "topic": t, "key": k, "value": v} for i, (t, k, v) in sorted(self.world.outbox.items())[:limit]
        ]

    async def execute(self, sql: str, ids: list[int]) -> None:
        assert sql.startswith("DELETE FROM outbox")
        for i in ids:
            del self.world.outbox[i]
        if not self.world.outbox:
            self.world.drained.set()


class FakePool:
    def __init__(self, world: World) -> None:
        self.world = world

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConn]:
        yield FakeConn(self.world)

    async def fetchval(self, sql: str) -> int:
        return len(self.world.outbox)


class World:
    def __init__(self, rows: int, spoil_first_after: int | None) -> None:
        self.outbox = {i: ("t.assigned", f"case-{i % 3}".encode(), f"fact-{i}".encode()) for i in range(1, rows + 1)}
        self.log: list[tuple[str, bytes | None, bytes]] = []
        self.events: list[str] = []
        self.made: list[FakeProducer] = []
        self.drained = asyncio.Event()
        self.broker_away = False
        self.spoil_first_after = spoil_first_after

    def make(self) -> Any:
        spoil = self.spoil_first_after if not self.made else None
        producer = FakeProducer(self, f"p{len(self.made) + 1}", spoil)
        self.made.append(producer)
        return producer


def first_seen(log: list[tuple[str, bytes | None, bytes]]) -> list[bytes]:
    seen: dict[bytes, None] = {}
    for _, _, value in log:
        seen.setdefault(value, None)
    return list(seen)


async def test_the_relay_replaces_a_producer_the_broker_refuses_and_publishes_every_row_in_order() -> None:
    world = World(rows=12, spoil_first_after=4)  # the broker restarts after the first producer's 4th message
    producers = Producers(world.make, name="relay-test", close_timeout_s=1.0)
    await producers.start()
    relay = OutboxRelay(FakePool(world), producers, Metrics("routing"), Health(), batch_size=5, poll_interval_s=0.05)  # type: ignore[arg-type]
    relay.start()
    try:
        await asyncio.wait_for(world.drained.wait(), 10)
    finally:
        await relay.stop(drain_timeout_s=1)
        await producers.stop()
    assert world.outbox == {}
    assert first_seen(world.log) == [f"fact-{i}".encode() for i in range(1, 13)]  # each fact, in the order written
    assert producers.generation == 2
    # the refused producer was closed before its successor started: none of its batches can follow the new one's
    assert world.events.index("close p1") < world.events.index("start p2")


async def test_a_send_timeout_keeps_the_producer_and_a_refused_sequence_replaces_it_once() -> None:
    world = World(rows=0, spoil_first_after=None)
    producers = Producers(world.make, name="t", close_timeout_s=1.0)
    first = await producers.get()
    assert not await producers.failed(first, TimeoutError())  # the broker slow or away: batches retry in order
    assert await producers.get() is first
    # two senders saw the same refusal: one replacement
    assert all(await asyncio.gather(*(producers.failed(first, OutOfOrderSequenceNumber()) for _ in range(2))))
    second = await producers.get()
    assert second is not first
    assert producers.generation == 2
    assert len(world.made) == 2
    await producers.stop()
    with pytest.raises(ProducerClosed):
        await producers.get()


async def test_a_closed_producer_is_replaced_and_a_failed_start_is_not_kept() -> None:
    world = World(rows=0, spoil_first_after=None)
    producers = Producers(world.make, name="t", close_timeout_s=1.0)
    first = await producers.get()
    await first.stop()  # closed under us: nothing it took would be sent
    world.broker_away = True
    with pytest.raises(KafkaTimeoutError):
        await producers.get()
    world.broker_away = False
    second = await producers.get()
    assert second is not first
    assert second is world.made[-1]
    await producers.stop()


@pytest.mark.parametrize(
    ("exc", "spoils"),
    [
        (OutOfOrderSequenceNumber(), True),
        (ProducerClosed(), True),
        (KafkaTimeoutError(), False),
        (TimeoutError(), False),
        (ExceptionGroup("sends", [TimeoutError(), OutOfOrderSequenceNumber()]), True),
    ],
)
def test_which_errors_spoil_a_producer(exc: BaseException, spoils: bool) -> None:
    assert spoils_producer(exc) is spoils


def test_an_error_raised_from_a_refusal_spoils_too() -> None:
    outer = RuntimeError("publish failed")
    outer.__cause__ = OutOfOrderSequenceNumber()
    assert spoils_producer(outer)


async def test_a_batch_dropped_without_a_leader_replaces_the_producer_before_its_gap_is_refused() -> None:
    """aiokafka numbers a batch, then drops it with NotLeaderForPartition when its partition had no leader for
    request_timeout_ms (a broker restarting): the partition's next batch would be out of order, so replace now."""
    world = World(rows=0, spoil_first_after=None)
    producers = Producers(world.make, name="t", close_timeout_s=1.0)
    first = await producers.get()

    async def dropped(topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_exception(NotLeaderForPartitionError())
        return fut

    first.send = dropped  # type: ignore[method-assign]
    with pytest.raises(NotLeaderForPartitionError):
        await producers.send_all([("t.assigned", b"k", b"v")], timeout_s=1)
    await producers.send_all([("t.assigned", b"k", b"v2")], timeout_s=1)
    assert producers.generation == 2
    assert world.log == [("t.assigned", b"k", b"v2")]
    await producers.stop()
