"""What every service process is made of, built in one lifespan: settings, metrics, a PostgreSQL pool on the
service's schema, an idempotent producer, the outbox relay, a FastStream Kafka broker for the subscribers,
and the HTTP app with `/healthz`, `/readyz`, `/metrics`, `/asyncapi` and scoped-key auth.

Nothing here runs at import time; `create_service_app` returns an app whose lifespan builds and closes it all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.security import SASLPlaintext, SASLScram256, SASLScram512
from faststream.specification import AsyncAPI
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shared.auth import KeyRing, Principal
from shared.clock import Clock, system_clock
from shared.db import after_fault, create_pool, ping
from shared.kafka import (
    BatchFn,
    GiveUpFn,
    Health,
    RawRecord,
    ensure_topics,
    make_producer,
    process_with_retries,
    raw_decoder,
)
from shared.lag import LagMonitor
from shared.migrate import migrate
from shared.observability import Metrics, setup_logging
from shared.outbox import OutboxRelay
from shared.retention import RULES, Retention, prune_forever
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """Everything a service's handlers need, made once per process."""

    name: str
    settings: Settings
    topics: Topics
    metrics: Metrics
    health: Health
    clock: Clock
    pool: asyncpg.Pool[Any]
    producer: AIOKafkaProducer
    broker: KafkaBroker
    relay: OutboxRelay
    keys: KeyRing
    consumer_groups: dict[str, list[str]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def group(self, name: str, *topics: str) -> str:
        """The consumer group id `<TOPIC_PREFIX><name>`, registered with its topics for the lag metric."""
        group_id = f"{self.settings.topic_prefix}{name}"
        self.consumer_groups.setdefault(group_id, []).extend(
            t for t in topics if t not in self.consumer_groups.get(group_id, [])
        )
        return group_id


Setup = Callable[[ServiceContext], Awaitable[None]]


def _broker_security(settings: Settings) -> Any:
    import ssl

    ctx = None
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if not settings.kafka_security_protocol.startswith("SASL"):
        if ctx is not None:
            from faststream.security import BaseSecurity

            return BaseSecurity(ssl_context=ctx)
        return None
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    user = settings.kafka_sasl_username or ""
    mech = (settings.kafka_sasl_mechanism or "PLAIN").upper()
    cls = {"SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}.get(mech, SASLPlaintext)
    return cls(username=user, password=password, ssl_context=ctx)


def load_keys(settings: Settings) -> KeyRing:
    if settings.api_keys_file is None:
        log.warning("API_KEYS_FILE is not set: every authenticated endpoint will answer 401")
        return KeyRing({})
    return KeyRing.from_file(settings.api_keys_file)


def create_service_app(
    name: str,
    *,
    routers: list[APIRouter],
    setup: Setup,
    settings: Settings | None = None,
    clock: Clock = system_clock,
    teardown: Setup | None = None,
    description: str = "",
) -> FastAPI:
    """The HTTP app of one service; its lifespan builds the ServiceContext and runs `setup(ctx)` before serving."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = settings or Settings()
        setup_logging(cfg.log_level, cfg.log_format)
        topics = Topics(cfg.topic_prefix)
        metrics = Metrics(name)
        health = Health()
        await migrate(cfg.database_url, (name,))
        await ensure_topics(cfg, topics.all())
        pool = await create_pool(
            cfg.database_url,
            name,
            max_size=cfg.db_pool_max,
            command_timeout_s=cfg.db_command_timeout_s,
            connect_timeout_s=cfg.db_connect_timeout_s,
        )
        producer = make_producer(cfg, client_id=f"complaints-{name}")
        await producer.start()
        broker = KafkaBroker(
            cfg.kafka_bootstrap_servers,
            client_id=f"complaints-{name}",
            security=_broker_security(cfg),
            logger=logging.getLogger(f"faststream.{name}"),
            graceful_timeout=15.0,
        )
        relay = OutboxRelay(
            pool, producer, metrics, health, batch_size=cfg.outbox_batch_size, send_timeout_s=cfg.kafka_send_timeout_s
        )
        ctx = ServiceContext(name, cfg, topics, metrics, health, clock, pool, producer, broker, relay, load_keys(cfg))
        app.state.ctx = ctx
        await setup(ctx)
        relay.start()
        await broker.start()
        lag = LagMonitor(
            cfg, metrics, health, ctx.consumer_groups, interval_s=cfg.lag_interval_s, stall_after_s=cfg.stall_after_s
        )
        lag.start()
        retention = Retention(cfg.processed_retention_days, cfg.dead_letter_retention_days, cfg.prune_batch_size)
        pruner = asyncio.create_task(
            prune_forever(pool, RULES.get(name, ()), retention, clock, cfg.prune_interval_s), name="prune"
        )
        log.info("service started", extra={"service": name, "port": cfg.port_for(name)})
        try:
            yield
        finally:
            # Stop taking new records first (in-flight batches finish and commit), then flush what they produced.
            pruner.cancel()
            await asyncio.gather(pruner, return_exceptions=True)
            await lag.stop()
            await broker.stop()
            if teardown is not None:
                await teardown(ctx)
            await relay.stop()
            await producer.stop()
            await pool.close()
            log.info("service stopped", extra={"service": name})

    app = FastAPI(title=f"complaints {name}", description=description, version="1", lifespan=lifespan)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        detail = (
            exc.detail
            if isinstance(exc.detail, dict)
            else {"error": _error_code(exc.status_code), "reason": exc.detail}
        )
        return JSONResponse(detail, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        reason = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        return JSONResponse({"error": "invalid", "reason": reason or str(exc)}, status_code=422)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": name}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        ctx: ServiceContext = request.app.state.ctx
        db_ok = await ping(ctx.pool)
        try:
            broker_ok = await ctx.broker.ping(timeout=2.0)
        except Exception:  # noqa: BLE001 - not reachable is the answer
            broker_ok = False
        body = {"database": db_ok, "broker": broker_ok, "degraded": ctx.health.degraded}
        ok = db_ok and broker_ok and not ctx.health.degraded
        return JSONResponse({"ready": ok, **body}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        ctx: ServiceContext = request.app.state.ctx
        return PlainTextResponse(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi", include_in_schema=False)
    async def asyncapi(request: Request) -> JSONResponse:
        ctx: ServiceContext = request.app.state.ctx
        spec = AsyncAPI(ctx.broker, title=f"complaints {name}", version="1", description=description)
        return JSONResponse(spec.to_specification().to_jsonable())

    for router in routers:
        app.include_router(router)
    return app


def _error_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        409: "conflict",
        413: "too_large",
        422: "invalid",
        503: "unavailable",
    }.get(status, "error")


def context(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


async def principal(request: Request) -> Principal:
    """The caller's scope from `Authorization: Bearer <key>`; 401 without a known key."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise HTTPException(401, "missing bearer key", headers={"WWW-Authenticate": "Bearer"})
    found = context(request).keys.authenticate(key.strip())
    if found is None:
        raise HTTPException(401, "unknown key", headers={"WWW-Authenticate": "Bearer"})
    return found


CallerDep = Depends(principal)


async def consume_batch(
    ctx: ServiceContext, msg: Any, handle: BatchFn, give_up: GiveUpFn, *, group: str, where: str = "consumer"
) -> None:
    """One consumed batch: run `handle` until its effects are durable (retries and dead letters as in
    `process_with_retries`), then commit the offsets, then count the batch."""
    started = time.perf_counter()
    records = [RawRecord.of(r) for r in msg.raw_message]
    await process_with_retries(
        records,
        handle,
        give_up,
        where=where,
        health=ctx.health,
        on_retry=ctx.metrics.transient_retries.labels(where).inc,
        on_fault=lambda exc: after_fault(ctx.pool, exc),
    )
    await msg.ack()
    ctx.metrics.batch_seconds.labels(group).observe(time.perf_counter() - started)
    ctx.metrics.batch_records.labels(group).observe(len(records))


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (never read whole first)."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise HTTPException(
                413, {"error": "too_large", "reason": f"body is over the limit of {limit} bytes ({limit // 1024} KiB)"}
            )
    return bytes(body)


FETCH_MAX_WAIT_MS = 100
"""aiokafka holds a fetch open up to this long, and a partition that had buffered records waits for that fetch to end
before its new records are fetched: the 500 ms default shows as tail latency on every hop."""


def batch_subscriber(
    ctx: ServiceContext, *topics: str, group_id: str, title: str, description: str
) -> Callable[[Callable[..., Awaitable[None]]], Any]:
    """A subscriber with the project's delivery policy: batches of up to CONSUMER_MAX_RECORDS, MANUAL ack (the
    handler commits after its transaction, see `consume_batch`), the backlog read from the earliest offset, and raw
    bytes handed to the handler so a record that does not parse becomes a dead letter."""
    return ctx.broker.subscriber(
        *topics,
        group_id=group_id,
        batch=True,
        max_records=ctx.settings.consumer_max_records,
        batch_timeout_ms=50,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        decoder=raw_decoder,
        title=title,
        description=description,
    )
