"""`complaints bench sla` (for now `python -m shared.devtools.bench_sla`): how fast the scheduler fires deadlines that
fall due together, among a million pending ones, on real PostgreSQL (and Kafka for the relay). Prints figures;
asserts nothing.

Phases, in one run, on one database made for the run (and dropped after):
1. load: N pending deadlines (default 1,000,000) by COPY, spread over the next 30 days, in the real schema with its
   indexes; two groups of M (default 10,000) are parked a year ahead;
2. baseline: group 1 is made due at one instant, and a bare loop claims and deletes it
   (`DELETE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT batch)`): no event, no outbox, no update;
3. scheduler: group 2 is made due at one instant, and ONE real `Scheduler` loop (the service's code path: claim,
   `clockwork.fire`, SlaEvent JSON into the outbox, row updates, one transaction per batch) fires it;
4. relay: the outbox's M events are published to Kafka by the service's `OutboxRelay` (acks=all), reported apart.

Figures: due deadlines fired per second (M / (last commit − due time)), lateness p50/p99/max (commit − due), peak
RSS of this process, and the same for the baseline, with the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.sla.scheduler import FireReport, Scheduler
from shared.clock import system_clock
from shared.db import create_pool
from shared.kafka import Health, ensure_topics, make_producers
from shared.migrate import migrate
from shared.observability import Metrics
from shared.outbox import OutboxRelay
from shared.settings import Settings
from shared.topics import Topics

COLUMNS = (
    "complaint_id", "stage", "round", "department", "started_at", "due_at", "warn_at", "state", "next_fire_at",
    "warned_for", "settled_at", "set_event_id", "updated_at",
)  # fmt: skip
DEPARTMENTS = ("spj", "scj", "jrb", "fgw", "sfj", "gxj", "zjj", "sw", "gov-150523", "triage")
STAGES = ("accept", "first_contact", "resolve", "callback")

SQL_MAKE_DUE = "UPDATE deadlines SET due_at = $2, next_fire_at = $2 WHERE complaint_id LIKE $1"
SQL_BASELINE_ROUND = """
DELETE FROM deadlines WHERE id IN (
    SELECT id FROM deadlines WHERE next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
RETURNING due_at
"""
SQL_COUNT_BREACHED = "SELECT count(*) FROM deadlines WHERE complaint_id LIKE $1 AND state = 'breached'"
SQL_COUNT_OUTBOX = "SELECT count(*) FROM outbox"
SQL_COUNT_DISTINCT_EVENTS = "SELECT count(DISTINCT value::text) FROM outbox"


def _say(text: str) -> None:
    print(text, flush=True)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _loadavg() -> str:
    """The machine's load average (1, 5, 15 min): the benches share it, so figures compare only within a run."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rows(total: int, group: int, now: datetime, extra: int = 0) -> Iterator[tuple[Any, ...]]:
    """Pending deadlines: `group` each of `bench:base:` and `bench:fire:` parked a year ahead (already warned, so
    each fires exactly one breach), and the rest spread over the next 30 days, waiting for their warning."""
    parked = now + timedelta(days=365)
    for prefix in ("base", "fire", *(f"fire{k}" for k in range(1, extra + 1))):
        for i in range(group):
            yield (
                f"bench:{prefix}:{i}", STAGES[i % 4], 1, DEPARTMENTS[i % 10], now, parked, parked - timedelta(hours=1),
                "pending", parked, parked - timedelta(hours=1), None, None, now,
            )  # fmt: skip
    for i in range(max(0, total - (2 + extra) * group)):
        due = now + timedelta(seconds=3 * 3600 + (i * 7919) % (30 * 86400))
        warn = due - timedelta(hours=2)  # an hour ahead at least: nothing but the due group fires during the run
        yield (
            f"bench:idle:{i}", STAGES[i % 4], 1 + i % 3, DEPARTMENTS[i % 10], now, due, warn, "pending", warn, None,
            None, None, now,
        )  # fmt: skip


SQL_PLAIN_INDEXES = """
SELECT i.relname AS name, pg_get_indexdef(x.indexrelid) AS definition
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = 'sla' AND t.relname = 'deadlines'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
"""


# The idle rows, made by the server (10 million tuples built in Python would take minutes): exactly what `_rows`
# yields for them, row i due 3 h + (i * 7919 mod 30 days) from now and warned 2 h before.
SQL_LOAD_IDLE = """
INSERT INTO deadlines (complaint_id, stage, round, department, started_at, due_at, warn_at, state, next_fire_at,
                       updated_at)
SELECT 'bench:idle:' || i, ($3::text[])[1 + i % 4], 1 + i % 3, ($4::text[])[1 + i % 10], $2::timestamptz, d.due,
       d.due - interval '2 hours', 'pending', d.due - interval '2 hours', $2::timestamptz
FROM generate_series(0, $1::bigint - 1) AS i,
     LATERAL (SELECT $2::timestamptz + make_interval(secs => 3 * 3600 + (i * 7919) % (30 * 86400)) AS due) AS d
"""


async def _load(url: str, total: int, group: int, extra: int = 0) -> float:
    """COPY the rows into the real table. Its plain indexes (not those of a constraint) are dropped first and built
    again after, as `pg_get_indexdef` gives them: the same indexes, built in one pass rather than row by row. Then
    VACUUM ANALYZE, so the visibility map covers the table and the vacuum after each make-due is short."""
    conn = await asyncpg.connect(url, server_settings={"search_path": "sla", "maintenance_work_mem": "256MB"})
    try:
        started = time.perf_counter()
        indexes = [(r["name"], r["definition"]) for r in await conn.fetch(SQL_PLAIN_INDEXES)]
        for name, _ in indexes:
            await conn.execute(f'DROP INDEX sla."{name}"')  # names read from the catalog, not from input
        now = system_clock()
        parked = (2 + extra) * group
        await conn.copy_records_to_table("deadlines", records=_rows(parked, group, now, extra), columns=COLUMNS)
        await conn.execute(SQL_LOAD_IDLE, total - parked, now, list(STAGES), list(DEPARTMENTS))
        for _, definition in indexes:
            await conn.execute(definition)
        await conn.execute("VACUUM ANALYZE deadlines")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _make_due(url: str, prefix: str, lead_s: float) -> datetime:
    """Make a parked group due at one instant, `lead_s` from now; the dead row versions are vacuumed first. If the
    update and vacuum took longer than the lead (a busy machine, a big table), again with twice the lead."""
    conn = await asyncpg.connect(url, server_settings={"search_path": "sla"})
    try:
        while True:
            due = system_clock() + timedelta(seconds=lead_s)
            await conn.execute(SQL_MAKE_DUE, f"bench:{prefix}:%", due)
            await conn.execute("VACUUM ANALYZE deadlines")
            if (due - system_clock()).total_seconds() >= 0.2:
                return due
            if lead_s >= 120:
                raise RuntimeError(f"update and vacuum took longer than {lead_s:.0f} s")
            lead_s *= 2
            _say(f"(vacuum took longer than the lead: again with {lead_s:.0f} s)")
    finally:
        await conn.close()


async def _wait_until(moment: datetime) -> None:
    delay = (moment - system_clock()).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)


async def _baseline(url: str, due: datetime, expected: int, batch: int) -> tuple[float, list[float]]:
    conn = await asyncpg.connect(url, server_settings={"search_path": "sla"})
    lateness: list[float] = []
    try:
        await _wait_until(due)
        while len(lateness) < expected:
            async with conn.transaction():
                rows = await conn.fetch(SQL_BASELINE_ROUND, system_clock(), batch)
            committed = system_clock()
            lateness.extend((committed - r["due_at"]).total_seconds() for r in rows)
            if not rows:
                await asyncio.sleep(0.001)
    finally:
        await conn.close()
    return expected / max(lateness), lateness


async def _scheduler(
    url: str, topics: Topics, due: datetime, expected: int, batch: int, parallel: int
) -> tuple[float, list[float]]:
    pool = await create_pool(url, "sla", max_size=4)
    reports: list[FireReport] = []
    done = asyncio.Event()

    def observe(report: FireReport) -> None:
        reports.append(report)
        if sum(r.fired for r in reports) >= expected:
            done.set()

    scheduler = Scheduler(
        pool,
        sla_topic=topics.sla,
        metrics=Metrics("sla"),
        health=Health(),
        clock=system_clock,
        late_after=timedelta(seconds=60),
        batch_size=batch,
        parallel_rounds=parallel,
        poll_interval_s=1.0,
        on_report=observe,
    )
    try:
        scheduler.start()
        await done.wait()
    finally:
        await scheduler.stop()
        await pool.close()
    lateness = [x for r in reports for x in r.lateness_s]
    return expected / max(lateness), lateness


async def _relay(url: str, settings: Settings, expected: int) -> tuple[float, int]:
    pool = await create_pool(url, "sla", max_size=2)
    producers = make_producers(settings, client_id="sla-bench")
    await producers.start()
    metrics, health = Metrics("sla"), Health()
    relay = OutboxRelay(pool, producers, metrics, health, batch_size=settings.outbox_batch_size)
    sent = 0
    try:
        started = time.perf_counter()
        while True:
            n = await relay.publish_once()
            if not n:
                break
            sent += n
        span = time.perf_counter() - started
        left = int(await pool.fetchval(SQL_COUNT_OUTBOX))
    finally:
        await producers.stop()
        await pool.close()
    if sent < expected:
        _say(f"relay: only {sent} of {expected} events published")
    return sent / span if span else float("nan"), left


async def _create_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # the name is ours: sla_bench_<digits>
    finally:
        await conn.close()
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{name}"


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _line(label: str, rate: float, lateness: list[float]) -> str:
    return (
        f"{label:<34}{rate:>10,.0f} /s   lateness p50 {_pct(lateness, 50) * 1000:7.1f} ms  "
        f"p99 {_pct(lateness, 99) * 1000:7.1f} ms  max {max(lateness) * 1000:7.1f} ms"
    )


async def _run(args: argparse.Namespace, server_url: str, bootstrap: str) -> None:
    total, group, batch, lead = args.total, args.due, args.batch, args.lead
    name = f"sla_bench_{int(time.time())}"
    url = await _create_database(server_url, name)
    try:
        await migrate(url, ("sla",))
        _say(f"machine: {os.cpu_count()} cores; {total:,} pending deadlines, {group:,} due together, batch {batch}")
        _say(f"load average at the start: {_loadavg()}")
        also = _settings_list(args.also)
        load_s = await _load(url, total, group, len(also))
        _say(f"load (COPY, index build, VACUUM)    {total / load_s:>10,.0f} rows/s   ({load_s:.1f} s)")
        rss_before = _rss_mib()

        due = await _make_due(url, "base", lead)
        base_rate, base_late = await _baseline(url, due, group, batch)
        _say(_line("baseline claim+delete (bare SQL)", base_rate, base_late))

        prefix = f"{name}."
        topics = Topics(prefix)
        due = await _make_due(url, "fire", lead)
        rate, late = await _scheduler(url, topics, due, group, batch, args.parallel)
        _say(_line(f"scheduler (1 loop, {args.parallel} rounds at once)", rate, late))
        _say(f"{'':<34}{rate / base_rate:>10.2f} of the baseline's rate")
        conn = await asyncpg.connect(url, server_settings={"search_path": "sla"})
        try:
            breached = await conn.fetchval(SQL_COUNT_BREACHED, "bench:fire:%")
            queued = await conn.fetchval(SQL_COUNT_OUTBOX)
            distinct = await conn.fetchval(SQL_COUNT_DISTINCT_EVENTS)
        finally:
            await conn.close()
        _say(f"check: {breached:,} of {group:,} breached, {queued:,} events in the outbox, {distinct:,} distinct")
        _say(f"peak RSS of this process: {_rss_mib():.0f} MiB (after loading: {rss_before:.0f} MiB)")
        for k, (b, par) in enumerate(also, start=1):
            due = await _make_due(url, f"fire{k}", lead)
            rate_k, late_k = await _scheduler(url, topics, due, group, b, par)
            _say(_line(f"scheduler batch {b}, {par} at once", rate_k, late_k) + f"  ({rate_k / base_rate:.2f} of base)")

        settings = Settings(kafka_bootstrap_servers=bootstrap, database_url=url, topic_prefix=prefix)
        await ensure_topics(settings, [topics.sla, topics.dlq])
        relay_rate, left = await _relay(url, settings, group)
        _say(f"relay outbox → Kafka (acks=all)     {relay_rate:>10,.0f} /s   ({left} left in the outbox)")
        _say(f"load average at the end: {_loadavg()}")
    finally:
        await _drop_database(server_url, name)


def _settings_list(text: str) -> list[tuple[int, int]]:
    """`2000x2,5000x3` → [(2000, 2), (5000, 3)]: batch size and rounds at once."""
    found = []
    for part in (p.strip() for p in (text or "").split(",")):
        if part:
            batch, _, parallel = part.partition("x")
            found.append((int(batch), int(parallel or "1")))
    return found


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--total", type=int, default=1_000_000, help="pending deadlines loaded")
    parser.add_argument("--due", type=int, default=10_000, help="deadlines that fall due at the same instant")
    parser.add_argument("--batch", type=int, default=1000, help="deadlines claimed per scheduler round")
    parser.add_argument("--parallel", type=int, default=2, help="scheduler rounds at once during a backlog")
    parser.add_argument(
        "--also",
        default="",
        help="more scheduler settings to try on the same table, e.g. 2000x2,5000x3 (batch x rounds)",
    )
    parser.add_argument("--lead", type=float, default=3.0, help="seconds between making a group due and its due")
    return parser


def run_sla_bench(args: argparse.Namespace) -> int:
    """Start PostgreSQL and Kafka unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS say where they are, run, stop."""
    from shared.devtools.infra.kafka_local import LocalKafka
    from shared.devtools.infra.postgres_local import LocalPostgres

    defaults = add_arguments(argparse.ArgumentParser()).parse_args([])
    for key, value in vars(defaults).items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if args.due * (2 + len(_settings_list(args.also))) > args.total:
        _say("error: --total must hold the baseline's, the scheduler's and each --also setting's --due deadlines")
        return 2
    kafka = pg = None
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        server_url = os.environ.get("DATABASE_URL")
        if not server_url:
            pg = LocalPostgres().start()
            server_url = pg.url
        if not bootstrap:
            kafka = LocalKafka().start()
            bootstrap = kafka.bootstrap
        asyncio.run(_run(args, server_url, bootstrap))
    finally:
        if kafka is not None:
            kafka.stop()
        if pg is not None:
            pg.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="complaints bench sla", description=__doc__))
    return run_sla_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
