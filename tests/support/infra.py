"""Test harness for the real parts: a shared Apache Kafka and PostgreSQL for the session, an isolated database and
topic prefix per test, service processes that can be killed, and helpers to produce and collect messages."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from shared.auth import new_key
from shared.calendar import as_local
from shared.devtools.infra.ports import die_with_parent, free_port
from shared.settings import Settings
from shared.topics import Topics

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    """One test's world: its own database and topic prefix on the shared servers, and its keys."""

    bootstrap: str
    database_url: str
    prefix: str
    keys_file: Path
    keys: dict[str, str]
    tmp: Path

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    def settings(self) -> Settings:
        return Settings(
            kafka_bootstrap_servers=self.bootstrap,
            database_url=self.database_url,
            topic_prefix=self.prefix,
            api_keys_file=self.keys_file,
        )

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_URL", "TOPIC_PREFIX"))}
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            DATABASE_URL=self.database_url,
            TOPIC_PREFIX=self.prefix,
            API_KEYS_FILE=str(self.keys_file),
            LOG_FORMAT="json",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env


def short_clock_environ(env: Env, policy: Mapping[str, Any], **extra: str) -> dict[str, str]:
    """A service environment with the SLA clock on seconds (docs/sla.md "Short windows"): `policy` (windows in
    seconds) written for SLA_POLICY, every day around today a workday, the clock running all day; `extra` wins."""
    policy_file = env.tmp / "sla-policy.json"
    policy_file.write_text(json.dumps(policy))
    overrides = env.tmp / "calendar-overrides.yaml"
    today = as_local(datetime.now(UTC)).date()
    days = [(today + timedelta(days=d)).isoformat() for d in range(-3, 4)]
    overrides.write_text("workdays: [" + ", ".join(f'"{d}"' for d in days) + "]\n")
    settings = {
        "SLA_POLICY": str(policy_file),
        "SLA_CALENDAR_OVERRIDES": str(overrides),
        "SLA_WORKING_HOURS": "00:00-24:00",
        "SLA_POLL_INTERVAL_S": "0.5",
        **extra,
    }
    return env.environ(**settings)


def make_keys(path: Path, scopes: list[str]) -> dict[str, str]:
    keys: dict[str, str] = {}
    lines = []
    for scope in scopes:
        key, line = new_key(scope)
        keys[scope] = key
        lines.append(line)
    path.write_text("".join(lines))
    return keys


async def create_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{name}"


@dataclass
class ServiceProcess:
    """A service run as `complaints run <name>` in its own process, so tests can SIGKILL it."""

    name: str
    env: dict[str, str]
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> ServiceProcess:
        self.port = self.port or free_port()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shared.devtools.cli", "run", self.name, "--port", str(self.port)],
            env={**self.env, "HTTP_PORT": str(self.port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509 - a killed test run leaves no service behind
        )
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become healthy:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode if self.proc else None

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


async def produce(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=1024 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def collect(
    bootstrap: str,
    topics: list[str],
    until: Callable[[list[Any]], bool],
    timeout_s: float = 60.0,
    settle_s: float = 0.0,
) -> list[Any]:
    """Read the topics from the beginning until `until(records)` holds (then `settle_s` more, to catch extras)."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for recs in batch.values():
                records.extend(recs)
            if settle_until is None and until(records):
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() >= settle_until:
                break
    finally:
        await consumer.stop()
    return records


async def rewind_group(bootstrap: str, group: str, topics: list[str]) -> None:
    """Commit offset 0 for every partition of `topics` in `group`: its next start replays everything."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or set())]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or set())]
        consumer.assign(partitions)
        await consumer.commit(dict.fromkeys(partitions, 0))
    finally:
        await consumer.stop()


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def metric_sum(text: str, name: str) -> float:
    """The sum of a metric's samples over all its labels, from Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_for_metric(url: str, name: str, value: float, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while time.monotonic() < deadline:
            if metric_sum((await http.get("/metrics")).text, name) >= value:
                return True
            await asyncio.sleep(0.3)
    return False


async def wait_for_line(url: str, line: str, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while time.monotonic() < deadline:
            if line in (await http.get("/metrics")).text.splitlines():
                return True
            await asyncio.sleep(0.3)
    return False
