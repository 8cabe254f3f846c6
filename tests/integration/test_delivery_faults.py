"""Delivery under hostile records and database faults, against real Apache Kafka and PostgreSQL (issue 7, defects 2,
3, 8 and 11): a key PostgreSQL text refuses, passing database faults of every class, a paused server, and pruning
followed by a replay from offset 0."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared.devtools.infra.postgres_local import LocalPostgres
from shared.devtools.traffic import RawMessage, TrafficGenerator
from shared.domain import Category, Channel
from shared.events import CallbackResult, DeadLetter
from tests.integration.test_intake_flow import by_topic, expected_ids, send_kafka
from tests.integration.test_routing_flow import _start_world, _stop_world, action, complaint, tag
from tests.support.infra import (
    Env,
    ServiceProcess,
    collect,
    create_database,
    metric_sum,
    rewind_group,
    wait_for_metric,
)

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)
NUL_KEY = b"A\x00\xff-key"
NUL_KEY_TEXT = "A\\x00\\xff-key"


async def produce_to_partition(
    bootstrap: str, topic: str, partition: int, items: list[tuple[bytes | None, bytes]]
) -> None:
    """Send in order to one partition, whatever the keys: the records behind the bad one wait on it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        for key, value in items:
            await (await producer.send(topic, value, key=key, partition=partition))
    finally:
        await producer.stop()


def hotline_messages(seed: int, n: int, run_tag: str) -> list[RawMessage]:
    gen = TrafficGenerator(seed=seed, duplicates=0.0, bad=0.0, run_tag=run_tag)
    out: list[RawMessage] = []
    while len(out) < n:
        m = gen.next(NOW)
        if m.channel is Channel.HOTLINE:
            out.append(m)
    return out


def letters_of(records: list[Any], topic: str) -> list[tuple[bytes | None, DeadLetter]]:
    return [(r.key, DeadLetter.model_validate_json(r.value)) for r in by_topic(records, topic)]


async def dead_letter_rows(database_url: str, schema: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(f'SELECT source_key, error_type FROM "{schema}".dead_letters'))
    finally:
        await conn.close()


# --- defect 2: a key with a NUL byte --------------------------------------------------------------------------


async def test_a_nul_key_with_a_bad_value_does_not_stall_intake_and_replays_with_its_bytes(env: Env) -> None:
    from shared.devtools.dlq import replay

    good = hotline_messages(31, 20, "NUL")
    want = expected_ids(good)
    topic = env.topics.intake(Channel.HOTLINE)
    await produce_to_partition(
        env.bootstrap, topic, 0, [(NUL_KEY, b"{not json"), *[(m.key.encode() if m.key else None, m.body) for m in good]]
    )
    intake = ServiceProcess("intake", env.environ(), env.tmp / "intake.log").start()
    try:

        def done(records: list[Any]) -> bool:
            got = {json.loads(r.value)["complaint_id"] for r in by_topic(records, env.topics.received)}
            return got >= want and len(by_topic(records, env.topics.dlq)) >= 1

        records = await collect(env.bootstrap, [env.topics.received, env.topics.dlq], done, timeout_s=60, settle_s=2)
        assert {json.loads(r.value)["complaint_id"] for r in by_topic(records, env.topics.received)} == want, (
            intake.log_tail()
        )
        (key, letter), *more = letters_of(records, env.topics.dlq)
        assert not more
        assert key == NUL_KEY, "the dlq message is keyed by the exact bytes"
        assert letter.source_key == NUL_KEY_TEXT
        assert letter.source_key_b64 == base64.b64encode(NUL_KEY).decode()
        assert letter.payload() == b"{not json"
        assert [bytes(r["source_key"]) for r in await dead_letter_rows(env.database_url, "intake")] == [NUL_KEY]

        # `complaints dlq replay` sends it back with its exact key: still bad, a second dead letter with the same key.
        assert (await replay(env.settings()))["replayed"] == 1
        records = await collect(
            env.bootstrap, [env.topics.dlq, topic], lambda rs: len(by_topic(rs, env.topics.dlq)) >= 2
        )
        assert [k for k, _ in letters_of(records, env.topics.dlq)] == [NUL_KEY, NUL_KEY]
        assert [r.key for r in by_topic(records, topic)].count(NUL_KEY) == 2
    finally:
        intake.stop()


async def test_a_nul_key_does_not_stall_routings_actions_or_callbacks(env: Env) -> None:
    world = await _start_world(env, with_intake=False)
    try:
        c = complaint(tag(), Category.CONSTRUCTION)
        cid = c.complaint_id
        await world.receive(c)
        (assignment,) = await world.wait_assigned(cid)
        lead = assignment.lead_department
        steps = [action(cid, lead, kind) for kind in ("accept", "contact")]
        steps.append(action(cid, lead, "resolve", note="已办结"))
        await produce_to_partition(
            env.bootstrap,
            env.topics.actions,
            0,
            [(NUL_KEY, b"\x00{bad"), *[(cid.encode(), a.to_json_bytes()) for a in steps]],
        )
        await world.wait_state(cid, "resolved")
        callback = CallbackResult(
            complaint_id=cid, callback_at=datetime.now(UTC), satisfaction="satisfied", resolved=True, comment="好"
        )
        await produce_to_partition(
            env.bootstrap,
            env.topics.callbacks,
            0,
            [(NUL_KEY, b"[1, 2"), (cid.encode(), callback.to_json_bytes())],
        )
        await world.wait_state(cid, "closed")
        await world.tap.wait(lambda: len(world.tap.on(env.topics.dlq)) >= 2, what="two dead letters")
    finally:
        await _stop_world(world)
    letters = [(r.key, DeadLetter.model_validate_json(r.value)) for r in world.tap.on(env.topics.dlq)]
    assert sorted(d.source_topic for _, d in letters) == sorted([env.topics.actions, env.topics.callbacks])
    assert all(k == NUL_KEY and d.source_key == NUL_KEY_TEXT for k, d in letters)
    assert [bytes(r["source_key"]) for r in await dead_letter_rows(env.database_url, "routing")] == [NUL_KEY, NUL_KEY]


# --- defect 3: passing database faults of every class that can be made ------------------------------------------


def consumer_retries(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('transient_retries_total{where="consumer"}')
    )


async def admin_connection(database_url: str) -> asyncpg.Connection[Any]:
    """A connection that stays writable and unbounded whatever the database's defaults say."""
    return await asyncpg.connect(
        database_url,
        server_settings={"default_transaction_read_only": "off", "lock_timeout": "0", "statement_timeout": "0"},
    )


async def kick_service_connections(conn: asyncpg.Connection[Any]) -> None:
    """pg_terminate_backend (SQLSTATE 57P01) on the services' connections: they come back with the database's settings."""
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE 'complaints-%'"
    )


async def test_passing_database_faults_hold_good_records_until_lifted_and_dead_letter_none(env: Env) -> None:
    """Read-only (25006, after a pg_terminate_backend: 57P01), lock_not_available (55P03) and query_canceled by
    statement_timeout (57014): each held while good records arrive, then lifted; all of them come out, none is a dead
    letter."""
    database = env.database_url.rsplit("/", 1)[1]
    intake = ServiceProcess("intake", env.environ(), env.tmp / "intake.log").start()
    admin = await admin_connection(env.database_url)
    lock: asyncpg.transaction.Transaction | None = None
    try:

        async def read_only_on() -> None:
            await admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
            await kick_service_connections(admin)

        async def read_only_off() -> None:
            await admin.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')

        def lock_with(setting: str) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
            async def on() -> None:
                nonlocal lock
                await admin.execute(f"ALTER DATABASE \"{database}\" SET {setting} = '300ms'")
                await kick_service_connections(admin)
                lock = admin.transaction()
                await lock.start()
                await admin.execute("LOCK TABLE intake.complaints IN ACCESS EXCLUSIVE MODE")

            async def off() -> None:
                nonlocal lock
                assert lock is not None
                await lock.rollback()
                lock = None
                await admin.execute(f'ALTER DATABASE "{database}" RESET {setting}')

            return on, off

        phases = [
            ("read-only", read_only_on, read_only_off),
            ("lock_timeout", *lock_with("lock_timeout")),
            ("statement_timeout", *lock_with("statement_timeout")),
        ]
        async with httpx.AsyncClient(base_url=intake.url, timeout=10) as http:
            for n, (name, fault_on, fault_off) in enumerate(phases):
                messages = hotline_messages(50 + n, 10, f"F{n}")
                want = expected_ids(messages)
                before = consumer_retries((await http.get("/metrics")).text)
                await fault_on()
                await send_kafka(env, messages)

                async def fault_met(before: float = before) -> bool:
                    # Retried as a passing fault, or (the defect) dead-lettered as if the records were bad.
                    text = (await http.get("/metrics")).text
                    return consumer_retries(text) >= before + 2 or metric_sum(text, "dead_letters_total") > 0

                deadline = time.monotonic() + 60
                while not await fault_met():
                    assert time.monotonic() < deadline, f"{name}: the fault was never met\n{intake.log_tail()}"
                    await asyncio.sleep(0.2)
                await fault_off()

                def done(records: list[Any], want: set[str] = want) -> bool:
                    got = {json.loads(r.value)["complaint_id"] for r in by_topic(records, env.topics.received)}
                    return got >= want

                records = await collect(
                    env.bootstrap, [env.topics.received, env.topics.dlq], done, timeout_s=60, settle_s=2
                )
                got = {json.loads(r.value)["complaint_id"] for r in by_topic(records, env.topics.received)}
                assert got >= want, f"{name}: good records did not come out\n{intake.log_tail()}"
                letters = [DeadLetter.model_validate_json(r.value) for r in by_topic(records, env.topics.dlq)]
                assert letters == [], f"{name}: good records dead-lettered: {[d.reason for d in letters]}"
    finally:
        if lock is not None:
            await lock.rollback()
        await admin.close()
        intake.stop()


# --- defect 8: a paused database ------------------------------------------------------------------------------


def server_processes(postmaster: int) -> list[int]:
    """The postmaster and its children (each backend calls setsid, so a signal to the process group misses them)."""
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()  # noqa: SIM115
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(entry))
    return pids


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def test_a_paused_database_answers_http_callers_503_and_the_service_recovers(env: Env) -> None:
    pg = LocalPostgres(data_dir=env.tmp / "own-pg").start()  # its own server: pausing it disturbs no other test
    intake: ServiceProcess | None = None
    try:
        assert pg.process is not None
        url = await create_database(pg.url, "paused")
        own = Env(env.bootstrap, url, env.prefix, env.keys_file, env.keys, env.tmp)
        intake = ServiceProcess("intake", own.environ(), env.tmp / "intake.log").start()
        first, during, after = hotline_messages(61, 3, "PAU")
        headers = {"Authorization": f"Bearer {env.keys['channel:hotline']}"}
        async with httpx.AsyncClient(base_url=intake.url, timeout=30) as http:
            assert (await http.post("/v1/intake/hotline", content=first.body, headers=headers)).status_code == 202
            server = server_processes(pg.process.pid)
            signal_all(server, signal.SIGSTOP)  # the postmaster and every backend: a hung server
            try:
                answer = await http.post("/v1/intake/hotline", content=during.body, headers=headers)
            finally:
                signal_all(server, signal.SIGCONT)
            assert answer.status_code == 503, answer.text
            assert answer.headers.get("retry-after")
            # The service recovers by itself: the caller's retry is taken (or found a duplicate, if the paused
            # commit went through in the end), and a new complaint is taken.
            deadline = time.monotonic() + 60
            while (
                resp := await http.post("/v1/intake/hotline", content=during.body, headers=headers)
            ).status_code != 202:
                assert resp.status_code == 503, resp.text
                assert time.monotonic() < deadline, intake.log_tail()
                await asyncio.sleep(0.5)
            assert (await http.post("/v1/intake/hotline", content=after.body, headers=headers)).status_code == 202
    finally:
        if intake is not None:
            intake.stop()
        pg.stop()


# --- defect 11: pruning, then a replay from offset 0 -------------------------------------------------------------


async def table_counts(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        return {
            "intake.dead_letters": await conn.fetchval("SELECT count(*) FROM intake.dead_letters"),
            "routing.dead_letters": await conn.fetchval("SELECT count(*) FROM routing.dead_letters"),
            "routing.received_keys": await conn.fetchval(
                "SELECT count(*) FROM routing.processed WHERE message_key LIKE 'received:%'"
            ),
            "sla.processed": await conn.fetchval("SELECT count(*) FROM sla.processed"),
        }
    finally:
        await conn.close()


def unique_values(records: list[Any], topic: str) -> set[bytes]:
    return {r.value for r in by_topic(records, topic)}


async def test_pruned_with_zero_day_retention_a_replay_from_offset_zero_changes_nothing(env: Env) -> None:
    """intake → routing → sla as processes with every retention at 0 days: once pruned, each service reads its topics
    again from offset 0 and nothing new comes out (no complaint, assignment, lifecycle change, SLA event or dead
    letter that was not there), because the effects are deduped on their natural keys."""
    prune = {"PROCESSED_RETENTION_DAYS": "0", "DEAD_LETTER_RETENTION_DAYS": "0", "PRUNE_INTERVAL_S": "1"}
    gen = TrafficGenerator(seed=71, duplicates=0.1, bad=0.1, run_tag="PRN")
    messages = [gen.next(NOW) for _ in range(60)]
    want = expected_ids(messages)
    bad = sum(m.bad_reason is not None for m in messages)
    t = env.topics
    out_topics = [t.received, t.assigned, t.lifecycle, t.sla, t.dlq]
    procs = [
        ServiceProcess("intake", env.environ(**prune), env.tmp / "intake.log"),
        ServiceProcess("routing", env.environ(**prune), env.tmp / "routing.log"),
        # The default policy (working days): no deadline falls due during the test, so every SLA event is a replay's.
        ServiceProcess("sla", env.environ(**prune), env.tmp / "sla.log"),
    ]
    try:
        for p in procs:
            p.start()
        await send_kafka(env, messages)

        def settled(records: list[Any]) -> bool:
            return (
                len(unique_values(records, t.received)) >= len(want)
                and len(unique_values(records, t.assigned)) >= len(want)
                and len(unique_values(records, t.dlq)) >= bad
                and len({json.loads(r.value)["complaint_id"] for r in by_topic(records, t.sla)}) >= len(want)
            )

        before = await collect(env.bootstrap, out_topics, settled, timeout_s=120, settle_s=5)
        assert settled(before), "\n".join(p.log_tail(2000) for p in procs)
        deadline = time.monotonic() + 60
        while any((counts := await table_counts(env.database_url)).values()):
            assert time.monotonic() < deadline, f"not pruned: {counts}"
            await asyncio.sleep(0.5)
        for p in procs:
            p.stop()
        await rewind_group(env.bootstrap, f"{env.prefix}intake", [t.intake(c) for c in Channel])
        await rewind_group(env.bootstrap, f"{env.prefix}routing", [t.received, t.actions, t.callbacks, t.sla])
        await rewind_group(env.bootstrap, f"{env.prefix}sla", [t.received, t.assigned, t.lifecycle])
        for p in procs:
            p.start()
        # The replay really happened: intake read every good raw message again and found it a duplicate, and the
        # pruned tables fill again as the consumers read from offset 0.
        good = len(messages) - bad
        assert await wait_for_metric(procs[0].url, "complaints_duplicates_total", good), procs[0].log_tail()
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(base_url=procs[2].url, timeout=5) as http:
            # The clock read every case's complaint.received again and noted it a duplicate (its processed rows gone).
            while metric_sum((await http.get("/metrics")).text, 'sla_facts_total{outcome="duplicate"}') < len(want):
                assert time.monotonic() < deadline, procs[2].log_tail()
                await asyncio.sleep(0.5)
        while "complaint.received for a known case ignored" not in procs[1].log_tail(200_000):
            assert time.monotonic() < deadline, procs[1].log_tail()
            await asyncio.sleep(0.5)
        after = await collect(env.bootstrap, out_topics, settled, timeout_s=60, settle_s=8)
    finally:
        for p in procs:
            p.stop()
    for topic in out_topics[:-1]:
        assert unique_values(after, topic) == unique_values(before, topic), f"{topic} changed after the replay"
    ids_before = {json.loads(r.value)["dead_letter_id"] for r in by_topic(before, t.dlq)}
    ids_after = {json.loads(r.value)["dead_letter_id"] for r in by_topic(after, t.dlq)}
    assert ids_after == ids_before, "a replay made a dead letter that was not there"
