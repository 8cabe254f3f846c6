"""`complaints dev`: the whole system on one machine. Starts a local Apache Kafka and PostgreSQL unless
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are set, applies migrations, makes a key for every scope (unless
API_KEYS_FILE is set), starts every service as its own process, prints addresses and keys, optionally feeds
simulated traffic, and stops everything it started on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from shared.auth import new_key
from shared.devtools.catalog import available_services
from shared.devtools.infra.kafka_cluster import KafkaCluster
from shared.devtools.infra.kafka_local import InfraError, LocalKafka
from shared.devtools.infra.postgres_local import LocalPostgres
from shared.domain import DEPARTMENTS, Channel
from shared.kafka import ensure_topics
from shared.migrate import migrate
from shared.settings import Settings
from shared.topics import Topics

OFFSETS = {"intake": 1, "routing": 2, "sla": 3, "reporting": 4}


def dev_scopes() -> list[str]:
    return [f"channel:{c.value}" for c in Channel] + [f"department:{d}" for d in DEPARTMENTS] + ["reports", "admin"]


def make_dev_keys(path: Path) -> dict[str, str]:
    """One key per scope; digests written to `path`, clear keys returned (printed once, never stored)."""
    keys: dict[str, str] = {}
    lines = ["# made by `complaints dev`: SHA-256 digests of the keys printed on its terminal\n"]
    for scope in dev_scopes():
        key, line = new_key(scope)
        keys[scope] = key
        lines.append(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    path.chmod(0o600)
    return keys


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def run_dev(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir or Path(".run")
    env = os.environ.copy()
    kafka: LocalKafka | KafkaCluster | None = None
    pg: LocalPostgres | None = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stop = False

    def _on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        if "KAFKA_BOOTSTRAP_SERVERS" not in env and getattr(args, "brokers", 1) > 1:
            print(f"starting Apache Kafka (KRaft), a cluster of {args.brokers} …", flush=True)
            cluster_dir = data_dir.resolve() / "kafka-cluster"
            kafka = KafkaCluster(args.brokers, cluster_dir, keep_data=True, first_port=args.kafka_port).start()
            env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap
            env.setdefault("TOPIC_REPLICATION_FACTOR", "3")
        elif "KAFKA_BOOTSTRAP_SERVERS" not in env:
            print("starting Apache Kafka (KRaft) …", flush=True)
            kafka = LocalKafka(port=args.kafka_port, data_dir=data_dir.resolve() / "kafka", keep_data=True).start()
            env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap
        if "DATABASE_URL" not in env:
            print("starting PostgreSQL …", flush=True)
            pg = LocalPostgres(data_dir=data_dir.resolve() / "postgres", keep_data=True).start()
            env["DATABASE_URL"] = pg.url
        settings = Settings(
            kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
            database_url=env["DATABASE_URL"],
            topic_replication_factor=int(env.get("TOPIC_REPLICATION_FACTOR", "1")),
        )
        asyncio.run(migrate(settings.database_url))
        topics = Topics(settings.topic_prefix)
        asyncio.run(ensure_topics(settings, topics.all(), log_append_time=topics.stamped_by_broker()))
        keys: dict[str, str] = {}
        if "API_KEYS_FILE" not in env:
            keys_file = (data_dir / "api_keys.yaml").resolve()
            keys = make_dev_keys(keys_file)
            env["API_KEYS_FILE"] = str(keys_file)
        services = available_services()
        for name in services:
            port = args.port_base + OFFSETS[name]
            procs[name] = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "shared.devtools.cli", "run", name, "--port", str(port)],
                env={**env, "HTTP_PORT": str(port), "LOG_FORMAT": env.get("LOG_FORMAT", "text")},
            )
        for name, proc in procs.items():
            port = args.port_base + OFFSETS[name]
            if not _wait_healthy(f"http://127.0.0.1:{port}/healthz", proc):
                print(f"error: service {name} did not start (exit code {proc.poll()})", file=sys.stderr)
                return 1
        _print_banner(env, services, args.port_base, keys)
        if args.simulate > 0:
            _simulate_until_signal(settings, args, keys)
            stop = True
        while not stop:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"error: service {name} exited with code {proc.returncode}", file=sys.stderr)
                    stop = True
            time.sleep(0.5)
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        print("\nstopping …", flush=True)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if kafka is not None:
            kafka.stop()
        if pg is not None:
            pg.stop()
        print("stopped.", flush=True)
    return 0


def _print_banner(env: dict[str, str], services: list[str], base: int, keys: dict[str, str]) -> None:
    print("\n=== complaints dev is running ===")
    print(f"Kafka:       {env['KAFKA_BOOTSTRAP_SERVERS']}")
    print(f"PostgreSQL:  {env['DATABASE_URL']}")
    for name in services:
        port = base + OFFSETS[name]
        print(f"{name:<12} http://127.0.0.1:{port}  (docs /docs, AsyncAPI /asyncapi, metrics /metrics)")
    if keys:
        print(f"\nAPI keys (shown once; digests in {env['API_KEYS_FILE']}):")
        for scope, key in keys.items():
            print(f"  {scope:<28} {key}")
    print("\nCtrl-C stops everything.\n", flush=True)


def _simulate_until_signal(settings: Settings, args: argparse.Namespace, keys: dict[str, str]) -> None:
    from shared.devtools.simulate import simulate_with_departments

    channel_keys = {c.value: keys[f"channel:{c.value}"] for c in Channel if f"channel:{c.value}" in keys}

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await simulate_with_departments(
            settings,
            departments="routing" in available_services(),
            speed=20.0,
            stop=stop,
            rate=args.simulate,
            http_share=0.1 if channel_keys else 0.0,
            intake_url=f"http://127.0.0.1:{args.port_base + OFFSETS['intake']}",
            channel_keys=channel_keys or None,
        )

    asyncio.run(main())
