"""Intake's tables (schema `intake`): complaints for dedupe, dead letters, and the outbox, written together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from shared.deadletters import dead_letter_message, store_dead_letters
from shared.events import ComplaintReceived, DeadLetter, SurveyResponded
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


# --- the portal, visits and surveys (contract 10.1, 10.2; migration 003) ----------------------------------------

SQL_LOCK_SUBMISSION = "SELECT pg_advisory_xact_lock(hashtext('complaints-portal:' || $1 || ':' || $2))"
SQL_RECENT_SUBMISSION = """
SELECT tracking_number, complaint_id FROM portal_submissions
WHERE client_address = $1 AND fingerprint = $2 AND submitted_at > $3
ORDER BY submitted_at DESC LIMIT 1
"""
SQL_NEXT_SEQUENCE = """
INSERT INTO portal_sequences (day, last_seq) VALUES ($1, 1)
ON CONFLICT (day) DO UPDATE SET last_seq = portal_sequences.last_seq + 1
RETURNING last_seq
"""
SQL_INSERT_SUBMISSION = """
INSERT INTO portal_submissions (tracking_number, complaint_id, client_address, fingerprint, submitted_at)
VALUES ($1, $2, $3, $4, $5)
"""
SQL_INSERT_VISITS = """
INSERT INTO visits (visit_id, kind, held_at, region_code, problems, detail, accepted_at, via)
SELECT v.visit_id, v.kind, v.held_at, v.region_code, v.problems, v.detail::jsonb, $7, $8
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::int[], $6::text[])
     AS v(visit_id, kind, held_at, region_code, problems, detail)
ON CONFLICT (visit_id) DO NOTHING
RETURNING visit_id
"""
SQL_GET_VISIT = "SELECT visit_id, kind, held_at, region_code, problems, detail::text FROM visits WHERE visit_id = $1"
SQL_CASES = """
SELECT c.complaint_id, c.event::text AS event, s.state, s.lead_department, s.note, s.changed_at
FROM complaints c LEFT JOIN case_states s USING (complaint_id)
WHERE c.complaint_id = ANY($1::text[])
"""
SQL_INSERT_RESPONSE = """
INSERT INTO survey_responses (response_id, answered_at, event, accepted_at, via)
VALUES ($1, $2, $3::jsonb, $4, $5)
ON CONFLICT (response_id) DO NOTHING
RETURNING response_id
"""
SQL_GET_RESPONSE = "SELECT event::text FROM survey_responses WHERE response_id = $1"
# A fact older than the state kept (by its `at`, then by when it was recorded) changes nothing: replays and
# out-of-order delivery leave the latest word in place.
SQL_UPSERT_STATES = """
INSERT INTO case_states (complaint_id, state, lead_department, changed_at, recorded_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
ON CONFLICT (complaint_id) DO UPDATE SET
    state = EXCLUDED.state, lead_department = EXCLUDED.lead_department,
    changed_at = EXCLUDED.changed_at, recorded_at = EXCLUDED.recorded_at
WHERE (EXCLUDED.changed_at, EXCLUDED.recorded_at) >= (case_states.changed_at, case_states.recorded_at)
"""
SQL_UPSERT_NOTES = """
UPDATE case_states s SET note = n.note, note_at = n.note_at
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS n(complaint_id, note, note_at)
WHERE s.complaint_id = n.complaint_id AND (s.note_at IS NULL OR n.note_at >= s.note_at)
"""


@dataclass(frozen=True)
class Tracked:
    """A submission's number and complaint, and whether it was known already (the same within 10 minutes)."""

    tracking_number: str
    complaint_id: str
    duplicate: bool


async def recent_submission(
    conn: asyncpg.Connection[Any], client: str, fingerprint: str, since: datetime
) -> Tracked | None:
    """In the caller's transaction, under a lock on (client, fingerprint) held until it ends."""
    await conn.execute(SQL_LOCK_SUBMISSION, client, fingerprint)
    row = await conn.fetchrow(SQL_RECENT_SUBMISSION, client, fingerprint, since)
    return None if row is None else Tracked(row["tracking_number"], row["complaint_id"], True)


async def next_sequence(conn: asyncpg.Connection[Any], day: date) -> int:
    seq: int = await conn.fetchval(SQL_NEXT_SEQUENCE, day)
    return seq


async def save_submission(
    conn: asyncpg.Connection[Any], tracked: Tracked, client: str, fingerprint: str, now: datetime
) -> None:
    await conn.execute(SQL_INSERT_SUBMISSION, tracked.tracking_number, tracked.complaint_id, client, fingerprint, now)


@dataclass(frozen=True)
class VisitRow:
    visit_id: str
    kind: str
    held_at: datetime
    region_code: str
    problems: int
    detail: str


async def save_visits(
    conn: asyncpg.Connection[Any], visits: Sequence[VisitRow], *, now: datetime, via: str
) -> set[str]:
    """In the caller's transaction; the ids of the visits that were new."""
    if not visits:
        return set()
    rows = await conn.fetch(
        SQL_INSERT_VISITS,
        [v.visit_id for v in visits],
        [v.kind for v in visits],
        [v.held_at for v in visits],
        [v.region_code for v in visits],
        [v.problems for v in visits],
        [v.detail for v in visits],
        now,
        via,
    )
    return {r["visit_id"] for r in rows}


async def get_visit(conn: asyncpg.Connection[Any], visit_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(SQL_GET_VISIT, visit_id)
    return row


async def get_cases(conn: asyncpg.Connection[Any], complaint_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    """Each complaint's event with its kept state (state null until the first lifecycle fact)."""
    rows = await conn.fetch(SQL_CASES, list(complaint_ids))
    return {r["complaint_id"]: r for r in rows}


async def save_response(
    conn: asyncpg.Connection[Any], response: SurveyResponded, *, now: datetime, via: str, topic: str
) -> bool:
    """In the caller's transaction: the response kept and its message put in the outbox; False if known already."""
    text = response.model_dump_json()
    new = await conn.fetchval(SQL_INSERT_RESPONSE, response.response_id, response.answered_at, text, now, via)
    if new is None:
        return False
    await enqueue(conn, [OutboxMessage(topic, response.response_id.encode(), text.encode())])
    return True


@dataclass(frozen=True)
class StateFact:
    complaint_id: str
    state: str
    lead_department: str | None
    changed_at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class NoteFact:
    complaint_id: str
    note: str
    at: datetime


async def save_states(conn: asyncpg.Connection[Any], states: Sequence[StateFact], notes: Sequence[NoteFact]) -> None:
    """In the caller's transaction: at most one state and one note per case (the batch's latest of each)."""
    if states:
        await conn.execute(
            SQL_UPSERT_STATES,
            [f.complaint_id for f in states],
            [f.state for f in states],
            [f.lead_department for f in states],
            [f.changed_at for f in states],
            [f.recorded_at for f in states],
        )
    if notes:
        await conn.execute(
            SQL_UPSERT_NOTES, [n.complaint_id for n in notes], [n.note for n in notes], [n.at for n in notes]
        )
