"""An idempotent producer with a gap in its sequence numbers, against real Apache Kafka: a bare aiokafka producer is
refused as out of order for good (what routing's relay met after a broker restart), `Producers` replaces it and goes on.

The gap is made the way the broker makes it: a batch numbered by the producer and refused (here, too big for the
topic), so the partition's next batch does not follow the last one the broker appended. After a broker restart, the
gap is a batch aiokafka dropped because its partition had no leader for request_timeout_ms.
"""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber

from shared.kafka import Producers

pytestmark = pytest.mark.integration
BIG = b"x" * 4096


def factory(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        max_request_size=1024 * 1024,
        request_timeout_ms=5000,
    )


@pytest.fixture
async def small_topic(kafka_bootstrap: str) -> str:
    topic = f"recovery-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=1, topic_configs={"max.message.bytes": "1024"})]
        )
    finally:
        await admin.close()
    return topic


async def read_all(bootstrap: str, topic: str, n: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        values: list[bytes] = []
        while len(values) < n:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"only {values} on {topic}"
            values += [r.value for records in batches.values() for r in records]
        return values
    finally:
        await consumer.stop()


async def test_a_bare_idempotent_producer_is_refused_for_good_after_a_gap(
    kafka_bootstrap: str, small_topic: str
) -> None:
    producer = factory(kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(small_topic, b"first", partition=0)
        with pytest.raises(KafkaError):
            await producer.send_and_wait(small_topic, BIG, partition=0)
        for _ in range(3):  # not once: every later batch
            with pytest.raises(OutOfOrderSequenceNumber):
                await producer.send_and_wait(small_topic, b"after", partition=0)
    finally:
        await producer.stop()


async def test_producers_replace_the_refused_producer_and_the_messages_go_on_in_order(
    kafka_bootstrap: str, small_topic: str
) -> None:
    producers = Producers(lambda: factory(kafka_bootstrap), name="recovery-test", close_timeout_s=5.0)
    await producers.start()
    try:
        await producers.send_all([(small_topic, b"k", b"first")], timeout_s=15)
        with pytest.raises(KafkaError):
            await producers.send_all([(small_topic, b"k", BIG)], timeout_s=15)
        await producers.send_all([(small_topic, b"k", b"second"), (small_topic, b"k", b"third")], timeout_s=15)
        assert producers.generation == 2
    finally:
        await producers.stop()
    assert await read_all(kafka_bootstrap, small_topic, 3) == [b"first", b"second", b"third"]
