"""asyncpg pools: one per service, whose `search_path` is the service's own schema (one owner per table); how a
database fault is classified (passing, the record's own, or a bug); and a transaction whose every wait is bounded."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

SERVICE_SCHEMAS = ("intake", "routing", "sla", "reporting")


class Fault(enum.Enum):
    """What a failure says about the record that was being processed when it happened."""

    PASSING = "passing"  # the database is away, busy, read-only or timed out: retry the same record, forever
    RECORD = "record"  # the record's own content (a data exception, an integrity violation): dead-letter it
    OTHER = "other"  # anything else, probably a bug: a few tries, then a dead letter


# SQLSTATE classes (the first two characters) of faults that pass: connection exception, insufficient resources
# (disk full, out of memory, too many connections), operator intervention (query canceled by statement_timeout,
# admin shutdown, cannot connect now), transaction rollback (serialization failure, deadlock), system error (I/O).
PASSING_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "40", "58"})
# Single SQLSTATEs of faults that pass: a read-only transaction (a failover: the primary became a replica),
# lock_not_available (lock_timeout) and object_in_use.
PASSING_SQLSTATES = frozenset({"25006", "55P03", "55006"})
# The record's own fault: data exception (a NUL in text, a value out of range), integrity constraint violation.
RECORD_SQLSTATE_CLASSES = frozenset({"22", "23"})

# Faults below SQL: the connection went away, or a wait on the database timed out.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InternalClientError,
)
# Client-side mistakes that are not about the database being away (asyncpg's DataError: a value of the wrong type).
_NOT_CONNECTION = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.ClientConfigurationError,
    asyncpg.exceptions.UnsupportedClientFeatureError,
    asyncpg.exceptions.UnsupportedServerFeatureError,
)


def sqlstate_of(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) and len(state) == 5 else None


def _classify_one(exc: BaseException) -> Fault:
    if isinstance(exc, asyncpg.exceptions.InvalidCachedStatementError):
        return Fault.PASSING  # a cached plan gone stale after a migration: the next try prepares it again
    state = sqlstate_of(exc) if isinstance(exc, asyncpg.exceptions.PostgresError) else None
    if state is not None:
        if state in PASSING_SQLSTATES or state[:2] in PASSING_SQLSTATE_CLASSES:
            return Fault.PASSING
        if state[:2] in RECORD_SQLSTATE_CLASSES:
            return Fault.RECORD
        return Fault.OTHER
    if isinstance(exc, _NOT_CONNECTION):
        return Fault.RECORD if isinstance(exc, asyncpg.exceptions.DataError) else Fault.OTHER
    # A plain InterfaceError is the client's word for "connection closed" / "pool is closing".
    if isinstance(exc, CONNECTION_ERRORS) or type(exc) is asyncpg.exceptions.InterfaceError:
        return Fault.PASSING
    return Fault.OTHER


def classify(exc: BaseException) -> Fault:
    """PASSING if the failure, or one it was raised while handling (a failed rollback after a lost connection), is a
    passing database fault; else RECORD or OTHER by the failure itself."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        if _classify_one(current) is Fault.PASSING:
            return Fault.PASSING
        current = current.__cause__ or current.__context__
    return _classify_one(exc)


def is_transient(exc: BaseException) -> bool:
    """A passing fault: retried with backoff, never dead-lettered; an HTTP caller is told 503 with Retry-After."""
    return classify(exc) is Fault.PASSING


def is_record_fault(exc: BaseException) -> bool:
    return classify(exc) is Fault.RECORD


def stale_connections(exc: BaseException) -> bool:
    """After this fault the pool's open connections are of no use (a read-only failover leaves them on a replica)."""
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return False
        if sqlstate_of(current) == "25006":
            return True
        current = current.__cause__ or current.__context__
    return False


async def after_fault(pool: asyncpg.Pool[Any], exc: BaseException) -> None:
    """What a retry loop does after a passing fault before it tries again: drop connections that cannot recover."""
    if stale_connections(exc):
        await pool.expire_connections()


async def create_pool(
    dsn: str,
    schema: str,
    max_size: int = 10,
    min_size: int = 1,
    *,
    command_timeout_s: float = 10.0,
    connect_timeout_s: float = 10.0,
) -> asyncpg.Pool[Any]:
    """Every wait bounded: connecting (`connect_timeout_s`), and each statement, commit and rollback
    (`command_timeout_s`, asyncpg's `command_timeout`)."""
    if schema not in SERVICE_SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}")
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout_s,
        timeout=connect_timeout_s,
        server_settings={"search_path": schema, "application_name": f"complaints-{schema}"},
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def bounded_transaction(pool: asyncpg.Pool[Any], timeout_s: float) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A connection in a transaction, the whole unit (acquire, statements, commit, rollback, release) bounded by
    `timeout_s`. At the deadline the connection is closed under the work, so every wait on it ends at once (a paused
    or hung server cannot hold the caller in a rollback or a reset) and the caller gets a TimeoutError, which is a
    passing fault: an HTTP handler answers 503. The server may still have committed: a retry is deduped."""
    loop = asyncio.get_running_loop()
    held: list[asyncpg.Connection[Any]] = []
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        for conn in held:
            conn.terminate()

    watchdog = loop.call_later(timeout_s, expire)
    try:
        # The acquire is cancellable as it is (nothing to clean up); the last resort below covers a hang anywhere else.
        async with asyncio.timeout(timeout_s * 2 + 1):
            async with pool.acquire(timeout=timeout_s) as conn:
                held.append(conn)
                async with conn.transaction():
                    yield conn
    except Exception as exc:
        if expired and not isinstance(exc, TimeoutError):
            raise TimeoutError(f"the database did not answer within {timeout_s:g} s") from exc
        raise
    finally:
        watchdog.cancel()


async def ping(pool: asyncpg.Pool[Any], timeout_s: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            return bool(await pool.fetchval("SELECT 1") == 1)
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False
