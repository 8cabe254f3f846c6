"""The fault suite's shared parts: the four services as processes on one world, a steady feed of raw traffic that
survives a broker going away, a snapshot of every topic, and the checks every scenario ends with.

The checks read only what is on the topics (and the reporting service's answer):
- every raw input (a record on an intake topic, or an HTTP complaint acknowledged with 202) is accounted for exactly
  once: a good one by its one canonical `complaint.received`, a bad one by its one dead letter, never both or neither;
- every assignment once (one event per `assignment_id`), every deadline's word once (per complaint, stage and round
  at most one warning, one breach, one met, and a breach next to a met only when the met supersedes it);
- no breach standing for a case resolved in time;
- a re-published event (same `event_id`) is byte-identical;
- the reporting service's summary equals the figures the facts give, by the same pure fold the service uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from services.intake.normalize import normalize
from services.reporting.projections import (
    TOTAL_DIMENSION,
    TOTAL_KEY,
    ZERO,
    Counts,
    _add,
    fold_case,
    summary,
)
from shared.devtools.traffic import RawMessage, TrafficGenerator
from shared.domain import Channel
from shared.events import ComplaintAssigned, ComplaintReceived, LifecycleChanged, SlaEvent
from shared.events.dlq import DeadLetter
from shared.events.sla import SlaEventType, Stage
from shared.kafka import Producers
from tests.support.infra import Env, ServiceProcess, short_clock_environ

RAW_CHANNELS = (Channel.HOTLINE, Channel.COMPLAINT_LINE, Channel.SUPERVISOR)
SERVICES = ("intake", "routing", "sla", "reporting")

# Seconds, on a clock that runs all day every day (docs/sla.md, "Short windows"): accept and first contact fall due
# within a minute of the assignment, so "an hour" of deadlines falls due while sla is away for one.
POLICY = {
    "accept": {"unit": "seconds", "amount": 20},
    "first_contact": {"unit": "seconds", "amount": 40},
    "resolve": {"unit": "seconds", "amount": 3600},  # never due within a scenario: the figures settle
    "callback": {"unit": "seconds", "amount": 60},
    "extension_day": {"unit": "seconds", "amount": 10},
}


def world_environ(env: Env, **extra: str) -> dict[str, str]:
    """The environment of every service of a scenario: the short SLA policy on an all-day calendar."""
    return short_clock_environ(
        env,
        POLICY,
        SLA_BREACH_GRACE_SECONDS="2",
        CONSUMER_MAX_RECORDS="100",
        KAFKA_SEND_TIMEOUT_S="5",
        DB_COMMAND_TIMEOUT_S="5",
        DB_CONNECT_TIMEOUT_S="5",
        HTTP_DB_TIMEOUT_S="5",
        LAG_INTERVAL_S="2",
        **extra,
    )


@dataclass
class World:
    """The four services of one scenario as processes (sla may have replicas), on the env's Kafka and database."""

    env: Env
    environ: dict[str, str]
    procs: dict[str, ServiceProcess] = field(default_factory=dict)

    def add(self, name: str, service: str | None = None) -> ServiceProcess:
        proc = ServiceProcess(service or name, self.environ, self.env.tmp / f"{name}.log")
        self.procs[name] = proc
        return proc

    async def start(self, *names: str) -> None:
        procs = [self.procs.get(name) or self.add(name) for name in names or tuple(self.procs)]
        await asyncio.gather(*(asyncio.to_thread(proc.start, 180.0) for proc in procs))

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{proc.log_tail(1500)}" for name, proc in self.procs.items())


class Feed:
    """Raw traffic from the seeded generator, produced in small chunks at a steady pace until told to stop (or a
    count is reached). A send that fails (the broker away) is retried with the same bytes: the intake topics, read
    at the end, are the inputs, so a record written twice is two inputs, each to be accounted for."""

    def __init__(self, env: Env, seed: int, tag: str, *, bad: float = 0.05, duplicates: float = 0.05) -> None:
        self.env = env
        self.gen = TrafficGenerator(seed=seed, duplicates=duplicates, bad=bad, run_tag=tag)
        self.messages: list[RawMessage] = []
        self.stop = asyncio.Event()
        self.failures = 0

    async def run(self, total: int, chunk: int = 20, pause_s: float = 0.1) -> None:
        producers = Producers(
            lambda: AIOKafkaProducer(
                bootstrap_servers=self.env.bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                max_batch_size=1024 * 1024,
                request_timeout_ms=5000,
                metadata_max_age_ms=2000,
            ),
            name="fault-feed",
        )
        await _retry(producers.start)
        try:
            while len(self.messages) < total and not self.stop.is_set():
                batch = [self.gen.next() for _ in range(min(chunk, total - len(self.messages)))]
                for msg in batch:
                    await self._send(producers, msg)
                self.messages.extend(batch)
                await asyncio.sleep(pause_s)
        finally:
            with contextlib.suppress(Exception):
                await producers.stop()

    async def _send(self, producers: Producers, msg: RawMessage) -> None:
        """One raw message, retried until the broker takes it. Through `Producers`: while the broker restarts, aiokafka
        drops a batch whose partition has had no leader for request_timeout_ms after numbering it, and every later
        batch of that producer is then refused as out of order; a bare producer never sends again (it did not, for a
        minute, in the broker-away scenario), so the spoilt producer is replaced."""
        topic = self.env.topics.intake(msg.channel)
        key = msg.key.encode() if msg.key else None
        for _ in range(60):
            try:
                await producers.send_all([(topic, key, msg.body)], timeout_s=15)
                return
            except Exception:  # noqa: BLE001 - the broker away: send the same bytes again
                self.failures += 1
                await asyncio.sleep(1.0)
        raise RuntimeError(f"could not produce to {topic} for a minute")


async def _retry(start: Any, attempts: int = 30) -> None:
    for i in range(attempts):
        try:
            await start()
            return
        except Exception:
            if i == attempts - 1:
                raise
            await asyncio.sleep(1.0)


@dataclass
class Snapshot:
    """Every record of the scenario's topics, read to their end at one moment."""

    env: Env
    records: dict[str, list[Any]]

    def of(self, topic: str) -> list[Any]:
        return self.records.get(topic, [])

    def events(self, topic: str, model: Any) -> list[Any]:
        """Distinct events (by event_id) of a topic, in order of first appearance."""
        seen: dict[str, Any] = {}
        for r in self.of(topic):
            event = model.model_validate_json(r.value)
            seen.setdefault(str(event.event_id), event)
        return list(seen.values())

    def received(self) -> list[ComplaintReceived]:
        return self.events(self.env.topics.received, ComplaintReceived)

    def assigned(self) -> list[ComplaintAssigned]:
        return self.events(self.env.topics.assigned, ComplaintAssigned)

    def lifecycle(self) -> list[LifecycleChanged]:
        return self.events(self.env.topics.lifecycle, LifecycleChanged)

    def sla(self) -> list[SlaEvent]:
        return self.events(self.env.topics.sla, SlaEvent)

    def letters(self) -> list[tuple[Any, DeadLetter]]:
        return [(r, DeadLetter.model_validate_json(r.value)) for r in self.of(self.env.topics.dlq)]


def fact_topics(env: Env) -> list[str]:
    t = env.topics
    return [*(t.intake(c) for c in RAW_CHANNELS), t.received, t.assigned, t.lifecycle, t.sla, t.dlq]


async def snapshot(env: Env, timeout_s: float = 60.0) -> Snapshot:
    """Read every topic of the scenario from the beginning to its end offsets as they are now."""
    names = fact_topics(env)
    consumer = AIOKafkaConsumer(bootstrap_servers=env.bootstrap, enable_auto_commit=False, group_id=None)
    await _retry(consumer.start)
    records: dict[str, list[Any]] = defaultdict(list)
    try:
        partitions: list[TopicPartition] = []
        for topic in names:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                with contextlib.suppress(Exception):
                    await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            partitions.extend(TopicPartition(topic, p) for p in parts)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        left = {tp for tp, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the topics to their end: {sorted(map(str, left))[:4]}")
            batch = await consumer.getmany(*left, timeout_ms=500, max_records=5000)
            for tp, recs in batch.items():
                records[tp.topic].extend(recs)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return Snapshot(env, dict(records))


# --- the checks ------------------------------------------------------------------------------------------------


def _raw_lookup(messages: Iterable[RawMessage]) -> dict[tuple[str, bytes], RawMessage]:
    return {(m.channel.value, m.body): m for m in messages}


def check_inputs(snap: Snapshot, messages: list[RawMessage], acknowledged: set[str] | None = None) -> list[str]:
    """Every raw input: one canonical event (good) or one dead letter (bad), never both, never neither."""
    problems: list[str] = []
    t = snap.env.topics
    lookup = _raw_lookup(messages)
    now = datetime.now(UTC)
    want_ids: set[str] = set(acknowledged or ())
    bad_offsets: set[tuple[str, int, int]] = set()
    good_offsets: set[tuple[str, int, int]] = set()
    for channel in RAW_CHANNELS:
        for r in snap.of(t.intake(channel)):
            msg = lookup.get((channel.value, r.value))
            if msg is None:
                problems.append(f"an input nobody sent at {r.topic}/{r.partition}/{r.offset}")
                continue
            where = (r.topic, r.partition, r.offset)
            if msg.bad_reason is None:
                event = normalize(channel, msg.body, now)
                assert isinstance(event, ComplaintReceived), msg
                want_ids.add(event.complaint_id)
                good_offsets.add(where)
            else:
                bad_offsets.add(where)
    copies: dict[str, set[bytes]] = defaultdict(set)
    for r in snap.of(t.received):
        copies[json.loads(r.value)["complaint_id"]].add(r.value)
    got = set(copies)
    if missing := want_ids - got:
        problems.append(f"{len(missing)} complaints lost, e.g. {sorted(missing)[:3]}")
    if extra := got - want_ids:
        problems.append(f"{len(extra)} complaints nobody sent, e.g. {sorted(extra)[:3]}")
    if twice := [cid for cid, v in copies.items() if len(v) > 1]:
        problems.append(f"{len(twice)} complaints with two different events, e.g. {twice[:3]}")
    letters: dict[tuple[str, int, int], set[bytes]] = defaultdict(set)
    for r, letter in snap.letters():
        if letter.source_topic in {t.intake(c) for c in RAW_CHANNELS}:
            assert letter.source_partition is not None
            assert letter.source_offset is not None
            letters[(letter.source_topic, letter.source_partition, letter.source_offset)].add(r.value)
    if missing_letters := bad_offsets - set(letters):
        problems.append(f"{len(missing_letters)} bad inputs without a dead letter")
    if both := good_offsets & set(letters):
        problems.append(f"{len(both)} good inputs with a dead letter too")
    if twice_l := [k for k, v in letters.items() if len(v) > 1]:
        problems.append(f"{len(twice_l)} bad inputs with two dead letters")
    return problems


def check_republished_identical(snap: Snapshot) -> list[str]:
    """The outbox may publish an event twice, but only byte for byte (consumers drop it by event_id)."""
    problems = []
    t = snap.env.topics
    for topic in (t.received, t.assigned, t.lifecycle, t.sla):
        seen: dict[str, set[bytes]] = defaultdict(set)
        for r in snap.of(topic):
            seen[json.loads(r.value)["event_id"]].add(r.value)
        if differ := [k for k, v in seen.items() if len(v) > 1]:
            problems.append(f"{topic}: {len(differ)} event ids with different bytes")
    return problems


def check_assignments(snap: Snapshot) -> list[str]:
    """Every assignment once; every complaint assigned (round 1)."""
    problems = []
    by_id: dict[str, set[str]] = defaultdict(set)
    for a in snap.assigned():
        by_id[a.assignment_id].add(str(a.event_id))
    if twice := [k for k, v in by_id.items() if len(v) > 1]:
        problems.append(f"{len(twice)} assignments made twice, e.g. {twice[:3]}")
    first_round = {a.complaint_id for a in snap.assigned() if a.round == 1}
    if unassigned := {r.complaint_id for r in snap.received()} - first_round:
        problems.append(f"{len(unassigned)} complaints never assigned, e.g. {sorted(unassigned)[:3]}")
    return problems


DONE_BY = {"accept": Stage.ACCEPT, "contact": Stage.FIRST_CONTACT, "resolve": Stage.RESOLVE}
"""The lifecycle cause that meets each department stage (the round and department must match the deadline's)."""


def check_deadlines(snap: Snapshot) -> list[str]:
    """Each deadline's words once; no breach standing for a stage done in time (a resolve above all)."""
    problems = []
    words: dict[tuple[str, Stage, int], dict[SlaEventType, list[SlaEvent]]] = defaultdict(lambda: defaultdict(list))
    for e in snap.sla():
        words[(e.complaint_id, e.stage, e.round)][e.type].append(e)
    superseded = {e.supersedes_event_id for e in snap.sla() if e.supersedes_event_id}
    for slot, kinds in words.items():
        for kind in (SlaEventType.WARNING, SlaEventType.BREACHED, SlaEventType.MET):
            if len(kinds.get(kind, [])) > 1:
                problems.append(f"{slot}: {kind.value} {len(kinds[kind])} times")
        standing = [b for b in kinds.get(SlaEventType.BREACHED, []) if str(b.event_id) not in superseded]
        if standing and kinds.get(SlaEventType.MET):
            problems.append(f"{slot}: both breached and met")
    done: dict[tuple[str, Stage, int, str | None], list[datetime]] = defaultdict(list)
    for c in snap.lifecycle():
        if (stage := DONE_BY.get(c.cause)) is not None:
            done[(c.complaint_id, stage, c.round, c.department)].append(c.at or c.occurred_at)
    for (cid, stage, rnd), kinds in words.items():
        for b in kinds.get(SlaEventType.BREACHED, []):
            in_time = [at for at in done.get((cid, stage, rnd, b.department), []) if at <= b.due_at]
            if in_time and str(b.event_id) not in superseded:
                problems.append(f"{cid} {stage.value} round {rnd}: a breach stands though done in time")
    return problems


# --- the reports ---------------------------------------------------------------------------------------------


def expected_summary(snap: Snapshot) -> tuple[dict[str, Any], tuple[date, date]] | None:
    """The department summary the facts give, by reporting's own pure fold, over the days the complaints came in."""
    facts: dict[str, list[Any]] = defaultdict(list)
    for getter in (snap.received, snap.assigned, snap.lifecycle, snap.sla):
        for fact in getter():
            facts[fact.complaint_id].append(fact)
    total: Counts = ZERO
    groups: dict[str, Counts] = {}
    days: list[date] = []
    for cid, case_facts in facts.items():
        contribution = fold_case(cid, case_facts).contribution
        if contribution.day is None:
            continue
        days.append(contribution.day)
        for (dimension, key), counts in contribution.rows.items():
            if (dimension, key) == (TOTAL_DIMENSION, TOTAL_KEY):
                total = _add(total, counts)
            elif dimension == "department":
                groups[key] = _add(groups.get(key, ZERO), counts)
    if not days:
        return None
    start, end = min(days), max(days)
    body = summary("department", groups, total, start=start, end=end, as_of=datetime.now(UTC))
    body.pop("as_of")
    return body, (start, end)


async def check_reports(env: Env, reporting: ServiceProcess, timeout_s: float = 150.0) -> list[str]:
    """Wait until the reporting service's summary equals what the facts on the topics give (the facts read again each
    round, as deadlines may still be firing); the last difference if it never does."""
    deadline = time.monotonic() + timeout_s
    last = "no complaint on the topics"
    headers = {"Authorization": f"Bearer {env.keys['reports']}"}
    async with httpx.AsyncClient(base_url=reporting.url, timeout=10, headers=headers) as http:
        while time.monotonic() < deadline:
            want = expected_summary(await snapshot(env))
            if want is not None:
                body, (start, end) = want
                params = {"from": start.isoformat(), "to": end.isoformat(), "group_by": "department"}
                resp = await http.get("/v1/reports/summary", params=params)
                got = resp.json() if resp.status_code == 200 else {"status": resp.status_code}
                got.pop("as_of", None)
                if got == body:
                    return []
                last = _diff(body, got) + await _read_model_consistency(env)
            await asyncio.sleep(1.0)
    return [f"reports differ from the facts: {last}"]


async def _read_model_consistency(env: Env) -> str:
    """Whether reporting's rollups still equal the sum of its own cases' contributions (a diagnosis, for the message)."""
    import asyncpg

    conn = await asyncpg.connect(env.database_url)
    try:
        rows = await conn.fetch("SELECT contribution FROM reporting.cases")
        rollup = await conn.fetchrow(
            "SELECT sum(received)::bigint AS received, sum(assignments)::bigint AS assignments"
            " FROM reporting.rollups WHERE dimension = 'total'"
        )
    finally:
        await conn.close()
    received = assignments = 0
    for row in rows:
        for dimension, _key, counts in json.loads(row["contribution"]).get("rows", []):
            if dimension == TOTAL_DIMENSION:
                received += counts[0]
                assignments += counts[7]
    return (
        f"; reporting's own cases sum to received={received} assignments={assignments},"
        f" its rollups hold received={rollup['received']} assignments={rollup['assignments']}"
    )


def _diff(want: dict[str, Any], got: dict[str, Any]) -> str:
    if "total" not in got:
        return f"answer {got}"
    total = {k: (v, got["total"].get(k)) for k, v in want["total"].items() if got["total"].get(k) != v}
    return f"total (want, got): {total}" if total else "groups differ"


# --- waiting -------------------------------------------------------------------------------------------------


async def wait_settled(
    env: Env, messages: list[RawMessage], acknowledged: set[str], timeout_s: float = 180.0
) -> Snapshot:
    """Wait until every input is accounted for and every complaint assigned (or the time is up: the checks then
    say what is missing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        snap = await snapshot(env)
        if not check_inputs(snap, messages, acknowledged) and not check_assignments(snap):
            return snap
        if time.monotonic() > deadline:
            return snap
        await asyncio.sleep(1.0)


async def processed(url: str, metric: str, at_least: float, timeout_s: float = 90.0) -> float:
    """Wait until a service's counter reaches `at_least` (the fault lands mid-stream); its value."""
    from tests.support.infra import metric_sum

    deadline = time.monotonic() + timeout_s
    value = 0.0
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                value = metric_sum((await http.get("/metrics")).text, metric)
                if value >= at_least:
                    return value
            await asyncio.sleep(0.2)
    return value


# --- the summary table ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    scenario: str
    sent: int = 0
    outcome: str = "not run"
    detail: str = ""


RESULTS: list[Outcome] = []


def table(results: list[Outcome]) -> str:
    rows = [("scenario", "messages sent", "outcome")] + [(r.scenario, str(r.sent), r.outcome) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_path(base: Path) -> Path:
    return base / "fault-suite.txt"
