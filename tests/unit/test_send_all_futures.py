"""A send_all cut short (its timeout while a send waits for room) leaves the futures of the messages it had already
handed over: when the replaced producer fails them (`_abort`), nobody may be left not retrieving their errors, or
asyncio logs "Future exception was never retrieved" at ERROR for each (seen at every relay stop with the broker away)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from aiokafka.errors import ProducerClosed

from shared.kafka import Producers


class StuckProducer:
    """Takes `room` messages, then waits for room for ever (the accumulator full, the broker away)."""

    def __init__(self, room: int) -> None:
        self.room, self._closed = room, False
        self.futures: list[asyncio.Future[None]] = []

    async def start(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
        if len(self.futures) >= self.room:
            await asyncio.Event().wait()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut


async def test_futures_of_a_send_all_cut_short_are_retrieved_when_they_fail() -> None:
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: unretrieved.append(context))
    producer = StuckProducer(room=3)
    producers = Producers(lambda: producer, name="t")  # type: ignore[arg-type,return-value]
    with pytest.raises(TimeoutError):
        await producers.send_all([("t", b"k", b"v")] * 5, timeout_s=0.05)
    for fut in producer.futures:  # what _abort's fail_all does to the old producer's batches
        fut.set_exception(ProducerClosed())
    producer.futures.clear()
    await asyncio.sleep(0)
    gc.collect()
    loop.set_exception_handler(None)
    assert not unretrieved, [c.get("message") for c in unretrieved]
