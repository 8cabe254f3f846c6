"""What every service process is made of, built in one lifespan: settings, metrics, a PostgreSQL pool on the
service's schema, an idempotent producer, the outbox relay, a FastStream Kafka broker for the subscribers,
and the HTTP app with `/healthz`, `/readyz`, `/metrics`, `/asyncapi` and scoped-key auth.

Nothing here runs at import time; `create_service_app` returns an app whose lifespan builds and closes it all.

The HTTP edge every service gets from here (contract 4): `/docs` served with Swagger UI from the installed
`swagger-ui-bundle` package (no outside host), `/openapi.json` and `/asyncapi` public and declaring the bearer
scheme, every operation that takes a key marked with it and with its scopes in `x-scopes` (see `scopes`), every
answer an operation gives declared (`answers`), and a database that is away answered with 503 and Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from faststream.specification import AsyncAPI
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from swagger_ui_bundle import swagger_ui_path

from shared.auth import KeyRing, Principal
from shared.clock import Clock, system_clock
from shared.db import after_fault, create_pool, is_transient, ping
from shared.deadletters import save_dead_letters
from shared.kafka import (
    BatchFn,
    GiveUpFn,
    Health,
    Producers,
    RawRecord,
    bootstrap_list,
    dead_letter_of,
    ensure_topics,
    make_producers,
    process_with_retries,
    raw_decoder,
    sasl_credentials,
    ssl_context,
)
from shared.lag import LagMonitor
from shared.migrate import migrate
from shared.observability import Metrics, setup_logging
from shared.outbox import OutboxRelay
from shared.retention import RULES, Retention, prune_forever
from shared.settings import Settings
from shared.text import IDENTIFIER_PATTERN
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
    producers: Producers
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


def _broker_security(settings: Settings) -> BaseSecurity | None:
    """FastStream's security object for its consumers, from the same settings and checks as `security_kwargs`."""
    context = ssl_context(settings)
    sasl = sasl_credentials(settings)
    if sasl is None:
        return None if context is None else BaseSecurity(ssl_context=context)
    mechanism, user, password = sasl
    kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[mechanism]
    return kind(username=user, password=password, ssl_context=context)


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
        await ensure_topics(cfg, topics.all(), log_append_time=topics.stamped_by_broker())
        pool = await create_pool(
            cfg.database_url,
            name,
            max_size=cfg.db_pool_max,
            command_timeout_s=cfg.db_command_timeout_s,
            connect_timeout_s=cfg.db_connect_timeout_s,
        )
        producers = make_producers(cfg, client_id=f"complaints-{name}")
        await producers.start()
        broker = KafkaBroker(
            bootstrap_list(cfg),  # FastStream takes a string as one host: a cluster's list must be split
            client_id=f"complaints-{name}",
            security=_broker_security(cfg),
            logger=logging.getLogger(f"faststream.{name}"),
            graceful_timeout=15.0,
        )
        relay = OutboxRelay(
            pool, producers, metrics, health, batch_size=cfg.outbox_batch_size, send_timeout_s=cfg.kafka_send_timeout_s
        )
        ctx = ServiceContext(name, cfg, topics, metrics, health, clock, pool, producers, broker, relay, load_keys(cfg))
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
            await producers.stop()
            await pool.close()
            log.info("service stopped", extra={"service": name})

    app = FastAPI(
        title=f"complaints {name}",
        description=description,
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _serve_docs(app)
    _answer_database_faults(app)

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

    @app.get("/healthz", summary="Liveness", tags=["health"], responses={200: {"description": "The process serves."}})
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": name}

    @app.get(
        "/readyz",
        summary="Readiness: broker and database reachable, not degraded",
        tags=["health"],
        responses={
            200: {"description": "Ready.", "model": Readiness},
            503: {"description": "Not ready: the body says which part is missing.", "model": Readiness},
        },
    )
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

    @app.get(
        "/metrics",
        summary="Prometheus metrics (contract 9)",
        tags=["health"],
        response_class=PlainTextResponse,
        responses={200: {"description": "Prometheus text format.", "content": {"text/plain": {}}}},
    )
    async def metrics(request: Request) -> Response:
        ctx: ServiceContext = request.app.state.ctx
        return PlainTextResponse(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi", include_in_schema=False)
    async def asyncapi(request: Request) -> JSONResponse:
        ctx: ServiceContext = request.app.state.ctx
        spec = AsyncAPI(ctx.broker, title=f"complaints {name}", version="1", description=description)
        return JSONResponse(with_bearer_scheme(spec.to_specification().to_jsonable()))

    for router in routers:
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = complete_openapi(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


# --- the documents: offline Swagger UI, the bearer scheme, x-scopes, every answer declared -------------------------

DOCS_ASSETS = "/docs/assets"
BEARER = "bearer"
BEARER_DESCRIPTION = (
    "`Authorization: Bearer <key>`. Keys are scoped (contract 4): `channel:<name>`, `department:<code>`, `reports`, "
    "`admin`; `complaints keys new --scope S` makes one, `complaints dev` prints one for every scope. Each "
    "operation lists the scopes it accepts in `x-scopes`: a scope written as is (`admin`), one naming a path "
    "parameter in braces (`channel:{channel}`: the key of the channel in the path), or `department:*` (the key "
    "of any department; the operation then decides by the case or the body). An empty `x-scopes` list: public."
)
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}
_ANSWER_TEXT = {
    400: "Not UTF-8 JSON (or not the text the endpoint takes); `reason` says where.",
    401: "No key, or a key this service does not know.",
    403: "The key's scope does not allow this.",
    404: "No such thing (case, channel, rule set).",
    409: "The state does not allow it, or it clashes with what exists; `reason` says why.",
    413: "The body is over the endpoint's limit.",
    422: "The request is well-formed but invalid; `reason` names the field and the fault.",
    503: "The database (or broker) is not reachable right now; retry after `Retry-After` seconds.",
}


class ErrorBody(BaseModel):
    """Every refusal: a short code and one sentence a person can read (some add fields, e.g. `problems`)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="Short code, e.g. `forbidden`, `invalid`, `unavailable`.")
    reason: str = Field(description="Why, in one sentence a person can read.")


class Readiness(BaseModel):
    model_config = ConfigDict(extra="allow")

    ready: bool
    database: bool
    broker: bool
    degraded: dict[str, str] = Field(description="Parts retrying a passing fault, with the last error of each.")


def answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The refusals an operation gives, for its `responses=`; 401, 422 and 503 are added to every operation that
    can give them by `complete_openapi`, so a route names only the others (400, 403, 404, 409, 413)."""
    return {code: {"model": ErrorBody, "description": _ANSWER_TEXT.get(code, "Refused.")} for code in codes}


def scopes(*accepted: str) -> dict[str, Any]:
    """`openapi_extra` naming the key scopes an operation accepts (see BEARER_DESCRIPTION for the forms)."""
    return {"x-scopes": list(accepted)}


IdentifierPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=IDENTIFIER_PATTERN,
        description="An identifier: no control characters (shared/text.py).",
    ),
]
"""A path parameter naming a case, department or version: refused with 422 if it holds a control character."""


def complete_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document made whole: the bearer scheme declared; every operation that takes a key requires it, and
    every public one says so (`security: []`, `x-scopes: []`); 401 on secured operations, 422 (our error shape, not
    FastAPI's) where a parameter or body can be invalid, and 503 with Retry-After everywhere, declared."""
    components = schema.setdefault("components", {})
    security_schemes = components.setdefault("securitySchemes", {})
    security_schemes[BEARER] = {"type": "http", "scheme": "bearer", "description": BEARER_DESCRIPTION}
    schemas = components.setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path_item in schema.get("paths", {}).values():
        for method, op in path_item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = op.setdefault("responses", {})
            for status, answer in responses.items():
                # A refusal described by a model is JSON, even on a route whose own answer is a page
                # (response_class=HTMLResponse makes FastAPI file the model under text/html); a page stays a page.
                content = answer.get("content", {})
                models = [m for m, body in content.items() if m != "application/json" and "$ref" in str(body)]
                for media in models if str(status)[:1] in "45" else ():
                    content.setdefault("application/json", content.pop(media))
            secured = bool(op.get("security"))
            if secured:
                op["security"] = [{BEARER: []}]
                op.setdefault("x-scopes", [])
                responses.setdefault("401", {"description": _ANSWER_TEXT[401], "content": error_ref})
                responses.setdefault("403", {"description": _ANSWER_TEXT[403], "content": error_ref})
            else:
                op["security"] = []
                op["x-scopes"] = []
            if "422" in responses or op.get("parameters") or op.get("requestBody"):
                # FastAPI's own 422 (HTTPValidationError) becomes ours; a route's own 422 (the portal's page or
                # JSON with its `field`) stays as the route declared it.
                declared = responses.get("422", {})
                if "HTTPValidationError" in str(declared) or not declared.get("content"):
                    responses["422"] = {"description": _ANSWER_TEXT[422], "content": error_ref}
            responses.setdefault("503", {"description": _ANSWER_TEXT[503], "content": error_ref})
            responses["503"].setdefault("headers", RETRY_AFTER)
    text = str(schema.get("paths", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}" not in text:
            schemas.pop(unused, None)
    return schema


def with_bearer_scheme(asyncapi: dict[str, Any]) -> dict[str, Any]:
    """The AsyncAPI document names the HTTP bearer scheme too, so the same key works from every document."""
    components = asyncapi.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": BEARER_DESCRIPTION,
    }
    return asyncapi


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI from the installed package: the page works with no internet, and its Authorize button takes a key."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )


# --- a database that is away, or text it cannot take, is never a 500 ---------------------------------------------

_AWAY_CLASSES = frozenset({"08", "53", "55", "57", "58"})
"""SQLSTATE classes that mean the database cannot serve now: connection, insufficient resources, object not in
prerequisite state (e.g. the database not accepting connections), operator intervention, system error."""


def database_away(exc: BaseException) -> bool:
    sqlstate = getattr(exc, "sqlstate", None)
    return is_transient(exc) or (isinstance(sqlstate, str) and sqlstate[:2] in _AWAY_CLASSES)


UNAVAILABLE: Final = {"error": "unavailable", "reason": "the database is not reachable; retry later"}


def unavailable() -> HTTPException:
    """503 with Retry-After: the database cannot serve now."""
    return HTTPException(503, dict(UNAVAILABLE), headers={"Retry-After": "5"})


@asynccontextmanager
async def db_or_503() -> AsyncIterator[None]:
    """Around an HTTP route's database step: a passing database fault (the database away, a wait on it timed out,
    the pool closing) is answered 503 with Retry-After; an HTTPException or any other error passes as it is."""
    try:
        yield
    except HTTPException:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise unavailable() from exc
        raise


def _answer_database_faults(app: FastAPI) -> None:
    async def database_fault(request: Request, exc: Exception) -> JSONResponse:
        if database_away(exc):
            log.warning("database unavailable", extra={"path": request.url.path, "error_type": type(exc).__name__})
            return JSONResponse(UNAVAILABLE, status_code=503, headers={"Retry-After": "5"})
        if isinstance(exc, asyncpg.DataError):
            return JSONResponse(
                {"error": "invalid", "reason": f"the request holds a value the database cannot take: {exc}"[:300]},
                status_code=422,
            )
        log.error("request failed", exc_info=exc, extra={"path": request.url.path})
        return JSONResponse({"error": "internal", "reason": "an internal error; it is logged"}, status_code=500)

    for kind in (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        app.add_exception_handler(kind, database_fault)


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


_bearer = HTTPBearer(scheme_name=BEARER, description=BEARER_DESCRIPTION, auto_error=False)


async def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None
) -> Principal:
    """The caller's scope from `Authorization: Bearer <key>`; 401 without a known key. Declared as the bearer scheme,
    so every operation that takes a key says so in the OpenAPI document."""
    key = credentials.credentials if credentials is not None else ""
    if not key.strip():
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


async def give_up_as_dead_letter(
    ctx: ServiceContext, record: RawRecord, exc: BaseException, attempts: int, *, service: str
) -> None:
    """A consumer's `give_up`: a record that failed for good for a reason other than its data (a bug) becomes a
    `processing_failed` dead letter, stored with its outgoing message in one transaction, counted, and sent."""
    reason = f"{type(exc).__name__}: {exc}"[:500]
    letter = dead_letter_of(record, "processing_failed", reason, ctx.clock(), service=service, attempts=attempts)
    async with ctx.pool.acquire() as conn, conn.transaction():
        fresh = await save_dead_letters(conn, [letter], ctx.topics.dlq)
    for new in fresh:
        ctx.metrics.dead_letters.labels(new.source_topic).inc()
    ctx.relay.wake()


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


IDLE_POLL_MS = 1000
"""How long a consumer with nothing to read waits in one `getmany` before it loops (it returns as soon as the fetcher
has records). FastStream's own batch loop waits `batch_timeout_ms` and then, when nothing came, *sleeps* as long again:
a record arriving in that sleep waited for it (up to 50 ms on each hop), and every idle consumer woke ten times a
second. `batch_subscriber` replaces that poll with `poll_without_sleeping`: no sleep, one wake-up a second when idle."""

CATCH_UP_MS = 20
"""How long a busy consumer's poll waits for the fetch its own drain started (see `poll_without_sleeping`)."""


def poll_without_sleeping(subscriber: Any, max_records: int, monotonic: Callable[[], float] = time.monotonic) -> None:
    """Make a FastStream batch subscriber's poll one `getmany` of up to IDLE_POLL_MS that returns whatever the fetcher
    has, at once, and never sleeps (FastStream's loop skips an empty batch and polls again).

    A busy consumer (its records were waiting in the fetch buffer: the first `getmany` took no time) also takes what
    arrived while it worked: aiokafka fetches a partition again only once its buffered records are taken, so what the
    buffer holds was fetched just after the previous batch began, and what came during that batch waits at the broker
    for the fetch this drain starts. Waiting up to CATCH_UP_MS for that fetch puts those records in this batch instead
    of the next one, a whole batch earlier. A consumer that waited for its records does not wait again. Both reads
    make one batch: positions move only over records handed to the handler, so the commit after it stays exact."""

    async def get_msg(consumer: Any) -> tuple[Any, ...]:
        started = monotonic()
        batches = await consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=max_records)
        records = [record for part in batches.values() for record in part]
        if records and len(records) < max_records and monotonic() - started < 0.001:
            more = await consumer.getmany(timeout_ms=CATCH_UP_MS, max_records=max_records - len(records))
            records += [record for part in more.values() for record in part]
        return tuple(records)

    subscriber.get_msg = get_msg


FETCH_MAX_WAIT_MS = 100
"""aiokafka holds a fetch open up to this long, and a partition that had buffered records waits for that fetch to end
before its new records are fetched: the 500 ms default shows as tail latency on every hop."""


def batch_subscriber(
    ctx: ServiceContext,
    *topics: str,
    group_id: str,
    title: str,
    description: str,
    max_partition_fetch_bytes: int = 1024 * 1024,
) -> Callable[[Callable[..., Awaitable[None]]], Any]:
    """A subscriber with the project's delivery policy: batches of up to CONSUMER_MAX_RECORDS, MANUAL ack (the
    handler commits after its transaction, see `consume_batch`), the backlog read from the earliest offset, and raw
    bytes handed to the handler so a record that does not parse becomes a dead letter. `max_partition_fetch_bytes`
    bounds what the consumer fetches ahead per partition (the default is aiokafka's, 1 MiB), which a backlog fills."""
    subscriber = ctx.broker.subscriber(
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
        max_partition_fetch_bytes=max_partition_fetch_bytes,
    )
    poll_without_sleeping(subscriber, ctx.settings.consumer_max_records)
    return subscriber
