"""asyncpg pools: one per service, whose `search_path` is the service's own schema (one owner per table)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

SERVICE_SCHEMAS = ("intake", "routing", "sla", "reporting")

# Faults that pass: the database restarting, a network blip, a lock conflict. Retried with backoff, never dead-lettered.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_DB_ERRORS)


async def create_pool(dsn: str, schema: str, max_size: int = 10, min_size: int = 1) -> asyncpg.Pool[Any]:
    if schema not in SERVICE_SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}")
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=30,
        server_settings={"search_path": schema, "application_name": f"complaints-{schema}"},
    )
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool[Any], timeout_s: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            return bool(await pool.fetchval("SELECT 1") == 1)
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False
