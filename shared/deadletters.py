"""Storing dead letters: each service's `dead_letters` table (same shape in every schema, reached through the
service's search_path) keeps one row per source record, and the outgoing `complaints.dlq` message of each new one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from shared.events import DeadLetter
from shared.outbox import OutboxMessage, enqueue

SQL_INSERT_DEAD_LETTERS = """
INSERT INTO dead_letters (dead_letter_id, source_topic, source_partition, source_offset, source_key,
                          error_type, reason, first_seen_at, attempts, payload)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[], $5::bytea[], $6::text[], $7::text[],
                     $8::timestamptz[], $9::int[], $10::bytea[])
ON CONFLICT DO NOTHING
RETURNING dead_letter_id
"""


async def store_dead_letters(conn: asyncpg.Connection[Any], letters: Sequence[DeadLetter]) -> list[DeadLetter]:
    """Store dead letters in the caller's transaction; returns the new ones (a redelivered record gives none).

    Nothing of the record's content can make this fail: its key and payload are stored as bytes (bytea), and the
    texts (reason, error type) were made storable when the dead letter was built (`shared.kafka.dead_letter_of`)."""
    if not letters:
        return []
    rows = await conn.fetch(
        SQL_INSERT_DEAD_LETTERS,
        [d.dead_letter_id for d in letters],
        [d.source_topic for d in letters],
        [d.source_partition for d in letters],
        [d.source_offset for d in letters],
        [d.key_bytes() for d in letters],
        [d.error_type for d in letters],
        [d.reason for d in letters],
        [d.first_seen_at for d in letters],
        [d.attempts for d in letters],
        [d.payload() for d in letters],
    )
    kept = {r["dead_letter_id"] for r in rows}
    return [d for d in letters if d.dead_letter_id in kept]


def dead_letter_message(letter: DeadLetter, dlq_topic: str) -> OutboxMessage:
    """The `complaints.dlq` message of a dead letter, keyed by its source key's exact bytes."""
    return OutboxMessage(dlq_topic, letter.key_bytes(), letter.to_json_bytes())


async def save_dead_letters(
    conn: asyncpg.Connection[Any], letters: Sequence[DeadLetter], dlq_topic: str
) -> list[DeadLetter]:
    """Store dead letters and queue the `complaints.dlq` message of each new one, in the caller's transaction;
    returns the new ones."""
    fresh = await store_dead_letters(conn, letters)
    await enqueue(conn, [dead_letter_message(d, dlq_topic) for d in fresh])
    return fresh
