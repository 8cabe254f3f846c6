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
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.devtools.status import StatusLine
from shared.devtools.stopping import Stopped, close_soon, until_stopped
from shared.devtools.traffic import HttpCall, RawMessage, TrafficGenerator, plant
from shared.domain import Category, Channel, Urgency
from shared.kafka import make_producers
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
    planted: int = 0
    """Messages of the planted series (history, the warning case, the rising burst)."""
    skipped: int = 0
    """Survey responses not sent: they go only over HTTP, and no `survey` key was given."""
    failed_kafka: int = 0
    """Messages the broker never acknowledged (it was away, or the producer was replaced): dropped, and counted."""

    def line(self, elapsed: float) -> str:
        total = self.sent_kafka + self.sent_http
        rate = total / elapsed if elapsed > 0 else 0.0
        return (
            f"sent {total} ({rate:.1f}/s) kafka={self.sent_kafka} http={self.sent_http} "
            f"dup={self.duplicates} bad={self.bad} planted={self.planted} "
            + " ".join(f"{k}={v}" for k, v in sorted(self.by_channel.items()))
        )

    def summary(self, elapsed: float) -> str:
        bad_kafka = self.bad - self.bad_http
        return (
            f"simulation done in {elapsed:.1f} s: {self.sent_kafka + self.sent_http} messages, "
            f"{self.duplicates} duplicates, {self.bad} bad: {bad_kafka} sent to Kafka (expect as many dead letters), "
            f"{self.bad_http} over HTTP (refused there with a 4xx, not dead-lettered); "
            f"http statuses {dict(self.http_status)}; {self.planted} planted (the early warning's series)"
            + (f"; {self.skipped} survey responses not sent (no survey key)" if self.skipped else "")
            + (f"; {self.failed_kafka} not delivered to Kafka (dropped)" if self.failed_kafka else "")
        )


PORTAL_WINDOW_S = 61.0
"""The portal's limit counts a sliding minute; a second more keeps the simulator clear of its edge."""


class PortalPacer:
    """At most `limit` public portal submissions in any `PORTAL_WINDOW_S` (the rest go to `intake.portal`, as a
    portal back end's would): the simulator never trips the limit it shares with every other client of 127.0.0.1."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.sent: deque[float] = deque()

    def take(self, now: float) -> bool:
        while self.sent and now - self.sent[0] >= PORTAL_WINDOW_S:
            self.sent.popleft()
        if len(self.sent) >= self.limit:
            return False
        self.sent.append(now)
        return True


def warning_received_at(now: datetime, settings: Settings) -> datetime | None:
    """A received time whose resolve deadline (default policy, or SLA_POLICY; the calendar of the settings) has
    passed its warning but is at least 10 minutes from its due at `now`: a case received then warns at once."""
    try:
        from services.sla.app import load_policy
        from services.sla.policy import resolve_deadline
        from shared.calendar import calendar_from_settings

        path = os.environ.get("SLA_POLICY")
        policy = load_policy(Path(path) if path else None)
        calendar = calendar_from_settings(settings)
    except (OSError, ValueError) as exc:
        logging.getLogger(__name__).warning("no warning case planted: %s", exc)
        return None

    def deadline(at: datetime) -> tuple[datetime, datetime]:
        found = resolve_deadline(policy, calendar, at, category=Category.GOVERNMENT_SERVICES, urgency=Urgency.NORMAL)
        assert found is not None
        return found.warn_at, found.due_at

    low, high = now - timedelta(days=30), now  # warn_at grows with the received time: the latest one still warned
    if deadline(low)[0] > now:
        return None
    while high - low > timedelta(minutes=1):
        mid = low + (high - low) / 2
        low, high = (mid, high) if deadline(mid)[0] <= now else (low, mid)
    warn_at, due_at = deadline(low)
    return low if warn_at <= now and due_at >= now + timedelta(minutes=10) else None


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
    method: float = 0.0,
    plant_series: bool = False,
    plant_after_s: float = 5.0,
) -> SimulationStats:
    """`method`: the share of the traffic that is portal submissions, visits and surveys (contract 10). The portal
    posts publicly to intake (paced under PORTAL_RATE_LIMIT), the rest over `intake.portal`; visits over HTTP for
    half of them when there is a `visit` key, else `intake.visit`; surveys only over HTTP (no raw topic),
    skipped without a `survey` key. `plant_series`: the quiet history (and a case warning now) at the start, then
    after `plant_after_s` the rising series of one (region, category) and one enterprise (see traffic.plant)."""
    topics = Topics(settings.topic_prefix)
    gen = TrafficGenerator(seed=seed, duplicates=duplicates, bad=bad, method=method)
    stats = SimulationStats()
    stop = stop or asyncio.Event()
    producers = make_producers(settings, "complaints-simulator")
    try:
        await until_stopped(producers.start(), stop)
    except KafkaError as exc:
        await close_soon(producers.stop())
        raise NoBrokerError(
            f"no Kafka broker answers at {settings.kafka_bootstrap_servers} ({type(exc).__name__}): start the "
            "system first (`make run`), or set KAFKA_BOOTSTRAP_SERVERS to a running broker"
        ) from None
    except Stopped:
        await close_soon(producers.stop())
        return stats
    keys = channel_keys or {}
    wants_http = (http_share > 0 and bool(keys)) or method > 0
    client = httpx.AsyncClient(base_url=intake_url, timeout=10) if (wants_http and intake_url) else None
    pacer = PortalPacer(settings.portal_rate_limit - 2)
    status = status or (StatusLine(sys.stderr) if progress else None)
    started = time.monotonic()
    last_print = 0.0
    n = 0
    pending: list[tuple[AIOKafkaProducer, asyncio.Future[object]]] = []
    burst: list[RawMessage] = []

    async def post(call: HttpCall, key: str | None) -> None:
        assert client is not None
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        try:
            resp = await until_stopped(client.post(call.path, content=call.body, headers=headers), stop)
            stats.http_status[resp.status_code] += 1
        except httpx.HTTPError:
            stats.http_status[0] += 1
        stats.sent_http += 1

    async def settle() -> None:
        """Wait for what was sent; what the broker did not take is dropped and counted, and a producer whose
        delivery failed is replaced (its idempotent state is spoilt, see shared.kafka.Producers)."""
        sent = list(pending)
        pending.clear()
        results = await until_stopped(asyncio.gather(*(f for _, f in sent), return_exceptions=True), stop)
        for (producer, _), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                stats.failed_kafka += 1
                await producers.failed(producer, result, spoilt=True)
        if any(isinstance(r, BaseException) for r in results):
            logging.getLogger(__name__).warning(
                "simulator messages not delivered", extra={"failed": stats.failed_kafka}
            )

    async def to_kafka(msg: RawMessage) -> None:
        producer: AIOKafkaProducer | None = None
        try:
            producer = current = await until_stopped(producers.get(), stop)
            fut = await until_stopped(
                current.send(topics.intake(msg.channel), msg.body, key=msg.key.encode() if msg.key else None), stop
            )
        except KafkaError as exc:  # the broker away: a simulator drops what it cannot send, and says so
            stats.failed_kafka += 1
            if producer is not None:
                await producers.failed(producer, exc)
            logging.getLogger(__name__).warning("simulator could not send", extra={"error": repr(exc)[:300]})
            return
        pending.append((producer, fut))
        stats.sent_kafka += 1
        if len(pending) >= 200:
            await settle()

    async def send(msg: RawMessage) -> None:
        channel = msg.channel.value
        stats.by_channel[channel] += 1
        if msg.http is not None:  # the method's channels
            if msg.channel is Channel.PORTAL and client is not None and pacer.take(time.monotonic()):
                await post(msg.http, None)
            elif msg.channel is Channel.SURVEY:
                if client is not None and channel in keys:
                    await post(msg.http, keys[channel])
                else:
                    stats.skipped += 1
            elif msg.channel is Channel.VISIT and client is not None and channel in keys and gen.rng.random() < 0.5:
                await post(msg.http, keys[channel])
            else:
                await to_kafka(msg)
            return
        stats.duplicates += msg.duplicate_of is not None
        stats.bad += msg.bad_reason is not None
        if client is not None and channel in keys and gen.rng.random() < http_share:
            stats.bad_http += msg.bad_reason is not None
            await post(HttpCall(f"/v1/intake/{channel}", msg.body), keys[channel])
        else:
            await to_kafka(msg)

    try:
        if plant_series:
            now = datetime.now(UTC)
            series = plant(gen, now, warning_received_at(now, settings))
            for msg in series.history:
                await send(msg)
            stats.planted += len(series.history)
            burst = series.burst
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if burst and (elapsed >= plant_after_s or (count and n >= count) or (duration and elapsed >= duration)):
                for msg in burst:  # the rising series: all at once, within the running week
                    await send(msg)
                stats.planted += len(burst)
                burst = []
            if count and n >= count:
                break
            if duration and elapsed >= duration:
                break
            due = started + n / rate if rate > 0 else time.monotonic()
            if due > time.monotonic():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), due - time.monotonic())
                continue
            n += 1
            await send(gen.next())
            if status is not None and time.monotonic() - last_print > 1.0:
                last_print = time.monotonic()
                status.show(stats.line(time.monotonic() - started))
        if pending:
            await settle()
    except Stopped:
        pass
    finally:
        await close_soon(producers.stop())
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
            method=getattr(args, "method", 0.0),
            plant_series=getattr(args, "plant", False),
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
