"""The bulletin's data from the read model (pure): the month, its figures, the worst overdue cases, repeats and the
ledger's progress; and the fold's standing breach behind the overdue list, the same in any order of the facts."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import pytest

from services.reporting.bulletin import (
    MAX_OVERDUE,
    MAX_REPEATS,
    BulletinData,
    OverdueRow,
    build_bulletin,
    parse_month,
    previous_month,
    render_bulletin,
)
from services.reporting.ledger import LedgerItem
from services.reporting.projections import (
    COUNTS,
    TOTAL_DIMENSION,
    TOTAL_KEY,
    ZERO,
    CaseFigures,
    Counts,
    Fact,
    StandingBreach,
    fold_case,
)
from services.reporting.repeats import RepeatCase
from shared.domain import Category, Channel
from shared.events.sla import Stage
from tests.support.reporting_scenario import EXPECTED_TOTAL, PERIOD, T0, Case, h, scenario

AS_OF = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
OVERDUE = COUNTS.index("overdue_open")


def _folded(facts: Sequence[Fact]) -> dict[str, CaseFigures]:
    by_case: dict[str, list[Fact]] = defaultdict(list)
    for fact in facts:
        by_case[fact.complaint_id].append(fact)
    return {cid: fold_case(cid, fs) for cid, fs in by_case.items()}


def _sums(cases: dict[str, CaseFigures], first: date, last: date, dimension: str) -> dict[str, Counts]:
    """What store.sum_rollups answers: the cases' contributions of those days, summed per key."""
    out: dict[str, Counts] = {}
    for case in cases.values():
        c = case.contribution
        if c.day is None or not first <= c.day <= last:
            continue
        for (d, k), counts in c.rows.items():
            if d == dimension:
                out[k] = tuple(a + b for a, b in zip(out.get(k, ZERO), counts, strict=True))
    return out


def _overdue_rows(cases: dict[str, CaseFigures]) -> list[OverdueRow]:
    """What store.overdue_cases reads from the case rows the fold saved."""
    return [
        OverdueRow(cid, f.profile.title, f.profile.department, f.overdue.stage, f.overdue.due_at)
        for cid, f in cases.items()
        if f.overdue is not None
    ]


def _item(n: int, status: str, source: str = "2026 自治区营商环境评估反馈", problem: str | None = None) -> LedgerItem:
    closing = {"closed_at": AS_OF, "evidence": "整改报告", "approved_by": "yshj"} if status == "closed" else {}
    return LedgerItem(
        item_id=f"L{n}", source=source, area="政务服务", problem=problem or f"问题{n}", departments=["spj"],
        due_date=date(2026, 12, 31), status=status, **closing,
    )  # fmt: skip


def _bulletin_of(facts: Sequence[Fact], **more: object) -> BulletinData:
    cases = _folded(facts)
    first, last = PERIOD
    before_first, before_last = previous_month(first)
    args: dict[str, object] = {
        "groups": _sums(cases, first, last, "department"),
        "total": _sums(cases, first, last, TOTAL_DIMENSION).get(TOTAL_KEY, ZERO),
        "previous_total": _sums(cases, before_first, before_last, TOTAL_DIMENSION).get(TOTAL_KEY, ZERO),
        "overdue": _overdue_rows(cases),
        "repeat_cases": [],
        "ledger_items": [],
        "ledger_recurring": [],
    }
    args.update(more)
    return build_bulletin("2026-11", AS_OF, **args)  # type: ignore[arg-type]


def test_a_month_is_its_first_and_last_local_day() -> None:
    assert parse_month("2026-11") == (date(2026, 11, 1), date(2026, 11, 30))
    assert parse_month("2024-02") == (date(2024, 2, 1), date(2024, 2, 29))
    assert parse_month("2026-12") == (date(2026, 12, 1), date(2026, 12, 31))
    assert previous_month(date(2026, 1, 1)) == (date(2025, 12, 1), date(2025, 12, 31))
    assert previous_month(date(2026, 3, 1)) == (date(2026, 2, 1), date(2026, 2, 28))


@pytest.mark.parametrize("bad", ["2026-13", "2026-00", "2026-1", "26-11", "2026/11", "2026-11-01", "", "abcd-ef",
                                 "0000-01", "1969-12", "２０２６-11"])  # fmt: skip
def test_a_month_that_is_not_one_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="month"):
        parse_month(bad)


def test_the_scenario_month_gives_its_figures_ranking_and_previous_month() -> None:
    data = _bulletin_of(scenario())
    assert data.month == "2026-11"
    assert data.total == EXPECTED_TOTAL
    assert [r["key"] for r in data.departments] == ["jrb", "scj", "spj", "triage", "unassigned"]
    assert data.departments[2]["name"] == "市行政审批和政务服务局"
    # October holds J5 only: received, assigned, nothing resolved.
    before = data.previous_total
    assert before is not None
    assert (before["key"], before["name"], before["received"], before["resolution_rate"]) == ("all", "合计", 1, 0.0)


def test_no_case_the_month_before_means_no_comparison() -> None:
    facts = [f for f in scenario() if f.complaint_id != "supervisor:J5"]
    assert _bulletin_of(facts).previous_total is None


def test_the_overdue_cases_are_the_standing_breaches_most_overdue_first() -> None:
    data = _bulletin_of(scenario())
    got = [(c.complaint_id, c.department, c.department_name, c.stage, c.due_at, c.title) for c in data.overdue]
    assert got == [
        # S5 never accepted (accept due 2.1 h); J6 never contacted (24.1 h); S4 accepted late (done), resolve breached.
        ("hotline:S5", "spj", "市行政审批和政务服务局", "accept", h(2.1), "营商环境问题"),
        ("supervisor:J6", "jrb", "市地方金融管理局", "first_contact", h(24.1), "营商环境问题"),
        ("hotline:S4", "spj", "市行政审批和政务服务局", "resolve", h(120), "营商环境问题"),
    ]
    assert len(data.overdue) == data.total["overdue_open"]


def test_at_most_ten_overdue_cases_and_phones_masked_in_titles() -> None:
    rows = [
        OverdueRow(f"hotline:X{i:02}", f"请回电13912345678，座机0475-8234567 第{i}件", None, "resolve", T0 + timedelta(hours=i))
        for i in range(14, 0, -1)
    ]  # fmt: skip
    data = _bulletin_of([], overdue=rows)
    assert [c.complaint_id for c in data.overdue] == [f"hotline:X{i:02}" for i in range(1, MAX_OVERDUE + 1)]
    first = data.overdue[0]
    assert first.title == "请回电139****5678，座机0475****567 第1件"
    assert (first.department, first.department_name) == ("unassigned", "未派单")
    page = render_bulletin(data)
    assert "13912345678" not in page
    assert "8234567" not in page
    assert "139****5678" in page


def test_repeats_of_the_month_with_enterprise_names_masked() -> None:
    at = datetime(2026, 11, 3, 2, tzinfo=UTC)
    name = "开鲁县红干椒加工厂（电话13812345678）"
    cases = [
        RepeatCase("hotline:A1", at - timedelta(days=40), "name:x", name, None, "government_integrity"),
        RepeatCase("hotline:A2", at, "name:x", name, None, "government_integrity"),
        RepeatCase("hotline:B1", at - timedelta(days=200), "uscc:Y", "某公司", "Y", "financing"),
        RepeatCase("hotline:B2", at - timedelta(days=60), "uscc:Y", "某公司", "Y", "financing"),  # not in November
    ]
    data = _bulletin_of([], repeat_cases=cases)
    assert [(r["kind"], r["complaint_ids"]) for r in data.repeats] == [
        ("same_enterprise_90d", ["hotline:A1", "hotline:A2"])
    ]
    assert data.repeats[0]["enterprise"]["name"] == "开鲁县红干椒加工厂（电话138****5678）"


def test_a_month_of_many_repeats_lists_those_with_the_most_cases_and_counts_the_rest() -> None:
    at = datetime(2026, 11, 3, 2, tzinfo=UTC)
    extra = 7
    cases = [
        RepeatCase(f"hotline:E{n}-{i}", at - timedelta(days=i), f"uscc:E{n}", f"企业{n}", f"E{n}", "financing")
        for n in range(MAX_REPEATS + extra)
        for i in range(2 + (n == 5) * 3)  # enterprise 5 has five cases, every other two
    ]
    data = _bulletin_of([], repeat_cases=cases)
    assert len(data.repeats) == MAX_REPEATS
    assert data.repeats_not_listed == extra
    assert data.repeats[0]["enterprise"]["uscc"] == "E5"
    assert len(data.repeats[0]["complaint_ids"]) == 5
    page = render_bulletin(data)
    assert page.count("<li><b>企业") == MAX_REPEATS
    assert f"另有 {extra} 组重复诉求未列出" in page


def test_a_month_of_few_repeats_lists_them_all_and_says_nothing_more() -> None:
    at = datetime(2026, 11, 3, 2, tzinfo=UTC)
    cases = [
        RepeatCase(f"hotline:F{i}", at - timedelta(days=i), "uscc:F", "某企业", "F", "financing") for i in range(2)
    ]
    data = _bulletin_of([], repeat_cases=cases)
    assert (len(data.repeats), data.repeats_not_listed) == (1, 0)
    assert "未列出" not in render_bulletin(data)


def test_the_ledger_progress_48_items_33_closed() -> None:
    items = [_item(i, "closed") for i in range(33)] + [_item(i, "in_progress") for i in range(33, 43)]
    items += [_item(i, "open") for i in range(43, 48)]
    flags = [i < 2 for i in range(48)]
    ledger = _bulletin_of([], ledger_items=items, ledger_recurring=flags).ledger
    assert ledger is not None
    assert (ledger.total, ledger.closed, ledger.completion_rate, ledger.recurring) == (48, 33, 0.6875, 2)
    assert dict(ledger.by_status) == {"open": 5, "in_progress": 10, "closed": 33}
    empty = _bulletin_of([]).ledger
    assert empty is not None
    assert (empty.total, empty.completion_rate, dict(empty.by_status)) == (
        0,
        None,
        {"open": 0, "in_progress": 0, "closed": 0},
    )


def test_an_empty_month_renders() -> None:
    data = _bulletin_of([])
    assert data.total["received"] == 0
    assert data.departments == []
    assert data.overdue == []
    assert "本月无超期未办结案件" in render_bulletin(data)


def test_the_standing_breach_is_the_same_in_any_order_and_agrees_with_overdue_open() -> None:
    facts = scenario()
    want = _folded(facts)
    for seed in range(20):
        order = facts + random.Random(seed).sample(facts, len(facts) // 3)  # some twice
        random.Random(seed + 100).shuffle(order)
        got = _folded(order)
        assert {cid: f.overdue for cid, f in got.items()} == {cid: f.overdue for cid, f in want.items()}
    for cid, f in want.items():
        total = f.contribution.rows.get((TOTAL_DIMENSION, TOTAL_KEY), ZERO)
        assert (f.overdue is not None) == bool(total[OVERDUE]), cid
    assert want["hotline:S4"].overdue == StandingBreach("resolve", 1, h(120))
    assert want["hotline:S1"].profile.title == "营商环境问题"


def test_a_met_after_the_breach_or_the_stage_done_takes_the_case_off_the_list() -> None:
    facts = scenario()
    cases = _folded(facts)
    # C5: breached, then a `met` supersedes it; C7: accepted late (done, sla sends no met): neither is listed.
    assert cases["complaint_line:C5"].overdue is None
    assert cases["complaint_line:C7"].overdue is None
    # A case never accepted is listed at its accept stage until it is accepted (late: sla sends no `met`).
    case = Case("hotline:Z1", Channel.HOTLINE, Category.GOVERNMENT_SERVICES).assign(1, "spj", h(0.1))
    case.breach(Stage.ACCEPT, "spj", 2.1)
    assert fold_case(case.cid, case.facts).overdue == StandingBreach("accept", 1, h(2.1))
    case.accept("spj", 5)
    assert fold_case(case.cid, case.facts).overdue is None
    # Resolved: never listed, though its resolve deadline was breached.
    case.contact("spj", 6).breach(Stage.RESOLVE, "spj", 120)
    assert fold_case(case.cid, case.facts).overdue == StandingBreach("resolve", 1, h(120))
    case.resolve("spj", 130)
    assert fold_case(case.cid, case.facts).overdue is None
