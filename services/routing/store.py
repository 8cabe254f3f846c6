"""Routing's tables (schema `routing`), as named parameterized SQL and thin functions over them.

Writers take a connection inside the caller's transaction, so a fact's effects, its processed-message row and its
outbox messages commit together. Readers serve the HTTP side.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.routing.casework import CaseFacts, Effects, snapshot_from_json, snapshot_to_json
from services.routing.lifecycle import CaseSnapshot
from shared.deadletters import dead_letter_message, store_dead_letters
from shared.domain import Category, Channel
from shared.events import ComplaintAssigned, ComplaintReceived, DeadLetter, SlaEvent
from shared.outbox import OutboxMessage, enqueue
from shared.topics import Topics

# --- writing ------------------------------------------------------------------------------------------------

SQL_LOCK_CASES = """
SELECT complaint_id, channel, category, region_code, received_at, snapshot::text AS snapshot
FROM cases
WHERE complaint_id = ANY($1::text[])
ORDER BY complaint_id
FOR UPDATE
"""
# Locked in complaint_id order, so two transactions touching the same cases never wait on each other in a circle.

SQL_PROCESSED = """
SELECT message_key, complaint_id, fingerprint, outcome::text AS outcome
FROM processed
WHERE message_key = ANY($1::text[])
"""

SQL_MARK_PROCESSED = """
INSERT INTO processed (message_key, complaint_id, fingerprint, outcome, processed_at)
SELECT p.key, p.complaint_id, p.fingerprint, p.outcome::jsonb, $5
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS p(key, complaint_id, fingerprint, outcome)
ON CONFLICT (message_key) DO NOTHING
RETURNING message_key
"""

SQL_INSERT_CASES = """
INSERT INTO cases (complaint_id, channel, category, region_code, urgency, received_at, received_event_id, state,
                   round, lead_department, assisting_departments, level, rule_id, assigned_at, snapshot, complaint,
                   created_at, updated_at)
SELECT c.complaint_id, c.channel, c.category, c.region_code, c.urgency, c.received_at, c.event_id, c.state,
       c.round, c.lead, ARRAY(SELECT jsonb_array_elements_text(c.assisting::jsonb)), c.level, c.rule_id, $15,
       c.snapshot::jsonb, c.complaint::jsonb, $15, $15
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::uuid[], $8::text[],
            $9::int[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $16::text[])
     AS c(complaint_id, channel, category, region_code, urgency, received_at, event_id, state, round, lead, assisting,
          level, rule_id, snapshot, complaint)
ON CONFLICT (complaint_id) DO NOTHING
RETURNING complaint_id
"""

SQL_UPDATE_CASE = """
UPDATE cases
SET state = $2, round = $3, lead_department = $4, assisting_departments = $5::text[], level = $6, rule_id = $7,
    snapshot = $8::jsonb, assigned_at = COALESCE($9, assigned_at), updated_at = $10
WHERE complaint_id = $1
"""

SQL_INSERT_ASSIGNMENTS = """
INSERT INTO assignments (assignment_id, event_id, complaint_id, round, lead_department, assisting_departments, level,
                         rule_id, rules_version, reason, assigned_at, causation_id)
SELECT a.assignment_id, a.event_id, a.complaint_id, a.round, a.lead,
       ARRAY(SELECT jsonb_array_elements_text(a.assisting::jsonb)), a.level, a.rule_id, a.rules_version, a.reason,
       a.assigned_at, a.causation_id
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::text[], $10::text[], $11::timestamptz[], $12::text[])
     AS a(assignment_id, event_id, complaint_id, round, lead, assisting, level, rule_id, rules_version, reason,
          assigned_at, causation_id)
"""

SQL_INSERT_HISTORY = """
INSERT INTO case_events (complaint_id, kind, at, recorded_at, body)
SELECT h.complaint_id, h.kind, h.at, $5, h.body::jsonb
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) WITH ORDINALITY AS h(complaint_id, kind, at, body, n)
ORDER BY h.n
"""

SQL_UPSERT_DEADLINE = """
INSERT INTO deadlines (complaint_id, stage, round, department, due_at, status, escalate_to, late, updated_at,
                       last_event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (complaint_id, stage, round) DO UPDATE
SET department = EXCLUDED.department, due_at = EXCLUDED.due_at, status = EXCLUDED.status,
    escalate_to = COALESCE(EXCLUDED.escalate_to, deadlines.escalate_to), late = EXCLUDED.late,
    updated_at = EXCLUDED.updated_at, last_event_id = EXCLUDED.last_event_id
"""

SQL_INSERT_RULE_SET = """
INSERT INTO rule_sets (version, effective_from, yaml, created_at, created_by) VALUES ($1, $2, $3, $4, $5)
"""

# --- reading ------------------------------------------------------------------------------------------------

SQL_RULE_SET_VERSIONS = "SELECT version FROM rule_sets"
SQL_RULE_SETS_EXCEPT = "SELECT version, yaml FROM rule_sets WHERE NOT (version = ANY($1::text[]))"
SQL_RULE_SET_LIST = "SELECT version, effective_from, created_at, created_by FROM rule_sets ORDER BY effective_from"
SQL_RULE_SET_YAML = "SELECT yaml FROM rule_sets WHERE version = $1"

SQL_CASE_COLUMNS = """
complaint_id, channel, category, region_code, urgency, received_at, state, round, lead_department,
assisting_departments, level, rule_id, assigned_at, updated_at, complaint::text AS complaint
"""

SQL_DEPARTMENT_CASES = f"""
SELECT {SQL_CASE_COLUMNS}
FROM cases
WHERE (lead_department = $1 OR $1 = ANY(assisting_departments))
  AND ($2::text IS NULL OR state = $2)
ORDER BY received_at DESC, complaint_id
LIMIT $3 OFFSET $4
"""

SQL_CASE = f"SELECT {SQL_CASE_COLUMNS} FROM cases WHERE complaint_id = $1"

SQL_HELD_BY = """
SELECT EXISTS (
    SELECT 1 FROM assignments
    WHERE complaint_id = $1 AND (lead_department = $2 OR $2 = ANY(assisting_departments))
)
"""

SQL_HISTORY = """
SELECT kind, at, recorded_at, body::text AS body FROM case_events WHERE complaint_id = $1 ORDER BY id
"""

SQL_ASSIGNMENTS_OF = """
SELECT assignment_id, round, lead_department, assisting_departments, level, rule_id, rules_version, reason,
       assigned_at
FROM assignments WHERE complaint_id = $1 ORDER BY assigned_at, round
"""

SQL_DEADLINES = """
SELECT complaint_id, stage, round, department, due_at, status, escalate_to, late, updated_at
FROM deadlines
WHERE complaint_id = ANY($1::text[])
ORDER BY complaint_id, round, due_at
"""

SQL_OPEN_COUNTS = """
SELECT COALESCE(lead_department, 'none') AS department, state, count(*) AS n
FROM cases
WHERE state <> 'closed'
GROUP BY 1, 2
"""


@dataclass(frozen=True)
class CaseRow:
    """A locked case: its facts and its state machine's snapshot."""

    facts: CaseFacts
    case: CaseSnapshot


@dataclass(frozen=True)
class Processed:
    complaint_id: str | None
    fingerprint: str | None
    outcome: dict[str, Any] | None


@dataclass(frozen=True)
class HistoryEntry:
    complaint_id: str
    kind: str
    at: datetime | None
    body: str


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def lock_cases(conn: asyncpg.Connection[Any], complaint_ids: Iterable[str]) -> dict[str, CaseRow]:
    ids = sorted(set(complaint_ids))
    if not ids:
        return {}
    rows = await conn.fetch(SQL_LOCK_CASES, ids)
    return {
        r["complaint_id"]: CaseRow(
            CaseFacts(
                r["complaint_id"], Channel(r["channel"]), Category(r["category"]), r["region_code"], r["received_at"]
            ),
            snapshot_from_json(json.loads(r["snapshot"])),
        )
        for r in rows
    }


async def processed(conn: asyncpg.Connection[Any], keys: Iterable[str]) -> dict[str, Processed]:
    wanted = list(set(keys))
    if not wanted:
        return {}
    rows = await conn.fetch(SQL_PROCESSED, wanted)
    return {
        r["message_key"]: Processed(
            r["complaint_id"], r["fingerprint"], json.loads(r["outcome"]) if r["outcome"] is not None else None
        )
        for r in rows
    }


@dataclass(frozen=True)
class ProcessedMark:
    key: str
    complaint_id: str | None
    fingerprint: str | None = None
    outcome: Mapping[str, Any] | None = None


async def mark_processed(conn: asyncpg.Connection[Any], marks: Sequence[ProcessedMark], now: datetime) -> set[str]:
    """Record messages as taken; returns the keys that were new (the others were taken before)."""
    if not marks:
        return set()
    rows = await conn.fetch(
        SQL_MARK_PROCESSED,
        [m.key for m in marks],
        [m.complaint_id for m in marks],
        [m.fingerprint for m in marks],
        [_json(m.outcome) if m.outcome is not None else None for m in marks],
        now,
    )
    return {r["message_key"] for r in rows}


@dataclass(frozen=True)
class NewCase:
    complaint: ComplaintReceived
    encoded: str
    """The complaint.received as JSON, kept on the case and in its history."""
    effects: Effects


async def insert_cases(conn: asyncpg.Connection[Any], new: Sequence[NewCase], now: datetime) -> set[str]:
    """New cases with their first snapshot; returns the complaint ids inserted (a known one is left alone)."""
    if not new:
        return set()
    cases = [n.effects.case for n in new]
    complaints = [n.complaint for n in new]
    rows = await conn.fetch(
        SQL_INSERT_CASES,
        [c.complaint_id for c in complaints],
        [c.channel.value for c in complaints],
        [c.category.value for c in complaints],
        [c.region_code for c in complaints],
        [c.urgency.value for c in complaints],
        [c.received_at for c in complaints],
        [c.event_id for c in complaints],
        [s.effective_state.value for s in cases],
        [s.round for s in cases],
        [s.lead_department for s in cases],
        [_json(list(s.assisting_departments)) for s in cases],
        [s.level for s in cases],
        [s.rule_id for s in cases],
        [_json(snapshot_to_json(s)) for s in cases],
        now,
        [n.encoded for n in new],
    )
    return {r["complaint_id"] for r in rows}


async def update_cases(
    conn: asyncpg.Connection[Any], cases: Sequence[tuple[CaseSnapshot, datetime | None]], now: datetime
) -> None:
    """Store each case's new snapshot; the time is that of its latest assignment, if the fact made one."""
    if not cases:
        return
    await conn.executemany(
        SQL_UPDATE_CASE,
        [
            (
                s.complaint_id,
                s.effective_state.value,
                s.round,
                s.lead_department,
                list(s.assisting_departments),
                s.level,
                s.rule_id,
                _json(snapshot_to_json(s)),
                assigned_at,
                now,
            )
            for s, assigned_at in cases
        ],
    )


async def save_effects(
    conn: asyncpg.Connection[Any],
    taken: Sequence[tuple[HistoryEntry, Effects]],
    now: datetime,
    topics: Topics,
) -> None:
    """In the caller's transaction: each fact taken and the events it gave, in the case histories; the assignments;
    and the events in the outbox (each event encoded once, so history and message are the same bytes)."""
    history: list[HistoryEntry] = []
    messages: list[OutboxMessage] = []
    for entry, effects in taken:
        history.append(entry)
        for e in effects.events:
            body = e.to_json_bytes()
            if isinstance(e, ComplaintAssigned):
                history.append(HistoryEntry(e.complaint_id, "assigned", e.assigned_at, body.decode()))
                messages.append(OutboxMessage(topics.assigned, e.complaint_id.encode(), body))
            else:
                history.append(HistoryEntry(e.complaint_id, "lifecycle", e.at, body.decode()))
                messages.append(OutboxMessage(topics.lifecycle, e.complaint_id.encode(), body))
    assigned = [(a, effects.rules_versions.get(a.assignment_id)) for _, effects in taken for a in effects.assignments]
    if assigned:
        await conn.execute(
            SQL_INSERT_ASSIGNMENTS,
            [a.assignment_id for a, _ in assigned],
            [a.event_id for a, _ in assigned],
            [a.complaint_id for a, _ in assigned],
            [a.round for a, _ in assigned],
            [a.lead_department for a, _ in assigned],
            [_json(list(a.assisting_departments)) for a, _ in assigned],
            [a.level for a, _ in assigned],
            [a.rule_id for a, _ in assigned],
            [version for _, version in assigned],
            [a.reason for a, _ in assigned],
            [a.assigned_at for a, _ in assigned],
            [a.causation_id for a, _ in assigned],
        )
    await insert_history(conn, history, now)
    await enqueue(conn, messages)


async def insert_history(conn: asyncpg.Connection[Any], entries: Sequence[HistoryEntry], now: datetime) -> None:
    if not entries:
        return
    await conn.execute(
        SQL_INSERT_HISTORY,
        [h.complaint_id for h in entries],
        [h.kind for h in entries],
        [h.at for h in entries],
        [h.body for h in entries],
        now,
    )


async def save_dead_letters(
    conn: asyncpg.Connection[Any], letters: Sequence[DeadLetter], dlq_topic: str
) -> list[DeadLetter]:
    """Dead letters stored and put in the outbox; returns the new ones (a redelivered record gives none)."""
    fresh = await store_dead_letters(conn, letters)
    await enqueue(conn, [dead_letter_message(d, dlq_topic) for d in fresh])
    return fresh


DEADLINE_STATUS = {"deadline_set": "set", "warning": "warning", "breached": "breached", "met": "met"}


async def apply_sla_events(conn: asyncpg.Connection[Any], events: Sequence[SlaEvent], now: datetime) -> None:
    """Fold SLA events, in order, into the deadlines read model, and add them to the case histories."""
    if not events:
        return
    await conn.executemany(
        SQL_UPSERT_DEADLINE,
        [
            (
                e.complaint_id,
                e.stage.value,
                e.round,
                e.department,
                e.due_at,
                DEADLINE_STATUS[e.type.value],
                e.escalate_to,
                e.late,
                now,
                e.event_id,
            )
            for e in events
        ],
    )
    await insert_history(
        conn, [HistoryEntry(e.complaint_id, "sla", e.occurred_at, e.model_dump_json()) for e in events], now
    )


async def insert_rule_set(
    conn: asyncpg.Connection[Any], version: str, effective_from: datetime, yaml_text: str, now: datetime, by: str
) -> None:
    await conn.execute(SQL_INSERT_RULE_SET, version, effective_from, yaml_text, now, by)


# --- reading ------------------------------------------------------------------------------------------------


async def rule_set_versions(conn: asyncpg.Connection[Any]) -> set[str]:
    return {r["version"] for r in await conn.fetch(SQL_RULE_SET_VERSIONS)}


async def rule_sets_except(conn: asyncpg.Connection[Any], known: Iterable[str]) -> list[tuple[str, str]]:
    return [(r["version"], r["yaml"]) for r in await conn.fetch(SQL_RULE_SETS_EXCEPT, list(known))]


async def rule_set_list(pool: asyncpg.Pool[Any]) -> list[asyncpg.Record]:
    return list(await pool.fetch(SQL_RULE_SET_LIST))


async def rule_set_yaml(pool: asyncpg.Pool[Any], version: str) -> str | None:
    text = await pool.fetchval(SQL_RULE_SET_YAML, version)
    return None if text is None else str(text)


async def department_cases(
    pool: asyncpg.Pool[Any], department: str, state: str | None, limit: int, offset: int
) -> list[asyncpg.Record]:
    return list(await pool.fetch(SQL_DEPARTMENT_CASES, department, state, limit, offset))


async def case(pool: asyncpg.Pool[Any], complaint_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(SQL_CASE, complaint_id)
    return row


async def held_by(pool: asyncpg.Pool[Any], complaint_id: str, department: str) -> bool:
    return bool(await pool.fetchval(SQL_HELD_BY, complaint_id, department))


async def history(pool: asyncpg.Pool[Any], complaint_id: str) -> list[asyncpg.Record]:
    return list(await pool.fetch(SQL_HISTORY, complaint_id))


async def assignments_of(pool: asyncpg.Pool[Any], complaint_id: str) -> list[asyncpg.Record]:
    return list(await pool.fetch(SQL_ASSIGNMENTS_OF, complaint_id))


async def deadlines(pool: asyncpg.Pool[Any], complaint_ids: Sequence[str]) -> list[asyncpg.Record]:
    if not complaint_ids:
        return []
    return list(await pool.fetch(SQL_DEADLINES, list(complaint_ids)))


async def open_counts(pool: asyncpg.Pool[Any]) -> list[tuple[str, str, int]]:
    return [(r["department"], r["state"], int(r["n"])) for r in await pool.fetch(SQL_OPEN_COUNTS)]
