"""`complaints dlq replay`: send dead letters back to the topic they came from, once the cause is fixed.

It reads `complaints.dlq` in its own consumer group (`<prefix>dlq-replay`), so each dead letter is replayed once
however often the command runs; it stops at the end the topic had when it started; filters by source topic or
error type; republishes the original bytes with the original key (its exact bytes, from `source_key_b64`);
commits only after the broker has acknowledged them. A replayed message that is still bad becomes a new dead letter
(it has a new offset): the next run offers it again, this run does not, so a replay never loops.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from shared.events import DeadLetter
from shared.kafka import make_producer, security_kwargs
from shared.settings import Settings
from shared.topics import Topics


async def replay(
    settings: Settings, *, source_topic: str | None = None, error_type: str | None = None, dry_run: bool = False
) -> Counter[str]:
    topics = Topics(settings.topic_prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"{settings.topic_prefix}dlq-replay",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **security_kwargs(settings),
    )
    producer = make_producer(settings, client_id="complaints-dlq-replay")
    counts: Counter[str] = Counter()
    await consumer.start()
    await producer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - partitions of a topic we assign by hand
        partitions = [TopicPartition(topics.dlq, p) for p in consumer.partitions_for_topic(topics.dlq) or set()]
        consumer.assign(partitions)
        for tp in partitions:
            done_up_to = await consumer.committed(tp)
            if done_up_to is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, done_up_to)
        ends = await consumer.end_offsets(partitions)  # what there is now; later dead letters wait for the next run
        while await _behind(consumer, ends):
            batch = await consumer.getmany(timeout_ms=2000, max_records=500)
            records = [r for tp, rs in batch.items() for r in rs if r.offset < ends[tp]]
            pending = []
            for record in records:
                try:
                    letter = DeadLetter.model_validate_json(record.value)
                except ValidationError:
                    counts["unreadable"] += 1
                    continue
                if (source_topic and letter.source_topic != source_topic) or (
                    error_type and letter.error_type != error_type
                ):
                    counts["filtered_out"] += 1
                    continue
                if letter.source_topic.startswith("http:") or not letter.source_topic:
                    counts["not_replayable"] += 1
                    continue
                counts["replayed"] += 1
                if not dry_run:
                    # The exact key bytes (`source_key_b64`), not its text, which escapes a NUL or invalid UTF-8.
                    key = letter.key_bytes()
                    pending.append(await producer.send(letter.source_topic, letter.payload(), key=key))
            await asyncio.gather(*pending)
            if not dry_run and records:
                await consumer.commit({tp: min(await consumer.position(tp), ends[tp]) for tp in partitions})
    finally:
        await producer.stop()
        await consumer.stop()
    return counts


def run_replay_cli(args: argparse.Namespace) -> int:
    counts = asyncio.run(
        replay(Settings(), source_topic=args.source_topic, error_type=args.error_type, dry_run=args.dry_run)
    )
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"{verb} {counts['replayed']} dead letters; filtered out {counts['filtered_out']}, "
        f"not replayable {counts['not_replayable']}, unreadable {counts['unreadable']}",
        file=sys.stderr,
    )
    return 0


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False
