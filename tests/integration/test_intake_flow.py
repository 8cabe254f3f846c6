"""Intake against real Apache Kafka and PostgreSQL, the service run as its own process."""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest

from services.intake.normalize import normalize
from shared.devtools.traffic import RawMessage, TrafficGenerator
from shared.domain import Channel
from shared.events import ComplaintReceived, DeadLetter
from tests.support.infra import Env, ServiceProcess, collect, produce, rewind_group, wait_for_line, wait_for_metric

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


def expected_ids(messages: list[RawMessage]) -> set[str]:
    ids = set()
    for m in messages:
        if m.bad_reason is None:
            event = normalize(m.channel, m.body, NOW)
            assert isinstance(event, ComplaintReceived), (m, event)
            ids.add(event.complaint_id)
    return ids


def by_topic(records: list, topic: str) -> list:
    return [r for r in records if r.topic == topic]


async def send_kafka(env: Env, messages: list[RawMessage]) -> None:
    for channel in Channel:
        items = [(m.key.encode() if m.key else None, m.body) for m in messages if m.channel is channel]
        if items:
            await produce(env.bootstrap, env.topics.intake(channel), items)


async def test_http_auth_and_errors(env: Env) -> None:
    intake = ServiceProcess("intake", env.environ(), env.tmp / "intake.log").start()
    try:
        body = json.dumps(
            {"gdbh": "TL-AUTH-1", "ldsj": "2026-11-26 09:00:00", "sqlx": "投诉", "sqnr": "办事难"}, ensure_ascii=False
        ).encode()
        async with httpx.AsyncClient(base_url=intake.url, timeout=15) as http:

            def auth(scope: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {env.keys[scope]}"}

            assert (await http.post("/v1/intake/hotline", content=body)).status_code == 401
            bad_key = await http.post("/v1/intake/hotline", content=body, headers={"Authorization": "Bearer nope"})
            assert bad_key.status_code == 401
            other = await http.post("/v1/intake/hotline", content=body, headers=auth("channel:supervisor"))
            assert other.status_code == 403
            assert (
                await http.post("/v1/intake/hotline", content=body, headers=auth("department:spj"))
            ).status_code == 403
            assert (await http.post("/v1/intake/fax", content=body, headers=auth("admin"))).status_code == 404
            first = await http.post("/v1/intake/hotline", content=body, headers=auth("channel:hotline"))
            assert first.status_code == 202
            assert first.json() == {"complaint_id": "hotline:TL-AUTH-1", "duplicate": False}
            again = await http.post("/v1/intake/hotline", content=body, headers=auth("channel:hotline"))
            assert again.json() == {"complaint_id": "hotline:TL-AUTH-1", "duplicate": True}
            not_json = await http.post("/v1/intake/hotline", content=b"{oops", headers=auth("channel:hotline"))
            assert not_json.status_code == 400
            assert not_json.json()["error"] == "invalid_json"
            missing = await http.post(
                "/v1/intake/hotline", content=b'{"gdbh": "TL-X"}', headers=auth("channel:hotline")
            )
            assert missing.status_code == 422
            assert "ldsj" in missing.json()["reason"]
            huge = await http.post("/v1/intake/hotline", content=b"x" * (70 * 1024), headers=auth("channel:hotline"))
            assert huge.status_code == 413
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            metrics = (await http.get("/metrics")).text
            assert 'complaints_received_total{channel="hotline"} 1.0' in metrics
            assert 'complaints_rejected_total{channel="hotline",reason="invalid_json"} 1.0' in metrics
            assert (await http.get("/asyncapi")).status_code == 200
            assert (await http.get("/docs")).status_code == 200
        records = await collect(env.bootstrap, [env.topics.received], lambda rs: len(rs) >= 1, settle_s=1.0)
        assert [json.loads(r.value)["complaint_id"] for r in records] == ["hotline:TL-AUTH-1"]
    finally:
        intake.stop()


async def test_mixed_traffic_over_kafka_and_http_gives_exactly_the_right_events(env: Env) -> None:
    gen = TrafficGenerator(seed=7, duplicates=0.1, bad=0.1, run_tag="MIX")
    messages = [gen.next(NOW) for _ in range(1000)]
    rng = random.Random(3)
    over_http = [m for m in messages if rng.random() < 0.2]
    over_kafka = [m for m in messages if m not in over_http]
    assert sum(m.duplicate_of is not None for m in messages) >= 50
    assert sum(m.bad_reason is not None for m in messages) >= 50
    want = expected_ids(messages)
    bad_kafka = [m for m in over_kafka if m.bad_reason is not None]

    intake = ServiceProcess("intake", env.environ(), env.tmp / "intake.log").start()
    try:
        await send_kafka(env, over_kafka)
        statuses: Counter[int] = Counter()
        async with httpx.AsyncClient(base_url=intake.url, timeout=15) as http:
            for m in over_http:
                resp = await http.post(
                    f"/v1/intake/{m.channel.value}",
                    content=m.body,
                    headers={"Authorization": f"Bearer {env.keys['channel:' + m.channel.value]}"},
                )
                statuses[resp.status_code] += 1
                if m.bad_reason is not None:
                    assert resp.status_code in (400, 422), (m.bad_reason, resp.text)
                    assert resp.json()["reason"]
                else:
                    assert resp.status_code == 202, resp.text

        def done(records: list) -> bool:
            got = {json.loads(r.value)["complaint_id"] for r in by_topic(records, env.topics.received)}
            return got >= want and len(by_topic(records, env.topics.dlq)) >= len(bad_kafka)

        records = await collect(env.bootstrap, [env.topics.received, env.topics.dlq], done, timeout_s=90, settle_s=3)
    finally:
        intake.stop()
    events = [ComplaintReceived.model_validate_json(r.value) for r in by_topic(records, env.topics.received)]
    assert {e.complaint_id for e in events} == want
    assert len(events) == len(want), "a complaint was published twice"
    for record, event in zip(by_topic(records, env.topics.received), events, strict=True):
        assert record.key.decode() == event.complaint_id
    letters = [DeadLetter.model_validate_json(r.value) for r in by_topic(records, env.topics.dlq)]
    assert len(letters) == len(bad_kafka)
    assert sorted(base64.b64decode(d.payload_b64) for d in letters) == sorted(m.body for m in bad_kafka)
    for letter in letters:
        assert letter.reason
        assert letter.source_offset is not None
        assert letter.source_topic.startswith(env.prefix + "intake.")


async def test_replaying_the_raw_topics_from_offset_zero_changes_nothing(env: Env) -> None:
    gen = TrafficGenerator(seed=11, duplicates=0.1, bad=0.1, run_tag="RPL")
    messages = [gen.next(NOW) for _ in range(300)]
    want = expected_ids(messages)
    bad = sum(m.bad_reason is not None for m in messages)
    intake = ServiceProcess("intake", env.environ(LAG_INTERVAL_S="1"), env.tmp / "intake.log").start()
    try:
        await send_kafka(env, messages)

        def done(records: list) -> bool:
            return (
                len(by_topic(records, env.topics.received)) >= len(want)
                and len(by_topic(records, env.topics.dlq)) >= bad
            )

        await collect(env.bootstrap, [env.topics.received, env.topics.dlq], done, timeout_s=60)
        # Lag is read from the broker: once everything is committed, every raw topic shows 0 for the group.
        hotline_topic = env.topics.intake(Channel.HOTLINE)
        lag_line = f'consumer_lag_messages{{group="{env.prefix}intake",topic="{hotline_topic}"}} 0.0'
        assert await wait_for_line(intake.url, lag_line), intake.log_tail()
        intake.stop()
        # The next start reads every raw topic from offset 0 again.
        await rewind_group(env.bootstrap, f"{env.prefix}intake", [env.topics.intake(c) for c in Channel])
        intake.start()
        good = len(messages) - bad
        # The replay really happened: every good raw message was read again and recognised as a duplicate.
        assert await wait_for_metric(intake.url, "complaints_duplicates_total", good), intake.log_tail()
        records = await collect(env.bootstrap, [env.topics.received, env.topics.dlq], done, timeout_s=60, settle_s=3)
    finally:
        intake.stop()
    assert len(by_topic(records, env.topics.received)) == len(want)
    assert len(by_topic(records, env.topics.dlq)) == bad


async def test_dead_letters_replay_to_their_source_topic_once(env: Env) -> None:
    from shared.devtools.dlq import replay

    gen = TrafficGenerator(seed=13, duplicates=0.0, bad=0.2, run_tag="DLQ")
    messages = [gen.next(NOW) for _ in range(100)]
    bad = [m for m in messages if m.bad_reason is not None]
    intake = ServiceProcess("intake", env.environ(), env.tmp / "intake.log").start()
    try:
        await send_kafka(env, messages)
        await collect(env.bootstrap, [env.topics.dlq], lambda rs: len(rs) >= len(bad), timeout_s=60)
        dry = await replay(env.settings(), dry_run=True)
        assert dry["replayed"] == len(bad)
        done = await replay(env.settings())
        assert done["replayed"] == len(bad)
        # Still bad after replay: each becomes a new dead letter (new offset), nothing loops or vanishes.
        records = await collect(
            env.bootstrap, [env.topics.dlq], lambda rs: len(rs) >= 2 * len(bad), timeout_s=60, settle_s=2
        )
        # The next run offers only those new ones: the originals were replayed once and are done.
        assert (await replay(env.settings(), dry_run=True))["replayed"] == len(bad)
    finally:
        intake.stop()
    assert len(records) == 2 * len(bad)
