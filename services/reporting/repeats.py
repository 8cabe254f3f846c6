"""Repeats (contract 7): the same enterprise (credit code, else name) with the same category at least twice within
90 days, or with cases in two consecutive local calendar years. Pure: cases in, repeats out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final

from shared.domain import LOCAL_TZ

WINDOW: Final = timedelta(days=90)


@dataclass(frozen=True)
class RepeatCase:
    complaint_id: str
    received_at: datetime
    enterprise_key: str
    enterprise_name: str | None
    uscc: str | None
    category: str

    @property
    def local_day(self) -> date:
        return self.received_at.astimezone(LOCAL_TZ).date()


def find_repeats(cases: Iterable[RepeatCase], start: date, end: date) -> list[dict[str, Any]]:
    """Repeats with at least one case received in [start, end] (local days); cases before `start` (up to the
    previous calendar year) may complete them. Ordered by number of cases, most first."""
    groups: dict[tuple[str, str], list[RepeatCase]] = defaultdict(list)
    for case in cases:
        groups[(case.enterprise_key, case.category)].append(case)
    found: list[dict[str, Any]] = []
    for (_, category), members in groups.items():
        members.sort(key=lambda c: (c.received_at, c.complaint_id))
        in_period = {c.complaint_id for c in members if start <= c.local_day <= end}
        if not in_period:
            continue
        # Same enterprise and category at least twice within 90 days: chains of cases each within 90 days of the last.
        chain: list[RepeatCase] = [members[0]]
        chains: list[list[RepeatCase]] = []
        for case in members[1:]:
            if case.received_at - chain[-1].received_at <= WINDOW:
                chain.append(case)
            else:
                chains.append(chain)
                chain = [case]
        chains.append(chain)
        for linked in chains:
            if len(linked) >= 2 and in_period & {c.complaint_id for c in linked}:
                found.append(_repeat("same_enterprise_90d", linked, category))
        # Cases in two consecutive calendar years (local).
        by_year: dict[int, list[RepeatCase]] = defaultdict(list)
        for case in members:
            by_year[case.local_day.year].append(case)
        for year in sorted(by_year):
            if year + 1 in by_year:
                linked = by_year[year] + by_year[year + 1]
                if in_period & {c.complaint_id for c in linked}:
                    found.append(_repeat("consecutive_years", linked, category))
    found.sort(key=lambda r: (-len(r["complaint_ids"]), r["kind"], r["category"], r["complaint_ids"][0]))
    return found


def _repeat(kind: str, linked: list[RepeatCase], category: str) -> dict[str, Any]:
    latest = linked[-1]
    return {
        "kind": kind,
        "enterprise": {"name": latest.enterprise_name, "uscc": latest.uscc},
        "category": category,
        "complaint_ids": [c.complaint_id for c in linked],
    }
