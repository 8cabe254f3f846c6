"""Reporting's SQL (schema `reporting`): facts by event id, cases with their contribution, the rollups, and the reads
behind the summary and the repeats. Every value goes in as a parameter."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from services.reporting.bulletin import OverdueRow
from services.reporting.projections import (
    COUNTS,
    CaseFigures,
    Contribution,
    Counts,
    FoldState,
    SlimFact,
)
from services.reporting.repeats import RepeatCase

SQL_INSERT_FACTS = """
INSERT INTO facts (event_id, complaint_id, topic, occurred_at, body, stored_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::timestamptz[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id::text
"""
SQL_CASE_FACTS = "SELECT complaint_id, topic, body FROM facts WHERE complaint_id = ANY($1::text[])"
# The touched cases are locked in two statements, each in key order: the new ones are created (an empty
# contribution and an empty folded state; a case another batch is creating is waited for), then all are locked.
# Every batch thus takes its case locks in one order, and its rollup locks after them (also in key order), so
# concurrent batches cannot deadlock; a known case gets a row lock, not a new row version.
SQL_NEW_CASES = """
INSERT INTO cases (complaint_id, department, contribution, fold_state, updated_at)
SELECT id, 'unassigned', '{}'::jsonb, $2::json, $3 FROM unnest($1::text[]) AS t(id) ORDER BY id
ON CONFLICT (complaint_id) DO NOTHING
"""
SQL_LOCK_CASES = """
SELECT complaint_id, contribution, fold_state FROM cases WHERE complaint_id = ANY($1::text[])
ORDER BY complaint_id FOR UPDATE
"""
SQL_SAVE_CASES = """
INSERT INTO cases (complaint_id, received_at, received_day, channel, region_code, category, department,
                   enterprise_key, enterprise_name, uscc, contribution, updated_at,
                   title, overdue_stage, overdue_due_at, fold_state)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::date[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::timestamptz[],
                     $13::text[], $14::text[], $15::timestamptz[], $16::json[])
ON CONFLICT (complaint_id) DO UPDATE SET
    received_at = EXCLUDED.received_at, received_day = EXCLUDED.received_day, channel = EXCLUDED.channel,
    region_code = EXCLUDED.region_code, category = EXCLUDED.category, department = EXCLUDED.department,
    enterprise_key = EXCLUDED.enterprise_key, enterprise_name = EXCLUDED.enterprise_name, uscc = EXCLUDED.uscc,
    contribution = EXCLUDED.contribution, updated_at = EXCLUDED.updated_at,
    title = EXCLUDED.title, overdue_stage = EXCLUDED.overdue_stage, overdue_due_at = EXCLUDED.overdue_due_at,
    fold_state = EXCLUDED.fold_state
"""
_COLS = ", ".join(COUNTS)
_ARRAYS = ", ".join(f"${i + 4}::integer[]" for i in range(len(COUNTS)))
_ADD = ", ".join(f"{c} = rollups.{c} + EXCLUDED.{c}" for c in COUNTS)
# Built once from the fixed column list above (no value is ever formatted in).
SQL_ADD_ROLLUPS = f"""
INSERT INTO rollups (day, dimension, key, {_COLS})
SELECT * FROM unnest($1::date[], $2::text[], $3::text[], {_ARRAYS})
ON CONFLICT (dimension, day, key) DO UPDATE SET {_ADD}
"""
_SUMS = ", ".join(f"sum({c})::bigint AS {c}" for c in COUNTS)
SQL_SUM_GROUPS = f"""
SELECT key, {_SUMS} FROM rollups WHERE dimension = $1 AND day BETWEEN $2 AND $3 GROUP BY key
"""
# The summary's one read: the groups of a dimension and the total rows of the period, in one statement (one round
# trip), each an index range scan of the primary key (dimension, day, key): about 31 rows per group for a month.
SQL_SUMMARY = f"""
SELECT dimension, key, {_SUMS} FROM rollups
WHERE dimension = ANY($1::text[]) AND day BETWEEN $2 AND $3
GROUP BY dimension, key
"""
SQL_REPEAT_CASES = """
SELECT complaint_id, received_at, enterprise_key, enterprise_name, uscc, category
FROM cases
WHERE enterprise_key IS NOT NULL AND received_day BETWEEN $1 AND $2
  AND (enterprise_key, category) IN (
      SELECT enterprise_key, category FROM cases
      WHERE enterprise_key IS NOT NULL AND received_day BETWEEN $3 AND $2
  )
"""
SQL_LATEST_FACT = "SELECT max(occurred_at) FROM facts"
SQL_OVERDUE_CASES = """
SELECT complaint_id, title, department, overdue_stage, overdue_due_at
FROM cases
WHERE overdue_due_at IS NOT NULL AND received_day <= $1
ORDER BY overdue_due_at, complaint_id
LIMIT $2
"""


@dataclass(frozen=True)
class StoredFact:
    event_id: str
    complaint_id: str
    topic: str
    occurred_at: datetime
    body: str
    """The event as read, as JSON text (unknown fields dropped)."""
    fact: SlimFact
    """What the fold reads of it."""


@dataclass(frozen=True)
class LockedCase:
    contribution: Contribution
    """What the case adds to the rollups now."""
    state: FoldState | None
    """Its folded state (its compact facts), or None when it has none kept: fold it from `facts`."""


async def insert_facts(conn: asyncpg.Connection[Any], facts: Sequence[StoredFact], now: datetime) -> set[str]:
    """Keep the facts not seen before (in event id order); returns the event ids stored now (a replay gives none)."""
    if not facts:
        return set()
    ordered = sorted(facts, key=lambda f: f.event_id)
    rows = await conn.fetch(
        SQL_INSERT_FACTS,
        [f.event_id for f in ordered],
        [f.complaint_id for f in ordered],
        [f.topic for f in ordered],
        [f.occurred_at for f in ordered],
        [f.body for f in ordered],
        [now] * len(ordered),
    )
    return {r[0] for r in rows}


_EMPTY_STATE = json.dumps(FoldState().to_json())


async def lock_cases(conn: asyncpg.Connection[Any], ids: Iterable[str], now: datetime) -> dict[str, LockedCase]:
    """Lock every case of `ids` (in key order, until the transaction ends), a new one with an empty state; returns
    each one's contribution and folded state."""
    ordered = sorted(ids)
    await conn.execute(SQL_NEW_CASES, ordered, _EMPTY_STATE, now)
    rows = await conn.fetch(SQL_LOCK_CASES, ordered)
    return {
        r["complaint_id"]: LockedCase(
            Contribution.from_json(json.loads(r["contribution"])),
            FoldState.from_json(json.loads(r["fold_state"])) if r["fold_state"] is not None else None,
        )
        for r in rows
    }


async def case_facts(conn: asyncpg.Connection[Any], ids: Iterable[str]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Every stored fact of the cases: (topic kind, body). For cases without a kept folded state only."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for r in await conn.fetch(SQL_CASE_FACTS, list(ids)):
        out.setdefault(r["complaint_id"], []).append((r["topic"], json.loads(r["body"])))
    return out


async def save_cases(
    conn: asyncpg.Connection[Any], cases: Sequence[CaseFigures], states: Sequence[FoldState], now: datetime
) -> None:
    """Save the cases' profiles and contributions, with their folded states (their compact facts, same order)."""
    if not cases:
        return
    p = [c.profile for c in cases]
    await conn.execute(
        SQL_SAVE_CASES,
        [x.complaint_id for x in p],
        [x.received_at for x in p],
        [x.day for x in p],
        [x.channel for x in p],
        [x.region_code for x in p],
        [x.category for x in p],
        [x.department for x in p],
        [x.enterprise_key for x in p],
        [x.enterprise_name for x in p],
        [x.uscc for x in p],
        [json.dumps(c.contribution.to_json(), ensure_ascii=False, separators=(",", ":")) for c in cases],
        [now] * len(cases),
        [x.title for x in p],
        [c.overdue.stage if c.overdue else None for c in cases],
        [c.overdue.due_at if c.overdue else None for c in cases],
        [json.dumps(state.to_json(), ensure_ascii=False, separators=(",", ":")) for state in states],
    )


async def add_rollups(conn: asyncpg.Connection[Any], delta: Mapping[tuple[date, str, str], Counts]) -> None:
    """Add the delta rows (already in key order) to the rollups."""
    if not delta:
        return
    keys = list(delta)
    columns = [[delta[k][i] for k in keys] for i in range(len(COUNTS))]
    await conn.execute(SQL_ADD_ROLLUPS, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], *columns)


async def sum_rollups(conn: asyncpg.Connection[Any], dimension: str, start: date, end: date) -> dict[str, Counts]:
    rows = await conn.fetch(SQL_SUM_GROUPS, dimension, start, end)
    return {r["key"]: tuple(int(r[c] or 0) for c in COUNTS) for r in rows}


async def sum_summary(
    conn: asyncpg.Connection[Any], dimension: str, total_dimension: str, start: date, end: date
) -> tuple[dict[str, Counts], dict[str, Counts]]:
    """The summed counts of the period per key of `dimension`, and per key of `total_dimension`, in one query."""
    groups: dict[str, Counts] = {}
    totals: dict[str, Counts] = {}
    for r in await conn.fetch(SQL_SUMMARY, [dimension, total_dimension], start, end):
        (groups if r["dimension"] == dimension else totals)[r["key"]] = tuple(int(r[c] or 0) for c in COUNTS)
    return groups, totals


async def repeat_cases(conn: asyncpg.Connection[Any], start: date, end: date, look_back: date) -> list[RepeatCase]:
    rows = await conn.fetch(SQL_REPEAT_CASES, look_back, end, start)
    return [
        RepeatCase(
            r["complaint_id"], r["received_at"], r["enterprise_key"], r["enterprise_name"], r["uscc"], r["category"]
        )
        for r in rows
    ]


async def overdue_cases(conn: asyncpg.Connection[Any], received_by: date, limit: int) -> list[OverdueRow]:
    """Open cases received on or before `received_by` (local day) whose breach still stands, most overdue first."""
    rows = await conn.fetch(SQL_OVERDUE_CASES, received_by, limit)
    return [
        OverdueRow(r["complaint_id"], r["title"], r["department"], r["overdue_stage"], r["overdue_due_at"])
        for r in rows
    ]


async def latest_fact_time(conn: asyncpg.Connection[Any]) -> datetime | None:
    value: datetime | None = await conn.fetchval(SQL_LATEST_FACT)
    return value
