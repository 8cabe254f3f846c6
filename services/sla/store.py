"""The clock's tables (schema `sla`): policies, cases, deadlines, processed events, dead letters, outbox.

Every function works inside the caller's transaction. Locks: a consumed batch locks its cases (in complaint_id
order) and then their deadlines (in id order), waiting for them; the scheduler claims due deadlines with
`FOR UPDATE SKIP LOCKED`, never waiting. So a fact and a firing on the same deadline run one after the other, and
whichever commits first decides (a met or a breach, never both).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.sla.clockwork import DUE_COLUMNS, CaseClock, DeadlineRow, DeadlineState, FiredBatch, Key
from services.sla.policy import SlaPolicy
from shared.deadletters import dead_letter_message
from shared.events import DeadLetter, SlaEvent
from shared.events.sla import Stage
from shared.outbox import OutboxMessage, enqueue

SQL_MARK_PROCESSED = """
INSERT INTO processed (event_id, topic, processed_at)
SELECT e.event_id, e.topic, $3 FROM unnest($1::uuid[], $2::text[]) AS e(event_id, topic)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

SQL_SAVE_POLICY = """
INSERT INTO policies (policy_id, body, first_used_at) VALUES ($1, $2::jsonb, $3)
ON CONFLICT (policy_id) DO NOTHING
"""

SQL_LOAD_POLICIES = "SELECT policy_id, body::text AS body FROM policies WHERE policy_id = ANY($1::text[])"

# A case row exists before it is locked, so that two transactions opening the same case queue on it instead of
# both seeing nothing and overwriting each other's work.
SQL_CLAIM_CASES = """
INSERT INTO cases (complaint_id, updated_at)
SELECT c, $2 FROM unnest($1::text[]) AS c ORDER BY c
ON CONFLICT (complaint_id) DO NOTHING
"""

SQL_LOCK_CASES = """
SELECT complaint_id, clock::text AS clock FROM cases WHERE complaint_id = ANY($1::text[])
ORDER BY complaint_id FOR UPDATE
"""

SQL_SAVE_CASES = """
UPDATE cases AS c SET policy_id = u.policy_id, closed = u.closed, clock = u.clock::jsonb, updated_at = $5
FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[]) AS u(complaint_id, policy_id, closed, clock)
WHERE c.complaint_id = u.complaint_id
"""

_COLUMNS = (
    "complaint_id, stage, round, department, started_at, due_at, warn_at, state, warned_for, settled_at, set_event_id,"
    " breach_event_id"
)

SQL_LOCK_DEADLINES = f"""
SELECT id, {_COLUMNS} FROM deadlines WHERE complaint_id = ANY($1::text[]) ORDER BY id FOR UPDATE
"""

SQL_SAVE_DEADLINES = """
INSERT INTO deadlines (complaint_id, stage, round, department, started_at, due_at, warn_at, state, next_fire_at,
                       warned_for, settled_at, set_event_id, breach_event_id, updated_at)
SELECT d.*, $14 FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::timestamptz[],
                            $7::timestamptz[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[],
                            $12::text[], $13::text[])
    AS d(complaint_id, stage, round, department, started_at, due_at, warn_at, state, next_fire_at, warned_for,
         settled_at, set_event_id, breach_event_id)
ON CONFLICT (complaint_id, stage, round) DO UPDATE SET
    department = EXCLUDED.department, started_at = EXCLUDED.started_at, due_at = EXCLUDED.due_at,
    warn_at = EXCLUDED.warn_at, state = EXCLUDED.state, next_fire_at = EXCLUDED.next_fire_at,
    warned_for = EXCLUDED.warned_for, settled_at = EXCLUDED.settled_at, set_event_id = EXCLUDED.set_event_id,
    breach_event_id = EXCLUDED.breach_event_id, updated_at = EXCLUDED.updated_at
"""

# The scheduler's claim: the earliest due rows no other transaction holds. Rows held by a consumer (a fact about
# that case in flight) or another replica are skipped and come back on a later round if still due. A row past its
# due fires a breach, so it is claimed only once the breach horizon ($3, null: nothing known yet) has reached its
# due (event time, docs/sla.md); a warning before the due is claimed on the wall clock.
_FIREABLE = "next_fire_at <= $1 AND (due_at > $1 OR due_at <= $3::timestamptz)"
SQL_CLAIM_DUE = f"""
SELECT {", ".join(DUE_COLUMNS)} FROM deadlines
WHERE {_FIREABLE}
ORDER BY next_fire_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

# What clockwork.fire_batch decided for the claimed rows, in one statement (one round trip): the breached rows are
# final, the warned ones wait for their due, and every event goes into the outbox (shared.outbox's table) in the
# order the rows were fired. Each UPDATE touches only its own ids; an empty array updates or inserts nothing.
SQL_SAVE_FIRED = """
WITH breached AS (
    UPDATE deadlines AS d SET state = 'breached', next_fire_at = NULL, breach_event_id = b.event_id, updated_at = $4
    FROM unnest($1::bigint[], $2::text[]) AS b(id, event_id) WHERE d.id = b.id
), warned AS (
    UPDATE deadlines SET warned_for = warn_at, next_fire_at = due_at, updated_at = $4 WHERE id = ANY($3::bigint[])
)
INSERT INTO outbox (topic, key, value) SELECT $5, m.key, m.value FROM unnest($6::bytea[], $7::bytea[]) AS m(key, value)
"""

# The next row the scheduler could fire: held breaches are left out (the horizon moving wakes the scheduler).
SQL_NEXT_FIRE_AT = """
SELECT min(next_fire_at) FROM deadlines
WHERE next_fire_at IS NOT NULL AND (due_at > $1 OR due_at <= $2::timestamptz)
"""

# Open overdue deadlines: breached and not done, plus those past due that the scheduler has not fired yet ($1 is
# the earlier of now and the breach horizon, null while no horizon is known: a row past due but beyond it may still
# be met by a fact on its way, so it is not counted yet).
SQL_OVERDUE_OPEN = """
SELECT department, stage, sum(n)::bigint AS n FROM (
    SELECT department, stage, count(*) AS n FROM deadlines
    WHERE state = 'breached' AND settled_at IS NULL GROUP BY department, stage
    UNION ALL
    SELECT department, stage, count(*) AS n FROM deadlines
    WHERE next_fire_at <= $1::timestamptz AND due_at <= $1::timestamptz GROUP BY department, stage
) AS overdue GROUP BY department, stage
"""


def policy_id_of(policy: SlaPolicy) -> str:
    """A policy's identity: the digest of its canonical JSON, so the same windows are the same policy."""
    return hashlib.sha256(policy.model_dump_json().encode("utf-8")).hexdigest()[:32]


async def save_policy(conn: asyncpg.Connection[Any], policy: SlaPolicy, now: datetime) -> str:
    policy_id = policy_id_of(policy)
    await conn.execute(SQL_SAVE_POLICY, policy_id, policy.model_dump_json(), now)
    return policy_id


async def load_policies(conn: asyncpg.Connection[Any], policy_ids: Iterable[str]) -> dict[str, SlaPolicy]:
    rows = await conn.fetch(SQL_LOAD_POLICIES, sorted(set(policy_ids)))
    return {r["policy_id"]: SlaPolicy.model_validate_json(r["body"]) for r in rows}


async def mark_processed(conn: asyncpg.Connection[Any], events: Sequence[tuple[UUID, str]], now: datetime) -> set[UUID]:
    """Record consumed event ids; returns those not seen before (the rest are redeliveries: skip them)."""
    if not events:
        return set()
    rows = await conn.fetch(SQL_MARK_PROCESSED, [e for e, _ in events], [t for _, t in events], now)
    return {r["event_id"] for r in rows}


async def lock_cases(
    conn: asyncpg.Connection[Any], complaint_ids: Iterable[str], now: datetime
) -> dict[str, CaseClock]:
    """Lock the cases (creating empty rows for new ones); returns those the clock already knows."""
    ids = sorted(set(complaint_ids))
    if not ids:
        return {}
    await conn.execute(SQL_CLAIM_CASES, ids, now)
    rows = await conn.fetch(SQL_LOCK_CASES, ids)
    return {r["complaint_id"]: CaseClock.model_validate_json(r["clock"]) for r in rows if r["clock"] is not None}


_STAGES = {stage.value: stage for stage in Stage}  # a dict look-up: calling an enum is slow on the hot path
_STATES = {state.value: state for state in DeadlineState}


def _row(record: Mapping[str, Any]) -> DeadlineRow:
    return DeadlineRow(
        record["complaint_id"], _STAGES[record["stage"]], record["round"], record["department"],
        record["started_at"], record["due_at"], record["warn_at"], _STATES[record["state"]], record["warned_for"],
        record["settled_at"], record["set_event_id"], record["breach_event_id"],
    )  # fmt: skip


async def lock_deadlines(
    conn: asyncpg.Connection[Any], complaint_ids: Iterable[str]
) -> dict[str, dict[Key, DeadlineRow]]:
    """Every deadline of the cases, locked (waiting for a scheduler that holds one to commit first)."""
    found: dict[str, dict[Key, DeadlineRow]] = {}
    for record in await conn.fetch(SQL_LOCK_DEADLINES, sorted(set(complaint_ids))):
        row = _row(record)
        found.setdefault(row.complaint_id, {})[row.key] = row
    return found


async def save_cases(conn: asyncpg.Connection[Any], cases: Sequence[CaseClock], now: datetime) -> None:
    if not cases:
        return
    await conn.execute(
        SQL_SAVE_CASES,
        [c.complaint_id for c in cases],
        [c.policy_id for c in cases],
        [c.closed for c in cases],
        [c.model_dump_json() for c in cases],
        now,
    )


async def save_deadlines(conn: asyncpg.Connection[Any], rows: Sequence[DeadlineRow], now: datetime) -> None:
    if not rows:
        return
    await conn.execute(
        SQL_SAVE_DEADLINES,
        [r.complaint_id for r in rows],
        [r.stage.value for r in rows],
        [r.round for r in rows],
        [r.department for r in rows],
        [r.started_at for r in rows],
        [r.due_at for r in rows],
        [r.warn_at for r in rows],
        [r.state.value for r in rows],
        [r.next_fire_at for r in rows],
        [r.warned_for for r in rows],
        [r.settled_at for r in rows],
        [r.set_event_id for r in rows],
        [r.breach_event_id for r in rows],
        now,
    )


async def claim_due(
    conn: asyncpg.Connection[Any], now: datetime, horizon: datetime | None, limit: int
) -> list[asyncpg.Record]:
    """Lock up to `limit` deadlines whose next_fire_at has come, earliest first, skipping rows others hold and
    rows whose breach is held (due past the breach `horizon`; every breach while it is None): clockwork.DUE_COLUMNS
    of each, for clockwork.fire_batch."""
    claimed: list[asyncpg.Record] = await conn.fetch(SQL_CLAIM_DUE, now, limit, horizon)
    return claimed


async def save_fired(conn: asyncpg.Connection[Any], fired: FiredBatch, now: datetime, topic: str) -> None:
    """The claimed rows after firing, and their events into the outbox under `topic`, in the caller's transaction."""
    if fired.breached_ids or fired.warned_ids or fired.payloads:
        await conn.execute(
            SQL_SAVE_FIRED,
            fired.breached_ids,
            fired.breach_event_ids,
            fired.warned_ids,
            now,
            topic,
            fired.keys,
            fired.payloads,
        )


async def next_fire_at(
    conn: asyncpg.Connection[Any] | asyncpg.Pool[Any], now: datetime, horizon: datetime | None
) -> datetime | None:
    """The earliest next_fire_at of a row the scheduler could fire (held breaches left out)."""
    value: datetime | None = await conn.fetchval(SQL_NEXT_FIRE_AT, now, horizon)
    return value


async def overdue_open(
    conn: asyncpg.Connection[Any] | asyncpg.Pool[Any], now: datetime | None
) -> dict[tuple[str, str], int]:
    """Open overdue deadlines per (department, stage), for the sla_overdue_open gauge: breached and not done, and
    past due but not fired yet up to `now` (give the earlier of now and the breach horizon; None counts none)."""
    return {(r["department"], r["stage"]): r["n"] for r in await conn.fetch(SQL_OVERDUE_OPEN, now)}


async def publish(
    conn: asyncpg.Connection[Any],
    events: Sequence[SlaEvent],
    letters: Sequence[DeadLetter],
    *,
    sla_topic: str,
    dlq_topic: str,
) -> None:
    """SLA events and dead letters into the outbox, in the caller's transaction."""
    await enqueue(
        conn,
        [OutboxMessage(sla_topic, e.complaint_id.encode(), e.to_json_bytes()) for e in events]
        + [dead_letter_message(d, dlq_topic) for d in letters],
    )
