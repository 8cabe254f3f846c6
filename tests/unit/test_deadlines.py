"""Deadline math of the SLA clock: a table of worked examples across holidays and 调休, then properties.

Every expectation below was worked out by hand from the 2026 schedule (cross-checked against the
`chinese_calendar` data); times are local (+08:00) unless said otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.sla.policy import (
    Deadline,
    Pause,
    SlaPolicy,
    Window,
    WindowUnit,
    accept_deadline,
    callback_deadline,
    compute_deadline,
    first_contact_deadline,
    resolve_deadline,
)
from shared.calendar import LOCAL_TZ, CalendarOverrides, WorkingCalendar, as_local, load_overrides
from shared.domain import Category, Urgency
from shared.events.sla import Stage

OVERRIDES_2027 = """
holidays: ["2027-01-01"]
workdays: ["2027-02-20"]   # a Saturday worked in exchange
"""


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """A local (+08:00) wall-clock time."""
    return datetime(year, month, day, hour, minute, second, tzinfo=LOCAL_TZ)


@dataclass(frozen=True)
class Case:
    name: str
    stage: Stage
    start: datetime
    due: datetime | None
    warn: datetime | None = None
    category: Category = Category.OTHER
    urgency: Urgency = Urgency.NORMAL
    pauses: tuple[Pause, ...] = ()
    extension_days: int = 0
    overrides: str | None = None
    policy: SlaPolicy = field(default_factory=SlaPolicy)
    unknown_years: tuple[int, ...] = ()


A, F, R, C = Stage.ACCEPT, Stage.FIRST_CONTACT, Stage.RESOLVE, Stage.CALLBACK
FINANCING_ACCEPT_4H = SlaPolicy(by_category={Category.FINANCING: {A: Window.working_hours(4)}})
CONSTRUCTION_RESOLVE_10D = SlaPolicy(by_category={Category.CONSTRUCTION: {R: Window.working_days(10)}})

# fmt: off
CASES = [
    # --- resolve (办结), 5 working days, counted from received_at
    Case("national day, sat 10-10 worked", R, at(2026, 9, 29, 15), at(2026, 10, 12, 17, 30),
         warn=at(2026, 10, 10, 17)),
    Case("sun 09-20 worked", R, at(2026, 9, 18, 10), at(2026, 9, 24, 17, 30), warn=at(2026, 9, 23, 16, 18)),
    Case("plain week", R, at(2026, 3, 2, 9), at(2026, 3, 9, 17, 30), warn=at(2026, 3, 6, 16, 6)),
    Case("before opening, own day still not counted", R, at(2026, 3, 2, 7), at(2026, 3, 9, 17, 30)),
    Case("received on a holiday", R, at(2026, 10, 1, 10), at(2026, 10, 13, 17, 30)),
    Case("received on a worked saturday evening", R, at(2026, 10, 10, 20), at(2026, 10, 16, 17, 30)),
    Case("spring festival, sat 02-14 worked", R, at(2026, 2, 13, 14), at(2026, 2, 27, 17, 30)),
    Case("new year, sun 01-04 worked", R, at(2025, 12, 31, 10), at(2026, 1, 8, 17, 30)),
    Case("received at 00:00 local", R, at(2026, 3, 3), at(2026, 3, 10, 17, 30)),
    Case("urgent: 1 working day, sun 09-20 worked", R, at(2026, 9, 18, 16), at(2026, 9, 20, 17, 30),
         urgency=Urgency.URGENT),
    Case("urgent: over national day", R, at(2026, 9, 30, 11), at(2026, 10, 8, 17, 30),
         urgency=Urgency.URGENT),
    Case("category override 10 days", R, at(2026, 3, 2, 9), at(2026, 3, 16, 17, 30),
         category=Category.CONSTRUCTION, policy=CONSTRUCTION_RESOLVE_10D),
    Case("urgency beats category override", R, at(2026, 3, 2, 9), at(2026, 3, 3, 17, 30),
         category=Category.CONSTRUCTION, urgency=Urgency.URGENT, policy=CONSTRUCTION_RESOLVE_10D),
    # --- first contact (首次联系), 1 working day; callback (回访), 2 working days
    Case("first contact over may day", F, at(2026, 4, 30, 18), at(2026, 5, 6, 17, 30),
         warn=at(2026, 5, 6, 16)),
    Case("first contact onto worked sat 05-09", F, at(2026, 5, 8, 9), at(2026, 5, 9, 17, 30)),
    Case("callback before qingming", C, at(2026, 4, 1, 16), at(2026, 4, 3, 17, 30),
         warn=at(2026, 4, 3, 14, 12)),
    Case("callback over qingming", C, at(2026, 4, 3, 10), at(2026, 4, 8, 17, 30)),
    # --- accept (签收), 2 working hours, counted from each assignment
    Case("friday 17:00 -> next working day 10:00", A, at(2026, 3, 6, 17), at(2026, 3, 9, 10),
         warn=at(2026, 3, 9, 9, 36)),
    Case("across lunch", A, at(2026, 3, 3, 11), at(2026, 3, 3, 14, 30), warn=at(2026, 3, 3, 14, 6)),
    Case("from a holiday", A, at(2026, 10, 3, 9), at(2026, 10, 8, 10, 30)),
    Case("before opening", A, at(2026, 3, 3, 7), at(2026, 3, 3, 10, 30)),
    Case("during lunch", A, at(2026, 3, 3, 12, 30), at(2026, 3, 3, 15, 30)),
    Case("after closing", A, at(2026, 3, 3, 18), at(2026, 3, 4, 10, 30)),
    Case("ends exactly at noon, not at 13:30", A, at(2026, 3, 3, 10), at(2026, 3, 3, 12)),
    Case("ends exactly at closing", A, at(2026, 3, 3, 15, 30), at(2026, 3, 3, 17, 30)),
    Case("starts exactly at closing", A, at(2026, 3, 3, 17, 30), at(2026, 3, 4, 10, 30)),
    Case("keeps the seconds", A, at(2026, 3, 3, 9, 15, 27), at(2026, 3, 3, 11, 15, 27)),
    Case("seconds across lunch", A, at(2026, 3, 3, 11, 59, 30), at(2026, 3, 3, 15, 29, 30)),
    Case("friday 17:00 -> worked sunday 09-20", A, at(2026, 9, 18, 17), at(2026, 9, 20, 10)),
    Case("worked saturday -> monday", A, at(2026, 10, 10, 16), at(2026, 10, 12, 9)),
    Case("eve of national day", A, at(2026, 9, 30, 16), at(2026, 10, 8, 9)),
    Case("category override 4 hours", A, at(2026, 3, 3, 16), at(2026, 3, 4, 11),
         category=Category.FINANCING, policy=FINANCING_ACCEPT_4H),
    # --- pauses: paused working time does not count
    Case("pause of 2.5 working hours", R, at(2026, 3, 2, 9), at(2026, 3, 10, 11),
         pauses=((at(2026, 3, 3, 10), at(2026, 3, 3, 14)),)),
    Case("pause over a weekend only", R, at(2026, 3, 2, 9), at(2026, 3, 9, 17, 30),
         pauses=((at(2026, 3, 7, 10), at(2026, 3, 8, 20)),)),
    Case("pause inside lunch", R, at(2026, 3, 2, 9), at(2026, 3, 9, 17, 30),
         pauses=((at(2026, 3, 3, 12, 5), at(2026, 3, 3, 13, 25)),)),
    Case("pause begun before the start", R, at(2026, 3, 2, 9), at(2026, 3, 10, 9, 30),
         pauses=((at(2026, 3, 1, 12), at(2026, 3, 2, 10)),)),
    Case("pause wholly before the start", R, at(2026, 3, 2, 9), at(2026, 3, 9, 17, 30),
         pauses=((at(2026, 3, 1, 9), at(2026, 3, 1, 12)),)),
    Case("overlapping pauses count once", R, at(2026, 3, 2, 9), at(2026, 3, 10, 10),
         pauses=((at(2026, 3, 3, 10), at(2026, 3, 3, 11)), (at(2026, 3, 3, 10, 30), at(2026, 3, 3, 11, 30)))),
    Case("two pauses add up", R, at(2026, 3, 2, 9), at(2026, 3, 10, 10, 30),
         pauses=((at(2026, 3, 4, 15, 30), at(2026, 3, 4, 16, 30)), (at(2026, 3, 3, 9), at(2026, 3, 3, 10)))),
    Case("pause across the due", R, at(2026, 3, 2, 9), at(2026, 3, 10, 10, 30),
         pauses=((at(2026, 3, 9, 16, 30), at(2026, 3, 10, 9, 30)),)),
    Case("pause after the due", R, at(2026, 3, 2, 9), at(2026, 3, 9, 17, 30),
         pauses=((at(2026, 3, 10, 9), at(2026, 3, 11, 9)),)),
    Case("pause still open: clock stopped", R, at(2026, 3, 2, 9), None,
         pauses=((at(2026, 3, 3, 10), None),)),
    Case("open pause begun before the start: clock never started", R, at(2026, 3, 2, 9), None,
         pauses=((at(2026, 3, 1, 10), None),)),
    Case("open pause begun after the due: a late case stays late", R, at(2026, 3, 2, 9), at(2026, 3, 9, 17, 30),
         warn=at(2026, 3, 6, 16, 6), pauses=((at(2026, 3, 10, 9), None),)),
    Case("open pause begun at the due itself is ignored", R, at(2026, 3, 2, 9), at(2026, 3, 9, 17, 30),
         pauses=((at(2026, 3, 9, 17, 30), None),)),
    Case("open pause after the due of an earlier closed pause", R, at(2026, 3, 2, 9), at(2026, 3, 10, 11),
         pauses=((at(2026, 3, 3, 10), at(2026, 3, 3, 14)), (at(2026, 3, 10, 11), None))),
    Case("open pause between warning and due stops the clock", R, at(2026, 3, 2, 9), None,
         pauses=((at(2026, 3, 9, 9), None),)),
    Case("accept with a 30-minute pause", A, at(2026, 3, 3, 9), at(2026, 3, 3, 11, 30),
         warn=at(2026, 3, 3, 11, 6), pauses=((at(2026, 3, 3, 9, 30), at(2026, 3, 3, 10)),)),
    # --- extensions: the resolve due moves by N working days
    Case("extension of 3 days", R, at(2026, 9, 29, 15), at(2026, 10, 15, 17, 30), warn=at(2026, 10, 14, 11),
         extension_days=3),
    Case("extension over a weekend", R, at(2026, 3, 2, 9), at(2026, 3, 11, 17, 30), extension_days=2),
    Case("pause, then extension", R, at(2026, 9, 29, 15), at(2026, 10, 16, 17, 30), extension_days=3,
         pauses=((at(2026, 9, 30, 8, 30), at(2026, 9, 30, 17, 30)),)),
    # --- short units (drills and tests) and the length of an extension day
    Case("30 working minutes across lunch", A, at(2026, 3, 3, 11, 50), at(2026, 3, 3, 13, 50),
         warn=at(2026, 3, 3, 13, 44), policy=SlaPolicy(accept=Window(unit=WindowUnit.MINUTES, amount=30))),
    Case("90 working seconds from a rest day", A, at(2026, 3, 7, 10), at(2026, 3, 9, 8, 31, 30),
         warn=at(2026, 3, 9, 8, 31, 12), policy=SlaPolicy(accept=Window(unit=WindowUnit.SECONDS, amount=90))),
    Case("extension day of 60 working seconds: 3 minutes after 17:30", R, at(2026, 3, 2, 9), at(2026, 3, 10, 8, 33),
         extension_days=3,
         policy=SlaPolicy(extension_day=Window(unit=WindowUnit.SECONDS, amount=60))),
    Case("extension day of 2 working hours: 4 hours after 17:30", R, at(2026, 3, 2, 9), at(2026, 3, 10, 14),
         extension_days=2, policy=SlaPolicy(extension_day=Window.working_hours(2))),
    Case("extension day of 2 working days", R, at(2026, 3, 2, 9), at(2026, 3, 13, 17, 30),
         extension_days=2, policy=SlaPolicy(extension_day=Window.working_days(2))),
    # --- years the package does not know: weekends only, and the caller is told
    Case("2031: weekends only", R, at(2031, 3, 3, 10), at(2031, 3, 10, 17, 30), unknown_years=(2031,)),
    Case("2031: accept over a weekend", A, at(2031, 3, 7, 17), at(2031, 3, 10, 10), unknown_years=(2031,)),
    # 2027: no published schedule yet; its statutory holidays are computed (holidays package), 调休 unknown.
    Case("into 2027 without overrides: 01-01 a statutory holiday", R, at(2026, 12, 31, 10), at(2027, 1, 8, 17, 30),
         unknown_years=(2027,)),
    Case("from 2026-12-28: new year's day 2027 skipped", R, at(2026, 12, 28, 10), at(2027, 1, 5, 17, 30),
         unknown_years=(2027,)),
    Case("from 2027-02-03: spring festival 02-05..02-08 skipped, guessed in-lieu 02-09/10 worked", R,
         at(2027, 2, 3, 10), at(2027, 2, 12, 17, 30), unknown_years=(2027,)),
    Case("2027 accept on the eve of the spring festival", A, at(2027, 2, 4, 17), at(2027, 2, 9, 10),
         unknown_years=(2027,)),
    Case("into 2027 with overrides: 01-01 a holiday", R, at(2026, 12, 31, 10), at(2027, 1, 8, 17, 30),
         overrides=OVERRIDES_2027),
    Case("2027 overrides: sat 02-20 worked", R, at(2027, 2, 18, 10), at(2027, 2, 24, 17, 30),
         overrides=OVERRIDES_2027),
    Case("2027 without overrides: sat 02-20 rests", R, at(2027, 2, 18, 10), at(2027, 2, 25, 17, 30),
         unknown_years=(2027,)),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_deadline_table(case: Case) -> None:
    told: list[int] = []
    overrides = load_overrides(case.overrides) if case.overrides else None
    calendar = WorkingCalendar.from_sources(overrides, on_unknown_year=told.append)

    deadline = compute_deadline(
        case.policy,
        calendar,
        case.stage,
        case.start,
        category=case.category,
        urgency=case.urgency,
        pauses=case.pauses,
        extension_days=case.extension_days,
    )

    if case.due is None:
        assert deadline is None
    else:
        assert deadline is not None
        assert deadline.due_at == case.due
        assert deadline.due_at.tzinfo is UTC
        assert deadline.warn_at.tzinfo is UTC
        assert case.start <= deadline.warn_at <= deadline.due_at
        if case.warn is not None:
            assert deadline.warn_at == case.warn
    assert tuple(told) == case.unknown_years


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 30


# --- the policy ------------------------------------------------------------------------------------


def test_default_windows() -> None:
    policy = SlaPolicy()
    assert policy.window_for(A, Category.OTHER, Urgency.NORMAL) == Window.working_hours(2)
    assert policy.window_for(F, Category.OTHER, Urgency.NORMAL) == Window.working_days(1)
    assert policy.window_for(R, Category.OTHER, Urgency.NORMAL) == Window.working_days(5)
    assert policy.window_for(R, Category.OTHER, Urgency.URGENT) == Window.working_days(1)
    assert policy.window_for(C, Category.OTHER, Urgency.URGENT) == Window.working_days(2)
    assert policy.warn_ratio == 0.8


def test_override_precedence_urgency_then_category_then_default() -> None:
    policy = SlaPolicy(
        by_category={Category.FINANCING: {R: Window.working_days(3), A: Window.working_hours(4)}},
        by_urgency={Urgency.URGENT: {R: Window.working_hours(8)}},
    )
    assert policy.window_for(R, Category.FINANCING, Urgency.URGENT) == Window.working_hours(8)
    assert policy.window_for(R, Category.FINANCING, Urgency.NORMAL) == Window.working_days(3)
    assert policy.window_for(A, Category.FINANCING, Urgency.URGENT) == Window.working_hours(4)
    assert policy.window_for(R, Category.TAXES_FEES, Urgency.NORMAL) == Window.working_days(5)
    assert policy.window_for(F, Category.FINANCING, Urgency.URGENT) == Window.working_days(1)


def test_policy_round_trips_through_json() -> None:
    policy = SlaPolicy(
        warn_ratio=0.75,
        by_category={Category.CONSTRUCTION: {R: Window.working_days(10)}},
    )
    text = policy.model_dump_json()
    assert '"construction"' in text
    assert '"urgent"' in text
    assert SlaPolicy.model_validate_json(text) == policy


def test_policy_reads_plain_json_config() -> None:
    policy = SlaPolicy.model_validate(
        {
            "accept": {"unit": "hours", "amount": 3},
            "by_urgency": {"urgent": {"accept": {"unit": "hours", "amount": 1}}},
        }
    )
    assert policy.window_for(A, Category.OTHER, Urgency.NORMAL) == Window(unit=WindowUnit.HOURS, amount=3)
    assert policy.window_for(A, Category.OTHER, Urgency.URGENT) == Window.working_hours(1)
    # Replacing by_urgency replaces the built-in urgent resolve rule too (documented on SlaPolicy).
    assert policy.window_for(R, Category.OTHER, Urgency.URGENT) == Window.working_days(5)


@pytest.mark.parametrize(
    "data",
    [
        {"warn_ratio": 0},
        {"warn_ratio": 1.5},
        {"accept": {"unit": "hours", "amount": 0}},
        {"accept": {"unit": "weeks", "amount": 1}},
        {"resolve_days": 5},
        {"by_category": {"no_such_category": {"resolve": {"unit": "days", "amount": 1}}}},
        {"by_urgency": {"urgent": {"no_such_stage": {"unit": "days", "amount": 1}}}},
    ],
)
def test_bad_policy_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SlaPolicy.model_validate(data)


def test_policy_is_frozen() -> None:
    with pytest.raises(ValidationError):
        SlaPolicy().warn_ratio = 0.5  # type: ignore[misc]


# --- arguments refused ---------------------------------------------------------------------------------


@pytest.fixture
def calendar() -> WorkingCalendar:
    return WorkingCalendar.from_sources()


def test_naive_start_refused(calendar: WorkingCalendar) -> None:
    with pytest.raises(ValueError, match="naive"):
        compute_deadline(
            SlaPolicy(), calendar, R, datetime(2026, 3, 2, 9), category=Category.OTHER, urgency=Urgency.NORMAL
        )


@pytest.mark.parametrize(
    "pause",
    [(datetime(2026, 3, 3, 10), at(2026, 3, 3, 11)), (at(2026, 3, 3, 10), datetime(2026, 3, 3, 11))],
)
def test_naive_pause_refused(calendar: WorkingCalendar, pause: Pause) -> None:
    with pytest.raises(ValueError, match="naive"):
        resolve_deadline(
            SlaPolicy(),
            calendar,
            at(2026, 3, 2, 9),
            category=Category.OTHER,
            urgency=Urgency.NORMAL,
            pauses=[pause],
        )


def test_pause_resumed_before_it_began_refused(calendar: WorkingCalendar) -> None:
    with pytest.raises(ValueError, match="before it began"):
        resolve_deadline(
            SlaPolicy(),
            calendar,
            at(2026, 3, 2, 9),
            category=Category.OTHER,
            urgency=Urgency.NORMAL,
            pauses=[(at(2026, 3, 3, 11), at(2026, 3, 3, 10))],
        )


@pytest.mark.parametrize(("stage", "days"), [(R, -1), (A, 1), (F, 2), (C, 1)])
def test_bad_extension_refused(calendar: WorkingCalendar, stage: Stage, days: int) -> None:
    with pytest.raises(ValueError, match=r"extension|extended"):
        compute_deadline(
            SlaPolicy(),
            calendar,
            stage,
            at(2026, 3, 2, 9),
            category=Category.OTHER,
            urgency=Urgency.NORMAL,
            extension_days=days,
        )


def test_start_in_another_offset_is_the_same_instant(calendar: WorkingCalendar) -> None:
    # 07:00 UTC is 15:00 in Shanghai: the National Day example again.
    deadline = resolve_deadline(
        SlaPolicy(),
        calendar,
        datetime(2026, 9, 29, 7, tzinfo=UTC),
        category=Category.OTHER,
        urgency=Urgency.NORMAL,
    )
    assert deadline is not None
    assert deadline.due_at == datetime(2026, 10, 12, 9, 30, tzinfo=UTC)


def test_stage_helpers_match_compute_deadline(calendar: WorkingCalendar) -> None:
    policy, start, cat, urgent = SlaPolicy(), at(2026, 9, 29, 15), Category.OTHER, Urgency.URGENT

    def expected(stage: Stage) -> Deadline | None:
        return compute_deadline(policy, calendar, stage, start, category=cat, urgency=urgent)

    assert accept_deadline(policy, calendar, start, category=cat, urgency=urgent) == expected(A)
    assert first_contact_deadline(policy, calendar, start, category=cat, urgency=urgent) == expected(F)
    assert resolve_deadline(policy, calendar, start, category=cat, urgency=urgent) == expected(R)
    assert callback_deadline(policy, calendar, start, category=cat, urgency=urgent) == expected(C)


# --- properties --------------------------------------------------------------------------------------

# No example database: unit tests touch no disk. No per-example deadline: the first calls warm caches.
PROPERTY = settings(max_examples=200, deadline=None, database=None)
CALENDAR = WorkingCalendar.from_sources(load_overrides(OVERRIDES_2027))

moments = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(LOCAL_TZ))
stages = st.sampled_from(list(Stage))
categories = st.sampled_from(list(Category))
urgencies = st.sampled_from(list(Urgency))


@st.composite
def closed_pauses(draw: st.DrawFn, start: datetime) -> tuple[Pause, ...]:
    """Up to three closed pauses near `start`, some beginning before it, some overlapping."""
    pauses: list[Pause] = []
    for _ in range(draw(st.integers(0, 3))):
        begins = start + timedelta(minutes=draw(st.integers(-3 * 24 * 60, 15 * 24 * 60)))
        pauses.append((begins, begins + timedelta(minutes=draw(st.integers(0, 5 * 24 * 60)))))
    return tuple(pauses)


@PROPERTY
@given(start=moments, days=st.integers(1, 40))
def test_working_day_deadline_is_closing_time_of_a_working_day(start: datetime, days: int) -> None:
    due = as_local(CALENDAR.working_days_after(start, days))
    assert due.time() == CALENDAR.hours.closing
    assert CALENDAR.is_working_day(due.date())
    assert due.date() > start.date()


@PROPERTY
@given(start=moments, days=st.integers(1, 30), more=st.integers(0, 30))
def test_more_working_days_never_earlier(start: datetime, days: int, more: int) -> None:
    assert CALENDAR.working_days_after(start, days + more) >= CALENDAR.working_days_after(start, days)
    if more:
        assert CALENDAR.working_days_after(start, days + more) > CALENDAR.working_days_after(start, days)


@PROPERTY
@given(start=moments, minutes=st.integers(0, 60 * 60), more=st.integers(0, 60 * 60))
def test_more_working_hours_never_earlier(start: datetime, minutes: int, more: int) -> None:
    assert CALENDAR.add_working_time(start, timedelta(minutes=minutes + more)) >= CALENDAR.add_working_time(
        start, timedelta(minutes=minutes)
    )


@PROPERTY
@given(start=moments, seconds=st.integers(0, 200 * 3600))
def test_added_working_time_is_counted_back(start: datetime, seconds: int) -> None:
    due = CALENDAR.add_working_time(start, timedelta(seconds=seconds))
    assert due >= start
    assert CALENDAR.working_time_between(start, due) == timedelta(seconds=seconds)


@PROPERTY
@given(start=moments, later=st.integers(0, 30 * 24 * 60), days=st.integers(1, 10), minutes=st.integers(1, 6000))
def test_later_start_never_earlier_deadline(start: datetime, later: int, days: int, minutes: int) -> None:
    moved = start + timedelta(minutes=later)
    assert CALENDAR.working_days_after(moved, days) >= CALENDAR.working_days_after(start, days)
    assert CALENDAR.add_working_time(moved, timedelta(minutes=minutes)) >= CALENDAR.add_working_time(
        start, timedelta(minutes=minutes)
    )


@PROPERTY
@given(
    data=st.data(),
    start=moments,
    stage=stages,
    category=categories,
    urgency=urgencies,
    extension=st.integers(0, 10),
)
def test_pausing_never_makes_a_deadline_earlier(
    data: st.DataObject, start: datetime, stage: Stage, category: Category, urgency: Urgency, extension: int
) -> None:
    pauses = data.draw(closed_pauses(start))
    extension = extension if stage is R else 0
    plain = compute_deadline(
        SlaPolicy(), CALENDAR, stage, start, category=category, urgency=urgency, extension_days=extension
    )
    paused = compute_deadline(
        SlaPolicy(),
        CALENDAR,
        stage,
        start,
        category=category,
        urgency=urgency,
        pauses=pauses,
        extension_days=extension,
    )
    assert plain is not None
    assert paused is not None
    assert paused.due_at >= plain.due_at
    assert paused.warn_at >= plain.warn_at


@PROPERTY
@given(
    data=st.data(),
    start=moments,
    stage=stages,
    category=categories,
    urgency=urgencies,
    ratio=st.floats(0.01, 1.0),
    extension=st.integers(0, 10),
)
def test_warning_lies_between_start_and_due(
    data: st.DataObject,
    start: datetime,
    stage: Stage,
    category: Category,
    urgency: Urgency,
    ratio: float,
    extension: int,
) -> None:
    pauses = data.draw(closed_pauses(start))
    deadline = compute_deadline(
        SlaPolicy(warn_ratio=ratio),
        CALENDAR,
        stage,
        start,
        category=category,
        urgency=urgency,
        pauses=pauses,
        extension_days=extension if stage is R else 0,
    )
    assert deadline is not None
    assert start <= deadline.warn_at <= deadline.due_at


@PROPERTY
@given(start=moments, urgency=urgencies, extension=st.integers(0, 10))
def test_unpaused_extension_is_working_days_after_the_due(start: datetime, urgency: Urgency, extension: int) -> None:
    plain = resolve_deadline(SlaPolicy(), CALENDAR, start, category=Category.OTHER, urgency=urgency)
    extended = resolve_deadline(
        SlaPolicy(), CALENDAR, start, category=Category.OTHER, urgency=urgency, extension_days=extension
    )
    assert plain is not None
    assert extended is not None
    expected = CALENDAR.working_days_after(plain.due_at, extension) if extension else plain.due_at
    assert extended.due_at == expected


def test_overrides_of_the_property_calendar_are_in_force() -> None:
    # Guards the properties above against running on a calendar without the 2027 file.
    assert CALENDAR.is_working_day(at(2027, 2, 20).date())
    assert not CALENDAR.is_working_day(at(2027, 1, 1).date())
    assert isinstance(load_overrides(OVERRIDES_2027), CalendarOverrides)


@PROPERTY
@given(start=moments, stage=stages, urgency=urgencies, offset=st.integers(-5 * 24 * 60, 20 * 24 * 60))
def test_an_open_pause_stops_the_clock_only_before_the_due(
    start: datetime, stage: Stage, urgency: Urgency, offset: int
) -> None:
    plain = compute_deadline(SlaPolicy(), CALENDAR, stage, start, category=Category.OTHER, urgency=urgency)
    assert plain is not None
    paused_at = start + timedelta(minutes=offset)
    held = compute_deadline(
        SlaPolicy(), CALENDAR, stage, start, category=Category.OTHER, urgency=urgency, pauses=[(paused_at, None)]
    )
    if paused_at < plain.due_at:
        assert held is None
    else:
        assert held == plain


def test_window_working_time() -> None:
    assert Window.working_hours(2).working_time == timedelta(hours=2)
    assert Window(unit=WindowUnit.MINUTES, amount=3).working_time == timedelta(minutes=3)
    assert Window(unit=WindowUnit.SECONDS, amount=7).working_time == timedelta(seconds=7)
    assert Window.working_days(1).working_time is None
    assert SlaPolicy().extension_day == Window.working_days(1)
