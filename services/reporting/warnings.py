"""Early warning (防未病, contract 10.4): weekly counts per (region, category), per category and per enterprise, the
Poisson rule against the previous 8 weeks, the 30-day enterprise rule, and the bulletin's section. Pure: counts
and times are arguments; the tail probability comes from scipy.special (`pdtrc`, the function `poisson.sf` calls:
the same value to the bit), imported when first needed — `scipy.stats` alone weighs about 90 MB resident.

Weeks are ISO weeks, Monday to Sunday, local (Asia/Shanghai); the running week counts as it grows.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from html import escape
from typing import Any, Final

from shared.calendar import as_local, as_utc
from shared.domain import REGIONS
from shared.events.alerts import WarningKind, WarningRaised

MIN_COUNT: Final = 3
P_THRESHOLD: Final = 0.01
HISTORY_WEEKS: Final = 8
BASELINE_FLOOR: Final = 0.5
REPEAT_CASES: Final = 3
REPEAT_WINDOW: Final = timedelta(days=30)

Key = tuple[tuple[str, str], ...]
"""A counted key as sorted (field, value) pairs: (("category", "financing"), ("region_code", "150523")),
(("category", "financing"),), (("uscc", "…"),) or (("enterprise_name", "…"),)."""

CATEGORY_NAMES: Final = {
    "government_services": "政务服务",
    "market_regulation": "市场监管",
    "financing": "融资信贷",
    "policy_fulfillment": "政策兑现",
    "law_enforcement": "涉企执法",
    "judicial": "司法公正",
    "government_integrity": "政务诚信",
    "corruption": "涉企腐败",
    "utilities": "要素保障",
    "construction": "工程建设",
    "taxes_fees": "税费",
    "other": "其他",
}


def week_start(moment: datetime) -> date:
    """The local Monday of the ISO week `moment` falls in (Sunday 23:59 local is still the old week)."""
    local = as_local(moment).date()
    return local - timedelta(days=local.weekday())


def week_label(monday: date) -> str:
    """`2026-W48`: ISO year and week of a week's Monday."""
    year, week, _ = monday.isocalendar()
    return f"{year}-W{week:02d}"


def enterprise_key(uscc: str | None, name: str | None) -> Key | None:
    """An enterprise is its credit code when it has one, else its name (trimmed); None without either."""
    if uscc and uscc.strip():
        return (("uscc", uscc.strip().upper()),)
    if name and name.strip():
        return (("enterprise_name", name.strip()),)
    return None


@dataclass(frozen=True, slots=True)
class WatchedCase:
    """What the rules need of one case."""

    complaint_id: str
    received_at: datetime
    region_code: str
    category: str
    enterprise: Key | None

    @property
    def week(self) -> date:
        return week_start(self.received_at)

    def counted_keys(self) -> list[Key]:
        """The keys whose weekly count this case adds to."""
        keys: list[Key] = [
            (("category", self.category), ("region_code", self.region_code)),
            (("category", self.category),),
        ]
        if self.enterprise is not None:
            keys.append(self.enterprise)
        return keys


def baseline(previous: Sequence[int]) -> float:
    """λ: the mean of the previous 8 weeks' counts (a week without a case counts 0), at least 0.5."""
    weeks = list(previous)[-HISTORY_WEEKS:]
    weeks = [0] * (HISTORY_WEEKS - len(weeks)) + weeks
    return max(BASELINE_FLOOR, sum(weeks) / HISTORY_WEEKS)


def preload() -> None:
    """Import what `tail_probability` needs (numpy, scipy.special: most of a second of CPU, seconds on a loaded box).
    The service calls it in a thread at start (`watch.setup_watch`), so the first warning does not stall the event
    loop on the import: a stalled loop answers no /metrics or /healthz and misses its consumer heartbeats."""
    from scipy.special import pdtrc  # noqa: F401 - imported for its side effect: loaded once, here


def tail_probability(count: int, lam: float) -> float:
    """P(X ≥ count) for X ~ Poisson(λ): `scipy.stats.poisson.sf(count - 1, λ)` to the bit, without importing
    scipy.stats (about 90 MB resident for the process, against about 40 MB for numpy and scipy.special, which are
    imported here on the first call, not with the service). Below the support (count ≤ 0) it is 1, as sf says."""
    from scipy.special import pdtrc  # lazy: see above

    if count <= 0:
        return 1.0 if lam >= 0 else math.nan
    return float(pdtrc(count - 1, lam))


@dataclass(frozen=True, slots=True)
class Verdict:
    raise_: bool
    baseline: float
    p_value: float


def judge_rising(count: int, previous: Sequence[int]) -> Verdict:
    """The Poisson rule: a count of at least 3 whose tail probability under the 8-week baseline is below 0.01."""
    lam = baseline(previous)
    p = tail_probability(count, lam)
    return Verdict(count >= MIN_COUNT and p < P_THRESHOLD, lam, p)


def previous_weeks(counts: Mapping[date, int], week: date) -> list[int]:
    """The counts of the 8 weeks before `week`, oldest first, 0 for a week with none."""
    return [counts.get(week - timedelta(weeks=n), 0) for n in range(HISTORY_WEEKS, 0, -1)]


def warning_id(kind: WarningKind, key: Key, week: date) -> str:
    """Deterministic from kind, key and week: the same warning found twice is one."""
    text = json.dumps([kind.value, [list(p) for p in key], week.isoformat()], ensure_ascii=False)
    return f"EW-{week_label(week)}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass(frozen=True, slots=True)
class EarlyWarning:
    warning_id: str
    kind: WarningKind
    key: Key
    week: date
    count: int
    baseline: float | None
    p_value: float | None
    complaint_ids: tuple[str, ...]

    @property
    def key_json(self) -> dict[str, str]:
        return dict(self.key)


def rising_warnings(
    touched: Iterable[tuple[Key, date]],
    weekly: Mapping[Key, Mapping[date, int]],
    cases_of: Mapping[tuple[Key, date], Sequence[str]],
) -> list[EarlyWarning]:
    """The Poisson rule for each (key, week) a batch added to: `weekly[key][week]` is the count now (the running
    week as it grows), `cases_of[(key, week)]` the cases counted."""
    out: list[EarlyWarning] = []
    for key, week in sorted(set(touched)):
        counts = weekly.get(key, {})
        count = counts.get(week, 0)
        verdict = judge_rising(count, previous_weeks(counts, week))
        if verdict.raise_:
            out.append(
                EarlyWarning(
                    warning_id(WarningKind.RISING, key, week),
                    WarningKind.RISING,
                    key,
                    week,
                    count,
                    round(verdict.baseline, 4),
                    verdict.p_value,
                    tuple(sorted(cases_of.get((key, week), ()))),
                )
            )
    return out


def enterprise_repeat(key: Key, cases: Sequence[tuple[str, datetime]], newest: datetime) -> EarlyWarning | None:
    """The enterprise rule at the time of one of its cases: 3 or more of its cases received within the 30 days up to
    `newest` (`newest` included). The warning's week is `newest`'s."""
    newest = as_utc(newest)
    window = sorted((as_utc(at), cid) for cid, at in cases if newest - REPEAT_WINDOW <= as_utc(at) <= newest)
    if len(window) < REPEAT_CASES:
        return None
    week = week_start(newest)
    return EarlyWarning(
        warning_id(WarningKind.ENTERPRISE_REPEAT, key, week),
        WarningKind.ENTERPRISE_REPEAT,
        key,
        week,
        len(window),
        None,
        None,
        tuple(cid for _, cid in window),
    )


def enterprise_warnings(
    new_cases: Sequence[WatchedCase], history: Mapping[Key, Sequence[tuple[str, datetime]]]
) -> list[EarlyWarning]:
    """The enterprise rule for every new case: `history[key]` holds the enterprise's cases (the new ones included)
    around them. One warning per key and week: the first case of a week that meets the rule makes it."""
    found: dict[str, EarlyWarning] = {}
    for case in sorted(new_cases, key=lambda c: (c.received_at, c.complaint_id)):
        if case.enterprise is None:
            continue
        warning = enterprise_repeat(case.enterprise, history.get(case.enterprise, ()), case.received_at)
        if warning is not None and warning.warning_id not in found:
            found[warning.warning_id] = warning
    return list(found.values())


def raised_event(warning: EarlyWarning, at: datetime) -> WarningRaised:
    return WarningRaised(
        occurred_at=as_utc(at),
        complaint_ids=list(warning.complaint_ids),
        warning_id=warning.warning_id,
        kind=warning.kind,
        key=warning.key_json,
        week=week_label(warning.week),
        count=warning.count,
        baseline=warning.baseline,
        p_value=warning.p_value,
    )


# --- the bulletin's section ---------------------------------------------------------------------------------------


def describe_key(key: Mapping[str, str]) -> str:
    """A key in Chinese words: 开鲁县 · 融资信贷, 融资信贷, the enterprise's code or name."""
    parts: list[str] = []
    if "region_code" in key:
        parts.append(REGIONS.get(key["region_code"], key["region_code"]))
    if "category" in key:
        parts.append(CATEGORY_NAMES.get(key["category"], key["category"]))
    if "uscc" in key:
        parts.append(f"企业 {key['uscc']}")
    if "enterprise_name" in key:
        parts.append(key["enterprise_name"])
    return " · ".join(parts) or "—"


KIND_NAMES: Final = {WarningKind.RISING.value: "数量异常上升", WarningKind.ENTERPRISE_REPEAT.value: "同一企业反复反映"}


def bulletin_section(warnings: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(heading, HTML) of the bulletin's early-warning section: the month's warnings, as the endpoint lists them
    (`kind`, `key`, `week`, `count`, `baseline`, `p_value`, `complaint_ids`); every text is escaped."""
    heading = "风险预警（防未病）"
    if not warnings:
        return heading, '<p class="empty">本月无预警。</p>'
    rows = []
    for w in warnings:
        baseline_text = "—" if w.get("baseline") is None else f"{float(w['baseline']):.2f}"
        p_text = "—" if w.get("p_value") is None else f"{float(w['p_value']):.4f}"
        rows.append(
            "<tr>"
            f"<td>{escape(str(w.get('week', '')))}</td>"
            f"<td>{escape(KIND_NAMES.get(str(w.get('kind')), str(w.get('kind'))))}</td>"
            f"<td>{escape(describe_key(w.get('key') or {}))}</td>"
            f'<td class="num">{int(w.get("count") or 0)}</td>'
            f'<td class="num">{escape(baseline_text)}</td>'
            f'<td class="num">{escape(p_text)}</td>'
            f"<td>{escape('、'.join(str(c) for c in w.get('complaint_ids') or []))}</td>"
            "</tr>"
        )
    table = (
        '<table class="warnings"><thead><tr><th scope="col">周次</th><th scope="col">类型</th>'
        '<th scope="col">对象</th><th scope="col">件数</th><th scope="col">前8周均值</th>'
        '<th scope="col">概率</th><th scope="col">涉及诉求</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )
    return heading, f"<p>本月共发出预警 {len(warnings)} 条。</p>" + table
