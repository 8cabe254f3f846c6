"""The supervision items' table (schema `reporting`, migration 006): named, parameterized SQL. Every writing
function works inside the caller's transaction, where the outbox rows of the change are written too."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from services.reporting.supervision import FollowUp, SupervisionItem, next_firing
from shared.events.supervision import Phenomenon, SupervisionStatus

Executor: TypeAlias = "asyncpg.Connection[Any] | asyncpg.Pool[Any]"

_COLUMNS = (
    "item_id, phenomenon, complaint_ids, opened_at, opened_by, reason, status, warn_at, due_at, warned_at, "
    "overdue_at, transferred_to, transfer_note, transferred_at, follow_ups, result, decided_by, concluded_at"
)

SQL_INSERT_ITEMS = """
INSERT INTO supervision_items (item_id, phenomenon, complaint_ids, opened_at, opened_by, reason, status, warn_at,
                               due_at, next_fire_at, transferred_to, transfer_note, transferred_at, updated_at)
SELECT u.item_id, u.phenomenon, ARRAY(SELECT jsonb_array_elements_text(u.complaint_ids::jsonb)), u.opened_at,
       u.opened_by, u.reason, u.status, u.warn_at, u.due_at, u.next_fire_at, u.transferred_to, u.transfer_note,
       u.transferred_at, $14
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[], $13::timestamptz[])
     WITH ORDINALITY AS u(item_id, phenomenon, complaint_ids, opened_at, opened_by, reason, status, warn_at, due_at,
                          next_fire_at, transferred_to, transfer_note, transferred_at, ord)
ORDER BY u.ord
ON CONFLICT (item_id) DO NOTHING
RETURNING item_id
"""

SQL_SAVE_ITEM = """
UPDATE supervision_items SET
    status = $2, warned_at = $3, overdue_at = $4, next_fire_at = $5, transferred_to = $6, transfer_note = $7,
    transferred_at = $8, follow_ups = $9::jsonb, result = $10, decided_by = $11, concluded_at = $12, updated_at = $13
WHERE item_id = $1
"""

SQL_LOCK_ITEM = f"SELECT {_COLUMNS} FROM supervision_items WHERE item_id = $1 FOR UPDATE"

SQL_ITEM_OF = f"""
SELECT {_COLUMNS} FROM supervision_items WHERE complaint_ids @> ARRAY[$1::text] AND phenomenon = $2
"""

SQL_LIST_ITEMS = f"""
SELECT {_COLUMNS} FROM supervision_items
WHERE ($1::text IS NULL OR phenomenon = $1)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR transferred_to = $3)
ORDER BY seq
"""

# Items whose warning or overdue is due, claimed so that two replicas never fire the same one.
SQL_CLAIM_DUE = f"""
SELECT {_COLUMNS} FROM supervision_items
WHERE next_fire_at IS NOT NULL AND next_fire_at <= $1
ORDER BY next_fire_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

SQL_COUNT = "SELECT phenomenon, status, count(*) AS n FROM supervision_items GROUP BY phenomenon, status"

SQL_COUNT_OVERDUE_OPEN = "SELECT count(*) FROM supervision_items WHERE status <> 'concluded' AND due_at <= $1"


def _item(row: asyncpg.Record) -> SupervisionItem:
    follow_ups = json.loads(row["follow_ups"]) if isinstance(row["follow_ups"], str) else row["follow_ups"]
    return SupervisionItem(
        item_id=row["item_id"],
        phenomenon=Phenomenon(row["phenomenon"]),
        complaint_ids=tuple(row["complaint_ids"]),
        opened_at=row["opened_at"],
        opened_by=row["opened_by"],
        reason=row["reason"],
        status=SupervisionStatus(row["status"]),
        warn_at=row["warn_at"],
        due_at=row["due_at"],
        warned_at=row["warned_at"],
        overdue_at=row["overdue_at"],
        transferred_to=row["transferred_to"],
        transfer_note=row["transfer_note"],
        transferred_at=row["transferred_at"],
        follow_ups=tuple(FollowUp.from_json(f) for f in follow_ups or []),
        result=row["result"],
        decided_by=row["decided_by"],
        concluded_at=row["concluded_at"],
    )


async def insert_items(conn: asyncpg.Connection[Any], items: Sequence[SupervisionItem], now: datetime) -> set[str]:
    """Insert new items; returns the ids that were new (an item opened before is left as it is)."""
    if not items:
        return set()
    rows = await conn.fetch(
        SQL_INSERT_ITEMS,
        [i.item_id for i in items],
        [i.phenomenon.value for i in items],
        [json.dumps(list(i.complaint_ids), ensure_ascii=False) for i in items],
        [i.opened_at for i in items],
        [i.opened_by for i in items],
        [i.reason for i in items],
        [i.status.value for i in items],
        [i.warn_at for i in items],
        [i.due_at for i in items],
        [next_firing(i) for i in items],
        [i.transferred_to for i in items],
        [i.transfer_note for i in items],
        [i.transferred_at for i in items],
        now,
    )
    return {r["item_id"] for r in rows}


async def save_item(conn: asyncpg.Connection[Any], item: SupervisionItem, now: datetime) -> None:
    await conn.execute(
        SQL_SAVE_ITEM,
        item.item_id,
        item.status.value,
        item.warned_at,
        item.overdue_at,
        next_firing(item),
        item.transferred_to,
        item.transfer_note,
        item.transferred_at,
        json.dumps([f.to_json() for f in item.follow_ups], ensure_ascii=False),
        item.result,
        item.decided_by,
        item.concluded_at,
        now,
    )


async def lock_item(conn: asyncpg.Connection[Any], item_id: str) -> SupervisionItem | None:
    row = await conn.fetchrow(SQL_LOCK_ITEM, item_id)
    return None if row is None else _item(row)


async def item_of(db: Executor, complaint_id: str, phenomenon: Phenomenon) -> SupervisionItem | None:
    row = await db.fetchrow(SQL_ITEM_OF, complaint_id, phenomenon.value)
    return None if row is None else _item(row)


async def list_items(
    db: Executor,
    *,
    phenomenon: Phenomenon | None = None,
    status: SupervisionStatus | None = None,
    transferred_to: str | None = None,
) -> list[SupervisionItem]:
    rows = await db.fetch(
        SQL_LIST_ITEMS,
        phenomenon.value if phenomenon else None,
        status.value if status else None,
        transferred_to,
    )
    return [_item(r) for r in rows]


async def claim_due(conn: asyncpg.Connection[Any], now: datetime, limit: int) -> list[SupervisionItem]:
    """Items with a warning or overdue due at `now`, locked (SKIP LOCKED) until the caller's transaction ends."""
    return [_item(r) for r in await conn.fetch(SQL_CLAIM_DUE, now, limit)]


async def count_items(db: Executor) -> dict[tuple[str, str], int]:
    """(phenomenon, status) → items, from the table: the gauge and the bulletin."""
    return {(r["phenomenon"], r["status"]): int(r["n"]) for r in await db.fetch(SQL_COUNT)}


async def count_overdue_open(db: Executor, now: datetime) -> int:
    value = await db.fetchval(SQL_COUNT_OVERDUE_OPEN, now)
    return int(value or 0)
