"""Satisfaction-survey scores (满意度问卷, contract 10.2): pure. A `survey.responded` becomes one score row per
category it rates; the report gives per group (region or category) and in total the responses, the mean score and
the share of scores of 4 or 5, each rounded half up to 4 decimals (null when nothing was scored)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from services.reporting.projections import CATEGORY_NAMES, rate
from shared.domain import LOCAL_TZ, REGIONS
from shared.events import SurveyResponded

GROUP_BY: Final = ("region", "category")
TOTAL_KEY: Final = "all"


@dataclass(frozen=True)
class ScoreRow:
    response_id: str
    category: str
    score: int
    answered_at: datetime
    answered_day: date
    region_code: str


@dataclass(frozen=True)
class Tally:
    """What the store sums per group: responses (distinct), scores given, their sum, and how many were 4 or 5."""

    responses: int
    scores: int
    score_sum: int
    high: int


def score_rows(event: SurveyResponded) -> list[ScoreRow]:
    day = event.answered_at.astimezone(LOCAL_TZ).date()
    return [
        ScoreRow(event.response_id, category.value, score, event.answered_at, day, event.region_code)
        for category, score in sorted(event.scores.items())
    ]


def mean(total: int, count: int) -> float | None:
    if count == 0:
        return None
    return float((Decimal(total) / Decimal(count)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def figures(key: str, name: str, tally: Tally) -> dict[str, Any]:
    return {
        "key": key,
        "name": name,
        "responses": tally.responses,
        "scores": tally.scores,
        "mean_score": mean(tally.score_sum, tally.scores),
        "share_4_5": rate(tally.high, tally.scores),
    }


def group_name(group_by: str, key: str) -> str:
    table: Mapping[str, str] = REGIONS if group_by == "region" else CATEGORY_NAMES
    return table.get(key, key)


def survey_report(
    group_by: str, groups: Mapping[str, Tally], total: Tally, *, start: date, end: date, as_of: datetime
) -> dict[str, Any]:
    """The answer of `GET /v1/reports/surveys`: groups by key, the total counted afresh (not summed)."""
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "group_by": group_by,
        "as_of": as_of.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "groups": [figures(key, group_name(group_by, key), groups[key]) for key in sorted(groups)],
        "total": figures(TOTAL_KEY, "合计", total),
    }
