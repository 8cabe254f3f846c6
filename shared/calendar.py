"""The working calendar of the SLA clock (contract 7): mainland China's holidays and 调休 days, working hours.

Where a day's status comes from, first found wins: the operator's overrides file; the published schedule of
`chinese_calendar` (2004-2026 in 1.11); for any other year, the `holidays` package's China calendar, which
computes the statutory holidays of every year (lunar dates included) and carries the published schedule
(in-lieu days off and worked weekend days) of the years it knows; finally the week (Monday to Friday).
A year neither the overrides nor a published schedule covers has its 调休 unknown: the caller is told.

Pure: no I/O and no system clock. Times go in offset-aware and come out in UTC; "local" is Asia/Shanghai.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

import chinese_calendar
import yaml
from holidays import country_holidays

from shared.domain import LOCAL_TZ
from shared.settings import Settings

END_OF_DAY: Final = time.max
"""How `24:00` is held: the end of the day, i.e. the next midnight (a period `00:00-24:00` is the whole day)."""

# A calendar that never opens would make every search below loop for ever; no real schedule rests this
# long (the longest Chinese holiday is 9 days), so hitting it means the data is wrong.
_MAX_RESTING_DAYS: Final = 366

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _count_resting_day(day: date, resting: int) -> int:
    if resting + 1 > _MAX_RESTING_DAYS:
        raise ValueError(f"no working day in the {_MAX_RESTING_DAYS} days up to {day}: check the data")
    return resting + 1


def _wall_clock(day: date, wall: time) -> datetime:
    """The local instant of a wall-clock time on a day; END_OF_DAY is the next midnight, exactly."""
    if wall == END_OF_DAY:
        return datetime.combine(day + timedelta(days=1), time(0), LOCAL_TZ)
    return datetime.combine(day, wall, LOCAL_TZ)


def _parse_wall(text: str) -> time:
    # time.fromisoformat refuses 24:00, the usual way to write "until midnight".
    return END_OF_DAY if text in {"24:00", "24:00:00"} else time.fromisoformat(text)


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is refused because its zone would be a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: pass an offset-aware time")
    return moment.astimezone(UTC)


def as_local(moment: datetime) -> datetime:
    """The same instant in local time (+08:00); a naive datetime is refused."""
    return as_utc(moment).astimezone(LOCAL_TZ)


@dataclass(frozen=True, slots=True)
class WorkingHours:
    """The periods of a working day, in local wall-clock time; by default 08:30-12:00 and 13:30-17:30.

    A period may end at `24:00` (held as END_OF_DAY), so `00:00-24:00` makes the clock run all day: with an
    overrides file that makes every date of interest a workday, that is a clock that always runs (tests, drills).
    """

    periods: tuple[tuple[time, time], ...] = ((time(8, 30), time(12, 0)), (time(13, 30), time(17, 30)))

    def __post_init__(self) -> None:
        if not self.periods:
            raise ValueError("working hours need at least one period")
        previous_end: time | None = None
        for opens, closes in self.periods:
            if opens.tzinfo is not None or closes.tzinfo is not None:
                raise ValueError("working hours are local wall-clock times; give them without a zone")
            if opens >= closes:
                raise ValueError(f"working period {opens}-{closes} does not end after it starts")
            if previous_end is not None and opens < previous_end:
                raise ValueError(f"working period {opens}-{closes} overlaps or precedes the one before")
            previous_end = closes

    @classmethod
    def parse(cls, text: str) -> WorkingHours:
        """Periods written as `08:30-12:00,13:30-17:30` (the form a setting takes); `24:00` ends the day."""
        periods: list[tuple[time, time]] = []
        for chunk in text.split(","):
            opens, sep, closes = chunk.strip().partition("-")
            try:
                if not sep:
                    raise ValueError("no '-'")  # noqa: TRY301 - reported below with the chunk
                if opens.strip() in {"24:00", "24:00:00"}:
                    raise ValueError("a period cannot open at 24:00")  # noqa: TRY301 - reported below
                periods.append((time.fromisoformat(opens.strip()), _parse_wall(closes.strip())))
            except ValueError as exc:
                raise ValueError(f"working period {chunk.strip()!r} is not HH:MM-HH:MM") from exc
        return cls(tuple(periods))

    @property
    def closing(self) -> time:
        """When the last period ends: a deadline of N working days falls at this time."""
        return self.periods[-1][1]


@dataclass(frozen=True, slots=True)
class CalendarOverrides:
    """Holidays and adjusted working days (调休) from the operator's file, for years the package lacks."""

    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        both = self.holidays & self.workdays
        if both:
            listed = ", ".join(sorted(d.isoformat() for d in both))
            raise ValueError(f"calendar overrides list {listed} both as a holiday and as a workday")

    @property
    def years(self) -> frozenset[int]:
        """Years the file speaks for: their schedule counts as known."""
        return frozenset(d.year for d in self.holidays | self.workdays)


def _override_dates(key: str, value: object) -> frozenset[date]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        # TRY004: a wrongly shaped file is a bad value; the caller catches ValueError for every parse error.
        raise ValueError(f"calendar overrides: `{key}` must be a list of dates, got {value!r}")  # noqa: TRY004
    dates: set[date] = set()
    for index, entry in enumerate(value):
        # YAML reads an unquoted 2027-01-01 as a date and "2027-01-01 10:00" as a datetime (a date subclass),
        # so the type test comes before the string test and refuses the datetime.
        if isinstance(entry, date) and not isinstance(entry, datetime):
            dates.add(entry)
            continue
        if isinstance(entry, str) and _ISO_DATE.fullmatch(entry.strip()):
            try:
                dates.add(date.fromisoformat(entry.strip()))
            except ValueError:
                pass
            else:
                continue
        raise ValueError(f"calendar overrides: {key}[{index}] = {entry!r} is not a date (want YYYY-MM-DD)")
    return frozenset(dates)


def load_overrides(text: str) -> CalendarOverrides:
    """Parse the overrides file (`holidays: [dates]`, `workdays: [dates]`); the caller reads it from disk.

    An empty file means no overrides. Any other key is refused, so that a typo (`holiday:`) is not a
    silently ignored schedule.
    """
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"calendar overrides are not valid YAML: {exc}") from exc
    if data is None:
        return CalendarOverrides()
    if not isinstance(data, dict):
        raise ValueError(  # noqa: TRY004 - as above, a wrongly shaped file is a bad value
            f"calendar overrides must be a mapping with `holidays` and `workdays`, got {data!r}"
        )
    unknown = sorted(str(key) for key in data if key not in {"holidays", "workdays"})
    if unknown:
        raise ValueError(f"calendar overrides: unknown key(s) {', '.join(unknown)}; want holidays, workdays")
    return CalendarOverrides(
        holidays=_override_dates("holidays", data.get("holidays")),
        workdays=_override_dates("workdays", data.get("workdays")),
    )


def _package_schedule() -> tuple[frozenset[date], frozenset[date], frozenset[int]]:
    """The published schedule carried by `chinese_calendar`: holidays, worked weekend days, years covered."""
    holidays = frozenset(chinese_calendar.holidays)
    workdays = frozenset(chinese_calendar.workdays)
    # The package itself answers for every year between its first and last holiday and refuses the rest.
    years = {d.year for d in holidays}
    return holidays, workdays, frozenset(range(min(years), max(years) + 1))


@dataclass(frozen=True, slots=True)
class YearSchedule:
    """One year's days off and worked weekend days from a computing source; `published` when its 调休 is known."""

    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    published: bool = False


@functools.cache
def computed_year(year: int) -> YearSchedule:
    """The `holidays` package's China calendar for `year`.

    A year whose worked weekend days the package lists is published: its whole schedule is taken, in-lieu
    days included (for 2004-2026 that is exactly `chinese_calendar`'s, weekday for weekday). For any other year
    only the statutory holidays are taken: the in-lieu days the package adds there are its guess (an
    "observed" day, SAT_SUN_TO_NEXT_WORKDAY), not an announcement, and are left out; so are worked weekend days,
    which nobody can guess. Outside the package's range (1950-2100) the schedule is empty.
    """
    workdays = frozenset(d for d in country_holidays("CN", years=year).weekend_workdays if d.year == year)
    published = bool(workdays)
    holidays = frozenset(d for d in country_holidays("CN", years=year, observed=published) if d.year == year)
    return YearSchedule(holidays=holidays, workdays=workdays, published=published)


class WorkingCalendar:
    """Which days are worked and when: the answer to "N working hours/days after T".

    A date listed as a workday is worked (even a Saturday), one listed as a holiday is not. For a year not in
    `listed_years` (the years the lists fully describe), `computed(year)` is asked next, if given. Any other
    date follows the week (Monday to Friday). A year neither in `known_years` nor published by `computed`
    has its 调休 unknown: `on_unknown_year(year)` is told, once per year per calendar, so the caller can warn
    and count it.
    """

    __slots__ = (
        "_reported_years",
        "computed",
        "holidays",
        "hours",
        "known_years",
        "listed_years",
        "on_unknown_year",
        "workdays",
    )

    def __init__(
        self,
        *,
        holidays: Iterable[date],
        workdays: Iterable[date],
        known_years: Iterable[int],
        hours: WorkingHours | None = None,
        on_unknown_year: Callable[[int], None] | None = None,
        computed: Callable[[int], YearSchedule] | None = None,
        listed_years: Iterable[int] = (),
    ) -> None:
        self.holidays: frozenset[date] = frozenset(holidays)
        self.workdays: frozenset[date] = frozenset(workdays)
        self.known_years: frozenset[int] = frozenset(known_years)
        self.listed_years: frozenset[int] = frozenset(listed_years)
        self.computed = computed
        self.hours: WorkingHours = hours or WorkingHours()
        self.on_unknown_year = on_unknown_year
        # The only state that changes: which unknown years were already reported, so a long search
        # through 2031 warns once rather than once per day.
        self._reported_years: set[int] = set()
        both = self.holidays & self.workdays
        if both:
            listed = ", ".join(sorted(d.isoformat() for d in both))
            raise ValueError(f"{listed} cannot be both a holiday and a workday")

    def __repr__(self) -> str:
        years = sorted(self.known_years)
        span = f"{years[0]}-{years[-1]}" if years else "none"
        return f"WorkingCalendar(known_years={span}, hours={self.hours})"

    @classmethod
    def from_sources(
        cls,
        overrides: CalendarOverrides | None = None,
        *,
        hours: WorkingHours | None = None,
        on_unknown_year: Callable[[int], None] | None = None,
    ) -> WorkingCalendar:
        """`chinese_calendar`'s published schedule, the `holidays` package's for other years, the overrides on top.

        An override wins over both packages for the same date (a late correction, or the schedule of a year
        announced after the packages were released), and every year an override mentions counts as known.
        Dates an override file does not list in such a year still take the computed statutory holidays.
        """
        holidays, workdays, years = _package_schedule()
        listed = years
        if overrides is not None:
            holidays = (holidays - overrides.workdays) | overrides.holidays
            workdays = (workdays - overrides.holidays) | overrides.workdays
            years = years | overrides.years
        return cls(
            holidays=holidays,
            workdays=workdays,
            known_years=years,
            hours=hours or WorkingHours(),
            on_unknown_year=on_unknown_year,
            computed=computed_year,
            listed_years=listed,
        )

    def is_working_day(self, day: date) -> bool:
        """Whether `day` (a local calendar date) is worked."""
        if isinstance(day, datetime):
            # A datetime is a date too, but its own date may not be the local one: make the caller choose.
            raise TypeError("is_working_day takes a date; pass as_local(moment).date()")
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        schedule = None
        if self.computed is not None and day.year not in self.listed_years:
            schedule = self.computed(day.year)
        if (
            day.year not in self.known_years
            and not (schedule is not None and schedule.published)
            and day.year not in self._reported_years
        ):
            self._reported_years.add(day.year)
            if self.on_unknown_year is not None:
                self.on_unknown_year(day.year)
        if schedule is not None:
            if day in schedule.workdays:
                return True
            if day in schedule.holidays:
                return False
        return day.weekday() < 5

    def is_working_time(self, moment: datetime) -> bool:
        """Whether the clock runs at `moment`: a working day, inside a period (its end excluded)."""
        local = as_local(moment)
        if not self.is_working_day(local.date()):
            return False
        wall = local.time()
        return any(opens <= wall and (wall < closes or closes == END_OF_DAY) for opens, closes in self.hours.periods)

    def _periods(self, start: datetime, last_day: date | None = None) -> Iterator[tuple[datetime, datetime]]:
        """Working periods from `start` on (the first one clipped to it), local; up to `last_day` if given.

        A period that ends exactly at `start` is over. Days are looked at lazily, so a search that stops
        early never asks about (and never reports) a later year.
        """
        day = start.date()
        resting = 0
        while last_day is None or day <= last_day:
            if self.is_working_day(day):
                resting = 0
                for opens, closes in self.hours.periods:
                    period_end = _wall_clock(day, closes)
                    if period_end > start:
                        yield max(_wall_clock(day, opens), start), period_end
            else:
                resting = _count_resting_day(day, resting)
            day += timedelta(days=1)

    def working_periods(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """The working time from `start` on, as consecutive (opens, closes) UTC intervals; endless."""
        for opens, closes in self._periods(as_local(start)):
            yield opens.astimezone(UTC), closes.astimezone(UTC)

    def add_working_time(
        self, start: datetime, amount: timedelta, paused: Sequence[tuple[datetime, datetime]] = ()
    ) -> datetime:
        """The instant at which the clock, running in working time from `start` but not during `paused`, shows
        `amount`. This is the one adder of working time: the SLA deadlines (services/sla/policy.py) call it.

        The count starts at `start` if the clock runs then, else at the next opening; a count that ends
        exactly at a closing time ends there (12:00, 17:30), not at the next opening. A zero amount gives the
        start of the count itself. `paused` holds sorted, disjoint (from, to) spans; time in them does not count.
        """
        if amount < timedelta():
            raise ValueError(f"cannot add a negative working time ({amount})")
        remaining = amount
        for opens, closes in self.working_periods(start):
            for run_from, run_to in _running(opens, closes, paused):
                if remaining <= run_to - run_from:
                    return run_from + remaining
                remaining -= run_to - run_from
        raise AssertionError("unreachable: the periods never end")  # pragma: no cover

    def working_time_between(self, earlier: datetime, later: datetime) -> timedelta:
        """Working time in [earlier, later), to the microsecond; zero when `later` is not after `earlier`."""
        start, end = as_local(earlier), as_local(later)
        total = timedelta()
        if end <= start:
            return total
        # The span is half-open: an `end` at midnight must not make the next day (or year) be looked up.
        last_day = (end - timedelta(microseconds=1)).date()
        for opens, closes in self._periods(start, last_day=last_day):
            if opens >= end:
                break
            total += min(closes, end) - opens
        return total

    def working_days_after(self, start: datetime, days: int) -> datetime:
        """N working days after `start`: closing time (17:30 local) of the Nth working day after its date.

        The start's own day never counts, even when it is before the opening.
        """
        if days < 1:
            raise ValueError(f"a count of working days must be at least 1, got {days}")
        day = as_local(start).date()
        resting = 0
        while days:
            day += timedelta(days=1)
            if self.is_working_day(day):
                days -= 1
                resting = 0
            else:
                resting = _count_resting_day(day, resting)
        return _wall_clock(day, self.hours.closing).astimezone(UTC)


def _running(
    opens: datetime, closes: datetime, paused: Sequence[tuple[datetime, datetime]]
) -> Iterator[tuple[datetime, datetime]]:
    """The parts of one working period [opens, closes) during which the clock was not paused."""
    cursor = opens
    for pause_from, pause_to in paused:
        if pause_to <= cursor:
            continue
        if pause_from >= closes:
            break
        if pause_from > cursor:
            yield cursor, pause_from
        cursor = max(cursor, pause_to)
        if cursor >= closes:
            return
    if cursor < closes:
        yield cursor, closes


def known_package_years() -> frozenset[int]:
    """Years whose schedule the installed `chinese_calendar` publishes (2004-2026 for 1.11)."""
    return _package_schedule()[2]


__all__ = [
    "END_OF_DAY",
    "LOCAL_TZ",
    "CalendarOverrides",
    "WorkingCalendar",
    "WorkingHours",
    "YearSchedule",
    "as_local",
    "as_utc",
    "computed_year",
    "known_package_years",
    "load_overrides",
]


def calendar_from_settings(settings: Settings, on_unknown_year: Callable[[int], None] | None = None) -> WorkingCalendar:
    """The working calendar the settings describe, the same for the clock, the supervision items and the simulator:
    the package's schedule, SLA_CALENDAR_OVERRIDES (a file, read now), SLA_WORKING_HOURS. A file that cannot be read
    or parsed raises ValueError naming the setting."""
    overrides = None
    path = settings.sla_calendar_overrides
    if path is not None:
        try:
            overrides = load_overrides(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"SLA_CALENDAR_OVERRIDES {path}: cannot read it: {exc}") from exc
    return WorkingCalendar.from_sources(
        overrides, hours=WorkingHours.parse(settings.sla_working_hours), on_unknown_year=on_unknown_year
    )
