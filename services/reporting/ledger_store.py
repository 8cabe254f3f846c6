"""The ledger's table (schema `reporting`, migration 002_ledger.sql): named, parameterized SQL.

Every writing function works inside the caller's transaction: one import is one transaction, all or nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from services.reporting.ledger import ItemStatus, LedgerItem, settle_closed_at, source_year

Executor: TypeAlias = "asyncpg.Connection[Any] | asyncpg.Pool[Any]"

_COLUMNS = "item_id, source, area, problem, measures, departments, due_date, status, closed_at, evidence, approved_by"

# The items of an import that are stored already, locked so that two imports of the same items queue.
SQL_LOCK_EXISTING = """
SELECT item_id, closed_at FROM ledger_items WHERE item_id = ANY($1::text[]) ORDER BY item_id FOR UPDATE
"""

SQL_UPSERT_ITEMS = """
INSERT INTO ledger_items (item_id, source, source_year, area, problem, measures, departments, due_date, status,
                          closed_at, evidence, approved_by, created_at, updated_at)
SELECT u.item_id, u.source, u.source_year, u.area, u.problem, u.measures,
       ARRAY(SELECT jsonb_array_elements_text(u.departments::jsonb)), u.due_date, u.status,
       u.closed_at, u.evidence, u.approved_by, $13, $13
FROM unnest($1::text[], $2::text[], $3::integer[], $4::text[], $5::text[], $6::text[], $7::text[], $8::date[],
            $9::text[], $10::timestamptz[], $11::text[], $12::text[])
     WITH ORDINALITY AS u(item_id, source, source_year, area, problem, measures, departments, due_date, status,
                          closed_at, evidence, approved_by, ord)
ORDER BY u.ord
ON CONFLICT (item_id) DO UPDATE SET
    source = EXCLUDED.source, source_year = EXCLUDED.source_year, area = EXCLUDED.area,
    problem = EXCLUDED.problem, measures = EXCLUDED.measures, departments = EXCLUDED.departments,
    due_date = EXCLUDED.due_date, status = EXCLUDED.status, closed_at = EXCLUDED.closed_at,
    evidence = EXCLUDED.evidence, approved_by = EXCLUDED.approved_by, updated_at = EXCLUDED.updated_at
"""

SQL_LIST_ITEMS = f"""
SELECT {_COLUMNS} FROM ledger_items
WHERE ($1::text IS NULL OR source = $1)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR departments @> ARRAY[$3::text])
ORDER BY seq
"""

SQL_ITEMS_OF_YEARS = f"SELECT {_COLUMNS} FROM ledger_items WHERE source_year = ANY($1::integer[])"

SQL_GET_ITEM = f"SELECT {_COLUMNS} FROM ledger_items WHERE item_id = $1"

SQL_LOCK_ITEM = f"SELECT {_COLUMNS} FROM ledger_items WHERE item_id = $1 FOR UPDATE"

SQL_SAVE_CLOSING = """
UPDATE ledger_items SET status = 'closed', closed_at = $2, evidence = $3, approved_by = $4, updated_at = $2
WHERE item_id = $1 AND status <> 'closed'
"""


def _item(row: asyncpg.Record) -> LedgerItem:
    return LedgerItem.model_validate(dict(row))


async def import_items(conn: asyncpg.Connection[Any], items: Sequence[LedgerItem], now: datetime) -> int:
    """Insert new items and update those stored already (never a second row for an item_id); returns the count."""
    ids = [i.item_id for i in items]
    stored = {r["item_id"]: r["closed_at"] for r in await conn.fetch(SQL_LOCK_EXISTING, ids)}
    await conn.execute(
        SQL_UPSERT_ITEMS,
        ids,
        [i.source for i in items],
        [source_year(i.source) for i in items],
        [i.area for i in items],
        [i.problem for i in items],
        [i.measures for i in items],
        [json.dumps(i.departments, ensure_ascii=False) for i in items],
        [i.due_date for i in items],
        [i.status.value for i in items],
        [settle_closed_at(i, stored.get(i.item_id), now) for i in items],
        [i.evidence for i in items],
        [i.approved_by for i in items],
        now,
    )
    return len(items)


async def list_items(
    db: Executor, *, source: str | None = None, status: ItemStatus | None = None, department: str | None = None
) -> list[LedgerItem]:
    rows = await db.fetch(SQL_LIST_ITEMS, source, status.value if status else None, department)
    return [_item(r) for r in rows]


async def items_of_years(db: Executor, years: Sequence[int]) -> list[LedgerItem]:
    """The items whose source is of one of these years (the candidates of the `recurring` rule)."""
    if not years:
        return []
    return [_item(r) for r in await db.fetch(SQL_ITEMS_OF_YEARS, list(years))]


async def get_item(db: Executor, item_id: str) -> LedgerItem | None:
    row = await db.fetchrow(SQL_GET_ITEM, item_id)
    return None if row is None else _item(row)


async def lock_item(conn: asyncpg.Connection[Any], item_id: str) -> LedgerItem | None:
    row = await conn.fetchrow(SQL_LOCK_ITEM, item_id)
    return None if row is None else _item(row)


async def save_closing(conn: asyncpg.Connection[Any], item: LedgerItem) -> None:
    await conn.execute(SQL_SAVE_CLOSING, item.item_id, item.closed_at, item.evidence, item.approved_by)
