"""Supervision items (contract 10.3), pure: which cases open one, the status machine, the due time on the clock's
calendar (the same WorkingCalendar functions the SLA deadlines call), warning and overdue each once on an injected
clock, and the bulletin section."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.reporting.supervision import (
    CORRUPTION_NOTE,
    DueRule,
    Refused,
    SupervisionItem,
    bulletin_section,
    changed_event,
    conclude,
    count_items,
    due_firings,
    due_times,
    follow_up,
    item_id_for,
    item_view,
    next_firing,
    open_item,
    phenomenon_of,
    transfer,
)
from shared.calendar import WorkingCalendar, WorkingHours
from shared.domain import LOCAL_TZ, Category
from shared.events import Phenomenon, SupervisionChange, SupervisionChanged, SupervisionStatus

CAL = WorkingCalendar.from_sources()
RULE = DueRule()
# Thursday 2026-11-26 10:00 local.
OPENED = datetime(2026, 11, 26, 10, 0, tzinfo=LOCAL_TZ)


def _open(phenomenon: Phenomenon = Phenomenon.JUDICIAL, rule: DueRule = RULE) -> SupervisionItem:
    return open_item("hotline:TL1", phenomenon, OPENED, by="rule", reason="法院执行拖延", rule=rule, calendar=CAL)


def test_the_four_categories_open_items_and_no_other() -> None:
    assert {c for c in Category if phenomenon_of(c) is not None} == {
        Category.CORRUPTION, Category.JUDICIAL, Category.GOVERNMENT_INTEGRITY, Category.LAW_ENFORCEMENT,
    }  # fmt: skip
    assert phenomenon_of("financing") is None
    assert phenomenon_of(Category.GOVERNMENT_INTEGRITY) is Phenomenon.GOVERNMENT_INTEGRITY


def test_a_corruption_case_opens_an_item_transferred_to_jw() -> None:
    item = _open(Phenomenon.CORRUPTION)
    assert item.status is SupervisionStatus.TRANSFERRED
    assert item.transferred_to == "jw"
    assert item.transfer_note == CORRUPTION_NOTE
    assert item.transferred_at == item.opened_at
    event = changed_event(item, SupervisionChange.OPENED, at=OPENED, by="rule")
    assert (event.status, event.change, event.transferred_to, event.note) == (
        SupervisionStatus.TRANSFERRED, SupervisionChange.OPENED, "jw", CORRUPTION_NOTE,
    )  # fmt: skip
    # Other phenomena open as `opened`.
    assert _open(Phenomenon.LAW_ENFORCEMENT).status is SupervisionStatus.OPENED


def test_one_item_per_case_and_phenomenon() -> None:
    assert item_id_for("hotline:TL1", Phenomenon.JUDICIAL) == _open().item_id
    assert item_id_for("hotline:TL1", Phenomenon.CORRUPTION) != _open().item_id
    assert item_id_for("hotline:TL2", Phenomenon.JUDICIAL) != _open().item_id


def test_due_is_ten_working_days_on_the_clock_calendar() -> None:
    warn, due = due_times(RULE, CAL, OPENED)
    # The same function the SLA deadlines use: 17:30 local of the 10th working day after the opening's date.
    assert due == CAL.working_days_after(OPENED, 10)
    assert due == datetime(2026, 12, 10, 17, 30, tzinfo=LOCAL_TZ)
    budget = CAL.working_time_between(OPENED, due)
    assert CAL.working_time_between(OPENED, warn) == budget * 0.8
    # Across the New Year holiday of 2026 (1 Jan a Thursday, 1-3 Jan off, Sunday 4 Jan worked).
    _, due = due_times(RULE, CAL, datetime(2025, 12, 29, 9, tzinfo=LOCAL_TZ))
    assert due == CAL.working_days_after(datetime(2025, 12, 29, 9, tzinfo=LOCAL_TZ), 10)
    assert due.astimezone(LOCAL_TZ).date() > datetime(2026, 1, 9).date()


def test_short_due_in_working_seconds_for_drills() -> None:
    always = WorkingCalendar(holidays=(), workdays=(), known_years=(2026,), hours=WorkingHours.parse("00:00-24:00"))
    rule = DueRule(amount=10, unit="seconds")
    warn, due = due_times(rule, always, datetime(2026, 11, 28, 10, tzinfo=UTC))  # a Saturday: not worked
    assert due == datetime(2026, 11, 30, 0, 0, 10, tzinfo=LOCAL_TZ)  # Monday's opening + 10 s
    assert warn == datetime(2026, 11, 30, 0, 0, 8, tzinfo=LOCAL_TZ)


def test_status_machine_follow_up_transfer_conclude() -> None:
    item = _open()
    at = OPENED + timedelta(days=1)
    item = follow_up(item, " 已电话督办 ", by="department:yshj", at=at)
    assert item.status is SupervisionStatus.SUPERVISING
    assert item.follow_ups[-1].note == "已电话督办"
    item = follow_up(item, "再次督办", by="admin", at=at)
    assert len(item.follow_ups) == 2
    item = transfer(item, None, "涉嫌违纪，移交", at=at)
    assert (item.status, item.transferred_to) == (SupervisionStatus.TRANSFERRED, "jw")
    with pytest.raises(Refused) as again:
        transfer(item, "jw", "again", at=at)
    assert again.value.status == 409
    # A follow-up on a transferred item keeps it transferred.
    assert follow_up(item, "跟踪", by="admin", at=at).status is SupervisionStatus.TRANSFERRED
    done = conclude(item, "已立案查处", "jw", scope="department:jw", at=at)
    assert (done.status, done.result, done.decided_by) == (SupervisionStatus.CONCLUDED, "已立案查处", "jw")
    for change in (
        lambda: follow_up(done, "x", by="admin", at=at),
        lambda: transfer(done, "jw", "x", at=at),
        lambda: conclude(done, "x", "yshj", scope="admin", at=at),
    ):
        with pytest.raises(Refused) as refused:
            change()
        assert refused.value.status == 409


def test_a_concluded_item_needs_its_result_and_deciding_department() -> None:
    item = _open()
    at = OPENED + timedelta(hours=2)
    for result in (None, "", "   "):
        with pytest.raises(Refused) as no_result:
            conclude(item, result, "yshj", scope="department:yshj", at=at)
        assert no_result.value.status == 422
        assert "result" in no_result.value.reason
    for department in (None, "", "nobody"):
        with pytest.raises(Refused) as no_department:
            conclude(item, "已整改", department, scope="admin", at=at)
        assert no_department.value.status == 422
        assert "decided_by" in no_department.value.reason
    assert conclude(item, "已整改", "yshj", scope="admin", at=at).status is SupervisionStatus.CONCLUDED


def test_jw_concludes_only_what_was_transferred_to_it_and_in_its_own_name() -> None:
    item = _open()
    with pytest.raises(Refused) as not_its:
        conclude(item, "x", "jw", scope="department:jw", at=OPENED)
    assert not_its.value.status == 403
    corruption = _open(Phenomenon.CORRUPTION)
    with pytest.raises(Refused) as other_name:
        conclude(corruption, "x", "yshj", scope="department:jw", at=OPENED)
    assert other_name.value.status == 403
    with pytest.raises(Refused) as other_department:
        conclude(corruption, "x", "fy", scope="department:fy", at=OPENED)
    assert other_department.value.status == 403
    assert conclude(corruption, "已查处", "jw", scope="department:jw", at=OPENED).decided_by == "jw"


def test_an_overdue_item_breaches_once() -> None:
    item = _open()
    clock = item.opened_at
    fired: list[SupervisionChange] = []
    # Walk an injected clock hour by hour across the whole window and beyond.
    while clock < item.due_at + timedelta(days=5):
        item, changes = due_firings(item, clock)
        fired += changes
        clock += timedelta(hours=1)
    assert fired == [SupervisionChange.WARNING, SupervisionChange.OVERDUE]
    assert item.overdue_at is not None
    assert item.overdue_at >= item.due_at
    assert next_firing(item) is None
    assert due_firings(item, clock + timedelta(days=30)) == (item, [])


def test_found_past_due_fires_only_the_overdue_and_concluded_fires_nothing() -> None:
    item = _open()
    late, changes = due_firings(item, item.due_at + timedelta(days=3))
    assert changes == [SupervisionChange.OVERDUE]
    assert due_firings(late, item.due_at + timedelta(days=4))[1] == []
    done = conclude(item, "已办结", "yshj", scope="admin", at=OPENED)
    assert due_firings(done, item.due_at + timedelta(days=1))[1] == []
    assert next_firing(done) is None
    assert next_firing(item) == item.warn_at


def test_the_message_and_the_view() -> None:
    item = follow_up(_open(), "督办一次", by="admin", at=OPENED)
    event = changed_event(item, SupervisionChange.FOLLOW_UP, at=OPENED, by="admin")
    body = SupervisionChanged.model_validate_json(event.to_json_bytes())
    assert body.event_type == "supervision.changed"
    assert body.item_id == item.item_id
    assert body.complaint_ids == ["hotline:TL1"]
    assert body.note == "督办一次"
    assert event.to_json_bytes().decode().count('"due_at":"2026-12-10T09:30:00Z"') == 1
    view = item_view(item, item.due_at + timedelta(seconds=1))
    assert view["overdue"] is True
    assert view["status_name"] == "督办中"
    assert view["phenomenon_name"] == "司法不公"
    assert view["conclusion"] is None
    assert view["follow_ups"] == [{"at": "2026-11-26T02:00:00Z", "note": "督办一次", "by": "admin"}]


def test_the_bulletin_section_counts_by_phenomenon_and_status() -> None:
    items = [_open(Phenomenon.CORRUPTION), _open(), follow_up(_open(), "x", by="admin", at=OPENED)]
    counts = count_items(items)
    assert counts == {("corruption", "transferred"): 1, ("judicial", "opened"): 1, ("judicial", "supervising"): 1}
    heading, html = bulletin_section(counts, overdue_open=1)
    assert heading == "督查事项"
    for word in ("涉企贪腐", "司法不公", "违约失信", "执法混乱", "立项", "督办中", "移交", "办结", "合计"):
        assert word in html
    assert "督查事项共 3 件，其中办结 0 件，已超期未办结 1 件" in html
    assert bulletin_section({})[1].startswith('<p class="empty">')
