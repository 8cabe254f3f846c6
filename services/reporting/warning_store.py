"""The watch's tables (schema `reporting`, migration 006): the received cases as the early-warning rules count them,
and the warnings raised. Named, parameterized SQL; writes run inside the caller's transaction."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any, TypeAlias

import asyncpg

from services.reporting.warnings import EarlyWarning, Key, WatchedCase

Executor: TypeAlias = "asyncpg.Connection[Any] | asyncpg.Pool[Any]"

SQL_INSERT_CASES = """
INSERT INTO watch_cases (complaint_id, received_at, week, region_code, category, enterprise_field, enterprise_value,
                         stored_at)
SELECT u.*, $8::timestamptz
FROM unnest($1::text[], $2::timestamptz[], $3::date[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u
ON CONFLICT (complaint_id) DO NOTHING
RETURNING complaint_id
"""

SQL_KNOWN_CASE = "SELECT 1 FROM watch_cases WHERE complaint_id = $1"

SQL_REGION_WEEKS = """
SELECT region_code, category, week, count(*) AS n, array_agg(complaint_id ORDER BY complaint_id) AS ids
FROM watch_cases
WHERE (region_code, category) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND week BETWEEN $3 AND $4
GROUP BY region_code, category, week
"""
SQL_CATEGORY_WEEKS = """
SELECT category, week, count(*) AS n, array_agg(complaint_id ORDER BY complaint_id) AS ids
FROM watch_cases
WHERE category = ANY($1::text[]) AND week BETWEEN $2 AND $3
GROUP BY category, week
"""
SQL_ENTERPRISE_CASES = """
SELECT enterprise_field, enterprise_value, complaint_id, received_at, week
FROM watch_cases
WHERE (enterprise_field, enterprise_value) IN (SELECT * FROM unnest($1::text[], $2::text[]))
  AND week BETWEEN $3 AND $4
"""

SQL_INSERT_WARNINGS = """
INSERT INTO early_warnings (warning_id, kind, key, week, count, baseline, p_value, complaint_ids, raised_at)
SELECT u.warning_id, u.kind, u.key::jsonb, u.week, u.count, u.baseline, u.p_value,
       ARRAY(SELECT jsonb_array_elements_text(u.ids::jsonb)), $9
FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::integer[], $6::float8[], $7::float8[], $8::text[])
     AS u(warning_id, kind, key, week, count, baseline, p_value, ids)
ON CONFLICT (warning_id) DO NOTHING
RETURNING warning_id
"""

SQL_LIST_WARNINGS = """
SELECT warning_id, kind, key, week, count, baseline, p_value, complaint_ids, raised_at
FROM early_warnings
WHERE week BETWEEN $1 AND $2 AND ($3::text IS NULL OR kind = $3)
ORDER BY week, raised_at, warning_id
"""

WeekCounts: TypeAlias = dict[Key, dict[date, int]]
WeekCases: TypeAlias = dict[tuple[Key, date], list[str]]
EnterpriseCases: TypeAlias = dict[Key, list[tuple[str, datetime]]]


async def insert_cases(conn: asyncpg.Connection[Any], cases: Sequence[WatchedCase], now: datetime) -> set[str]:
    """Keep the cases not seen before; returns their ids (a replay gives none)."""
    if not cases:
        return set()
    rows = await conn.fetch(
        SQL_INSERT_CASES,
        [c.complaint_id for c in cases],
        [c.received_at for c in cases],
        [c.week for c in cases],
        [c.region_code for c in cases],
        [c.category for c in cases],
        [c.enterprise[0][0] if c.enterprise else None for c in cases],
        [c.enterprise[0][1] if c.enterprise else None for c in cases],
        now,
    )
    return {r["complaint_id"] for r in rows}


async def case_known(db: Executor, complaint_id: str) -> bool:
    return await db.fetchval(SQL_KNOWN_CASE, complaint_id) is not None


async def weekly_counts(
    conn: Executor, keys: Iterable[Key], first_week: date, last_week: date
) -> tuple[WeekCounts, WeekCases, EnterpriseCases]:
    """Per key, its count per week between the two Mondays (both included) and the cases of each (key, week); and
    per enterprise key, its cases of those weeks with their times (what the 30-day rule reads: the caller asks
    from at least 5 weeks before the newest case's week)."""
    regions: set[tuple[str, str]] = set()
    categories: set[str] = set()
    enterprises: set[tuple[str, str]] = set()
    for asked in keys:
        fields = dict(asked)
        if "region_code" in fields:
            regions.add((fields["region_code"], fields["category"]))
        elif "category" in fields:
            categories.add(fields["category"])
        else:
            enterprises.add(asked[0])
    counts: WeekCounts = defaultdict(dict)
    cases: WeekCases = {}
    history: EnterpriseCases = defaultdict(list)
    if regions:
        ordered = sorted(regions)
        for r in await conn.fetch(
            SQL_REGION_WEEKS, [k[0] for k in ordered], [k[1] for k in ordered], first_week, last_week
        ):
            key: Key = (("category", r["category"]), ("region_code", r["region_code"]))
            counts[key][r["week"]] = int(r["n"])
            cases[(key, r["week"])] = list(r["ids"])
    if categories:
        for r in await conn.fetch(SQL_CATEGORY_WEEKS, sorted(categories), first_week, last_week):
            key = (("category", r["category"]),)
            counts[key][r["week"]] = int(r["n"])
            cases[(key, r["week"])] = list(r["ids"])
    if enterprises:
        ordered = sorted(enterprises)
        rows = await conn.fetch(
            SQL_ENTERPRISE_CASES, [k[0] for k in ordered], [k[1] for k in ordered], first_week, last_week
        )
        for r in rows:
            key = ((r["enterprise_field"], r["enterprise_value"]),)
            counts[key][r["week"]] = counts[key].get(r["week"], 0) + 1
            cases.setdefault((key, r["week"]), []).append(r["complaint_id"])
            history[key].append((r["complaint_id"], r["received_at"]))
    return dict(counts), cases, dict(history)


async def insert_warnings(conn: asyncpg.Connection[Any], warnings: Sequence[EarlyWarning], now: datetime) -> set[str]:
    """Keep the warnings not raised before (one per kind, key and week); returns the ids that are new."""
    if not warnings:
        return set()
    rows = await conn.fetch(
        SQL_INSERT_WARNINGS,
        [w.warning_id for w in warnings],
        [w.kind.value for w in warnings],
        [json.dumps(w.key_json, ensure_ascii=False, sort_keys=True) for w in warnings],
        [w.week for w in warnings],
        [w.count for w in warnings],
        [w.baseline for w in warnings],
        [w.p_value for w in warnings],
        [json.dumps(list(w.complaint_ids), ensure_ascii=False) for w in warnings],
        now,
    )
    return {r["warning_id"] for r in rows}


async def list_warnings(db: Executor, first_week: date, last_week: date, kind: str | None) -> list[dict[str, Any]]:
    """The warnings of the weeks whose Monday is between the two dates, oldest week first."""
    out = []
    for r in await db.fetch(SQL_LIST_WARNINGS, first_week, last_week, kind):
        key = json.loads(r["key"]) if isinstance(r["key"], str) else r["key"]
        out.append(
            {
                "warning_id": r["warning_id"],
                "kind": r["kind"],
                "key": key,
                "week_start": r["week"],
                "count": r["count"],
                "baseline": r["baseline"],
                "p_value": r["p_value"],
                "complaint_ids": list(r["complaint_ids"]),
                "raised_at": r["raised_at"],
            }
        )
    return out
