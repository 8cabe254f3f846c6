"""Adversarial review of session 9's delivery changes, on the real parts: the outbox relay sending through
`shared.kafka.Producers` while its own Apache Kafka broker is killed and restarted under a big outbox, a relay stopped
while the broker is away, and many producer replacements in a row (no task, connection or descriptor left behind).

Order rule checked on the topic: a key's facts first appear in the order they were written; a repeat is allowed only as
a byte-identical copy of a fact already there (consumers drop it by `event_id`), and nothing is missing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import OutOfOrderSequenceNumber

from shared.db import create_pool
from shared.devtools.infra.kafka_local import LocalKafka
from shared.kafka import Health, Producers, make_producer
from shared.observability import Metrics
from shared.outbox import OutboxMessage, OutboxRelay, enqueue
from shared.settings import Settings
from tests.support.infra import create_database, unique

pytestmark = pytest.mark.integration

SCHEMA = "routing"  # any service schema create_pool accepts; the test makes only the outbox table in it
KEYS = 40
PER_KEY = 150
PAD = b"." * 300


async def outbox_pool(postgres_url: str) -> asyncpg.Pool[Any]:
    url = await create_database(postgres_url, unique("a9"))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"CREATE SCHEMA {SCHEMA}; CREATE TABLE {SCHEMA}.outbox (id bigserial PRIMARY KEY, topic text NOT NULL,"
            " key bytea, value bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
    finally:
        await conn.close()
    return await create_pool(url, SCHEMA, max_size=4, command_timeout_s=10, connect_timeout_s=5)


def fact(key: int, seq: int) -> tuple[bytes, bytes]:
    return f"k{key:03d}".encode(), f"k{key:03d}:{seq:05d}:".encode() + PAD


async def fill(pool: asyncpg.Pool[Any], topic: str) -> int:
    """KEYS x PER_KEY facts written interleaved (key by key within each round), in one transaction per round."""
    for seq in range(PER_KEY):
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, [OutboxMessage(topic, *fact(k, seq)) for k in range(KEYS)])
    return KEYS * PER_KEY


async def read_topic(bootstrap: str, topic: str, at_least: int) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        got: list[tuple[bytes, bytes]] = []
        while len(got) < at_least:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"only {len(got)} of {at_least} records on {topic}"
            got += [(r.key, r.value) for records in batches.values() for r in records]
        more = await consumer.getmany(timeout_ms=1000)  # repeats past the count, if any
        got += [(r.key, r.value) for records in more.values() for r in records]
        return got
    finally:
        await consumer.stop()


def order_faults(records: list[tuple[bytes, bytes]]) -> list[str]:
    """Per key: every fact present, first appearances in the order written, repeats only byte-identical."""
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value in records:
        by_key[key].append(value)
    faults = []
    for k in range(KEYS):
        key = fact(k, 0)[0]
        values = by_key.get(key, [])
        written = [fact(k, s)[1] for s in range(PER_KEY)]
        firsts = list(dict.fromkeys(values))
        if firsts != written:
            missing = len(set(written) - set(firsts))
            faults.append(f"{key!r}: {missing} missing, first appearances out of order: {firsts != sorted(firsts)}")
        if set(values) - set(written):
            faults.append(f"{key!r}: a record that was never written")
    return faults


async def count(pool: asyncpg.Pool[Any]) -> int:
    n: int = await pool.fetchval("SELECT count(*) FROM outbox")
    return n


async def wait_until(pool: asyncpg.Pool[Any], below: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:  # polling the table: the rows' deletion is the event, PostgreSQL has no wake-up for it here
            if await count(pool) <= below:
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def own_kafka(tmp_path: Path) -> AsyncIterator[LocalKafka]:
    kafka = LocalKafka(data_dir=tmp_path / "kafka", keep_data=True, partitions=3, heap="256m")
    await asyncio.to_thread(kafka.start)
    try:
        yield kafka
    finally:
        await asyncio.to_thread(kafka.stop)


def settings_for(bootstrap: str) -> Settings:
    return Settings(kafka_bootstrap_servers=bootstrap, kafka_send_timeout_s=4.0)


async def test_a_big_outbox_leaves_in_order_across_a_broker_killed_and_restarted(
    own_kafka: LocalKafka, postgres_url: str
) -> None:
    topic = f"attack9-{uuid.uuid4().hex[:8]}"
    pool = await outbox_pool(postgres_url)
    settings = settings_for(own_kafka.bootstrap)
    producers = Producers(lambda: make_producer(settings, "attack9"), name="attack9", close_timeout_s=2.0)
    relay = OutboxRelay(pool, producers, Metrics("routing"), Health(), batch_size=500, send_timeout_s=4.0)
    try:
        total = await fill(pool, topic)
        await producers.start()
        relay.start()
        for _ in range(2):  # twice: the second time through a producer that already replaced one
            await wait_until(pool, await count(pool) - 700, timeout_s=120)
            await asyncio.to_thread(own_kafka.kill)  # mid-drain: batches in flight, the broker's state unflushed
            await asyncio.sleep(1.0)  # the relay meets the broker away (not needed for correctness: more faults)
            await asyncio.to_thread(own_kafka.start)
        await wait_until(pool, 0, timeout_s=180)
        async with asyncio.timeout(30):  # bounded by its drain timeout plus the producer's close bounds
            await relay.stop(drain_timeout_s=5)
            await producers.stop()
        records = await read_topic(own_kafka.bootstrap, topic, total)
        assert not order_faults(records), order_faults(records)[:10]
        print(f"\n{total} facts, {len(records)} records on the topic, {producers.generation} producers")
    finally:
        await relay.stop(drain_timeout_s=0.1)
        await producers.stop()
        await pool.close()


@pytest.mark.parametrize("away", ["killed", "paused"])
async def test_a_relay_stopped_while_the_broker_is_away_ends_within_its_bounds(
    own_kafka: LocalKafka, postgres_url: str, away: str
) -> None:
    topic = f"attack9-{uuid.uuid4().hex[:8]}"
    pool = await outbox_pool(postgres_url)
    settings = settings_for(own_kafka.bootstrap)
    producers = Producers(lambda: make_producer(settings, "attack9"), name="attack9", close_timeout_s=2.0)
    relay = OutboxRelay(pool, producers, Metrics("routing"), Health(), batch_size=500, send_timeout_s=4.0)
    try:
        await producers.start()
        relay.start()
        await fill(pool, topic)
        assert own_kafka.process is not None
        pid = own_kafka.process.pid
        if away == "killed":
            await asyncio.to_thread(own_kafka.kill)
        else:  # paused: connections stay open and nothing answers (the harder case for every wait)
            os.killpg(pid, signal.SIGSTOP)
        left = await count(pool)
        assert left > 0
        # drain 3 s, then the producer's stop (2 s) and abort (2 x 2 s): a hang fails here, not a slow machine
        async with asyncio.timeout(3 + 2 + 4 + 10):
            await relay.stop(drain_timeout_s=3)
            await producers.stop()
        assert await count(pool) > 0  # what was not acknowledged stays in the outbox
    finally:
        if away == "paused":
            os.killpg(pid, signal.SIGCONT)
        await producers.stop()
        await pool.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_many_replacements_in_a_row_leave_no_task_connection_or_descriptor(kafka_bootstrap: str) -> None:
    topic = f"attack9-{uuid.uuid4().hex[:8]}"
    settings = settings_for(kafka_bootstrap)
    producers = Producers(lambda: make_producer(settings, "attack9"), name="attack9", close_timeout_s=2.0)
    await producers.start()
    await producers.send_all([(topic, b"k", b"warm-up")], timeout_s=30)  # topic auto-created, metadata known
    tasks_before, fds_before = len(asyncio.all_tasks()), open_fds()
    try:
        for i in range(25):
            producer = await producers.get()
            futures = [await producer.send(topic, f"{i}:{j}".encode(), key=b"k") for j in range(50)]
            assert await producers.failed(producer, OutOfOrderSequenceNumber())  # replaced with batches in flight
            await asyncio.gather(*futures, return_exceptions=True)  # each future ends (sent or failed), none hangs
            await producers.send_all([(topic, b"k", f"{i}:after".encode())], timeout_s=30)
        assert producers.generation == 26
        await asyncio.sleep(0.5)  # tasks the old producers' closes scheduled finish (the count, not correctness)
        tasks_after, fds_after = len(asyncio.all_tasks()), open_fds()
        print(f"\ntasks {tasks_before} -> {tasks_after}, fds {fds_before} -> {fds_after}")
        assert tasks_after <= tasks_before + 2, [t.get_coro() for t in asyncio.all_tasks()]
        assert fds_after <= fds_before + 4
    finally:
        await producers.stop()
