"""`complaints bench pipeline`: the whole product end to end on real Apache Kafka and PostgreSQL, every service its
own process, with a bare aiokafka loop over the same messages as the baseline. Prints figures; asserts nothing.

Phases, in one run, on one database made for the run (dropped after) and one topic prefix:
1. backlog: N raw messages (all channels, 5 % duplicates, 3 % bad) are put on the raw topics before anything runs;
2. baseline: a bare aiokafka consume → validate (JSON parse, an object) → produce (acks=all) → commit loop
   drains those same N messages: what Kafka and Python alone do on this machine;
3. pipeline drain: intake, routing (1..3 replicas), sla and reporting start as processes (`complaints run`), and
   drain the backlog; throughput = distinct complaints seen on `complaint.assigned` (and on the resolve
   `deadline_set`) per second, first to last; CPU each service spent (/proc/<pid>/stat) per 1,000 complaints;
4. latency: raw messages at fixed rates (default 100, 500, 1,000/s) for `--seconds` each; latency = from the send
   of a raw message to the moment its first `complaint.assigned` (and its resolve `deadline_set`) is read back;
   a rate is "sustained" when every complaint came out and the last one within a second of the last send. Each
   phase starts once the services have gone quiet (`_settle`), and says per hop where the time went
   (`hop_breakdown`: raw send → `complaints.received` produced → `complaint.assigned` produced → read back, from
   the Kafka record timestamps), the CPU each service spent per 1,000 complaints, and each consumer group's batches.
Resident memory (VmRSS and its peak VmHWM from /proc) of each service at the end. `--json FILE` writes it all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from shared.auth import new_key
from shared.devtools.infra.ports import die_with_parent, free_port
from shared.devtools.traffic import RawMessage, TrafficGenerator
from shared.kafka import ensure_topics
from shared.migrate import migrate
from shared.settings import Settings
from shared.topics import Topics

SERVICES = ("intake", "routing", "sla", "reporting")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _say(text: str) -> None:
    print(text, flush=True)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (fields 14 and 15 of /proc/<pid>/stat)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB from /proc/<pid>/status."""
    found = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in found:
                found[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return found["VmRSS"], found["VmHWM"]


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def label(self) -> str:
        return f"{self.name}:{self.proc.pid}"


@dataclass
class Watch:
    """What the output reader has seen: per complaint, when its first assignment and resolve deadline_set came."""

    assigned: dict[str, float] = field(default_factory=dict)
    deadline: dict[str, float] = field(default_factory=dict)
    dlq: int = 0
    received_ms: dict[str, int] = field(default_factory=dict)
    """Per complaint, the Kafka timestamp (the producer's clock: when intake's relay sent it) of its first
    `complaints.received`; read only in the latency phases."""
    assigned_ms: dict[str, int] = field(default_factory=dict)
    """The same for its first `complaint.assigned` (routing's relay)."""
    read_wall: dict[str, float] = field(default_factory=dict)
    """Wall-clock time (s) this reader read its first `complaint.assigned`."""


HOPS = ("intake", "routing", "read_back")
"""The three hops of raw → assigned, from wall-clock stamps that all come from this machine's one clock:
intake = raw send → `complaints.received` produced (bench producer, broker, intake's fetch, transaction and relay);
routing = received produced → `complaint.assigned` produced (broker, routing's fetch, transaction and relay);
read_back = assigned produced → read by the bench (the relay's linger and acks=all, the bench's own fetch)."""


def hop_breakdown(
    sent_wall: dict[str, float], received_ms: dict[str, int], assigned_ms: dict[str, int], read_wall: dict[str, float]
) -> dict[str, dict[str, float | None]]:
    """p50/p95/p99 (ms) of each hop in HOPS over the complaints seen at both its ends; `sent_wall` and `read_wall`
    in seconds, the Kafka timestamps in milliseconds. A hop under 0 (clock granularity) counts as 0."""
    hops: dict[str, list[float]] = {h: [] for h in HOPS}
    for cid, sent in sent_wall.items():
        received = received_ms.get(cid)
        assigned = assigned_ms.get(cid)
        read = read_wall.get(cid)
        if received is not None:
            hops["intake"].append(max(0.0, received / 1000 - sent))
        if received is not None and assigned is not None:
            hops["routing"].append(max(0.0, (assigned - received) / 1000))
        if assigned is not None and read is not None:
            hops["read_back"].append(max(0.0, read - assigned / 1000))
    return {h: {f"p{p}": _ms(_pct(values, p)) for p in (50, 95, 99)} | {"n": len(values)} for h, values in hops.items()}


class Progress:
    """One progress line, rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last = 0.0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.5 if self._tty else 5.0):
            return
        self._last = now
        line = f"[{time.strftime('%H:%M:%S')}] {text}  (load {_loadavg()})"
        if self._tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self._tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


async def _reader(
    bootstrap: str, topics: Topics, watch: Watch, stop: asyncio.Event, ready: asyncio.Event, *, from_end: bool
) -> None:
    """Read `complaint.assigned`, `complaints.sla` and the dead letters, from the start of the run or (latency
    phases: reading the earlier phases' events would hold up the sender in this same loop) from their ends, each
    partition assigned and positioned before `ready` is set. From the ends it also reads `complaints.received`, and
    keeps the Kafka timestamps of both topics for the per-hop breakdown (`hop_breakdown`)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        probe = AIOKafkaProducer(bootstrap_servers=bootstrap)  # its partitions_for waits for the metadata
        await probe.start()
        try:
            tps = [
                TopicPartition(topic, p)
                for topic in (topics.assigned, topics.sla, topics.dlq, *((topics.received,) if from_end else ()))
                for p in sorted(await probe.partitions_for(topic))
            ]
        finally:
            await probe.stop()
        consumer.assign(tps)
        if from_end:
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
        else:
            await consumer.seek_to_beginning(*tps)
        ready.set()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50, max_records=5000)
            now = time.perf_counter()
            wall = time.time()
            for tp, records in batch.items():
                if tp.topic == topics.dlq:
                    watch.dlq += len(records)
                    continue
                for r in records:
                    doc = json.loads(r.value)
                    cid = doc.get("complaint_id")
                    if not isinstance(cid, str):
                        continue
                    if tp.topic == topics.assigned:
                        watch.assigned.setdefault(cid, now)
                        watch.assigned_ms.setdefault(cid, r.timestamp)
                        watch.read_wall.setdefault(cid, wall)
                    elif tp.topic == topics.received:
                        watch.received_ms.setdefault(cid, r.timestamp)
                    elif doc.get("type") == "deadline_set" and doc.get("stage") == "resolve":
                        watch.deadline.setdefault(cid, now)
    finally:
        await consumer.stop()


def _producer(bootstrap: str, linger_ms: int) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=1024 * 1024,
    )


async def _produce_all(bootstrap: str, topics: Topics, messages: list[RawMessage]) -> float:
    producer = _producer(bootstrap, 5)
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for m in messages:
            key = m.key.encode() if m.key else None
            pending.append(await producer.send(topics.intake(m.channel), m.body, key=key))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def _valid(value: bytes | None) -> bool:
    try:
        doc = json.loads(value or b"")
    except ValueError:
        return False
    return isinstance(doc, dict) and bool(doc)


async def _baseline(bootstrap: str, topics: Topics, count: int, progress: Progress) -> float:
    """Consume the raw backlog, validate each record, publish the valid ones (acks=all), commit per batch."""
    consumer = AIOKafkaConsumer(
        *topics.raw(),
        bootstrap_servers=bootstrap,
        group_id=f"{topics.prefix}baseline",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=500,
        fetch_max_wait_ms=100,
    )
    producer = _producer(bootstrap, 5)
    await consumer.start()
    await producer.start()
    seen = 0
    started: float | None = None
    out = f"{topics.prefix}bench.baseline"
    try:
        while seen < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                continue
            started = started or time.perf_counter()
            futures = [await producer.send(out, r.value, key=r.key) for r in records if _valid(r.value)]
            await asyncio.gather(*futures)
            await consumer.commit()
            seen += len(records)
            progress.show(f"baseline: {seen:,} of {count:,} consumed")
    finally:
        await consumer.stop()
        await producer.stop()
    return seen / (time.perf_counter() - (started or time.perf_counter()))


def _start_services(env: dict[str, str], work: Path, replicas: int) -> list[Service]:
    """Called from the main thread: PR_SET_PDEATHSIG follows the thread that started a child, and a worker
    thread's end would stop the services mid-run."""
    services: list[Service] = []
    taken: set[int] = set()
    for name in SERVICES:
        for _ in range(replicas if name == "routing" else 1):
            port = free_port()
            while port in taken:  # free now, but not yet bound by the service given it a moment ago
                port = free_port()
            taken.add(port)
            proc = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "shared.devtools.cli", "run", name, "--port", str(port)],
                env={**env, "HTTP_PORT": str(port)},
                stdout=(work / f"{name}-{port}.log").open("wb"),
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - only a prctl call: dies with the bench, even killed
            )
            services.append(Service(name, proc, port))
    return services


def _wait_started(services: list[Service], work: Path, timeout_s: float, progress: Progress) -> None:
    try:
        _wait_healthy(services, work, timeout_s, progress)
    except BaseException:
        _stop(services)
        raise


def _wait_healthy(services: list[Service], work: Path, timeout_s: float, progress: Progress) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = list(services)
    while waiting and time.monotonic() < deadline:
        for svc in list(waiting):
            if svc.proc.poll() is not None:
                log = (work / f"{svc.name}-{svc.port}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{svc.name} exited with {svc.proc.returncode}:\n{log}")
            try:
                if httpx.get(f"http://127.0.0.1:{svc.port}/healthz", timeout=2).status_code == 200:
                    waiting.remove(svc)
            except httpx.HTTPError:
                pass
        progress.show(f"starting services: {len(services) - len(waiting)} of {len(services)} up")
        time.sleep(0.3)
    if waiting:
        raise RuntimeError(f"services not up after {timeout_s:.0f} s: {[s.name for s in waiting]}")


# Where the time goes: a sample counts for the bucket of the innermost frame of its stack that one names (so
# pydantic called from a handler that FastStream called counts as pydantic); waiting counts only as the leaf.
PROFILE_BUCKETS = (
    ("waiting (select, idle threads)", ("EpollSelector.select", "Condition.wait", "main_loop (uvicorn")),
    ("pydantic validation / serialization", ("pydantic", "model_validate", "model_dump")),
    ("JSON encode / decode", ("json/", "orjson", "json.py", "(json)")),
    ("asyncpg (SQL round trips, codecs)", ("asyncpg",)),
    ("aiokafka (fetch, produce, protocol)", ("aiokafka",)),
    ("the project's own code (pure logic, handlers, SQL building)", ("services/", "shared/")),
    ("FastStream dispatch", ("faststream",)),
    ("prometheus metrics", ("prometheus_client",)),
    ("logging", ("logging/",)),
    ("asyncio event loop", ("asyncio/", "uvloop")),
)


def _bucket(frames: list[str]) -> str:
    waiting, *others = PROFILE_BUCKETS
    if any(m in frames[-1] for m in waiting[1]):
        return waiting[0]
    for frame in reversed(frames):
        for name, marks in others:
            if any(m in frame for m in marks):
                return name
    return "other Python"


def _start_profilers(services: list[Service], where: Path) -> list[tuple[Service, subprocess.Popen[bytes], Path]]:
    """`py-spy record` on every service for the drain (raw collapsed stacks, non-idle samples only)."""
    import shutil

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        _say("--profile: py-spy is not installed (`.venv/bin/pip install py-spy`): no profile taken")
        return []
    where.mkdir(parents=True, exist_ok=True)
    started = []
    for svc in services:
        out = where / f"{svc.name}-{svc.proc.pid}.txt"
        cmd = [spy, "record", "--pid", str(svc.proc.pid), "--rate", "50", "--format", "raw", "-o", str(out)]
        started.append((svc, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out))  # noqa: S603
    return started


def _stop_profilers(profilers: list[tuple[Service, subprocess.Popen[bytes], Path]]) -> dict[str, Any]:
    """Stop py-spy (SIGINT: it writes its file), then sum each service's samples into PROFILE_BUCKETS and its own
    top frames (self time)."""
    import signal

    for _, proc, _ in profilers:
        proc.send_signal(signal.SIGINT)
    summary: dict[str, Any] = {}
    for svc, proc, out in profilers:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        buckets: dict[str, int] = {}
        leaves: dict[str, int] = {}
        total = 0
        text = out.read_text(errors="replace") if out.exists() else ""
        for line in text.splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            bucket = _bucket(frames)
            buckets[bucket] = buckets.get(bucket, 0) + n
            leaves[frames[-1]] = leaves.get(frames[-1], 0) + n
        entry = summary.setdefault(svc.name, {"samples": 0, "buckets": {}, "top_self": {}})
        entry["samples"] += total
        for k, v in buckets.items():
            entry["buckets"][k] = entry["buckets"].get(k, 0) + v
        for k, v in sorted(leaves.items(), key=lambda kv: -kv[1])[:12]:
            entry["top_self"][k] = entry["top_self"].get(k, 0) + v
    for name, entry in summary.items():
        total = max(entry["samples"], 1)
        shares = sorted(entry["buckets"].items(), key=lambda kv: -kv[1])
        _say(f"profile {name} ({entry['samples']} samples): " + ", ".join(f"{k} {v / total:.0%}" for k, v in shares))
    return summary


def _cpu_by_service(services: list[Service]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for svc in services:
        totals[svc.name] = totals.get(svc.name, 0.0) + _cpu_s(svc.proc.pid)
    return totals


IDLE_WINDOW_S = 10.0
"""After the latency phases, the CPU the idle services use is measured over this long (their polling, heartbeats,
gauges): a latency fix must not buy its figures with busy polling."""

SETTLE_CORES = 0.3
"""A latency phase starts when the services together used less than this much of a core over a second: the earlier
phases' work (reporting and sla behind on the backlog) would otherwise share the cores with it."""


async def _settle(services: list[Service], progress: Progress, timeout_s: float = 90.0) -> tuple[float, float]:
    """Wait for the services to go quiet (SETTLE_CORES); (seconds waited, cores they used in the last second)."""
    started = time.perf_counter()
    used = 0.0
    while time.perf_counter() - started < timeout_s:
        before = sum(_cpu_by_service(services).values())
        await asyncio.sleep(1.0)
        used = sum(_cpu_by_service(services).values()) - before
        progress.show(f"waiting for the services to go quiet: {used:.2f} cores")
        if used < SETTLE_CORES:
            break
    progress.done()
    return time.perf_counter() - started, used


async def _batch_stats(services: list[Service]) -> dict[str, list[float]]:
    """Per consumer group, from every service's `/metrics`: [batches, seconds in them (commit included), records]."""
    from prometheus_client.parser import text_string_to_metric_families

    stats: dict[str, list[float]] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for svc in services:
            try:
                text = (await client.get(f"http://127.0.0.1:{svc.port}/metrics")).text
            except httpx.HTTPError:
                continue
            for family in text_string_to_metric_families(text):
                if family.name not in ("consumer_batch_seconds", "consumer_batch_records"):
                    continue
                for sample in family.samples:
                    group = sample.labels.get("group", "?")
                    entry = stats.setdefault(group, [0.0, 0.0, 0.0])
                    if sample.name == "consumer_batch_seconds_count":
                        entry[0] += sample.value
                    elif sample.name == "consumer_batch_seconds_sum":
                        entry[1] += sample.value
                    elif sample.name == "consumer_batch_records_sum":
                        entry[2] += sample.value
    return stats


def batch_summary(before: dict[str, list[float]], after: dict[str, list[float]], prefix: str) -> dict[str, Any]:
    """Per consumer group (prefix taken off), over a phase: batches, records per batch and ms per batch."""
    out: dict[str, Any] = {}
    for group, (n, secs, records) in sorted(after.items()):
        n0, s0, r0 = before.get(group, [0.0, 0.0, 0.0])
        if n - n0 <= 0:
            continue
        batches = n - n0
        out[group.removeprefix(prefix)] = {
            "batches": int(batches),
            "records_per_batch": round((records - r0) / batches, 1),
            "ms_per_batch": round((secs - s0) * 1000 / batches, 1),
        }
    return out


async def _wait_for(watch: Watch, ids: set[str], timeout_s: float, progress: Progress, label: str) -> tuple[int, int]:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        assigned = sum(1 for c in ids if c in watch.assigned)
        deadlines = sum(1 for c in ids if c in watch.deadline)
        progress.show(f"{label}: {assigned:,} assigned, {deadlines:,} resolve deadlines of {len(ids):,}")
        if assigned >= len(ids) and deadlines >= len(ids):
            break
        await asyncio.sleep(0.1)
    return sum(1 for c in ids if c in watch.assigned), sum(1 for c in ids if c in watch.deadline)


def _rate(stamps: list[float], start: float) -> float | None:
    """Complaints a second from `start` (first output or first send) to the last output."""
    if not stamps:
        return None
    span = max(stamps) - start
    return len(stamps) / span if span > 0 else None


def drain_rate(stamps: list[float], spawned_at: float) -> float | None:
    """The backlog's rate: from its first output to its last; a backlog small enough to come out in one poll has no
    such span, and is then timed from the moment the services were started (not from when they answered their
    health check: under load a small backlog can be out before that, which left the run without a rate)."""
    if not stamps:
        return None
    return _rate(stamps, min(stamps)) or _rate(stamps, spawned_at)


async def _drain_phase(
    bootstrap: str, topics: Topics, args: argparse.Namespace, env: dict[str, str], work: Path, progress: Progress,
    result: dict[str, Any],
) -> list[Service]:  # fmt: skip
    gen = TrafficGenerator(seed=11, duplicates=0.05, bad=0.03, run_tag="PIPE")
    messages = [gen.next() for _ in range(args.backlog)]
    ids = {f"{m.channel.value}:{m.key}" for m in messages if m.bad_reason is None}
    bad = sum(m.bad_reason is not None for m in messages)
    _say(
        f"backlog: {len(messages):,} raw messages ({len(ids):,} distinct complaints, {bad} bad, "
        f"{len(messages) - len(ids) - bad} duplicates), avg {sum(len(m.body) for m in messages) // len(messages)} B"
    )
    produce_s = await _produce_all(bootstrap, topics, messages)
    _say(f"produce (acks=all, idempotent)          {len(messages) / produce_s:>10,.0f} msg/s   (load {_loadavg()})")
    base = await _baseline(bootstrap, topics, len(messages), progress)
    progress.done()
    _say(f"baseline consume→validate→produce      {base:>10,.0f} msg/s   (load {_loadavg()})")
    result["baseline_per_s"] = round(base)

    watch = Watch()
    stop = asyncio.Event()
    reader = asyncio.create_task(_reader(bootstrap, topics, watch, stop, asyncio.Event(), from_end=False))
    spawned_at = time.perf_counter()
    services = _start_services(env, work, args.routing_replicas)
    await asyncio.to_thread(_wait_started, services, work, args.start_timeout, progress)
    cpu_before = _cpu_by_service(services)
    profilers = _start_profilers(services, args.profile) if args.profile else []
    done_assigned, done_deadline = await _wait_for(watch, ids, args.timeout, progress, "backlog drain")
    progress.done()
    cpu_after = _cpu_by_service(services)
    if profilers:
        result["profile"] = _stop_profilers(profilers)
    a_stamps = [watch.assigned[c] for c in ids if c in watch.assigned]
    d_stamps = [watch.deadline[c] for c in ids if c in watch.deadline]
    per_s = drain_rate(a_stamps, spawned_at)
    d_per_s = drain_rate(d_stamps, spawned_at)
    result.update(
        pipeline_per_s=round(per_s) if per_s else None,
        deadline_set_per_s=round(d_per_s) if d_per_s else None,
        ratio=round(per_s / base, 3) if per_s and base else None,
        backlog={"messages": len(messages), "complaints": len(ids), "assigned": done_assigned,
                 "deadline_set": done_deadline, "dead_letters_seen": watch.dlq, "load": _loadavg()},
    )  # fmt: skip
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    done = max(done_assigned, 1)
    result["cpu_s_per_1000"] = {name: round(secs * 1000 / done, 3) for name, secs in cpu.items()}
    _say(
        f"pipeline backlog → complaint.assigned  {per_s or float('nan'):>10,.0f} /s      "
        f"({done_assigned:,} of {len(ids):,}; first to last; load {_loadavg()})"
    )
    _say(f"pipeline backlog → resolve deadline_set{d_per_s or float('nan'):>10,.0f} /s      ({done_deadline:,})")
    _say(f"{'':<39}{(per_s or 0) / base if base else float('nan'):>10.2f} of the baseline's rate")
    _say(
        "CPU per 1,000 complaints (drain): " + ", ".join(f"{n} {v:.2f} s" for n, v in result["cpu_s_per_1000"].items())
    )
    stop.set()
    await asyncio.gather(reader, return_exceptions=True)
    return services


async def _latency_phase(
    bootstrap: str,
    topics: Topics,
    rate: float,
    seconds: float,
    seed: int,
    progress: Progress,
    services: list[Service] | None = None,
) -> dict[str, Any]:
    gen = TrafficGenerator(seed=seed, duplicates=0.0, bad=0.0, run_tag=f"L{seed}")
    watch = Watch()
    stop = asyncio.Event()
    sent_at: dict[str, float] = {}
    sent_wall: dict[str, float] = {}
    ready = asyncio.Event()
    settle_s, quiet_cores = await _settle(services or [], progress)
    reader = asyncio.create_task(_reader(bootstrap, topics, watch, stop, ready, from_end=True))
    producer = _producer(bootstrap, 0)
    await producer.start()
    try:
        for topic in topics.raw():
            await producer.partitions_for(topic)  # metadata before the clock starts
        async with asyncio.timeout(60):
            await ready.wait()
        cpu_before = _cpu_by_service(services or [])
        batches_before = await _batch_stats(services or [])
        started = time.perf_counter()
        n = 0
        while time.perf_counter() - started < seconds:
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            msg = gen.next()
            assert msg.key is not None
            sent_at[f"{msg.channel.value}:{msg.key}"] = time.perf_counter()
            sent_wall[f"{msg.channel.value}:{msg.key}"] = time.time()
            await producer.send(topics.intake(msg.channel), msg.body, key=msg.key.encode())
            n += 1
            if n % 100 == 0:
                progress.show(f"latency at {rate:,.0f}/s: {n:,} sent, {len(watch.assigned):,} assigned")
        await producer.flush()
        last_send = time.perf_counter()
        await _wait_for(watch, set(sent_at), 30.0, progress, f"latency at {rate:,.0f}/s")
        progress.done()
        cpu_after = _cpu_by_service(services or [])
        batches_after = await _batch_stats(services or [])
    finally:
        stop.set()
        await asyncio.gather(reader, return_exceptions=True)
        await producer.stop()
    lat_a = [watch.assigned[c] - t for c, t in sent_at.items() if c in watch.assigned]
    lat_d = [watch.deadline[c] - t for c, t in sent_at.items() if c in watch.deadline]
    last_out = max((watch.assigned[c] for c in sent_at if c in watch.assigned), default=float("inf"))
    sustained = len(lat_a) == len(sent_at) and last_out - last_send < 1.0
    a = {f"p{p}": _ms(_pct(lat_a, p)) for p in (50, 95, 99)} | {"max": _ms(max(lat_a, default=None))}
    d = {f"p{p}": _ms(_pct(lat_d, p)) for p in (50, 95, 99)}
    row: dict[str, Any] = {
        "rate": rate, "sent": len(sent_at), "assigned": len(lat_a), "deadline_set": len(lat_d),
        "sustained": sustained, "load": _loadavg(),
        "settle_s": round(settle_s, 1), "quiet_cpu_cores": round(quiet_cores, 3),
        "assigned_ms": a, "deadline_set_ms": d,
        "hops_ms": hop_breakdown(sent_wall, watch.received_ms, watch.assigned_ms, watch.read_wall),
        "cpu_s_per_1000": {
            name: round((cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / max(len(lat_a), 1), 3)
            for name in cpu_after
        },
        "batches": batch_summary(batches_before, batches_after, topics.prefix),
    }  # fmt: skip
    _say(
        f"at {rate:>6,.0f}/s x {seconds:.0f} s  raw → assigned p50 {a['p50']} p95 {a['p95']} p99 {a['p99']} "
        f"max {a['max']} ms; → resolve deadline_set p50 {d['p50']} p99 {d['p99']} ms; "
        f"{len(lat_a)}/{len(sent_at)} out, {'sustained' if sustained else 'NOT sustained'} (load {_loadavg()})"
    )
    _say(
        f"{'':<17}per hop (p50 / p99 ms): "
        + "; ".join(f"{h} {v['p50']} / {v['p99']}" for h, v in row["hops_ms"].items())
        + f"; started after {settle_s:.0f} s of settling (services then at {quiet_cores:.2f} cores)"
        + "; CPU s per 1,000: "
        + ", ".join(f"{n} {v:.2f}" for n, v in row["cpu_s_per_1000"].items())
    )
    _say(
        f"{'':<17}batches (n, records/batch, ms/batch): "
        + "; ".join(
            f"{g} {b['batches']} {b['records_per_batch']} {b['ms_per_batch']}" for g, b in row["batches"].items()
        )
    )
    return row


async def _create_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # the name is ours: pipe_bench_<digits>
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


def _stop(services: list[Service]) -> None:
    for svc in services:
        if svc.proc.poll() is None:
            svc.proc.terminate()
    for svc in services:
        try:
            svc.proc.wait(30)
        except subprocess.TimeoutExpired:
            svc.proc.kill()
            svc.proc.wait(10)


async def _run(args: argparse.Namespace, server_url: str, bootstrap: str, work: Path) -> dict[str, Any]:
    progress = Progress()
    stamp = int(time.time())
    name = f"pipe_bench_{stamp}"
    prefix = f"pipe{stamp}."
    topics = Topics(prefix)
    url = await _create_database(server_url, name)
    services: list[Service] = []
    result: dict[str, Any] = {
        "machine_cores": os.cpu_count(), "routing_replicas": args.routing_replicas, "load_at_start": _loadavg(),
    }  # fmt: skip
    try:
        settings = Settings(kafka_bootstrap_servers=bootstrap, database_url=url, topic_prefix=prefix)
        await migrate(url, SERVICES)
        await ensure_topics(
            settings, [*topics.all(), f"{prefix}bench.baseline"], log_append_time=topics.stamped_by_broker()
        )
        _, line = new_key("admin")
        (work / "keys.yaml").write_text(line)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_URL", "TOPIC_PREFIX"))},
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DATABASE_URL": url,
            "TOPIC_PREFIX": prefix,
            "API_KEYS_FILE": str(work / "keys.yaml"),
            "LOG_LEVEL": "WARNING",
        }
        _say(
            f"machine: {os.cpu_count()} cores, load {_loadavg()}; Kafka, PostgreSQL, the services "
            f"(routing x{args.routing_replicas}) and this load generator on the same box"
        )
        services = await _drain_phase(bootstrap, topics, args, env, work, progress, result)
        result["latency"] = []
        for i, rate in enumerate(args.rates):
            result["latency"].append(
                await _latency_phase(bootstrap, topics, rate, args.seconds, 100 + i, progress, services)
            )
        at_500 = next((r for r in result["latency"] if r["rate"] == 500), None)
        result["p50_ms_at_500"] = at_500["assigned_ms"]["p50"] if at_500 else None
        result["p99_ms_at_500"] = at_500["assigned_ms"]["p99"] if at_500 else None
        await _settle(services, progress)
        idle_before = _cpu_by_service(services)
        await asyncio.sleep(IDLE_WINDOW_S)
        idle_after = _cpu_by_service(services)
        result["idle_cpu_cores"] = {
            name: round((idle_after[name] - idle_before.get(name, 0.0)) / IDLE_WINDOW_S, 3) for name in idle_after
        }
        _say(
            f"idle (nothing sent, {IDLE_WINDOW_S:.0f} s), cores used: "
            + ", ".join(f"{n} {v:.3f}" for n, v in result["idle_cpu_cores"].items())
        )
        rss: dict[str, float] = {}
        peak: dict[str, float] = {}
        for svc in services:
            now_mb, hwm_mb = _rss_mb(svc.proc.pid)
            rss[svc.name] = max(rss.get(svc.name, 0.0), round(now_mb, 1))
            peak[svc.name] = max(peak.get(svc.name, 0.0), round(hwm_mb, 1))
        result["rss_mb"] = rss
        result["rss_peak_mb"] = peak
        result["load_at_end"] = _loadavg()
        _say("resident memory (MB, now / peak): " + ", ".join(f"{n} {rss[n]:.0f} / {peak[n]:.0f}" for n in rss))
    finally:
        _stop(services)
        await _drop_database(server_url, name)
    return result


def _table(result: dict[str, Any]) -> str:
    rows = [
        ("complaints/s backlog → assigned", f"{result.get('pipeline_per_s') or 0:,}"),
        ("complaints/s backlog → resolve deadline_set", f"{result.get('deadline_set_per_s') or 0:,}"),
        ("baseline (bare aiokafka) msg/s", f"{result.get('baseline_per_s') or 0:,}"),
        ("ratio pipeline / baseline", f"{result.get('ratio')}"),
    ]
    for row in result.get("latency", []):
        a = row["assigned_ms"]
        rows.append(
            (
                f"raw → assigned at {row['rate']:,.0f}/s (p50/p95/p99 ms)",
                f"{a['p50']} / {a['p95']} / {a['p99']}{'' if row['sustained'] else '  (not sustained)'}",
            )
        )
    for name, mb in result.get("rss_mb", {}).items():
        rows.append((f"RSS {name} MB (peak)", f"{mb:.0f} ({result['rss_peak_mb'][name]:.0f})"))
    for name, cpu in result.get("cpu_s_per_1000", {}).items():
        rows.append((f"CPU s per 1,000 complaints, {name}", f"{cpu:.2f}"))
    rows.append(("load average start → end", f"{result.get('load_at_start')} → {result.get('load_at_end')}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'figure':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--backlog", type=int, default=20_000, help="raw messages in the backlog drain")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each fixed-rate latency phase")
    parser.add_argument("--rates", default="100,500,1000", help="fixed rates of the latency phases, comma-separated")
    parser.add_argument("--routing-replicas", type=int, default=1, help="routing processes (one consumer group)")
    parser.add_argument("--timeout", type=float, default=300.0, help="longest wait for the backlog to drain")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="longest wait for the services to start")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR", help="py-spy every service in the drain")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the figures as JSON here")
    return parser


def run_pipeline_bench(args: argparse.Namespace) -> int:
    """Start PostgreSQL and Kafka unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS say where they are, run, stop."""
    from shared.devtools.infra.kafka_local import LocalKafka
    from shared.devtools.infra.postgres_local import LocalPostgres

    defaults = add_arguments(argparse.ArgumentParser()).parse_args([])
    for key, value in vars(defaults).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    rates = [float(x) for x in str(args.rates).split(",") if x.strip()]
    if not rates or min(rates) <= 0 or args.backlog < 1 or args.routing_replicas < 1:
        _say("error: --rates must be positive numbers, --backlog and --routing-replicas at least 1")
        return 2
    args.rates = rates
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a fresh topic's first sends retry: not worth a line each
    kafka = pg = None
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        server_url = os.environ.get("DATABASE_URL")
        if not server_url:
            pg = LocalPostgres().start()
            server_url = pg.url
        if not bootstrap:
            kafka = LocalKafka().start()
            bootstrap = kafka.bootstrap
        result = asyncio.run(_run(args, server_url, bootstrap, work))
    finally:
        if kafka is not None:
            kafka.stop()
        if pg is not None:
            pg.stop()
    _say("")
    _say(_table(result))
    _say(f"(service logs in {work})")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        _say(f"figures written to {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="complaints bench pipeline", description=__doc__))
    return run_pipeline_bench(parser.parse_args(argv))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
