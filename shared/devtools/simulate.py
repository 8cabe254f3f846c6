"""`complaints simulate`: realistic traffic pushed onto the raw topics (and a share over HTTP intake) at a
given rate, with a status line and a summary at the end. Ctrl-C or SIGTERM stops it in every state, the
broker gone included (a second Ctrl-C at once); with no broker at all it says so in one line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka.errors import KafkaError

from shared.devtools.status import StatusLine
from shared.devtools.stopping import Stopped, close_soon, until_stopped
from shared.devtools.traffic import TrafficGenerator
from shared.kafka import make_producer
from shared.settings import Settings
from shared.topics import Topics

STATUS_ENV = "COMPLAINTS_STATUS_LINES"
"""Set by `complaints dev` for its simulator child: progress as `status: …` lines, which dev shows in its own
status line instead of printing them."""


class NoBrokerError(RuntimeError):
    pass


@dataclass
class SimulationStats:
    sent_kafka: int = 0
    sent_http: int = 0
    duplicates: int = 0
    bad: int = 0
    bad_http: int = 0
    """Bad messages sent over HTTP: refused there with a 4xx, never dead-lettered."""
    http_status: Counter[int] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)

    def line(self, elapsed: float) -> str:
        total = self.sent_kafka + self.sent_http
        rate = total / elapsed if elapsed > 0 else 0.0
        return (
            f"sent {total} ({rate:.1f}/s) kafka={self.sent_kafka} http={self.sent_http} "
            f"dup={self.duplicates} bad={self.bad} " + " ".join(f"{k}={v}" for k, v in sorted(self.by_channel.items()))
        )

    def summary(self, elapsed: float) -> str:
        bad_kafka = self.bad - self.bad_http
        return (
            f"simulation done in {elapsed:.1f} s: {self.sent_kafka + self.sent_http} messages, "
            f"{self.duplicates} duplicates, {self.bad} bad: {bad_kafka} sent to Kafka (expect as many dead letters), "
            f"{self.bad_http} over HTTP (refused there with a 4xx, not dead-lettered); "
            f"http statuses {dict(self.http_status)}"
        )


async def simulate(
    settings: Settings,
    *,
    rate: float,
    count: int = 0,
    duration: float = 0.0,
    duplicates: float = 0.05,
    bad: float = 0.03,
    http_share: float = 0.0,
    intake_url: str | None = None,
    channel_keys: dict[str, str] | None = None,
    seed: int | None = None,
    stop: asyncio.Event | None = None,
    progress: bool = True,
    status: StatusLine | None = None,
) -> SimulationStats:
    topics = Topics(settings.topic_prefix)
    gen = TrafficGenerator(seed=seed, duplicates=duplicates, bad=bad)
    stats = SimulationStats()
    stop = stop or asyncio.Event()
    producer = make_producer(settings, client_id="complaints-simulator")
    try:
        await until_stopped(producer.start(), stop)
    except KafkaError as exc:
        await close_soon(producer.stop())
        raise NoBrokerError(
            f"no Kafka broker answers at {settings.kafka_bootstrap_servers} ({type(exc).__name__}): start the "
            "system first (`make run`), or set KAFKA_BOOTSTRAP_SERVERS to a running broker"
        ) from None
    except Stopped:
        await close_soon(producer.stop())
        return stats
    client = (
        httpx.AsyncClient(base_url=intake_url, timeout=10) if (http_share > 0 and intake_url and channel_keys) else None
    )
    status = status or (StatusLine(sys.stderr) if progress else None)
    started = time.monotonic()
    last_print = 0.0
    n = 0
    pending: list[asyncio.Future[object]] = []
    try:
        while not stop.is_set():
            if count and n >= count:
                break
            elapsed = time.monotonic() - started
            if duration and elapsed >= duration:
                break
            due = started + n / rate if rate > 0 else time.monotonic()
            if due > time.monotonic():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), due - time.monotonic())
                continue
            msg = gen.next()
            n += 1
            stats.by_channel[msg.channel.value] += 1
            stats.duplicates += msg.duplicate_of is not None
            stats.bad += msg.bad_reason is not None
            if client is not None and channel_keys and gen.rng.random() < http_share:
                stats.bad_http += msg.bad_reason is not None
                try:
                    resp = await until_stopped(
                        client.post(
                            f"/v1/intake/{msg.channel.value}",
                            content=msg.body,
                            headers={
                                "Authorization": f"Bearer {channel_keys[msg.channel.value]}",
                                "Content-Type": "application/json",
                            },
                        ),
                        stop,
                    )
                    stats.http_status[resp.status_code] += 1
                except httpx.HTTPError:
                    stats.http_status[0] += 1
                stats.sent_http += 1
            else:
                fut = await until_stopped(
                    producer.send(topics.intake(msg.channel), msg.body, key=msg.key.encode() if msg.key else None),
                    stop,
                )
                pending.append(fut)
                stats.sent_kafka += 1
                if len(pending) >= 200:
                    await until_stopped(asyncio.gather(*pending), stop)
                    pending.clear()
            if status is not None and time.monotonic() - last_print > 1.0:
                last_print = time.monotonic()
                status.show(stats.line(time.monotonic() - started))
        if pending:
            await until_stopped(asyncio.gather(*pending), stop)
    except Stopped:
        pass
    finally:
        await close_soon(producer.stop())
        if client is not None:
            await close_soon(client.aclose())
    if status is not None:
        elapsed = time.monotonic() - started
        status.show(stats.line(elapsed))
        status.finish()
        status.print(stats.summary(elapsed))
    return stats


def _status_line() -> StatusLine:
    if os.environ.get(STATUS_ENV) == "1":
        return _PrefixedStatus(sys.stderr)
    return StatusLine(sys.stderr)


class _PrefixedStatus(StatusLine):
    """For `complaints dev`: every status as a `status: …` line, every second."""

    def __init__(self, out: Any) -> None:
        super().__init__(out, tty=False, every_s=1.0)

    def show(self, text: str) -> None:
        super().show(f"status: {text}")


class _StatusHandler(logging.Handler):
    """Log lines of the simulator above its status line."""

    def __init__(self, status: StatusLine) -> None:
        super().__init__(logging.WARNING)
        self.status = status
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.status.print(self.format(record))


def _no_broker_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    import socket

    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        with (
            contextlib.suppress(OSError, ValueError),
            socket.create_connection((host or "127.0.0.1", int(port)), timeout_s),
        ):
            return False
    return True


def run_simulate_cli(args: argparse.Namespace) -> int:
    settings = Settings()
    if _no_broker_answers(settings.kafka_bootstrap_servers):
        print(
            f"error: no Kafka broker answers at {settings.kafka_bootstrap_servers}: start the system first "
            "(`make run`), or set KAFKA_BOOTSTRAP_SERVERS to a running broker",
            file=sys.stderr,
        )
        return 2
    keys: dict[str, str] = {}
    for item in getattr(args, "channel_key", None) or []:
        name, _, key = item.partition("=")
        keys[name] = key
    status = _status_line()
    from shared.observability import RepeatFilter

    handler = _StatusHandler(status)
    handler.addFilter(RepeatFilter())
    logging.getLogger().handlers[:] = [handler]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():  # the second Ctrl-C: at once
                status.print("stopped at once.")
                os._exit(130)
            status.print("stopping … (Ctrl-C again to stop at once)")
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        await simulate_with_departments(
            settings,
            departments=args.departments,
            speed=args.speed,
            stop=stop,
            rate=args.rate,
            count=args.count,
            duration=args.duration,
            duplicates=args.duplicates,
            bad=args.bad,
            http_share=args.http_share if keys else 0.0,
            intake_url=args.intake_url,
            channel_keys=keys or None,
            seed=args.seed,
            status=status,
        )

    try:
        asyncio.run(main())
    except NoBrokerError as exc:
        status.finish()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


async def simulate_with_departments(
    settings: Settings, *, departments: bool, speed: float, stop: asyncio.Event, **traffic: Any
) -> SimulationStats:
    """Raw traffic and, unless told not to, the department systems and callbacks playing every case to its end.
    The traffic stops at its count or duration (or on `stop`); the departments go on until `stop`."""
    from shared.devtools.departments import DepartmentSimulator

    sim = DepartmentSimulator(settings, speed=speed, seed=traffic.get("seed")) if departments else None
    task = asyncio.create_task(sim.run(stop)) if sim is not None else None
    status: StatusLine | None = traffic.get("status")
    say = status.print if status is not None else (lambda line: print(line, file=sys.stderr))
    try:
        stats = await simulate(settings, stop=stop, **traffic)
        if task is not None and not stop.is_set():
            say("traffic done; the departments go on until Ctrl-C")
            await stop.wait()
    finally:
        stop.set()
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 8.0)
        if sim is not None and sim.stats.sent:
            say(sim.stats.line())
    return stats
