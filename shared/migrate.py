"""Forward-only SQL migrations, one numbered folder per service schema (services/<name>/migrations/NNN_*.sql)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from shared.db import SERVICE_SCHEMAS

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_of(service: str) -> list[Migration]:
    try:
        folder = resources.files(f"services.{service}").joinpath("migrations")
    except ModuleNotFoundError:
        return []
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations of {service} share a number: {versions}")
    return found


async def migrate(dsn: str, services: tuple[str, ...] = SERVICE_SCHEMAS) -> dict[str, list[str]]:
    """Apply what is missing, each file in its own transaction, under an advisory lock per schema."""
    applied: dict[str, list[str]] = {}
    conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn)
    try:
        for service in services:
            applied[service] = await _migrate_one(conn, service)
    finally:
        await conn.close()
    return applied


async def _migrate_one(conn: asyncpg.Connection[Any], service: str) -> list[str]:
    if service not in SERVICE_SCHEMAS:
        raise ValueError(f"unknown service {service!r}")
    files = migrations_of(service)
    done: list[str] = []
    await conn.execute("SELECT pg_advisory_lock(hashtext('complaints-migrate:' || $1))", service)
    try:
        # The schema name comes from the fixed SERVICE_SCHEMAS list, never from input.
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{service}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{service}".schema_migrations '
            "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        have = {r["version"] for r in await conn.fetch(f'SELECT version FROM "{service}".schema_migrations')}
        for m in files:
            if m.version in have:
                continue
            async with conn.transaction():
                await conn.execute(f'SET LOCAL search_path TO "{service}"')
                await conn.execute(m.sql)
                await conn.execute(
                    f'INSERT INTO "{service}".schema_migrations (version, name) VALUES ($1, $2)', m.version, m.name
                )
            log.info("migration applied", extra={"schema": service, "migration": m.name})
            done.append(m.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext('complaints-migrate:' || $1))", service)
    return done
