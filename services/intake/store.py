"""Intake's tables (schema `intake`): complaints for dedupe, dead letters, and the outbox, written together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.deadletters import dead_letter_message, store_dead_letters
from shared.events import ComplaintReceived, DeadLetter
from shared.outbox import OutboxMessage, enqueue

SQL_INSERT_COMPLAINTS = """
INSERT INTO complaints (complaint_id, channel, source_id, event_id, received_at, accepted_at, via, event)
SELECT c.complaint_id, c.channel, c.source_id, c.event_id, c.received_at, $6, $7, c.event::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[], $8::text[])
     AS c(complaint_id, channel, source_id, event_id, received_at, event)
ON CONFLICT (complaint_id) DO NOTHING
RETURNING complaint_id
"""

SQL_GET = "SELECT event::text FROM complaints WHERE complaint_id = $1"


@dataclass(frozen=True)
class SaveResult:
    new_complaints: list[ComplaintReceived]
    duplicates: list[ComplaintReceived]
    new_dead_letters: list[DeadLetter]


async def save(
    conn: asyncpg.Connection[Any],
    complaints: Sequence[ComplaintReceived],
    dead_letters: Sequence[DeadLetter],
    *,
    now: datetime,
    via: str,
    received_topic: str,
    dlq_topic: str,
) -> SaveResult:
    """In the caller's transaction: new complaints and dead letters stored, and their messages put in the outbox."""
    fresh: list[tuple[ComplaintReceived, str]] = []
    dupes: list[ComplaintReceived] = []
    if complaints:
        encoded = [c.model_dump_json() for c in complaints]  # once: the same text goes to the table and the outbox
        rows = await conn.fetch(
            SQL_INSERT_COMPLAINTS,
            [c.complaint_id for c in complaints],
            [c.channel.value for c in complaints],
            [c.source_id for c in complaints],
            [c.event_id for c in complaints],
            [c.received_at for c in complaints],
            now,
            via,
            encoded,
        )
        inserted = {r["complaint_id"] for r in rows}
        for c, text in zip(complaints, encoded, strict=True):
            if c.complaint_id in inserted:
                inserted.discard(c.complaint_id)  # a second copy inside the same batch is a duplicate
                fresh.append((c, text))
            else:
                dupes.append(c)
    new_letters = await store_dead_letters(conn, dead_letters)
    await enqueue(
        conn,
        [OutboxMessage(received_topic, c.complaint_id.encode(), text.encode()) for c, text in fresh]
        + [dead_letter_message(d, dlq_topic) for d in new_letters],
    )
    return SaveResult([c for c, _ in fresh], dupes, new_letters)


async def get_event(pool: asyncpg.Pool[Any], complaint_id: str) -> ComplaintReceived | None:
    text = await pool.fetchval(SQL_GET, complaint_id)
    return None if text is None else ComplaintReceived.model_validate_json(text)
