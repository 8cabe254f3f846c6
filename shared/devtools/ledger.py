"""`complaints ledger import FILE`: a CSV or XLSX ledger file into the reporting schema, in one transaction."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from services.reporting import ledger_store
from services.reporting.ledger import LedgerImportError, LedgerItem, file_kind, parse_file
from shared.clock import system_clock
from shared.db import create_pool, is_transient
from shared.migrate import migrate
from shared.settings import Settings

REFUSED = 2


def read_file(path: Path) -> list[LedgerItem]:
    """The whole file parsed before anything is written (raises LedgerImportError)."""
    data = path.read_bytes()
    kind = file_kind(None, data, path.name)
    if kind is None:
        raise LedgerImportError(None, "cannot tell its format: name it .csv or .xlsx")
    return parse_file(kind, data)


async def import_items(database_url: str, items: list[LedgerItem]) -> int:
    """Apply parsed items all or nothing, in one transaction, after the reporting schema's migrations."""
    await migrate(database_url, ("reporting",))
    pool = await create_pool(database_url, "reporting", max_size=1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            return await ledger_store.import_items(conn, items, system_clock())
    finally:
        await pool.close()


def run_ledger_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"error: no file {path}", file=sys.stderr)
        return REFUSED
    try:
        items = read_file(path)
        count = asyncio.run(import_items(Settings().database_url, items))
    except LedgerImportError as exc:
        where = f"line {exc.row}: " if exc.row is not None else ""
        print(f"error: {path.name}: {where}{exc.reason}; nothing was imported", file=sys.stderr)
        return REFUSED
    except Exception as exc:
        if not is_transient(exc):
            raise
        reason = f"{type(exc).__name__}: {exc}"
        print(f"error: the database is not reachable ({reason}); nothing was imported", file=sys.stderr)
        return 1
    print(f"imported {count} items from {path.name}")
    return 0
