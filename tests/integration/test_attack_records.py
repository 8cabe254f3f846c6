"""Adversarial delivery (issue 7, defect 2 attacked): records a buggy or hostile producer could write, against real
Apache Kafka and PostgreSQL. Every one becomes the canonical effect or ONE dead letter with a reason that names the
data (never `processing_failed`), and the good records behind it on the same partition go through: each consumer
group's committed offsets reach the end of every partition it reads."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from shared.domain import Category, Channel
from shared.events import ComplaintAssigned, DeadLetter, LifecycleChanged, SlaEvent
from shared.events.sla import CaseState, SlaEventType, Stage
from tests.integration.test_delivery_faults import hotline_messages, produce_to_partition
from tests.integration.test_intake_flow import by_topic, expected_ids
from tests.integration.test_routing_flow import complaint, tag
from tests.support.infra import Env, ServiceProcess, collect

pytestmark = pytest.mark.integration


async def committed_to_end(bootstrap: str, group: str, topics: list[str]) -> dict[TopicPartition, tuple[int, int]]:
    """The partitions of `topics` whose committed offset (for `group`) is behind their end: {tp: (committed, end)}."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or set())]
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group)
        behind = {}
        for tp in tps:
            got = committed.get(tp)
            at = got.offset if got is not None else 0
            if at < ends[tp]:
                behind[tp] = (at, ends[tp])
        return behind
    finally:
        await consumer.stop()
        await admin.close()


async def wait_caught_up(env: Env, group: str, topics: list[str], proc: ServiceProcess, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while behind := await committed_to_end(env.bootstrap, f"{env.prefix}{group}", topics):
        assert time.monotonic() < deadline, f"{group} stalled at {behind}\n{proc.log_tail(6000)}"
        await asyncio.sleep(0.5)


def with_nul(event: Any, *path: str) -> bytes:
    """The event's JSON with the string at `path` holding a NUL (the JSON escape `\\u0000`, as a buggy producer
    would write it)."""
    body = json.loads(event.to_json_bytes())
    body["event_id"] = str(uuid.uuid4())  # each bad record a new event: none is skipped as a duplicate of another
    node = body
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = f"{node[path[-1]]}\u0000x"
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert b"\\u0000" in raw
    return raw


def letters(records: list[Any], topic: str) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(r.value) for r in by_topic(records, topic)]


# --- a record whose dead letter is bigger than the broker takes ---------------------------------------------------


async def test_a_record_near_the_broker_limit_becomes_one_dead_letter_and_nothing_behind_it_waits(env: Env) -> None:
    """A 900 KB raw record (over intake's 64 KiB limit) with a 100 KB key of NUL and 0xFF bytes: its dead letter
    carries the bytes whole in base64, so it is bigger than the record itself. It must still leave, and the good
    records behind it (same partition) come out."""
    good = hotline_messages(81, 10, "BIG")
    want = expected_ids(good)
    topic = env.topics.intake(Channel.HOTLINE)
    big_key = b"\x00\xff" * 50_000
    big_value = b"{" + b"\xff" * 900_000
    await produce_to_partition(
        env.bootstrap, topic, 0, [(big_key, big_value), *[(m.key.encode() if m.key else None, m.body) for m in good]]
    )
    intake = ServiceProcess("intake", env.environ(), env.tmp / "intake.log").start()
    try:

        def done(records: list[Any]) -> bool:
            got = {json.loads(r.value)["complaint_id"] for r in by_topic(records, env.topics.received)}
            return got >= want and len(by_topic(records, env.topics.dlq)) >= 1

        records = await collect(env.bootstrap, [env.topics.received, env.topics.dlq], done, timeout_s=60, settle_s=2)
        got = {json.loads(r.value)["complaint_id"] for r in by_topic(records, env.topics.received)}
        assert got == want, intake.log_tail()
        (letter,) = letters(records, env.topics.dlq)
        assert letter.error_type != "processing_failed", letter.reason
        assert letter.key_bytes() == big_key
        assert letter.payload() == big_value, "the dead letter keeps the bytes whole"
    finally:
        intake.stop()


# --- NUL escapes in every string of every event a consumer reads --------------------------------------------------


async def test_nul_in_any_string_of_any_event_is_one_dead_letter_per_reader_and_nothing_stalls(env: Env) -> None:
    """Events as a buggy producer might write them, each with a `\\u0000` in one string field, on partition 0 of the
    topics routing, sla and reporting read, each followed by good events. Each reader makes one dead letter per bad
    record, with a reason about its data (not `processing_failed`), and commits to the end of every partition."""
    t = env.topics
    now = datetime.now(UTC)
    good_cases = [complaint(tag(), Category.CONSTRUCTION) for _ in range(3)]
    base = complaint(tag(), Category.CONSTRUCTION)
    cid = good_cases[0].complaint_id
    assigned = ComplaintAssigned(
        occurred_at=now,
        complaint_id=cid,
        assignment_id=f"as-{uuid.uuid4().hex[:8]}",
        round=1,
        lead_department="zrzyj",
        level="city",
        rule_id="r1",
        reason="按规则派至",
        assigned_at=now,
    )
    lifecycle = LifecycleChanged(
        occurred_at=now,
        complaint_id=cid,
        from_state=CaseState.ASSIGNED,
        to_state=CaseState.ACCEPTED,
        cause="accept",
        department="zrzyj",
        lead_department="zrzyj",
        at=now,
        claimed_at=now,
        action_id="a-1",
    )
    sla = SlaEvent(
        occurred_at=now,
        complaint_id=cid,
        type=SlaEventType.DEADLINE_SET,
        stage=Stage.ACCEPT,
        due_at=now + timedelta(days=1),
        round=1,
        department="zrzyj",
    )
    bad = {
        t.received: [
            with_nul(base, "content"),
            with_nul(base, "title"),
            with_nul(base, "complaint_id"),
            with_nul(base, "source_id"),
            with_nul(base, "contact", "name"),
        ],
        t.assigned: [
            with_nul(assigned, "reason"),
            with_nul(assigned, "lead_department"),
            with_nul(assigned, "rule_id"),
        ],
        t.lifecycle: [
            with_nul(lifecycle, "cause"),
            with_nul(lifecycle, "action_id"),
            with_nul(lifecycle, "department"),
        ],
        t.sla: [with_nul(sla, "department"), with_nul(sla, "complaint_id")],
    }
    goods = {
        t.received: [c.to_json_bytes() for c in good_cases],
        t.assigned: [assigned.to_json_bytes()],
        t.lifecycle: [lifecycle.to_json_bytes()],
        t.sla: [sla.to_json_bytes()],
    }
    for topic, values in bad.items():
        await produce_to_partition(
            env.bootstrap, topic, 0, [(b"k\x00\xff", v) for v in values] + [(cid.encode(), v) for v in goods[topic]]
        )
    readers = {
        "routing": [t.received, t.sla],
        "sla": [t.received, t.assigned, t.lifecycle],
        "reporting": [t.received, t.assigned, t.lifecycle, t.sla],
    }
    procs = {name: ServiceProcess(name, env.environ(), env.tmp / f"{name}.log").start() for name in readers}
    try:
        for name, topics in readers.items():
            await wait_caught_up(env, name, topics, procs[name])
        want = sum(len(bad[topic]) for topics in readers.values() for topic in topics)
        records = await collect(
            env.bootstrap, [t.dlq], lambda rs: len(by_topic(rs, t.dlq)) >= want, timeout_s=60, settle_s=3
        )
    finally:
        for p in procs.values():
            p.stop()
    found = letters(records, t.dlq)
    by_reader = {(d.service, d.source_topic, d.source_offset) for d in found}
    assert len(by_reader) == len(found) == want, sorted(by_reader)
    failed = [(d.service, d.source_topic, d.reason) for d in found if d.error_type == "processing_failed"]
    assert failed == [], failed
    assert all("NUL" in d.reason or "\\u0000" in d.reason or "null character" in d.reason for d in found), [
        d.reason for d in found
    ]
