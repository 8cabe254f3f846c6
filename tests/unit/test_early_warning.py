"""The early-warning rules (contract 10.4) on known series: the Poisson rule against 8 previous weeks, a new key with no
history, the local week boundary, the 30-day enterprise rule, one warning per key and week, the bulletin section."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from scipy.stats import poisson

from services.reporting.warnings import (
    EarlyWarning,
    WatchedCase,
    baseline,
    bulletin_section,
    enterprise_key,
    enterprise_repeat,
    enterprise_warnings,
    judge_rising,
    raised_event,
    rising_warnings,
    warning_id,
    week_label,
    week_start,
)
from shared.domain import LOCAL_TZ
from shared.events import WarningKind, WarningRaised

MONDAY = date(2026, 11, 23)  # ISO 2026-W48
KEY = (("category", "financing"), ("region_code", "150523"))


def series(*counts: int, week: date = MONDAY) -> dict[date, int]:
    """Counts of consecutive weeks, the last one being `week`."""
    n = len(counts)
    return {week - timedelta(weeks=n - 1 - i): c for i, c in enumerate(counts)}


def test_eight_quiet_weeks_then_a_jump_warns() -> None:
    counts = series(1, 0, 1, 1, 0, 1, 0, 1, 5)
    (warning,) = rising_warnings([(KEY, MONDAY)], {KEY: counts}, {(KEY, MONDAY): ["b", "a", "c", "d", "e"]})
    assert warning.kind is WarningKind.RISING
    assert warning.count == 5
    assert warning.baseline == 0.625
    assert warning.p_value == pytest.approx(float(poisson.sf(4, 0.625)))
    assert warning.p_value < 0.01
    assert warning.complaint_ids == ("a", "b", "c", "d", "e")
    assert warning.week == MONDAY


def test_a_slow_rise_does_not_warn() -> None:
    counts = series(2, 2, 3, 3, 4, 4, 5, 5, 6)
    assert rising_warnings([(KEY, MONDAY)], {KEY: counts}, {}) == []
    verdict = judge_rising(6, [2, 2, 3, 3, 4, 4, 5, 5])
    assert verdict.baseline == 3.5
    assert verdict.p_value > 0.1
    assert not verdict.raise_


def test_a_new_region_with_no_history_takes_the_floor() -> None:
    """λ = 0.5: three cases are not yet unusual (p ≈ 0.014), four are (p ≈ 0.0018)."""
    assert baseline([]) == 0.5
    three = judge_rising(3, [])
    assert three.baseline == 0.5
    assert three.p_value == pytest.approx(0.01439, abs=1e-5)
    assert not three.raise_
    four = judge_rising(4, [])
    assert four.p_value == pytest.approx(0.00175, abs=1e-5)
    assert four.raise_
    assert rising_warnings([(KEY, MONDAY)], {KEY: {MONDAY: 4}}, {})[0].baseline == 0.5


def test_fewer_than_three_never_warn_even_when_improbable() -> None:
    assert not judge_rising(2, [0] * 8).raise_
    assert judge_rising(2, [0] * 8).p_value < 0.1


def test_only_the_eight_previous_weeks_count_and_missing_weeks_are_zero() -> None:
    # A busy week nine weeks back does not lift the baseline; the running week is not its own history.
    counts = {MONDAY - timedelta(weeks=9): 100, MONDAY - timedelta(weeks=1): 4, MONDAY: 6}
    (warning,) = rising_warnings([(KEY, MONDAY)], {KEY: counts}, {})
    assert warning.baseline == 0.5  # 4 / 8 = 0.5
    assert baseline([1] * 20) == 1.0


def test_the_week_boundary_is_sunday_midnight_local() -> None:
    sunday_night = datetime(2026, 11, 29, 23, 59, 59, tzinfo=LOCAL_TZ)  # 15:59:59 UTC on Sunday
    monday_morning = datetime(2026, 11, 30, 0, 0, tzinfo=LOCAL_TZ)  # 16:00 UTC on Sunday
    assert week_start(sunday_night) == MONDAY
    assert week_label(week_start(sunday_night)) == "2026-W48"
    assert week_start(monday_morning) == date(2026, 11, 30)
    assert week_label(week_start(monday_morning)) == "2026-W49"
    # The UTC date of Monday 00:00 local is still Sunday: the local week decides.
    assert monday_morning.astimezone(UTC).date() == date(2026, 11, 29)
    assert week_label(date(2026, 12, 28)) == "2026-W53"
    assert week_label(date(2027, 1, 4)) == "2027-W01"


def test_a_sunday_night_case_counts_in_its_own_week() -> None:
    case = WatchedCase("c1", datetime(2026, 11, 29, 15, 30, tzinfo=UTC), "150523", "financing", None)
    assert case.week == MONDAY
    assert case.counted_keys() == [KEY, (("category", "financing"),)]


def test_warning_ids_are_deterministic_per_kind_key_and_week() -> None:
    a = warning_id(WarningKind.RISING, KEY, MONDAY)
    assert a == warning_id(WarningKind.RISING, KEY, MONDAY)
    assert a.startswith("EW-2026-W48-")
    assert a != warning_id(WarningKind.RISING, KEY, MONDAY + timedelta(weeks=1))
    assert a != warning_id(WarningKind.ENTERPRISE_REPEAT, KEY, MONDAY)
    assert a != warning_id(WarningKind.RISING, (("category", "financing"),), MONDAY)


def _at(days: float) -> datetime:
    return datetime(2026, 11, 1, 2, tzinfo=UTC) + timedelta(days=days)


def test_the_enterprise_rule_three_cases_within_thirty_days() -> None:
    ent = (("uscc", "91150502MA0Q1B2C3X"),)
    two = [("a", _at(0)), ("b", _at(10))]
    assert enterprise_repeat(ent, two, _at(10)) is None
    three = [*two, ("c", _at(29.9))]
    warning = enterprise_repeat(ent, three, _at(29.9))
    assert warning is not None
    assert warning.kind is WarningKind.ENTERPRISE_REPEAT
    assert warning.complaint_ids == ("a", "b", "c")
    assert warning.count == 3
    assert warning.baseline is None
    assert warning.p_value is None
    # 30 days and a bit: the first case has left the window.
    assert enterprise_repeat(ent, [*two, ("c", _at(30.5))], _at(30.5)) is None
    # Cases after the time judged do not count for it.
    assert enterprise_repeat(ent, [("a", _at(0)), ("b", _at(1)), ("z", _at(5))], _at(1)) is None


def test_enterprise_rule_once_per_week_and_keyed_by_code_else_name() -> None:
    assert enterprise_key(" 91150502ma0q1b2c3x ", "某公司") == (("uscc", "91150502MA0Q1B2C3X"),)
    assert enterprise_key(None, " 通辽某某建材有限公司 ") == (("enterprise_name", "通辽某某建材有限公司"),)
    assert enterprise_key("", "") is None
    ent = (("enterprise_name", "通辽某某建材有限公司"),)
    # Sunday 1 Nov (W44), then Monday to Thursday of W45, then Monday 9 Nov (W46).
    history = [(f"c{i}", _at(i)) for i in (0, 1, 2, 3, 4, 8)]
    new = [WatchedCase(cid, at, "150502", "financing", ent) for cid, at in history]
    found = enterprise_warnings(new, {ent: history})
    assert [(w.week, w.complaint_ids) for w in found] == [
        (date(2026, 11, 2), ("c0", "c1", "c2")),  # the third case (Tue 3 Nov) raises W45's; c3, c4 add none
        (date(2026, 11, 9), ("c0", "c1", "c2", "c3", "c4", "c8")),
    ]
    assert len({w.warning_id for w in found}) == 2


def test_the_event_and_the_bulletin_section() -> None:
    warning = EarlyWarning("EW-x", WarningKind.RISING, KEY, MONDAY, 5, 0.625, 0.0004, ("a", "b"))
    event = raised_event(warning, datetime(2026, 11, 26, 2, tzinfo=UTC))
    assert event.event_type == "warning.raised"
    assert event.key == {"region_code": "150523", "category": "financing"}
    assert event.week == "2026-W48"
    body = WarningRaised.model_validate_json(event.to_json_bytes())
    assert body == event
    heading, html = bulletin_section(
        [{**raised_event(warning, datetime(2026, 11, 26, tzinfo=UTC)).model_dump(mode="json")},
         {"kind": "enterprise_repeat", "key": {"enterprise_name": "<b>某</b>公司"}, "week": "2026-W48", "count": 3,
          "baseline": None, "p_value": None, "complaint_ids": ["x<script>"]}]
    )  # fmt: skip
    assert heading == "风险预警（防未病）"
    assert "开鲁县 · 融资信贷" in html
    assert "数量异常上升" in html
    assert "同一企业反复反映" in html
    assert "&lt;b&gt;某&lt;/b&gt;公司" in html
    assert "<script>" not in html
    assert "本月共发出预警 2 条" in html
    assert bulletin_section([])[1] == '<p class="empty">本月无预警。</p>'
