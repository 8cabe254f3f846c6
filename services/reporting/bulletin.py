"""The monthly bulletin (月度通报): one HTML page in Chinese, charts drawn here as inline SVG, printable on A4.

Pure: it takes the month's figures, already computed, and returns the page. Nothing on the page is loaded from
another host (no fonts, scripts or styles from outside), so it reads the same offline and on paper.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from html import escape
from typing import Any, Final

from services.reporting.ledger import ItemStatus, LedgerItem, completion
from services.reporting.projections import TOTAL_KEY, TOTAL_NAME, Counts, figures, group_name, summary
from services.reporting.repeats import RepeatCase, find_repeats
from shared.domain import LOCAL_TZ
from shared.observability import mask_phones_in_text

Row = Mapping[str, Any]

# Headline rates, in the order the bulletin shows them: (figure of contract 7.1, its Chinese name).
HEADLINES: Final = (
    ("resolution_rate", "办结率"),
    ("on_time_rate", "按时办结率"),
    ("response_rate", "签收率"),
    ("contact_rate", "按时联系率"),
    ("satisfaction_rate", "满意率"),
    ("solved_rate", "解决率"),
)
STAGE_NAMES: Final = {"accept": "签收", "first_contact": "首次联系", "resolve": "办结", "callback": "回访"}
LEDGER_STATUS_NAMES: Final = {"open": "未启动", "in_progress": "整改中", "closed": "已销号"}
_BAR: Final = "#1f5fa8"
_BAR_WEAK: Final = "#c9d8ec"
_GOOD: Final = "#1a7f37"
_BAD: Final = "#b42318"


@dataclass(frozen=True)
class OverdueCase:
    """An open case past a deadline, as the bulletin lists it."""

    complaint_id: str
    department: str
    department_name: str
    stage: str
    due_at: datetime
    title: str


@dataclass(frozen=True)
class LedgerProgress:
    total: int
    closed: int
    completion_rate: float | None
    by_status: Mapping[str, int]
    recurring: int


@dataclass(frozen=True)
class BulletinData:
    """Everything one month's bulletin shows; the reporting service fills it from its read model."""

    month: str  # YYYY-MM
    as_of: datetime
    total: Row  # the 7.1 total of the month
    previous_total: Row | None  # the same for the month before, when there was one
    departments: Sequence[Row]  # the 7.1 groups of the month by department
    overdue: Sequence[OverdueCase]
    repeats: Sequence[Row]  # contract 7 repeats rows
    ledger: LedgerProgress | None
    extra_sections: Sequence[tuple[str, str]] = field(default_factory=tuple)  # (heading, trusted HTML), later parts
    repeats_not_listed: int = 0  # repeats past MAX_REPEATS: the page says how many, GET /v1/reports/repeats has all


def rank_departments(rows: Sequence[Row]) -> list[Row]:
    """The ranking: on-time rate first, then resolution rate, then satisfaction, then fewer overdue cases; a rate
    that cannot be computed (no case to judge) ranks below any number. Manual triage and unassigned cases are
    desks, not departments under assessment, and are left out."""

    def rate(row: Row, name: str) -> float:
        value = row.get(name)
        return -1.0 if value is None else float(value)

    ranked = [r for r in rows if r.get("key") not in {"triage", "unassigned"}]
    return sorted(
        ranked,
        key=lambda r: (
            -rate(r, "on_time_rate"),
            -rate(r, "resolution_rate"),
            -rate(r, "satisfaction_rate"),
            int(r.get("overdue_open") or 0),
            str(r.get("key")),
        ),
    )


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f}%"


def _change(now: Any, before: Any) -> str:
    """The change in percentage points against the month before, coloured by direction."""
    if now is None or before is None:
        return '<span class="flat">上月无可比数据</span>'
    points = (float(now) - float(before)) * 100
    if abs(points) < 0.05:
        return '<span class="flat">与上月持平</span>'
    arrow, css = ("▲", "up") if points > 0 else ("▼", "down")
    return f'<span class="{css}">{arrow} {abs(points):.1f} 个百分点</span>'


def _bar_chart(rows: Sequence[Row], figure: str, label: str) -> str:
    """A horizontal bar chart of one rate per department, as SVG."""
    if not rows:
        return '<p class="empty">本月无数据。</p>'
    row_h, left, width = 26, 230, 640
    height = row_h * len(rows) + 40
    scale = width - left - 70
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" '
        f'width="100%" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
    ]
    for tick in (0, 25, 50, 75, 100):
        x = left + scale * tick / 100
        parts.append(f'<line x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{height - 24}" class="grid"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 8}" class="tick">{tick}%</text>')
    for i, row in enumerate(rows):
        y = 12 + i * row_h
        value = row.get(figure)
        name = escape(str(row.get("name") or row.get("key")))
        parts.append(f'<text x="{left - 8}" y="{y + 15}" class="label">{name}</text>')
        if value is None:
            parts.append(f'<text x="{left + 4}" y="{y + 15}" class="value">无可计算数据</text>')
            continue
        w = max(1.0, scale * float(value))
        colour = _BAR if float(value) >= 0.9 else _BAR_WEAK if float(value) >= 0.6 else _BAD
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="{colour}"/>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}" class="value">{_pct(value)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ledger_donut(ledger: LedgerProgress) -> str:
    """Closed items against all, as an SVG ring."""
    share = 0.0 if not ledger.total else ledger.closed / ledger.total
    r, c = 52, 2 * math.pi * 52
    done = c * share
    return (
        '<svg class="donut" role="img" aria-label="整改完成率" viewBox="0 0 140 140" width="140" height="140" '
        'xmlns="http://www.w3.org/2000/svg"><title>整改完成率</title>'
        f'<circle cx="70" cy="70" r="{r}" fill="none" stroke="{_BAR_WEAK}" stroke-width="18"/>'
        f'<circle cx="70" cy="70" r="{r}" fill="none" stroke="{_GOOD}" stroke-width="18" '
        f'stroke-dasharray="{done:.2f} {c - done:.2f}" transform="rotate(-90 70 70)"/>'
        f'<text x="70" y="76" text-anchor="middle" class="donut-text">{_pct(ledger.completion_rate)}</text></svg>'
    )


def _headlines(data: BulletinData) -> str:
    before = data.previous_total or {}
    cards = []
    for figure, name in HEADLINES:
        cards.append(
            f'<div class="card"><div class="card-name">{name}</div>'
            f'<div class="card-value">{_pct(data.total.get(figure))}</div>'
            f'<div class="card-change">{_change(data.total.get(figure), before.get(figure))}</div></div>'
        )
    t = data.total
    counts = (
        f"本月受理企业诉求 <b>{int(t.get('received') or 0)}</b> 件，办结 <b>{int(t.get('resolved') or 0)}</b> 件，"
        f"在办 <b>{int(t.get('open') or 0)}</b> 件，其中超期未办结 <b>{int(t.get('overdue_open') or 0)}</b> 件；"
        f"回访 <b>{int(t.get('callbacks') or 0)}</b> 次，退单 <b>{int(t.get('returns') or 0)}</b> 次"
        f"（派单席改派纠正 {int(t.get('returns_overturned') or 0)} 次）。"
    )
    return f'<p class="lead">{counts}</p><div class="cards">{"".join(cards)}</div>'


def _ranking_table(ranked: Sequence[Row]) -> str:
    head = (
        "<tr><th>名次</th><th>部门</th><th>受理</th><th>办结率</th><th>按时办结率</th><th>签收率</th>"
        "<th>满意率</th><th>退单</th><th>超期在办</th></tr>"
    )
    body = "".join(
        f"<tr><td>{i}</td><td class='name'>{escape(str(r.get('name') or r.get('key')))}</td>"
        f"<td>{int(r.get('received') or 0)}</td><td>{_pct(r.get('resolution_rate'))}</td>"
        f"<td>{_pct(r.get('on_time_rate'))}</td><td>{_pct(r.get('response_rate'))}</td>"
        f"<td>{_pct(r.get('satisfaction_rate'))}</td><td>{int(r.get('returns') or 0)}</td>"
        f"<td>{int(r.get('overdue_open') or 0)}</td></tr>"
        for i, r in enumerate(ranked, start=1)
    )
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def _overdue_table(cases: Sequence[OverdueCase], as_of: datetime) -> str:
    if not cases:
        return '<p class="empty">本月无超期未办结案件。</p>'
    rows = []
    for c in cases:
        hours = max(0.0, (as_of - c.due_at).total_seconds() / 3600)
        late = f"{hours / 24:.1f} 天" if hours >= 24 else f"{hours:.1f} 小时"
        rows.append(
            f"<tr><td class='mono'>{escape(c.complaint_id)}</td><td class='name'>{escape(c.title)}</td>"
            f"<td>{escape(c.department_name)}</td><td>{STAGE_NAMES.get(c.stage, escape(c.stage))}</td>"
            f"<td>{c.due_at.astimezone(LOCAL_TZ):%m-%d %H:%M}</td><td class='bad'>{late}</td></tr>"
        )
    return (
        "<table><thead><tr><th>案件编号</th><th>诉求</th><th>责任单位</th><th>环节</th><th>时限</th><th>已超期</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _repeats_list(repeats: Sequence[Row], category_names: Mapping[str, str], not_listed: int = 0) -> str:
    if not repeats:
        return '<p class="empty">本月未发现重复诉求。</p>'
    kinds = {"same_enterprise_90d": "90日内重复", "consecutive_years": "连续两年"}
    items = []
    for r in repeats:
        enterprise = r.get("enterprise") or {}
        who = escape(str(enterprise.get("name") or enterprise.get("uscc") or "未具名企业"))
        category = escape(category_names.get(str(r.get("category")), str(r.get("category"))))
        ids = r.get("complaint_ids") or []
        items.append(
            f"<li><b>{who}</b> · {category} · {kinds.get(str(r.get('kind')), escape(str(r.get('kind'))))} · "
            f"{len(ids)} 件（{escape('、'.join(str(i) for i in ids[:5]))}{'…' if len(ids) > 5 else ''}）</li>"
        )
    more = (
        f'<p class="more">另有 {not_listed} 组重复诉求未列出，完整名单见 GET /v1/reports/repeats。</p>'
        if not_listed
        else ""
    )
    return f"<ul class='repeats'>{''.join(items)}</ul>{more}"


def _ledger_section(ledger: LedgerProgress | None) -> str:
    if ledger is None or not ledger.total:
        return '<p class="empty">整改台账暂无事项。</p>'
    statuses = "".join(
        f"<li>{name}：<b>{int(ledger.by_status.get(code, 0))}</b> 项</li>" for code, name in LEDGER_STATUS_NAMES.items()
    )
    return (
        f'<div class="ledger">{_ledger_donut(ledger)}<div><p>台账事项共 <b>{ledger.total}</b> 项，已销号 '
        f"<b>{ledger.closed}</b> 项，完成率 <b>{_pct(ledger.completion_rate)}</b>；其中与上年同类问题重复出现 "
        f"<b>{ledger.recurring}</b> 项。</p><ul>{statuses}</ul></div></div>"
    )


_STYLE: Final = """
@page { size: A4; margin: 14mm 14mm 16mm; }
* { box-sizing: border-box; }
body { font-family: "Noto Sans CJK SC", "Noto Serif CJK SC", "Source Han Sans SC", "Microsoft YaHei", sans-serif;
       color: #1b1f24; margin: 0 auto; max-width: 190mm; padding: 8mm 4mm; font-size: 10.5pt; line-height: 1.55; }
header { border-bottom: 3px solid #b42318; padding-bottom: 4mm; margin-bottom: 5mm; text-align: center; }
header h1 { color: #b42318; font-size: 20pt; margin: 0; letter-spacing: 0.12em; }
header .sub { color: #57606a; font-size: 9.5pt; }
h2 { font-size: 13pt; border-left: 5px solid #1f5fa8; padding-left: 3mm; margin: 7mm 0 3mm; }
section { break-inside: avoid; page-break-inside: avoid; }
.lead { margin: 0 0 3mm; }
.cards { display: grid; grid-template-columns: repeat(3, 1fr); gap: 3mm; }
.card { border: 1px solid #d0d7de; border-radius: 2mm; padding: 2.5mm 3mm; background: #f6f8fa; }
.card-name { color: #57606a; font-size: 9pt; }
.card-value { font-size: 17pt; font-weight: 700; color: #1f5fa8; }
.card-change { font-size: 8.5pt; }
.up { color: #1a7f37; } .down { color: #b42318; } .flat { color: #57606a; } .bad { color: #b42318; }
table { width: 100%; border-collapse: collapse; font-size: 9pt; }
th, td { border: 1px solid #d0d7de; padding: 1.2mm 1.8mm; text-align: center; }
th { background: #eaeef2; }
td.name { text-align: left; } td.mono { font-family: monospace; font-size: 8pt; }
.chart .grid { stroke: #d0d7de; stroke-width: 1; }
.chart .tick { font-size: 10px; fill: #57606a; text-anchor: middle; }
.chart .label { font-size: 12px; fill: #1b1f24; text-anchor: end; }
.chart .value { font-size: 11px; fill: #1b1f24; }
.donut-text { font-size: 20px; font-weight: 700; fill: #1a7f37; }
.ledger { display: flex; gap: 6mm; align-items: center; }
.empty, .more { color: #57606a; }
ul.repeats li { margin-bottom: 1mm; }
footer { margin-top: 8mm; color: #57606a; font-size: 8.5pt; border-top: 1px solid #d0d7de; padding-top: 2mm; }
"""


def render_bulletin(data: BulletinData, category_names: Mapping[str, str] | None = None) -> str:
    """The bulletin page for one month."""
    year, month = data.month.split("-")
    ranked = rank_departments(data.departments)
    as_of_local = data.as_of.astimezone(LOCAL_TZ)
    numerals = "六七八九十"
    extra = "".join(
        f"<section><h2>{numerals[i] if i < len(numerals) else i + 6}、{escape(h)}</h2>{body}</section>"
        for i, (h, body) in enumerate(data.extra_sections)
    )
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>通辽市优化营商环境企业诉求办理情况通报（{year}年{int(month)}月）</title>
<style>{_STYLE}</style></head>
<body>
<header><h1>企业诉求办理情况月度通报</h1>
<div class="sub">{year}年{int(month)}月 · 通辽市营商环境建设监督局 ·
数据截至 {as_of_local:%Y-%m-%d %H:%M}</div></header>
<section><h2>一、总体情况</h2>{_headlines(data)}</section>
<section><h2>二、部门排名（按时办结率）</h2>{_bar_chart(ranked, "on_time_rate", "各部门按时办结率")}
{_ranking_table(ranked)}</section>
<section><h2>三、超期未办结案件</h2>{_overdue_table(data.overdue, data.as_of)}</section>
<section><h2>四、重复诉求</h2>{_repeats_list(data.repeats, category_names or {}, data.repeats_not_listed)}</section>
<section><h2>五、整改台账进展</h2>{_ledger_section(data.ledger)}</section>
{extra}
<footer>说明：受理量按诉求受理时间统计；办结率＝已办结÷受理量；按时办结率＝（按时办结＋经批准延期后按时办结）÷已办结；
签收率、按时联系率以派单为单位统计；满意率＝满意及基本满意÷回访数；解决率＝回访中企业表示问题已解决÷回访数。
排名依次比较按时办结率、办结率、满意率和超期在办件数。</footer>
</body></html>
"""


# --- filling the page from the read model (pure: the rows fetched by bulletin_http.py in, BulletinData out) ---

_MONTH: Final = re.compile(r"([0-9]{4})-([0-9]{2})")
MAX_OVERDUE: Final = 10
MAX_REPEATS: Final = 20
"""The bulletin lists at most this many overdue cases, most overdue first."""


@dataclass(frozen=True)
class OverdueRow:
    """An overdue open case as the case table keeps it (migration 003)."""

    complaint_id: str
    title: str | None
    department: str | None
    stage: str
    due_at: datetime


def parse_month(text: str) -> tuple[date, date]:
    """`YYYY-MM` → its first and last local day; ValueError when it is not such a month (year 1970 to 9999)."""
    found = _MONTH.fullmatch(text)
    if found is None:
        raise ValueError(f"month must be YYYY-MM, not {text[:40]!r}")
    year, month = int(found[1]), int(found[2])
    if not (1970 <= year <= 9999 and 1 <= month <= 12):
        raise ValueError(f"no such month: {text!r}")
    first = date(year, month, 1)
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return first, following - timedelta(days=1)


def previous_month(first: date) -> tuple[date, date]:
    """The month before the one starting on `first`: its first and last day."""
    last = first - timedelta(days=1)
    return last.replace(day=1), last


def _masked(text: str | None) -> str | None:
    return None if text is None else mask_phones_in_text(text)


def build_bulletin(
    month: str,
    as_of: datetime,
    *,
    groups: Mapping[str, Counts],
    total: Counts,
    previous_total: Counts,
    overdue: Sequence[OverdueRow],
    repeat_cases: Sequence[RepeatCase],
    ledger_items: Sequence[LedgerItem],
    ledger_recurring: Sequence[bool],
) -> BulletinData:
    """One month's bulletin from what the read model holds: the month's rollup sums by department and in total,
    the previous month's total (no case then: None), the overdue cases (most overdue first; at most MAX_OVERDUE
    kept), the cases behind the repeats (the MAX_REPEATS with the most
    cases listed, the rest counted), and the ledger's items with their `recurring` flags. Free text that
    enterprises wrote (titles, enterprise names) goes out with every phone number masked."""
    first, last = parse_month(month)
    answer = summary("department", groups, total, start=first, end=last, as_of=as_of)
    before = {"key": TOTAL_KEY, "name": TOTAL_NAME, **figures(previous_total)} if any(previous_total) else None
    worst = sorted(overdue, key=lambda o: (o.due_at, o.complaint_id))[:MAX_OVERDUE]
    cases = [
        OverdueCase(
            o.complaint_id,
            o.department or "unassigned",
            group_name("department", o.department or "unassigned"),
            o.stage,
            o.due_at,
            _masked(o.title) or "（无标题）",
        )
        for o in worst
    ]
    found = find_repeats(repeat_cases, first, last)  # most cases first
    repeats = [
        {**r, "enterprise": {**r["enterprise"], "name": _masked(r["enterprise"]["name"])}} for r in found[:MAX_REPEATS]
    ]
    ledger_total, closed, rate = completion(ledger_items)
    by_status = {s.value: sum(1 for i in ledger_items if i.status is s) for s in ItemStatus}
    ledger = LedgerProgress(ledger_total, closed, rate, by_status, sum(1 for f in ledger_recurring if f))
    return BulletinData(
        month,
        as_of,
        answer["total"],
        before,
        answer["groups"],
        cases,
        repeats,
        ledger,
        repeats_not_listed=max(0, len(found) - MAX_REPEATS),
    )
