"""The working calendar: the package's schedule, the overrides file, unknown years, hours and time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from shared.calendar import (
    END_OF_DAY,
    LOCAL_TZ,
    CalendarOverrides,
    WorkingCalendar,
    WorkingHours,
    YearSchedule,
    as_local,
    as_utc,
    computed_year,
    known_package_years,
    load_overrides,
)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """A local (+08:00) wall-clock time."""
    return datetime(year, month, day, hour, minute, second, tzinfo=LOCAL_TZ)


@pytest.fixture
def calendar() -> WorkingCalendar:
    return WorkingCalendar.from_sources()


# --- the overrides file --------------------------------------------------------------------------------


def test_overrides_of_the_contract_parse() -> None:
    overrides = load_overrides('holidays: ["2027-01-01"]\nworkdays: ["2027-02-20"]   # worked in exchange\n')
    assert overrides == CalendarOverrides(
        holidays=frozenset({date(2027, 1, 1)}), workdays=frozenset({date(2027, 2, 20)})
    )
    assert overrides.years == {2027}


def test_unquoted_dates_and_block_lists_parse() -> None:
    overrides = load_overrides("holidays:\n  - 2027-01-01\n  - 2027-02-06\nworkdays:\n  - 2028-01-29\n")
    assert overrides.holidays == {date(2027, 1, 1), date(2027, 2, 6)}
    assert overrides.workdays == {date(2028, 1, 29)}
    assert overrides.years == {2027, 2028}


@pytest.mark.parametrize("text", ["", "   \n", "# nothing yet\n", "holidays:\nworkdays: []\n"])
def test_empty_overrides(text: str) -> None:
    assert load_overrides(text) == CalendarOverrides()


def test_one_list_alone_is_enough() -> None:
    assert load_overrides('workdays: ["2027-02-20"]').holidays == frozenset()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('holidays: ["2027-01-01"', "not valid YAML"),
        ('["2027-01-01"]', "must be a mapping"),
        ("just text", "must be a mapping"),
        ('holiday: ["2027-01-01"]', "unknown key.*holiday"),
        ('holidays: "2027-01-01"', "`holidays` must be a list"),
        ('holidays: ["2027-01-01", "2027-13-01"]', r"holidays\[1\] = '2027-13-01' is not a date"),
        ('workdays: ["tomorrow"]', r"workdays\[0\] = 'tomorrow' is not a date"),
        ('workdays: ["20270220"]', r"workdays\[0\] = '20270220' is not a date"),
        ("workdays: [20270220]", r"workdays\[0\] = 20270220 is not a date"),
        ("holidays: [2027-01-01 10:00:00]", r"holidays\[0\] = datetime.* is not a date"),
        ("holidays: [null]", r"holidays\[0\] = None is not a date"),
        (
            'holidays: ["2027-01-01"]\nworkdays: ["2027-01-01"]',
            "2027-01-01 both as a holiday and as a workday",
        ),
    ],
)
def test_bad_overrides_name_the_bad_entry(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_overrides(text)


# --- the package's schedule and the overrides on top ------------------------------------------------


def test_package_years() -> None:
    # chinese-calendar 1.11 publishes 2004 to 2026 (the contract's "known through 2026").
    years = known_package_years()
    assert min(years) == 2004
    assert max(years) == 2026
    assert years == set(range(2004, 2027))


@pytest.mark.parametrize(
    ("day", "worked"),
    [
        (date(2026, 10, 1), False),  # National Day
        (date(2026, 10, 3), False),  # a Saturday inside the holiday
        (date(2026, 10, 7), False),
        (date(2026, 10, 8), True),
        (date(2026, 10, 10), True),  # Saturday worked in exchange (调休)
        (date(2026, 10, 11), False),  # plain Sunday
        (date(2026, 9, 20), True),  # Sunday worked
        (date(2026, 9, 25), False),  # Mid-Autumn, a Friday
        (date(2026, 2, 14), True),  # Saturday before the Spring Festival
        (date(2026, 2, 23), False),  # last day of the Spring Festival, a Monday
        (date(2026, 3, 4), True),  # plain Wednesday
        (date(2026, 1, 4), True),  # Sunday after New Year
    ],
)
def test_published_schedule(calendar: WorkingCalendar, day: date, worked: bool) -> None:
    assert calendar.is_working_day(day) is worked


def test_override_adds_a_year() -> None:
    calendar = WorkingCalendar.from_sources(load_overrides('holidays: ["2027-01-01"]\nworkdays: ["2027-02-20"]'))
    assert 2027 in calendar.known_years
    assert not calendar.is_working_day(date(2027, 1, 1))  # a Friday made a holiday
    assert calendar.is_working_day(date(2027, 2, 20))  # a Saturday made a workday
    assert calendar.is_working_day(date(2027, 1, 4))  # the rest follow the week
    assert not calendar.is_working_day(date(2027, 1, 2))


def test_override_wins_over_the_package() -> None:
    overrides = CalendarOverrides(holidays=frozenset({date(2026, 10, 10)}), workdays=frozenset({date(2026, 10, 7)}))
    calendar = WorkingCalendar.from_sources(overrides)
    assert not calendar.is_working_day(date(2026, 10, 10))
    assert calendar.is_working_day(date(2026, 10, 7))


def test_explicit_calendar_needs_no_package() -> None:
    calendar = WorkingCalendar(holidays={date(2030, 5, 1)}, workdays={date(2030, 5, 11)}, known_years={2030})
    assert not calendar.is_working_day(date(2030, 5, 1))
    assert calendar.is_working_day(date(2030, 5, 11))
    assert calendar.is_working_day(date(2030, 5, 2))


def test_a_day_cannot_be_both() -> None:
    with pytest.raises(ValueError, match="both"):
        WorkingCalendar(holidays={date(2030, 5, 1)}, workdays={date(2030, 5, 1)}, known_years={2030})
    with pytest.raises(ValueError, match="both"):
        CalendarOverrides(holidays=frozenset({date(2030, 5, 1)}), workdays=frozenset({date(2030, 5, 1)}))


# --- a year known to no source ----------------------------------------------------------------------


def test_unknown_year_takes_the_statutory_holidays_and_is_reported_once() -> None:
    told: list[int] = []
    calendar = WorkingCalendar.from_sources(on_unknown_year=told.append)
    assert not calendar.is_working_day(date(2031, 1, 1))  # a Wednesday: New Year's Day, fixed by law
    assert calendar.is_working_day(date(2031, 1, 2))
    assert not calendar.is_working_day(date(2031, 1, 4))  # Saturday
    assert calendar.is_working_day(date(2031, 1, 6))
    assert calendar.is_working_day(date(2032, 1, 5))
    assert told == [2031, 2032]  # 调休 unknown: the caller warns


@pytest.mark.parametrize(
    ("day", "worked"),
    [
        (date(2026, 12, 31), True),
        (date(2027, 1, 1), False),  # New Year's Day, a Friday
        (date(2027, 1, 4), True),
        (date(2027, 2, 4), True),
        (date(2027, 2, 5), False),  # Spring Festival's eve (law of 2025: eve + 3 days)
        (date(2027, 2, 8), False),  # its third day, a Monday
        (date(2027, 2, 9), True),  # the in-lieu day the package guesses ("observed") is left out
        (date(2027, 2, 10), True),
        (date(2027, 4, 5), False),  # Qingming
        (date(2027, 5, 3), True),  # Labour Day's guessed in-lieu day, left out
        (date(2027, 6, 9), False),  # Dragon Boat
        (date(2027, 9, 15), False),  # Mid-Autumn
        (date(2027, 10, 1), False),  # National Day
        (date(2027, 10, 4), True),  # guessed in-lieu, left out
        (date(2027, 2, 20), False),  # a Saturday: no worked weekend day is guessed
    ],
)
def test_2027_statutory_holidays_without_guesses(day: date, worked: bool) -> None:
    told: list[int] = []
    assert WorkingCalendar.from_sources(on_unknown_year=told.append).is_working_day(day) is worked
    assert told == ([2027] if day.year == 2027 else [])


def test_computed_years() -> None:
    unpublished = computed_year(2027)
    assert not unpublished.published
    assert unpublished.workdays == frozenset()
    assert {date(2027, 1, 1), date(2027, 2, 5), date(2027, 2, 8)} <= unpublished.holidays
    assert date(2027, 2, 9) not in unpublished.holidays
    assert computed_year(1900) == YearSchedule()  # outside the package's range: nothing known


def test_computed_schedule_matches_the_published_one_for_2004_to_2026() -> None:
    # The reason a year the `holidays` package publishes is taken whole, in-lieu days included.
    package = WorkingCalendar.from_sources()
    for year in sorted(known_package_years()):
        schedule = computed_year(year)
        assert schedule.published, year
        weekdays = {d for d in package.holidays if d.year == year and d.weekday() < 5}
        assert {d for d in schedule.holidays if d.weekday() < 5} == weekdays, year
        # 2005-12-31 was worked for the 2006 New Year holiday; chinese_calendar files it under neither.
        assert schedule.workdays - {date(2005, 12, 31)} == {d for d in package.workdays if d.year == year}, year


def test_a_year_the_holidays_package_publishes_is_known() -> None:
    told: list[int] = []
    calendar = WorkingCalendar.from_sources(on_unknown_year=told.append)
    assert calendar.is_working_day(date(2003, 2, 8))  # a Saturday worked for the Spring Festival
    assert not calendar.is_working_day(date(2003, 2, 6))
    assert not calendar.is_working_day(date(2003, 2, 4))  # an in-lieu day of a published year counts
    assert told == []


def test_overrides_stay_on_top_of_the_computed_holidays() -> None:
    told: list[int] = []
    overrides = load_overrides('holidays: ["2027-02-09"]\nworkdays: ["2027-02-08", "2027-02-20"]')
    calendar = WorkingCalendar.from_sources(overrides, on_unknown_year=told.append)
    assert calendar.is_working_day(date(2027, 2, 8))  # an override wins over the statutory day
    assert not calendar.is_working_day(date(2027, 2, 9))
    assert calendar.is_working_day(date(2027, 2, 20))
    assert not calendar.is_working_day(date(2027, 2, 5))  # what the file leaves out is still computed
    assert not calendar.is_working_day(date(2027, 10, 1))
    assert told == []  # the file speaks for 2027: its schedule counts as known


def test_known_and_overridden_years_are_not_reported() -> None:
    told: list[int] = []
    calendar = WorkingCalendar.from_sources(load_overrides('holidays: ["2027-01-01"]'), on_unknown_year=told.append)
    calendar.is_working_day(date(2026, 6, 1))
    calendar.is_working_day(date(2027, 6, 1))
    calendar.working_days_after(at(2027, 12, 1, 10), 10)
    assert told == []


def test_unknown_year_without_callback_does_not_fail() -> None:
    calendar = WorkingCalendar.from_sources()
    assert calendar.working_days_after(at(2040, 3, 9, 9), 1) == at(2040, 3, 12, 17, 30)  # Fri -> Mon
    assert calendar.working_days_after(at(2040, 2, 10, 9), 1) == at(2040, 2, 15, 17, 30)  # Spring Festival


def test_each_calendar_reports_for_itself() -> None:
    first: list[int] = []
    second: list[int] = []
    WorkingCalendar.from_sources(on_unknown_year=first.append).is_working_day(date(2031, 1, 1))
    WorkingCalendar.from_sources(on_unknown_year=second.append).is_working_day(date(2031, 1, 1))
    assert first == second == [2031]


def test_a_span_ending_at_midnight_does_not_look_into_the_next_year() -> None:
    told: list[int] = []
    calendar = WorkingCalendar.from_sources(on_unknown_year=told.append)
    assert calendar.working_time_between(at(2026, 12, 31, 9), at(2027, 1, 1)) == timedelta(seconds=7 * 3600)
    assert calendar.add_working_time(at(2026, 12, 31, 9), timedelta(minutes=60)) == at(2026, 12, 31, 10)
    assert told == []
    calendar.add_working_time(at(2026, 12, 31, 17), timedelta(minutes=60))
    assert told == [2027]


def test_a_calendar_that_never_opens_fails_instead_of_hanging() -> None:
    weekdays = {date(2030, 1, 1) + timedelta(days=n) for n in range(800)}
    calendar = WorkingCalendar(holidays=weekdays, workdays=set(), known_years={2030, 2031, 2032})
    with pytest.raises(ValueError, match="no working day"):
        calendar.working_days_after(at(2030, 1, 1), 1)
    with pytest.raises(ValueError, match="no working day"):
        calendar.add_working_time(at(2030, 1, 1), timedelta(minutes=1))


# --- time zones ------------------------------------------------------------------------------------------


def test_naive_datetimes_are_refused(calendar: WorkingCalendar) -> None:
    naive = datetime(2026, 3, 3, 9)
    aware = at(2026, 3, 3, 9)
    for call in (
        lambda: calendar.add_working_time(naive, timedelta(minutes=60)),
        lambda: calendar.working_days_after(naive, 1),
        lambda: calendar.working_time_between(naive, aware),
        lambda: calendar.working_time_between(aware, naive),
        lambda: calendar.is_working_time(naive),
        lambda: next(calendar.working_periods(naive)),
        lambda: as_utc(naive),
        lambda: as_local(naive),
    ):
        with pytest.raises(ValueError, match="naive"):
            call()


def test_is_working_day_refuses_a_datetime(calendar: WorkingCalendar) -> None:
    with pytest.raises(TypeError, match="takes a date"):
        calendar.is_working_day(at(2026, 3, 3, 9))


def test_results_are_utc(calendar: WorkingCalendar) -> None:
    assert calendar.add_working_time(at(2026, 3, 3, 9), timedelta(minutes=60)).tzinfo is UTC
    assert calendar.working_days_after(at(2026, 3, 3, 9), 1).tzinfo is UTC
    assert calendar.working_days_after(at(2026, 3, 3, 9), 1) == datetime(2026, 3, 4, 9, 30, tzinfo=UTC)
    assert all(moment.tzinfo is UTC for moment in next(calendar.working_periods(at(2026, 3, 3, 9))))


def test_local_date_decides_the_day(calendar: WorkingCalendar) -> None:
    # 2026-09-29 16:00 UTC is already 09-30 00:00 in Shanghai: 09-30 is the start's own day, not counted.
    midnight_local, a_minute_before = (
        datetime(2026, 9, 29, 16, tzinfo=UTC),
        datetime(2026, 9, 29, 15, 59, tzinfo=UTC),
    )
    assert calendar.working_days_after(midnight_local, 1) == at(2026, 10, 8, 17, 30)
    assert calendar.working_days_after(a_minute_before, 1) == at(2026, 9, 30, 17, 30)


# --- working time --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "minutes", "expected"),
    [
        (at(2026, 3, 3, 9), 0, at(2026, 3, 3, 9)),
        (at(2026, 3, 3, 7), 0, at(2026, 3, 3, 8, 30)),  # outside: starts at the next opening
        (at(2026, 3, 3, 12), 0, at(2026, 3, 3, 13, 30)),
        (at(2026, 3, 3, 17, 30), 0, at(2026, 3, 4, 8, 30)),
        (at(2026, 3, 3, 8, 30), 450, at(2026, 3, 3, 17, 30)),  # a whole day
        (at(2026, 3, 3, 8, 30), 451, at(2026, 3, 4, 8, 31)),
        (at(2026, 3, 3, 8, 30), 900, at(2026, 3, 4, 17, 30)),
        (at(2026, 9, 30, 17), 60, at(2026, 10, 8, 9)),
    ],
)
def test_add_working_time(calendar: WorkingCalendar, start: datetime, minutes: int, expected: datetime) -> None:
    assert calendar.add_working_time(start, timedelta(minutes=minutes)) == expected


@pytest.mark.parametrize(
    ("start", "minutes", "paused", "expected"),
    [
        # The pause-aware form is the one compute_deadline calls: paused working time does not count.
        (at(2026, 3, 3, 9), 60, [(at(2026, 3, 3, 9, 30), at(2026, 3, 3, 10))], at(2026, 3, 3, 10, 30)),
        (at(2026, 3, 3, 11), 60, [(at(2026, 3, 3, 11, 30), at(2026, 3, 3, 14))], at(2026, 3, 3, 14, 30)),
        (at(2026, 3, 3, 9), 60, [(at(2026, 3, 3, 12, 5), at(2026, 3, 3, 13, 25))], at(2026, 3, 3, 10)),  # lunch
        (at(2026, 3, 6, 17), 60, [(at(2026, 3, 6, 17), at(2026, 3, 9, 9))], at(2026, 3, 9, 10)),  # over a weekend
        (
            at(2026, 3, 3, 9),
            60,
            [(at(2026, 3, 3, 9), at(2026, 3, 3, 9, 10)), (at(2026, 3, 3, 9, 20), at(2026, 3, 3, 9, 30))],
            at(2026, 3, 3, 10, 20),
        ),
        (at(2026, 3, 3, 9), 0, [(at(2026, 3, 3, 9), at(2026, 3, 3, 9, 10))], at(2026, 3, 3, 9, 10)),  # count starts
    ],
)
def test_add_working_time_around_pauses(
    calendar: WorkingCalendar,
    start: datetime,
    minutes: int,
    paused: list[tuple[datetime, datetime]],
    expected: datetime,
) -> None:
    assert calendar.add_working_time(start, timedelta(minutes=minutes), paused) == expected


def test_negative_working_time_refused(calendar: WorkingCalendar) -> None:
    with pytest.raises(ValueError, match="negative"):
        calendar.add_working_time(at(2026, 3, 3, 9), timedelta(minutes=-1))


@pytest.mark.parametrize(
    ("earlier", "later", "seconds"),
    [
        (at(2026, 3, 3, 11), at(2026, 3, 3, 14, 30), 2 * 3600),  # lunch does not count
        (at(2026, 3, 3, 0), at(2026, 3, 4, 0), 7 * 3600 + 1800),  # one working day
        (at(2026, 3, 6, 17), at(2026, 3, 9, 10), 2 * 3600),  # the weekend does not count
        (at(2026, 9, 30, 8, 30), at(2026, 10, 8, 8, 30), 7 * 3600 + 1800),  # nor the National Day week
        (at(2026, 3, 3, 9, 0, 10), at(2026, 3, 3, 9, 0, 55), 45),
        (at(2026, 3, 3, 12, 10), at(2026, 3, 3, 13, 20), 0),
        (at(2026, 3, 3, 14), at(2026, 3, 3, 10), 0),  # reversed
        (at(2026, 3, 3, 14), at(2026, 3, 3, 14), 0),
    ],
)
def test_working_time_between(calendar: WorkingCalendar, earlier: datetime, later: datetime, seconds: int) -> None:
    assert calendar.working_time_between(earlier, later) == timedelta(seconds=seconds)


def test_working_time_between_keeps_fractions(calendar: WorkingCalendar) -> None:
    earlier = at(2026, 3, 3, 9) + timedelta(microseconds=250)
    assert calendar.working_time_between(earlier, at(2026, 3, 3, 10)) == timedelta(minutes=60, microseconds=-250)


def test_working_days_after_needs_a_positive_count(calendar: WorkingCalendar) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        calendar.working_days_after(at(2026, 3, 3, 9), 0)


@pytest.mark.parametrize(
    ("moment", "running"),
    [
        (at(2026, 3, 3, 8, 29, 59), False),
        (at(2026, 3, 3, 8, 30), True),
        (at(2026, 3, 3, 11, 59, 59), True),
        (at(2026, 3, 3, 12), False),
        (at(2026, 3, 3, 17, 30), False),
        (at(2026, 10, 10, 9), True),  # worked Saturday
        (at(2026, 10, 2, 9), False),  # holiday
    ],
)
def test_is_working_time(calendar: WorkingCalendar, moment: datetime, running: bool) -> None:
    assert calendar.is_working_time(moment) is running


def test_working_periods_from_a_moment(calendar: WorkingCalendar) -> None:
    periods = calendar.working_periods(at(2026, 9, 30, 10))
    assert [next(periods) for _ in range(3)] == [
        (as_utc(at(2026, 9, 30, 10)), as_utc(at(2026, 9, 30, 12))),
        (as_utc(at(2026, 9, 30, 13, 30)), as_utc(at(2026, 9, 30, 17, 30))),
        (as_utc(at(2026, 10, 8, 8, 30)), as_utc(at(2026, 10, 8, 12))),
    ]


# --- working hours ------------------------------------------------------------------------------------------


def test_default_hours() -> None:
    hours = WorkingHours()
    assert hours.periods == ((time(8, 30), time(12)), (time(13, 30), time(17, 30)))
    assert hours.closing == time(17, 30)


def test_other_hours_move_the_closing_and_the_count() -> None:
    calendar = WorkingCalendar.from_sources(hours=WorkingHours(((time(9), time(17)),)))
    assert calendar.working_days_after(at(2026, 3, 3, 9), 1) == at(2026, 3, 4, 17)
    assert calendar.add_working_time(at(2026, 3, 3, 16), timedelta(minutes=120)) == at(2026, 3, 4, 10)
    assert calendar.add_working_time(at(2026, 3, 3, 11), timedelta(minutes=120)) == at(2026, 3, 3, 13)  # no lunch break


def test_hours_parse() -> None:
    assert WorkingHours.parse("08:30-12:00,13:30-17:30") == WorkingHours()
    assert WorkingHours.parse(" 09:00 - 17:00 ") == WorkingHours(((time(9), time(17)),))


@pytest.mark.parametrize(
    ("periods", "message"),
    [
        ((), "at least one"),
        (((time(12), time(8, 30)),), "does not end after"),
        (((time(9), time(9)),), "does not end after"),
        (((time(8, 30), time(12)), (time(11), time(17))), "overlaps"),
        (((time(13, 30), time(17, 30)), (time(8, 30), time(12))), "overlaps or precedes"),
        (((time(8, 30, tzinfo=UTC), time(12)),), "without a zone"),
    ],
)
def test_bad_hours_refused(periods: tuple[tuple[time, time], ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkingHours(periods)


@pytest.mark.parametrize("text", ["", "08:30", "8.30-12", "08:30-12:00;13:30-17:30", "17:30-08:30"])
def test_bad_hours_text_refused(text: str) -> None:
    with pytest.raises(ValueError, match="working period"):
        WorkingHours.parse(text)


def test_hours_until_midnight() -> None:
    hours = WorkingHours.parse("00:00-24:00")
    assert hours.closing == END_OF_DAY
    calendar = WorkingCalendar.from_sources(hours=hours)
    # Tuesday 23:59:30 plus 60 working seconds runs on past midnight into Wednesday.
    assert calendar.add_working_time(at(2026, 3, 3, 23, 59, 30), timedelta(seconds=60)) == at(2026, 3, 4, 0, 0, 30)
    # Friday 23:59:30: the weekend rests, so the count goes on on Monday at 00:00.
    assert calendar.add_working_time(at(2026, 3, 6, 23, 59, 30), timedelta(seconds=60)) == at(2026, 3, 9, 0, 0, 30)
    assert calendar.working_days_after(at(2026, 3, 3, 10), 1) == at(2026, 3, 5)
    assert calendar.working_time_between(at(2026, 3, 3, 23), at(2026, 3, 4, 1)) == timedelta(seconds=7200)
    assert calendar.is_working_time(at(2026, 3, 3, 23, 59, 59) + timedelta(microseconds=999999))
    assert calendar.is_working_time(at(2026, 3, 4))
    assert not calendar.is_working_time(at(2026, 3, 7, 12))


def test_hours_ending_at_midnight_after_a_break() -> None:
    hours = WorkingHours.parse("08:00-12:00,20:00-24:00")
    calendar = WorkingCalendar.from_sources(hours=hours)
    assert calendar.add_working_time(at(2026, 3, 3, 11), timedelta(minutes=120)) == at(2026, 3, 3, 21)
    assert calendar.add_working_time(at(2026, 3, 3, 23), timedelta(minutes=120)) == at(2026, 3, 4, 9)


@pytest.mark.parametrize("text", ["24:00-24:00", "24:00-08:00", "00:00-25:00"])
def test_bad_midnight_hours_refused(text: str) -> None:
    with pytest.raises(ValueError, match="working period"):
        WorkingHours.parse(text)
