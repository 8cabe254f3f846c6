"""`complaints simulate`: realistic traffic pushed onto the raw topics (and a share over HTTP intake) at a
given rate, with a live progress line and a summary at the end."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.devtools.traffic import TrafficGenerator
from shared.kafka import make_producer
from shared.settings import Settings
from shared.topics import Topics


@dataclass
class SimulationStats:
    sent_kafka: int = 0
    sent_http: int = 0
    duplicates: int = 0
    bad: int = 0
    http_status: Counter[int] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)

    def line(self, elapsed: float) -> str:
        total = self.sent_kafka + self.sent_http
        rate = total / elapsed if elapsed > 0 else 0.0
        return (
            f"sent {total} ({rate:.1f}/s) kafka={self.sent_kafka} http={self.sent_http} "
            f"dup={self.duplicates} bad={self.bad} " + " ".join(f"{k}={v}" for k, v in sorted(self.by_channel.items()))
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
) -> SimulationStats:
    topics = Topics(settings.topic_prefix)
    gen = TrafficGenerator(seed=seed, duplicates=duplicates, bad=bad)
    stats = SimulationStats()
    producer = make_producer(settings, client_id="complaints-simulator")
    await producer.start()
    client = (
        httpx.AsyncClient(base_url=intake_url, timeout=10) if (http_share > 0 and intake_url and channel_keys) else None
    )
    stop = stop or asyncio.Event()
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
                try:
                    resp = await client.post(
                        f"/v1/intake/{msg.channel.value}",
                        content=msg.body,
                        headers={
                            "Authorization": f"Bearer {channel_keys[msg.channel.value]}",
                            "Content-Type": "application/json",
                        },
                    )
                    stats.http_status[resp.status_code] += 1
                except httpx.HTTPError:
                    stats.http_status[0] += 1
                stats.sent_http += 1
            else:
                fut = await producer.send(
                    topics.intake(msg.channel), msg.body, key=msg.key.encode() if msg.key else None
                )
                pending.append(fut)
                stats.sent_kafka += 1
                if len(pending) >= 200:
                    await asyncio.gather(*pending)
                    pending.clear()
            if progress and time.monotonic() - last_print > 1.0:
                last_print = time.monotonic()
                print(f"\r{stats.line(time.monotonic() - started)}", end="", file=sys.stderr, flush=True)
        if pending:
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
        if client is not None:
            await client.aclose()
    if progress:
        elapsed = time.monotonic() - started
        print(f"\r{stats.line(elapsed)}", file=sys.stderr)
        print(
            f"simulation done in {elapsed:.1f} s: {stats.sent_kafka + stats.sent_http} messages, "
            f"{stats.duplicates} duplicates, {stats.bad} bad (expect as many dead letters), "
            f"http statuses {dict(stats.http_status)}",
            file=sys.stderr,
        )
    return stats


def run_simulate_cli(args: argparse.Namespace) -> int:
    settings = Settings()
    keys: dict[str, str] = {}
    for item in getattr(args, "channel_key", None) or []:
        name, _, key = item.partition("=")
        keys[name] = key

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
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
        )

    asyncio.run(main())
    return 0


async def simulate_with_departments(
    settings: Settings, *, departments: bool, speed: float, stop: asyncio.Event, **traffic: Any
) -> SimulationStats:
    """Raw traffic and, unless told not to, the department systems and callbacks playing every case to its end.
    The traffic stops at its count or duration (or on `stop`); the departments go on until `stop`."""
    from shared.devtools.departments import DepartmentSimulator

    sim = DepartmentSimulator(settings, speed=speed, seed=traffic.get("seed")) if departments else None
    task = asyncio.create_task(sim.run(stop)) if sim is not None else None
    try:
        stats = await simulate(settings, stop=stop, **traffic)
        if task is not None and not stop.is_set():
            print("traffic done; the departments go on until Ctrl-C", file=sys.stderr)
            await stop.wait()
    finally:
        stop.set()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if sim is not None:
            print(sim.stats.line(), file=sys.stderr)
    return stats
