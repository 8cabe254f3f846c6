"""The SLA policy and its deadline math (contract 7): the window of a stage, when it warns and falls due.

Pure: the working calendar and every time are arguments; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.calendar import WorkingCalendar, as_utc
from shared.domain import Category, Urgency
from shared.events.sla import Stage

Pause = tuple[datetime, datetime | None]
"""(paused_at, resumed_at); resumed_at is None while the case is still paused."""


class WindowUnit(StrEnum):
    DAYS = "days"
    HOURS = "hours"
    MINUTES = "minutes"
    SECONDS = "seconds"


_UNIT_LENGTH = {
    WindowUnit.HOURS: timedelta(hours=1),
    WindowUnit.MINUTES: timedelta(minutes=1),
    WindowUnit.SECONDS: timedelta(seconds=1),
}


class Window(BaseModel):
    """How long a stage may take: N working days (to 17:30 of the Nth working day after the start's date), or N
    working hours, minutes or seconds (working time counted to the second).

    The contract's windows are days and hours; minutes and seconds are there for drills and tests, which run the
    clock on real time (docs/sla.md, "short windows").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit: WindowUnit = Field(
        description="`days`: working days after the start's date; `hours`/`minutes`/`seconds`: working time."
    )
    amount: int = Field(gt=0, description="How many of the unit.")

    @property
    def working_time(self) -> timedelta | None:
        """The window as an amount of working time; None for `days`, whose length depends on the start."""
        length = _UNIT_LENGTH.get(self.unit)
        return None if length is None else length * self.amount

    @classmethod
    def working_hours(cls, amount: int) -> Window:
        return cls(unit=WindowUnit.HOURS, amount=amount)

    @classmethod
    def working_days(cls, amount: int) -> Window:
        return cls(unit=WindowUnit.DAYS, amount=amount)


StageWindows = dict[Stage, Window]


class SlaPolicy(BaseModel):
    """The windows of the four stages, with overrides per category and per urgency (contract 7).

    The window of a stage for a case is, first found wins: the case's urgency override, then its category
    override, then the default of the stage. So an urgent case gets the urgent resolve window even in a
    category with a longer one. Replacing `by_urgency` replaces the built-in urgent rule as well.

    The policy is JSON (`model_dump_json`) so that a case can carry the policy it was opened under.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    accept: Window = Field(default=Window.working_hours(2), description="签收: from each assignment to its acceptance.")
    first_contact: Window = Field(
        default=Window.working_days(1), description="首次联系: from each assignment to the first contact."
    )
    resolve: Window = Field(
        default=Window.working_days(5),
        description="办结: from `received_at` or a reopening to resolving; a return keeps the clock.",
    )
    callback: Window = Field(
        default=Window.working_days(2), description="回访: from the resolve action to the callback."
    )
    extension_day: Window = Field(
        default=Window.working_days(1),
        description="What one day of an approved extension adds to the resolve deadline: a working day by default "
        "(17:30 of the Nth working day after the due); a shorter unit for drills and tests.",
    )
    warn_ratio: float = Field(
        default=0.8, gt=0, le=1, description="Share of a window's working time after which a warning fires."
    )
    by_category: dict[Category, StageWindows] = Field(
        default_factory=dict, description="Windows that replace the defaults for a category."
    )
    by_urgency: dict[Urgency, StageWindows] = Field(
        default_factory=lambda: {Urgency.URGENT: {Stage.RESOLVE: Window.working_days(1)}},
        description="Windows that replace the category and default ones for an urgency.",
    )

    def window_for(self, stage: Stage, category: Category, urgency: Urgency) -> Window:
        """The window of `stage` for a case: urgency override, else category override, else the default."""
        for overrides in (self.by_urgency.get(urgency, {}), self.by_category.get(category, {})):
            if stage in overrides:
                return overrides[stage]
        defaults = {
            Stage.ACCEPT: self.accept,
            Stage.FIRST_CONTACT: self.first_contact,
            Stage.RESOLVE: self.resolve,
            Stage.CALLBACK: self.callback,
        }
        return defaults[stage]


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a stage falls due (a breach from then on) and when it warns; both UTC."""

    due_at: datetime
    warn_at: datetime


def _paused_spans(start: datetime, pauses: Iterable[Pause]) -> tuple[list[tuple[datetime, datetime]], datetime | None]:
    """The closed pauses as sorted, disjoint UTC spans from `start` on, and when the earliest open pause began.

    Only the part of a pause after `start` can hold the clock (before it the clock was not running), and
    time paused twice by overlapping pauses is paused once.
    """
    spans: list[tuple[datetime, datetime]] = []
    open_since: datetime | None = None
    for paused_at, resumed_at in pauses:
        paused = as_utc(paused_at)
        if resumed_at is None:
            open_since = paused if open_since is None else min(open_since, paused)
            continue
        resumed = as_utc(resumed_at)
        if resumed < paused:
            raise ValueError(f"a pause resumed at {resumed.isoformat()}, before it began at {paused.isoformat()}")
        paused = max(paused, start)
        if resumed > paused:
            spans.append((paused, resumed))
    spans.sort()
    merged: list[tuple[datetime, datetime]] = []
    for paused, resumed in spans:
        if merged and paused <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], resumed))
        else:
            merged.append((paused, resumed))
    return merged, open_since


def compute_deadline(
    policy: SlaPolicy,
    calendar: WorkingCalendar,
    stage: Stage,
    start: datetime,
    *,
    category: Category,
    urgency: Urgency,
    pauses: Iterable[Pause] = (),
    extension_days: int = 0,
) -> Deadline | None:
    """The deadline of `stage` counted from `start`; None while a pause that began before the due is open (the
    clock is stopped, so there is no due yet).

    - The window's working time is the working time from `start` to `start` + window (hours: to the
      second; days: to 17:30 of the Nth working day after the start's date).
    - Paused working time does not count: the due is the instant the clock, stopped during pauses, has
      run the window's working time. A pause before `start`, on a rest day or after the due changes nothing;
      that holds for an open pause too: one that began at or after the due is ignored, a late case stays late.
    - An approved extension of N days (resolve only) moves the due, pauses counted, by N × `extension_day`:
      by default to 17:30 of the Nth working day after its date; with no pause after the due, that is exactly
      working_days_after.
    - The warning fires when `warn_ratio` of the whole window (extension included) has run on that clock.
    """
    if extension_days < 0:
        raise ValueError(f"an extension cannot be negative ({extension_days} working days)")
    if extension_days and stage is not Stage.RESOLVE:
        raise ValueError(f"only the resolve deadline can be extended, not {stage}")
    start = as_utc(start)
    paused, open_since = _paused_spans(start, pauses)
    window = policy.window_for(stage, category, urgency)
    # The budget stays a timedelta: a start with a fraction of a second must not lose it on the way.
    budget = _budget(calendar, window, start, 1)
    due = calendar.add_working_time(start, budget, paused)
    if extension_days:
        # Extend from where the (paused) due fell, then let pauses after it push the new due on as well.
        budget += _budget(calendar, policy.extension_day, due, extension_days)
        due = calendar.add_working_time(start, budget, paused)
    if open_since is not None and open_since < due:
        return None
    warn = calendar.add_working_time(start, min(budget, budget * policy.warn_ratio), paused)
    return Deadline(due_at=due, warn_at=warn)


def _budget(calendar: WorkingCalendar, window: Window, start: datetime, times: int) -> timedelta:
    """The working time of `times` windows from `start`: days end at the closing of the Nth working day."""
    length = window.working_time
    if length is not None:
        return length * times
    return calendar.working_time_between(start, calendar.working_days_after(start, window.amount * times))


def accept_deadline(
    policy: SlaPolicy,
    calendar: WorkingCalendar,
    assigned_at: datetime,
    *,
    category: Category,
    urgency: Urgency,
    pauses: Iterable[Pause] = (),
) -> Deadline | None:
    """签收 (accept): counted from each assignment."""
    return compute_deadline(
        policy, calendar, Stage.ACCEPT, assigned_at, category=category, urgency=urgency, pauses=pauses
    )


def first_contact_deadline(
    policy: SlaPolicy,
    calendar: WorkingCalendar,
    assigned_at: datetime,
    *,
    category: Category,
    urgency: Urgency,
    pauses: Iterable[Pause] = (),
) -> Deadline | None:
    """首次联系 (first contact): counted from each assignment."""
    return compute_deadline(
        policy, calendar, Stage.FIRST_CONTACT, assigned_at, category=category, urgency=urgency, pauses=pauses
    )


def resolve_deadline(
    policy: SlaPolicy,
    calendar: WorkingCalendar,
    received_at: datetime,
    *,
    category: Category,
    urgency: Urgency,
    pauses: Iterable[Pause] = (),
    extension_days: int = 0,
) -> Deadline | None:
    """办结 (resolve): counted from `received_at`, or from a reopening; a return does not restart it."""
    return compute_deadline(
        policy,
        calendar,
        Stage.RESOLVE,
        received_at,
        category=category,
        urgency=urgency,
        pauses=pauses,
        extension_days=extension_days,
    )


def callback_deadline(
    policy: SlaPolicy,
    calendar: WorkingCalendar,
    resolved_at: datetime,
    *,
    category: Category,
    urgency: Urgency,
) -> Deadline | None:
    """回访 (callback): counted from the resolve action; the case is no longer paused by then."""
    return compute_deadline(policy, calendar, Stage.CALLBACK, resolved_at, category=category, urgency=urgency)
