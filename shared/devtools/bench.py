"""`complaints bench intake`: intake throughput and latency on real Apache Kafka and PostgreSQL, with a baseline
measured in the same run. Prints figures; asserts nothing.

Phases:
1. baseline: a bare aiokafka loop (consume a batch → publish each record → await the acks → commit) over the same
   messages: what Kafka alone does on this machine, so the intake figure has something to be compared with;
2. backlog: N raw messages (all channels, 5% duplicates, 3% bad) waiting on the raw topics, then the intake service
   starts; throughput = canonical events plus dead letters out per second, until all are out;
3. latency: messages at a fixed rate for some seconds; latency = from the send of a raw message to the moment its
   `complaint.received` is read back (p50, p95, p99, max).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.auth import new_key
from shared.devtools.infra.kafka_local import LocalKafka
from shared.devtools.infra.ports import die_with_parent, free_port
from shared.devtools.infra.postgres_local import LocalPostgres
from shared.devtools.traffic import TrafficGenerator
from shared.kafka import ensure_topics
from shared.migrate import migrate
from shared.settings import Settings
from shared.topics import Topics


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _produce(bootstrap: str, items: list[tuple[str, bytes | None, bytes]]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=1024 * 1024
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for topic, key, value in items:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _baseline(bootstrap: str, topics: Topics, count: int) -> float:
    """Consume `count` records from the raw topics and republish them with acks=all, committing per batch."""
    consumer = AIOKafkaConsumer(
        *topics.raw(),
        bootstrap_servers=bootstrap,
        group_id=f"{topics.prefix}baseline",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=500,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=1024 * 1024
    )
    await consumer.start()
    await producer.start()
    seen = 0
    started: float | None = None
    try:
        while seen < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                continue
            started = started or time.perf_counter()
            futures = [await producer.send(f"{topics.prefix}bench.baseline", r.value, key=r.key) for r in records]
            await asyncio.gather(*futures)
            await consumer.commit()
            seen += len(records)
    finally:
        await consumer.stop()
        await producer.stop()
    return seen / (time.perf_counter() - (started or time.perf_counter()))


async def _drain(bootstrap: str, topics: list[str], expected: int, timeout_s: float) -> tuple[int, float]:
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    seen = 0
    first: float | None = None
    last = time.perf_counter()
    try:
        deadline = time.perf_counter() + timeout_s
        while seen < expected and time.perf_counter() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            n = sum(len(rs) for rs in batch.values())
            if n:
                first = first or time.perf_counter()
                seen += n
                last = time.perf_counter()
    finally:
        await consumer.stop()
    return seen, last - (first or last)


async def _latency(
    bootstrap: str, topics: Topics, rate: float, seconds: float, seed: int, outputs: list[str]
) -> dict[str, list[float]]:
    """Send raw messages at `rate`; per output topic, the seconds from each send to the first event of that
    complaint read back from the topic."""
    gen = TrafficGenerator(seed=seed, duplicates=0.0, bad=0.0, run_tag=f"LAT{seed}")
    sent_at: dict[str, float] = {}
    latencies: dict[str, list[float]] = {topic: [] for topic in outputs}
    seen: dict[str, set[str]] = {topic: set() for topic in outputs}
    consumer = AIOKafkaConsumer(
        *outputs, bootstrap_servers=bootstrap, auto_offset_reset="latest", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    await asyncio.sleep(1.0)  # let the consumer take its partitions before sending

    async def read() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for rs in batch.values():
                for r in rs:
                    complaint_id = json.loads(r.value)["complaint_id"]
                    if complaint_id in sent_at and complaint_id not in seen[r.topic]:
                        seen[r.topic].add(complaint_id)
                        latencies[r.topic].append(now - sent_at[complaint_id])

    def outstanding() -> bool:
        return any(len(s) < len(sent_at) for s in seen.values())

    reader = asyncio.create_task(read())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
    await producer.start()
    try:
        started = time.perf_counter()
        n = 0
        while time.perf_counter() - started < seconds:
            due = started + n / rate
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            msg = gen.next()
            assert msg.key is not None
            sent_at[f"{msg.channel.value}:{msg.key}"] = time.perf_counter()
            await producer.send(topics.intake(msg.channel), msg.body, key=msg.key.encode())
            n += 1
        await producer.flush()
        deadline = time.perf_counter() + 30
        while outstanding() and time.perf_counter() < deadline:  # noqa: ASYNC110 - polling what the reader fills
            await asyncio.sleep(0.1)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await producer.stop()
        await consumer.stop()
    return latencies


def _print_latency(label: str, rate: float, seconds: float, lat: list[float]) -> None:
    if not lat:
        print(f"{label}: nothing came back")
        return
    print(
        f"{label} at {rate:,.0f}/s for {seconds:.0f} s, {len(lat)} messages: "
        f"p50 {_pct(lat, 50) * 1000:.1f} ms, p95 {_pct(lat, 95) * 1000:.1f} ms, "
        f"p99 {_pct(lat, 99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms, mean {statistics.mean(lat) * 1000:.1f} ms"
    )


def run_bench_cli(args: argparse.Namespace) -> int:
    kafka = pg = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("DATABASE_URL")
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        if not bootstrap:
            kafka = LocalKafka().start()
            bootstrap = kafka.bootstrap
        if not database:
            pg = LocalPostgres().start()
            database = pg.url
        prefix = f"bench{int(time.time())}."
        topics = Topics(prefix)
        settings = Settings(kafka_bootstrap_servers=bootstrap, database_url=database, topic_prefix=prefix)
        asyncio.run(migrate(database, ("intake",)))
        asyncio.run(ensure_topics(settings, [*topics.all(), f"{prefix}bench.baseline"]))
        gen = TrafficGenerator(seed=1, duplicates=0.05, bad=0.03, run_tag="BEN")
        messages = [gen.next() for _ in range(args.count)]
        items = [(topics.intake(m.channel), m.key.encode() if m.key else None, m.body) for m in messages]
        unique_good = len({m.key for m in messages if m.bad_reason is None})
        bad = sum(m.bad_reason is not None for m in messages)
        print(
            f"machine: {os.cpu_count()} cores; {args.count} raw messages "
            f"({unique_good} distinct complaints, {bad} bad, {args.count - unique_good - bad} duplicates), "
            f"avg {sum(len(m.body) for m in messages) // len(messages)} bytes"
        )
        produce_s = asyncio.run(_produce(bootstrap, items))
        print(f"produce (acks=all, idempotent)      {args.count / produce_s:>10,.0f} msg/s")
        base = asyncio.run(_baseline(bootstrap, topics, args.count))
        print(f"baseline consume→publish→commit     {base:>10,.0f} msg/s   (bare aiokafka, no database)")

        _, line = new_key("channel:hotline")
        (work / "keys.yaml").write_text(line)
        port = free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DATABASE_URL": database,
            "TOPIC_PREFIX": prefix,
            "API_KEYS_FILE": str(work / "keys.yaml"),
            "HTTP_PORT": str(port),
            "LOG_LEVEL": "WARNING",
        }
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "shared.devtools.cli", "run", "intake", "--port", str(port)],
            env=env,
            stdout=(work / "intake.log").open("wb"),
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only a prctl call: dies with the bench, even killed
        )
        started = time.perf_counter()
        expected = unique_good + bad
        seen, span = asyncio.run(_drain(bootstrap, [topics.received, topics.dlq], expected, timeout_s=600))
        total = time.perf_counter() - started
        print(
            f"intake backlog → received+dlq       {seen / span if span else float('nan'):>10,.0f} msg/s   "
            f"({seen} of {expected} out; first to last event {span:.1f} s; {total:.1f} s with start-up)"
        )
        print(
            f"                              ratio {seen / span / base if span and base else float('nan'):>10.2f}"
            " of the baseline"
        )
        lat = asyncio.run(_latency(bootstrap, topics, args.rate, args.seconds, 2, [topics.received]))
        _print_latency("latency raw sent → complaint.received read", args.rate, args.seconds, lat[topics.received])
        try:
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            batches = [
                ln
                for ln in metrics.splitlines()
                if ln.startswith(
                    ("consumer_batch_seconds_count", "consumer_batch_seconds_sum", "consumer_batch_records_sum")
                )
            ]
            print(
                "settings: batch subscriber, max_records=500, AckPolicy.MANUAL (commit after the DB transaction), "
                "one transaction per batch, outbox relay batches of 500, producer acks=all + idempotence, linger 5 ms"
            )
            for ln in batches:
                print(f"  {ln}")
        except httpx.HTTPError:
            pass
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if kafka:
            kafka.stop()
        if pg:
            pg.stop()
    return 0


def run_routing_bench(args: argparse.Namespace) -> int:
    """`complaints bench routing`: time from a raw message on the intake topics to its `complaint.assigned`, with
    the intake hop alone (raw → `complaint.received`) measured on the same messages as the baseline."""
    kafka = pg = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("DATABASE_URL")
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if not bootstrap:
            kafka = LocalKafka().start()
            bootstrap = kafka.bootstrap
        if not database:
            pg = LocalPostgres().start()
            database = pg.url
        prefix = f"benchr{int(time.time())}."
        topics = Topics(prefix)
        settings = Settings(kafka_bootstrap_servers=bootstrap, database_url=database, topic_prefix=prefix)
        asyncio.run(migrate(database, ("intake", "routing")))
        asyncio.run(ensure_topics(settings, topics.all()))
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DATABASE_URL": database,
            "TOPIC_PREFIX": prefix,
            "LOG_LEVEL": "WARNING",
        }
        for name in ("intake", "routing"):
            port = free_port()
            procs.append(
                subprocess.Popen(  # noqa: S603 - our own CLI
                    [sys.executable, "-m", "shared.devtools.cli", "run", name, "--port", str(port)],
                    env={**env, "HTTP_PORT": str(port)},
                    stdout=(work / f"{name}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent(),  # noqa: PLW1509 - only a prctl call: dies with the bench, even killed
                )
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
        print(f"machine: {os.cpu_count()} cores; Kafka, PostgreSQL, intake, routing and this load on the same box")
        asyncio.run(_latency(bootstrap, topics, min(args.rate, 50.0), 3.0, 3, [topics.received, topics.assigned]))
        lat = asyncio.run(_latency(bootstrap, topics, args.rate, args.seconds, 4, [topics.received, topics.assigned]))
        _print_latency("baseline: raw sent → complaint.received read", args.rate, args.seconds, lat[topics.received])
        _print_latency("raw sent → complaint.assigned read          ", args.rate, args.seconds, lat[topics.assigned])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        if kafka:
            kafka.stop()
        if pg:
            pg.stop()
    return 0
