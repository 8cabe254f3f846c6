"""Intake under faults, against real Apache Kafka and PostgreSQL: SIGKILL mid-stream, the broker away for 30 s."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from datetime import UTC, datetime

import httpx
import pytest

from shared.devtools.infra.kafka_local import LocalKafka
from shared.devtools.traffic import TrafficGenerator
from shared.domain import Channel
from tests.integration.test_intake_flow import by_topic, expected_ids, send_kafka
from tests.support.infra import Env, ServiceProcess, collect, metric_sum

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


async def test_sigkill_mid_stream_loses_nothing_and_makes_nothing_twice(env: Env) -> None:
    gen = TrafficGenerator(seed=23, duplicates=0.1, bad=0.1, run_tag="KIL")
    messages = [gen.next(NOW) for _ in range(4000)]
    want = expected_ids(messages)
    bad = sum(m.bad_reason is not None for m in messages)
    intake = ServiceProcess("intake", env.environ(CONSUMER_MAX_RECORDS="100"), env.tmp / "intake.log").start()

    async def stream() -> None:  # the traffic keeps coming, before, during and after the kill
        for start in range(0, len(messages), 100):
            await send_kafka(env, messages[start : start + 100])
            await asyncio.sleep(0.1)

    sender = asyncio.create_task(stream())
    try:
        async with httpx.AsyncClient(base_url=intake.url, timeout=5) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = metric_sum((await http.get("/metrics")).text, "complaints_received_total")
                if done >= 300:
                    break
                await asyncio.sleep(0.05)
        assert 300 <= done < len(want), f"the kill must land mid-stream (processed {done} of {len(want)})"
        intake.kill()
        intake.start()
        await sender

        def complete(records: list) -> bool:
            got = {json.loads(r.value)["complaint_id"] for r in by_topic(records, env.topics.received)}
            return got >= want and len({r.value for r in by_topic(records, env.topics.dlq)}) >= bad

        records = await collect(
            env.bootstrap, [env.topics.received, env.topics.dlq], complete, timeout_s=120, settle_s=3
        )
    finally:
        sender.cancel()
        intake.stop()

    copies: dict[str, set[bytes]] = defaultdict(set)
    for r in by_topic(records, env.topics.received):
        copies[json.loads(r.value)["complaint_id"]].add(r.value)
    assert set(copies) == want, "a complaint was lost or one appeared that should not"
    # None twice: a complaint is one event. The outbox is at-least-once, so a crash between publish and delete may
    # repeat a message, but only as a byte-identical copy (same event_id) that consumers drop.
    assert all(len(v) == 1 for v in copies.values()), "a complaint got two different events"
    letters: dict[tuple[str, int], set[bytes]] = defaultdict(set)
    for r in by_topic(records, env.topics.dlq):
        letter = json.loads(r.value)
        letters[(letter["source_topic"], letter["source_offset"], letter["source_partition"])].add(r.value)
    assert len(letters) == bad
    assert all(len(v) == 1 for v in letters.values())


async def test_broker_away_for_30s_while_http_intake_takes_complaints(env: Env) -> None:
    kafka = LocalKafka(data_dir=env.tmp / "own-kafka", keep_data=True).start()
    try:
        own = Env(kafka.bootstrap, env.database_url, env.prefix, env.keys_file, env.keys, env.tmp)
        intake = ServiceProcess("intake", own.environ(KAFKA_SEND_TIMEOUT_S="5"), env.tmp / "intake.log").start()
        gen = TrafficGenerator(seed=5, duplicates=0.0, bad=0.0, run_tag="OUT")
        acknowledged: set[str] = set()
        try:
            async with httpx.AsyncClient(base_url=intake.url, timeout=20) as http:
                for _ in range(20):
                    await _post(http, own, gen, acknowledged)
                kafka.stop()  # the broker goes away
                outage_ends = time.monotonic() + 30
                saw_not_ready = False
                during_outage = 0
                while time.monotonic() < outage_ends:
                    await _post(http, own, gen, acknowledged)
                    during_outage += 1
                    assert (await http.get("/healthz")).status_code == 200  # the process is alive, nothing hangs
                    saw_not_ready |= (await http.get("/readyz")).status_code == 503
                    await asyncio.sleep(0.5)
                assert saw_not_ready, "readiness must report the broker away"
                kafka.start()  # same port, same data
                for _ in range(10):
                    await _post(http, own, gen, acknowledged)

            def complete(records: list) -> bool:
                return {json.loads(r.value)["complaint_id"] for r in records} >= acknowledged

            records = await collect(kafka.bootstrap, [own.topics.received], complete, timeout_s=120, settle_s=2)
        finally:
            intake.stop()
    finally:
        kafka.stop()
    got = {json.loads(r.value)["complaint_id"] for r in records}
    assert acknowledged <= got, f"acknowledged but lost: {sorted(acknowledged - got)[:5]}"
    assert during_outage >= 5
    # The database stayed up, so every complaint was taken (kept in the outbox) even while the broker was away.
    assert len(acknowledged) == 30 + during_outage


async def _post(http: httpx.AsyncClient, env: Env, gen: TrafficGenerator, acknowledged: set[str]) -> None:
    msg = gen.next(NOW)
    resp = await http.post(
        f"/v1/intake/{msg.channel.value}",
        content=msg.body,
        headers={"Authorization": f"Bearer {env.keys['channel:' + msg.channel.value]}"},
    )
    # 202 means kept (in the outbox); 503 would mean "not taken, retry" — both honest, nothing acknowledged is lost.
    assert resp.status_code in (202, 503), resp.text
    if resp.status_code == 202:
        acknowledged.add(resp.json()["complaint_id"])
    assert isinstance(msg.channel, Channel)
