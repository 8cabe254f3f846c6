"""`complaints bench reports`: how fast the summary answers over a big read model, and how fast the projection
takes facts from Kafka. Prints figures; asserts nothing.

1. load: N cases (default 1,000,000) over 365 days straight into the read model by COPY (cases with their
   contribution, and the rollups they add up to), in the real schema; then EXPLAIN ANALYZE of the summary's query
   per grouping;
2. summary: the reporting service as its own process; `GET /v1/reports/summary` for a month per grouping,
   sequentially, p50 and p99;
3. projection: the service stopped, M cases' facts (received, assigned, accept, contact, resolve, and their SLA
   events) produced to the four topics (shuffled), the service started on that backlog, and the time from its first
   fact stored to its last: facts per second, with the load average and the mean batch size and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from services.reporting.projections import (
    COUNTS,
    GROUP_BY,
    TOTAL_DIMENSION,
    Contribution,
    Counts,
    fold_case,
    rollup_delta,
)
from services.reporting.store import SQL_SUMMARY
from shared.auth import new_key
from shared.devtools.infra.ports import die_with_parent, free_port
from shared.domain import Category, Channel, Kind, Urgency
from shared.events import CaseState, ComplaintAssigned, ComplaintReceived, LifecycleChanged, SlaEvent
from shared.events.base import Event
from shared.events.sla import SlaEventType, Stage
from shared.kafka import ensure_topics, make_producer
from shared.migrate import migrate
from shared.settings import Settings
from shared.topics import Topics

DEPARTMENTS = ("spj", "scj", "jrb", "fgw", "sfj", "gxj", "zjj", "sw", "gov-150523", "gov-150502", "triage")
REGIONS = ("150500", "150502", "150521", "150523", "150525", "150581")
START = date(2026, 1, 1)


def _say(text: str) -> None:
    print(text, flush=True)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def _case_rows(n: int, seed: int = 7) -> tuple[list[tuple[Any, ...]], dict[tuple[date, str, str], list[int]]]:
    """n synthetic cases and the rollups they add up to (each case: 1 to 2 assignments, random outcomes)."""
    rng = random.Random(seed)
    cases: list[tuple[Any, ...]] = []
    rollups: dict[tuple[date, str, str], list[int]] = {}
    now = datetime.now(UTC)
    for i in range(n):
        day = START + timedelta(days=rng.randrange(365))
        at = datetime(day.year, day.month, day.day, 2, tzinfo=UTC)
        dept = rng.choice(DEPARTMENTS)
        channel, region, category = rng.choice(list(Channel)).value, rng.choice(REGIONS), rng.choice(list(Category))
        resolved = rng.random() < 0.8
        counts = [0] * len(COUNTS)
        for name, value in (
            ("received", 1),
            ("resolved", int(resolved)),
            ("closed", int(resolved and rng.random() < 0.7)),
            ("on_time", int(resolved)),
            ("assignments", 1),
            ("accepted_on_time", int(rng.random() < 0.9)),
            ("response_base", 1),
            ("callbacks", int(resolved)),
            ("satisfied", int(resolved)),
            ("solved", int(resolved)),
        ):
            counts[COUNTS.index(name)] = value
        rows: dict[tuple[str, str], Counts] = {
            ("total", "all"): tuple(counts),
            ("department", dept): tuple(counts),
            ("channel", channel): tuple(counts),
            ("region", region): tuple(counts),
            ("category", category.value): tuple(counts),
        }
        contribution = Contribution(day, rows)
        for (d, k), c in rows.items():
            slot = rollups.setdefault((day, d, k), [0] * len(COUNTS))
            for j, v in enumerate(c):
                slot[j] += v
        ent = f"uscc:BENCH{i % 50000:08d}"
        cases.append(
            (f"bench:{i}", at, day, channel, region, category.value, dept, ent, "企业", ent[5:],
             _json(contribution), now)
        )  # fmt: skip
    return cases, rollups


def _json(contribution: Contribution) -> str:
    return json.dumps(contribution.to_json())


async def _load(url: str, n: int) -> float:
    started = time.perf_counter()
    cases, rollups = _case_rows(n)
    conn = await asyncpg.connect(url, server_settings={"search_path": "reporting"})
    try:
        await conn.copy_records_to_table(
            "cases",
            records=cases,
            columns=["complaint_id", "received_at", "received_day", "channel", "region_code", "category",
                     "department", "enterprise_key", "enterprise_name", "uscc", "contribution", "updated_at"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "rollups",
            records=[(day, d, k, *c) for (day, d, k), c in rollups.items()],
            columns=["day", "dimension", "key", *COUNTS],
        )
        await conn.execute("ANALYZE cases; ANALYZE rollups")
        _say(f"rollup rows: {len(rollups):,}")
    finally:
        await conn.close()
    return time.perf_counter() - started


def _facts(m: int) -> list[tuple[str, Event]]:
    """m cases' facts: (kind, event)."""
    out: list[tuple[str, Event]] = []
    t0 = datetime(2026, 11, 2, 1, tzinfo=UTC)
    for i in range(m):
        cid = f"hotline:B{i}"
        out.append(("received", ComplaintReceived(
            occurred_at=t0, complaint_id=cid, channel=Channel.HOTLINE, source_id=f"B{i}", received_at=t0,
            kind=Kind.COMPLAINT, category=Category.FINANCING, title="贷款难", content="融资贷款",
            urgency=Urgency.NORMAL, region_code="150500")))  # fmt: skip
        a = t0 + timedelta(minutes=5)
        out.append(("assigned", ComplaintAssigned(
            occurred_at=a, complaint_id=cid, assignment_id=f"a{i}", round=1, lead_department="jrb", level="city",
            rule_id="r", reason="bench", assigned_at=a)))  # fmt: skip
        for stage, due in ((Stage.RESOLVE, t0 + timedelta(days=5)), (Stage.ACCEPT, a + timedelta(hours=2))):
            out.append(("sla", SlaEvent(occurred_at=a, complaint_id=cid, type=SlaEventType.DEADLINE_SET, stage=stage,
                                        due_at=due, round=1, department="jrb")))  # fmt: skip
        state = CaseState.ASSIGNED
        for k, (cause, to) in enumerate(
            (("accept", CaseState.ACCEPTED), ("contact", CaseState.IN_PROGRESS), ("resolve", CaseState.RESOLVED))
        ):
            at = a + timedelta(hours=k + 1)
            out.append(("lifecycle", LifecycleChanged(
                occurred_at=at, complaint_id=cid, from_state=state, to_state=to, cause=cause, round=1,
                department="jrb", lead_department="jrb", at=at)))  # fmt: skip
            state = to
    return out


async def _explain(url: str) -> None:
    """EXPLAIN ANALYZE of the summary's query for June, per grouping: the scan it uses and its time in the server."""
    conn = await asyncpg.connect(url, server_settings={"search_path": "reporting"})
    try:
        for group_by in GROUP_BY:
            text = await conn.fetchval(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + SQL_SUMMARY,
                [group_by, TOTAL_DIMENSION],
                date(2026, 6, 1),
                date(2026, 6, 30),
            )
            plan = json.loads(text)[0]
            node, scans = plan["Plan"], []
            stack = [node]
            while stack:
                n = stack.pop()
                if "Scan" in n["Node Type"]:
                    on = n.get("Index Name", n.get("Relation Name", ""))
                    scans.append(f"{n['Node Type']} {on} ({n['Actual Rows']} rows)")
                stack.extend(n.get("Plans", []))
            _say(f"EXPLAIN summary by {group_by:<10} {', '.join(scans)}; {node['Node Type']}; "
                 f"execution {plan['Execution Time']:.2f} ms")  # fmt: skip
    finally:
        await conn.close()


def _batch_figures(metrics: str) -> str:
    """The projection's batches from the service's own metrics: how many, their mean size and time."""
    sums: dict[str, float] = {}
    for line in metrics.splitlines():
        name, _, value = line.partition(" ")
        for metric in ("consumer_batch_seconds_sum", "consumer_batch_seconds_count", "consumer_batch_records_sum"):
            if name.startswith(metric + "{"):
                sums[metric] = sums.get(metric, 0.0) + float(value)
    n = sums.get("consumer_batch_seconds_count", 0.0)
    if not n:
        return "batches: none counted"
    return (
        f"batches: {n:,.0f}, {sums.get('consumer_batch_records_sum', 0.0) / n:,.0f} records and "
        f"{sums.get('consumer_batch_seconds_sum', 0.0) / n * 1000:,.0f} ms each on average"
    )


def _start_service(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
        [sys.executable, "-m", "shared.devtools.cli", "run", "reporting", "--port", str(port)],
        env={**env, "HTTP_PORT": str(port)},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent(),  # noqa: PLW1509 - only a prctl call: dies with the bench, even killed
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"reporting exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("reporting did not start")


async def _run(args: argparse.Namespace, server_url: str, bootstrap: str) -> None:
    name = f"reports_bench_{int(time.time())}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')  # the name is ours
    await admin.close()
    url = server_url.rpartition("/")[0] + "/" + name
    tmp = Path(tempfile.mkdtemp(prefix="reports-bench-"))
    key, line = new_key("reports")
    (tmp / "keys.yaml").write_text(line)
    prefix = f"{name}."
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_URL", "TOPIC_PREFIX"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=bootstrap, DATABASE_URL=url, TOPIC_PREFIX=prefix,
               API_KEYS_FILE=str(tmp / "keys.yaml"), LOG_FORMAT="json")  # fmt: skip
    proc = None
    try:
        await migrate(url, ("reporting",))
        _say(f"machine: {os.cpu_count()} cores; loading {args.cases:,} cases into the read model")
        load_s = await _load(url, args.cases)
        _say(f"load (build + COPY + ANALYZE)  {args.cases / load_s:>10,.0f} cases/s ({load_s:.1f} s)")
        await _explain(url)
        port = free_port()
        proc = _start_service(env, port, tmp / "reporting.log")
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=auth) as http:
            for group_by in GROUP_BY:
                params = {"from": "2026-06-01", "to": "2026-06-30", "group_by": group_by}
                for _ in range(5):  # warm up
                    await http.get("/v1/reports/summary", params=params)
                times = []
                for _ in range(args.requests if group_by == "department" else args.requests // 4):
                    started = time.perf_counter()
                    got = await http.get("/v1/reports/summary", params=params)
                    times.append(time.perf_counter() - started)
                    if got.status_code != 200:
                        raise RuntimeError(got.text)
                body = got.json()
                _say(
                    f"GET summary month by {group_by:<10} p50 {_pct(times, 50) * 1000:6.1f} ms  "
                    f"p99 {_pct(times, 99) * 1000:6.1f} ms  ({len(times)} requests, {len(body['groups'])} groups, "
                    f"{body['total']['received']:,} cases)"
                )

        # Projection throughput through Kafka: the service is stopped while the facts are produced, then started on
        # the backlog, so the figure is the projection's own (not the producer's, nor the summary's load).
        proc.terminate()
        proc.wait(30)
        proc = None
        topics = Topics(prefix)
        settings = Settings(kafka_bootstrap_servers=bootstrap, database_url=url, topic_prefix=prefix)
        await ensure_topics(settings, topics.all())
        facts = _facts(args.kafka_cases)
        random.Random(3).shuffle(facts)
        by_kind = {"received": topics.received, "assigned": topics.assigned, "lifecycle": topics.lifecycle,
                   "sla": topics.sla}  # fmt: skip
        producer = make_producer(settings, "bench-reports")
        await producer.start()
        produced = time.perf_counter()
        try:
            futures = [
                await producer.send(by_kind[kind], e.to_json_bytes(), key=e.complaint_id.encode()) for kind, e in facts
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        _say(f"produced {len(facts):,} facts in {time.perf_counter() - produced:.1f} s; starting the service on them")
        proc = _start_service(env, port, tmp / "reporting.log")
        conn = await asyncpg.connect(url, server_settings={"search_path": "reporting"})
        try:
            started = time.perf_counter()
            first = None
            while time.perf_counter() - started < 600:
                done = await conn.fetchval("SELECT count(*) FROM facts")
                if done and first is None:
                    first = (time.perf_counter(), done)
                if done >= len(facts):
                    break
                await asyncio.sleep(0.2)
            span = time.perf_counter() - (first[0] if first else started)
            counted = done - (first[1] if first else 0)
            _say(f"projection from Kafka: {len(facts):,} facts of {args.kafka_cases:,} cases, "
                 f"{counted / span if span else float('nan'):,.0f} facts/s "
                 f"(load average {os.getloadavg()[0]:.1f})")  # fmt: skip
            async with httpx.AsyncClient(timeout=10) as plain:
                _say(_batch_figures((await plain.get(f"http://127.0.0.1:{port}/metrics")).text))
        finally:
            await conn.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--cases", type=int, default=1_000_000, help="cases loaded into the read model")
    parser.add_argument("--requests", type=int, default=400, help="summary requests timed (by department)")
    parser.add_argument("--kafka-cases", type=int, default=5000, help="cases whose facts go through Kafka")
    return parser


def run_reports_bench(args: argparse.Namespace) -> int:
    """Start PostgreSQL and Kafka unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS say where they are, run, stop."""
    from shared.devtools.infra.kafka_local import LocalKafka
    from shared.devtools.infra.postgres_local import LocalPostgres

    defaults = add_arguments(argparse.ArgumentParser()).parse_args([])
    for key, value in vars(defaults).items():
        if not hasattr(args, key):
            setattr(args, key, value)
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
    parser = add_arguments(argparse.ArgumentParser(prog="complaints bench reports", description=__doc__))
    return run_reports_bench(parser.parse_args(argv))


# fold_case and rollup_delta are what the service runs; importing them here keeps the bench on the same code.
__all__ = ["fold_case", "main", "rollup_delta", "run_reports_bench"]

if __name__ == "__main__":
    sys.exit(main())
