"""The clock's decisions without I/O: every fact, out-of-order and racing facts, the scheduler's firing, and
properties over arbitrary fact sequences (one outcome per deadline, nothing after closing, no revival)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.sla.clockwork import (
    ESCALATE_TO,
    HOTLINE,
    TRIAGE,
    UNASSIGNED,
    CaseClock,
    ClockRules,
    DeadlineRow,
    DeadlineState,
    Fact,
    FactKind,
    Key,
    apply_fact,
    fact_of_assigned,
    fact_of_lifecycle,
    fact_of_received,
    fire,
    fold_batch,
    open_case,
)
from services.sla.policy import SlaPolicy, Window, WindowUnit, resolve_deadline
from shared.calendar import LOCAL_TZ, WorkingCalendar
from shared.domain import Category, Channel, Kind, Urgency
from shared.events import CaseState, ComplaintAssigned, ComplaintReceived, LifecycleChanged, SlaEvent
from shared.events.sla import SlaEventType, Stage

A, F, R, C = Stage.ACCEPT, Stage.FIRST_CONTACT, Stage.RESOLVE, Stage.CALLBACK
SET, WARN, BREACH, MET = SlaEventType.DEADLINE_SET, SlaEventType.WARNING, SlaEventType.BREACHED, SlaEventType.MET
CID = "hotline:TL-1"
CALENDAR = WorkingCalendar.from_sources()
RULES = ClockRules(CALENDAR, late_after=timedelta(seconds=60))


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=LOCAL_TZ)


MON = at(2026, 3, 2, 9)  # a plain week: Monday 2 March 2026, 09:00 local


def fact(kind: FactKind, when: datetime, round_: int = 1, department: str | None = "spj", **extra: object) -> Fact:
    return Fact.model_validate(
        {"kind": kind, "event_id": str(uuid4()), "complaint_id": CID, "at": when, "round": round_,
         "department": department, **extra}
    )  # fmt: skip


def received(when: datetime = MON, urgency: Urgency = Urgency.NORMAL, category: Category = Category.OTHER) -> Fact:
    return fact(FactKind.RECEIVED, when, department=None, urgency=urgency, category=category)


def assigned(when: datetime = MON, round_: int = 1, lead: str = "spj", assignment_id: str | None = None) -> Fact:
    return fact(FactKind.ASSIGNED, when, round_, lead, assignment_id=assignment_id or str(uuid4()))


@dataclass
class Case:
    """A case under the clock: facts in; `run_until` plays a scheduler that never lags."""

    policy: SlaPolicy = field(default_factory=SlaPolicy)
    case: CaseClock = field(default_factory=lambda: open_case(CID, "p"))
    rows: dict[Key, DeadlineRow] = field(default_factory=dict)
    events: list[SlaEvent] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)

    def apply(self, f: Fact, now: datetime | None = None) -> list[SlaEvent]:
        out = apply_fact(self.case, self.rows, f, policy=self.policy, rules=RULES, now=now or f.at)
        self.case, self.rows = out.case, dict(out.deadlines)
        self.events += out.events
        self.codes += [n.code for n in out.notes]
        return list(out.events)

    def fire_at(self, now: datetime, *, on_time: bool = True) -> list[SlaEvent]:
        """Fire what is due at `now`: each at its own time when on_time, else all at `now` (a scheduler back
        from a downtime)."""
        fired: list[SlaEvent] = []
        while True:
            due = sorted((r for r in self.rows.values() if r.next_fire_at and r.next_fire_at <= now),
                         key=lambda r: r.next_fire_at or now)  # fmt: skip
            if not due:
                break
            row = due[0]
            when = (row.next_fire_at or now) if on_time else now
            firing = fire(row, when, late_after=RULES.late_after)
            assert firing is not None
            self.rows[row.key] = firing.row
            fired.append(firing.event)
        self.events += fired
        return fired

    def kinds(self, key: Key | None = None) -> list[tuple[SlaEventType, Stage, int]]:
        return [(e.type, e.stage, e.round) for e in self.events if key is None or (e.stage, e.round) == key]

    def due(self, key: Key) -> datetime:
        return self.rows[key].due_at


def ev(events: list[SlaEvent]) -> list[tuple[SlaEventType, Stage, int]]:
    return [(e.type, e.stage, e.round) for e in events]


# --- setting deadlines ------------------------------------------------------------------------------------------


def test_received_sets_the_resolve_deadline_before_any_assignment() -> None:
    case = Case()
    events = case.apply(received())
    assert ev(events) == [(SET, R, 1)]
    assert events[0].department == UNASSIGNED
    assert events[0].due_at == at(2026, 3, 9, 17, 30)
    assert events[0].causation_id == case.events[0].causation_id
    assert case.rows[(R, 1)].warn_at == at(2026, 3, 6, 16, 6)


def test_urgent_resolve_is_one_working_day() -> None:
    case = Case()
    case.apply(received(urgency=Urgency.URGENT))
    assert case.due((R, 1)) == at(2026, 3, 3, 17, 30)


def test_assignment_sets_accept_and_first_contact_and_gives_resolve_its_department() -> None:
    case = Case()
    case.apply(received())
    events = case.apply(assigned(at(2026, 3, 2, 10)))
    assert ev(events) == [(SET, A, 1), (SET, F, 1), (SET, R, 1)]
    assert [e.department for e in events] == ["spj", "spj", "spj"]
    assert case.due((A, 1)) == at(2026, 3, 2, 12)
    assert case.due((F, 1)) == at(2026, 3, 3, 17, 30)
    assert events[2].due_at == at(2026, 3, 9, 17, 30)  # the resolve clock runs from received_at, unchanged


def test_triage_desk_gets_no_accept_deadlines_until_it_places_the_case() -> None:
    case = Case()
    case.apply(received())
    events = case.apply(assigned(lead=TRIAGE))
    assert ev(events) == [(SET, R, 1)]
    assert events[0].department == TRIAGE
    placed = case.apply(assigned(at(2026, 3, 2, 14), lead="scj"))  # the desk places it, same round
    assert ev(placed) == [(SET, A, 1), (SET, F, 1), (SET, R, 1)]
    assert case.rows[(A, 1)].department == "scj"


def test_policy_windows_per_category_and_short_units() -> None:
    policy = SlaPolicy(by_category={Category.FINANCING: {A: Window(unit=WindowUnit.MINUTES, amount=30)}})
    case = Case(policy=policy)
    case.apply(received(category=Category.FINANCING))
    case.apply(assigned(at(2026, 3, 2, 11, 50)))
    assert case.due((A, 1)) == at(2026, 3, 2, 13, 50)  # 10 minutes before lunch, 20 after


# --- meeting deadlines ------------------------------------------------------------------------------------------


def test_accept_in_time_is_met_and_nothing_fires_for_it() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    events = case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 10)))
    assert ev(events) == [(MET, A, 1)]
    assert case.rows[(A, 1)].next_fire_at is None
    case.fire_at(at(2026, 3, 2, 23))
    assert BREACH not in [k for k, s, _ in case.kinds() if s is A]


def test_accept_exactly_at_the_due_is_in_time() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    assert ev(case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 11)))) == [(MET, A, 1)]


def test_accept_after_the_due_breaches_once_when_the_scheduler_has_not() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    late_accept = at(2026, 3, 2, 11, 0, 1)
    events = case.apply(fact(FactKind.ACCEPT, late_accept), now=late_accept + timedelta(minutes=5))
    assert ev(events) == [(BREACH, A, 1)]
    assert events[0].escalate_to == ESCALATE_TO
    assert events[0].late  # five minutes after the due, beyond late_after
    assert case.rows[(A, 1)].settled_at == late_accept
    assert not case.rows[(A, 1)].overdue_open
    assert case.fire_at(at(2026, 3, 2, 12)) == []


def test_accept_after_the_breach_fired_only_settles_it() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    fired = case.fire_at(at(2026, 3, 2, 11, 30))
    assert ev(fired) == [(WARN, A, 1), (BREACH, A, 1)]
    assert case.rows[(A, 1)].overdue_open
    assert case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 11, 40))) == []
    assert not case.rows[(A, 1)].overdue_open
    assert case.rows[(A, 1)].state is DeadlineState.BREACHED


def final_word(case: Case, key: Key) -> list[SlaEventType]:
    """The outcomes of a deadline that stand: a breach superseded by a later `met` does not."""
    superseded = {e.supersedes_event_id for e in case.events if e.supersedes_event_id}
    return [e.type for e in case.events if (e.stage, e.round) == key and e.type in (MET, BREACH)
            and str(e.event_id) not in superseded]  # fmt: skip


def test_resolve_racing_its_breach_gives_exactly_one_final_word() -> None:
    # Either the scheduler's round commits first (breached; the in-time resolve then supersedes it with a met) ...
    first = Case()
    first.apply(received())
    first.apply(assigned())
    due = first.due((R, 1))
    first.fire_at(due)
    first.apply(fact(FactKind.RESOLVE, due - timedelta(seconds=1)), now=due + timedelta(seconds=1))
    # ... or the resolve commits first (met; the scheduler then finds nothing to fire).
    second = Case()
    second.apply(received())
    second.apply(assigned())
    second.apply(fact(FactKind.RESOLVE, due - timedelta(seconds=1)), now=due + timedelta(seconds=1))
    second.fire_at(due + timedelta(seconds=2))
    for case in (first, second):
        assert final_word(case, (R, 1)) == [MET]
        assert case.rows[(R, 1)].state is DeadlineState.MET
    assert [k for k, _, _ in first.kinds((R, 1))][-2:] == [BREACH, MET]
    (breach,) = [e for e in first.events if e.type is BREACH and e.stage is R]
    (met,) = [e for e in first.events if e.type is MET and e.stage is R]
    assert met.supersedes_event_id == str(breach.event_id)
    assert second.events[-2].supersedes_event_id is None


def test_in_time_facts_read_after_their_breaches_meet_them_and_name_the_breach() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    fired = case.fire_at(at(2026, 3, 2, 11, 30))  # accept due 11:00: breached (the accept was on its way)
    assert ev(fired) == [(WARN, A, 1), (BREACH, A, 1)]
    breach = fired[1]
    assert case.rows[(A, 1)].breach_event_id == str(breach.event_id)
    events = case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 10, 59)), now=at(2026, 3, 2, 11, 40))
    assert ev(events) == [(MET, A, 1)]
    assert events[0].supersedes_event_id == str(breach.event_id)
    row = case.rows[(A, 1)]
    assert (row.state, row.settled_at, row.overdue_open) == (DeadlineState.MET, at(2026, 3, 2, 10, 59), False)
    assert final_word(case, (A, 1)) == [MET]
    # Once met, nothing changes it: the same stage done again, or the scheduler, fire nothing.
    assert case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 10, 58)), now=at(2026, 3, 2, 11, 50)) == []
    assert case.fire_at(at(2026, 3, 2, 12)) == []


def test_the_fact_time_decides_not_the_read_time() -> None:
    # Read days later, a resolve dated before the due is met (and the event is sent now, marked late) ...
    case = Case()
    case.apply(received())
    case.apply(assigned())
    due = case.due((R, 1))
    events = case.apply(fact(FactKind.RESOLVE, due), now=due + timedelta(days=3))
    assert [(e.type, e.stage) for e in events if e.stage is R] == [(MET, R)]
    # ... and one dated a second after the due is breached, however early it is read.
    late = Case()
    late.apply(received())
    late.apply(assigned())
    events = late.apply(fact(FactKind.RESOLVE, due + timedelta(seconds=1)), now=due + timedelta(seconds=1))
    assert [(e.type, e.stage) for e in events if e.stage is R] == [(BREACH, R)]
    assert late.rows[(R, 1)].breach_event_id == str(next(e for e in events if e.type is BREACH).event_id)


def test_a_breach_waits_for_the_horizon_and_a_warning_does_not() -> None:
    row = DeadlineRow(CID, A, 1, "spj", MON, at(2026, 3, 2, 11), at(2026, 3, 2, 10, 36))
    zero = timedelta(0)
    # Before the due, the warning goes out on the wall clock, whatever sla has read.
    warning = fire(row, at(2026, 3, 2, 10, 40), late_after=zero, horizon=None)
    assert warning is not None
    assert warning.kind is WARN
    # Past the due: held while nothing is known (None) or sla has not read up to the due; fired once it has.
    after = at(2026, 3, 2, 11, 0, 30)
    assert fire(row, after, late_after=zero, horizon=None) is None
    assert fire(row, after, late_after=zero, horizon=at(2026, 3, 2, 10, 59, 59)) is None
    breach = fire(row, after, late_after=timedelta(seconds=10), horizon=at(2026, 3, 2, 11), grace=timedelta(seconds=25))
    assert breach is not None
    assert breach.kind is BREACH
    assert breach.row.breach_event_id == str(breach.event_id)
    # Meant for the due plus the grace: 30 s after the due is 5 s late, not late against 10 s.
    assert not breach.late
    unheld = fire(row, after, late_after=timedelta(seconds=10), horizon=after)
    assert unheld is not None
    assert unheld.late


def test_callback_deadlines_belong_to_the_hotline() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned(lead="scj"))
    case.apply(fact(FactKind.RESOLVE, at(2026, 3, 3, 10), department="scj"))
    assert case.rows[(C, 1)].department == HOTLINE
    case.fire_at(at(2026, 3, 20))
    (breach,) = [e for e in case.events if e.type is BREACH and e.stage is C]
    assert breach.department == HOTLINE


def test_contact_and_resolve_then_callback_from_the_resolve() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 9, 30)))
    assert ev(case.apply(fact(FactKind.CONTACT, at(2026, 3, 3, 9)))) == [(MET, F, 1)]
    events = case.apply(fact(FactKind.RESOLVE, at(2026, 3, 4, 10)))
    assert ev(events) == [(MET, R, 1), (SET, C, 1)]
    assert case.due((C, 1)) == at(2026, 3, 6, 17, 30)
    assert events[1].department == HOTLINE  # the 12345 hotline makes the callbacks (contract 6.1)


def test_resolve_without_first_contact_supersedes_it() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 9, 30)))
    case.apply(fact(FactKind.RESOLVE, at(2026, 3, 2, 15)))
    assert case.rows[(F, 1)].state is DeadlineState.SUPERSEDED
    case.fire_at(at(2026, 3, 20))
    assert (BREACH, F, 1) not in case.kinds()
    assert (BREACH, C, 1) in case.kinds()  # nobody called back


# --- closing, reopening, returning ------------------------------------------------------------------------------


def resolved_case() -> Case:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 9, 30)))
    case.apply(fact(FactKind.CONTACT, at(2026, 3, 2, 10)))
    case.apply(fact(FactKind.RESOLVE, at(2026, 3, 3, 10)))
    return case


def test_closing_meets_the_callback_and_nothing_ever_fires_after() -> None:
    case = resolved_case()
    assert ev(case.apply(fact(FactKind.CLOSED, at(2026, 3, 4, 10)))) == [(MET, C, 1)]
    assert case.case.closed
    assert all(not r.live for r in case.rows.values())
    assert case.fire_at(at(2027, 1, 1)) == []
    # A callback after closing, a late resolve, a new assignment: ignored, nothing comes back to life.
    for late in (
        fact(FactKind.REOPENED, at(2026, 3, 5), 2),
        fact(FactKind.RESOLVE, at(2026, 3, 5)),
        assigned(at(2026, 3, 5), 2),
    ):
        assert case.apply(late) == []
    assert case.codes.count("ignored_closed") == 3


def test_closing_a_case_with_an_open_breach_settles_it() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    case.fire_at(at(2026, 3, 2, 12))
    assert case.rows[(A, 1)].overdue_open
    case.apply(fact(FactKind.CLOSED, at(2026, 3, 2, 13)))
    assert not any(r.overdue_open for r in case.rows.values())


def test_reopening_starts_a_new_resolve_window_and_the_old_one_stays_final() -> None:
    case = resolved_case()
    reopened_at = at(2026, 3, 4, 15)
    events = case.apply(fact(FactKind.REOPENED, reopened_at, 2))
    assert ev(events) == [(MET, C, 1), (SET, R, 2)]
    assert case.rows[(R, 1)].state is DeadlineState.MET
    assert case.due((R, 2)) == at(2026, 3, 11, 17, 30)
    events = case.apply(assigned(at(2026, 3, 4, 15, 5), 2))
    assert ev(events) == [(SET, A, 2), (SET, F, 2)]  # same lead: the resolve deadline is not re-announced
    case.fire_at(at(2026, 3, 30))
    breaches = [(s, r) for k, s, r in case.kinds() if k is BREACH]
    assert breaches == [(A, 2), (F, 2), (R, 2)]


def test_return_supersedes_that_round_and_keeps_the_resolve_clock() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    resolve_due = case.due((R, 1))
    assert case.apply(fact(FactKind.RETURN, at(2026, 3, 2, 10), 2)) == []
    assert case.rows[(A, 1)].state is DeadlineState.SUPERSEDED
    assert case.rows[(F, 1)].state is DeadlineState.SUPERSEDED
    events = case.apply(assigned(at(2026, 3, 2, 10, 5), 2, lead="scj"))
    assert ev(events) == [(SET, A, 2), (SET, F, 2), (SET, R, 1)]
    assert events[2].department == "scj"
    assert events[2].due_at == resolve_due


def test_new_round_assignment_before_the_return_arrives_supersedes_the_old_round() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    case.apply(assigned(at(2026, 3, 2, 10), 2, lead="scj"))
    assert case.rows[(A, 1)].state is DeadlineState.SUPERSEDED
    assert case.apply(fact(FactKind.RETURN, at(2026, 3, 2, 9, 55), 2)) == []
    assert case.rows[(A, 2)].live


def test_a_return_racing_the_accept_breach() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    case.fire_at(at(2026, 3, 2, 11))  # the breach commits first
    case.apply(fact(FactKind.RETURN, at(2026, 3, 2, 10, 59), 2))
    assert case.kinds((A, 1)) == [(SET, A, 1), (WARN, A, 1), (BREACH, A, 1)]
    assert not case.rows[(A, 1)].overdue_open  # the return handed the case back: no longer open


# --- pauses and extensions --------------------------------------------------------------------------------------


def test_pause_stops_the_clocks_and_resume_moves_them() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 9, 30)))
    assert case.apply(fact(FactKind.PAUSE, at(2026, 3, 3, 10))) == []
    assert case.rows[(R, 1)].state is DeadlineState.PAUSED
    assert case.rows[(F, 1)].state is DeadlineState.PAUSED
    assert case.fire_at(at(2026, 3, 20)) == []  # a paused clock fires nothing
    events = case.apply(fact(FactKind.RESUME, at(2026, 3, 3, 14)))  # 2.5 working hours paused
    assert ev(events) == [(SET, F, 1), (SET, R, 1)]
    assert case.due((R, 1)) == at(2026, 3, 10, 11)
    assert case.due((F, 1)) == at(2026, 3, 4, 11)


def test_pause_after_the_due_does_not_stop_a_late_clock() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 9, 30)))
    case.apply(fact(FactKind.CONTACT, at(2026, 3, 2, 9, 40)))
    case.apply(fact(FactKind.PAUSE, at(2026, 3, 10, 9)), now=at(2026, 3, 10, 9))  # resolve was due 3-9 17:30
    assert case.rows[(R, 1)].state is DeadlineState.PENDING
    assert (BREACH, R, 1) in ev(case.fire_at(at(2026, 3, 10, 9)))


def test_resolve_while_paused_is_in_time() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 9, 30)))
    case.apply(fact(FactKind.PAUSE, at(2026, 3, 3, 10)))
    events = case.apply(fact(FactKind.RESOLVE, at(2026, 3, 20)))
    assert (MET, R, 1) in ev(events)


def test_deadline_set_during_a_pause_waits_for_the_resume() -> None:
    case = Case()
    case.apply(received())
    case.apply(fact(FactKind.PAUSE, at(2026, 3, 2, 10)))
    assert ev(case.apply(assigned(at(2026, 3, 2, 11)))) == []
    assert case.rows[(A, 1)].state is DeadlineState.PAUSED
    events = case.apply(fact(FactKind.RESUME, at(2026, 3, 2, 15)))
    assert ev(events) == [(SET, A, 1), (SET, F, 1), (SET, R, 1)]
    assert case.due((A, 1)) == at(2026, 3, 2, 17)


def test_extension_moves_the_resolve_deadline_and_only_the_new_one_fires() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 9, 30)))
    case.apply(fact(FactKind.CONTACT, at(2026, 3, 2, 9, 40)))
    old_due = case.due((R, 1))
    events = case.apply(fact(FactKind.EXTENSION, at(2026, 3, 5, 10), extension_days=3, department="yshj"))
    assert ev(events) == [(SET, R, 1)]
    assert events[0].due_at == at(2026, 3, 12, 17, 30)
    fired = case.fire_at(at(2026, 3, 20))
    assert [(e.type, e.due_at) for e in fired] == [(WARN, events[0].due_at), (BREACH, events[0].due_at)]
    assert all(e.due_at != old_due for e in fired)


def test_extension_after_the_warning_rearms_it_at_the_new_80_percent() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned(lead=TRIAGE))
    assert ev(case.fire_at(at(2026, 3, 7))) == [(WARN, R, 1)]
    case.apply(fact(FactKind.EXTENSION, at(2026, 3, 7), extension_days=5))
    fired = case.fire_at(at(2026, 3, 30))
    assert ev(fired) == [(WARN, R, 1), (BREACH, R, 1)]


def test_extension_after_the_breach_brings_nothing_back() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    case.fire_at(at(2026, 3, 10))
    assert case.apply(fact(FactKind.EXTENSION, at(2026, 3, 10), extension_days=3)) == []
    assert case.rows[(R, 1)].state is DeadlineState.BREACHED
    assert "already_final" in case.codes


# --- the scheduler ----------------------------------------------------------------------------------------------


def test_warning_at_80_percent_then_breach_escalated() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    warn, breach = case.fire_at(at(2026, 3, 2, 11))
    assert (warn.type, warn.stage, warn.late, warn.escalate_to) == (WARN, A, False, None)
    assert (breach.type, breach.escalate_to, breach.late) == (BREACH, ESCALATE_TO, False)
    assert warn.causation_id == breach.causation_id == case.rows[(A, 1)].set_event_id


def test_back_from_a_downtime_only_the_breach_goes_out_marked_late() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    fired = case.fire_at(at(2026, 3, 2, 15), on_time=False)
    assert ev(fired) == [(BREACH, A, 1)]
    assert fired[0].late
    assert case.fire_at(at(2026, 3, 2, 16), on_time=False) == []  # once


def test_a_late_warning_alone_is_marked_late() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    fired = case.fire_at(at(2026, 3, 2, 10, 50), on_time=False)  # warn 10:36, due 11:00
    assert ev(fired) == [(WARN, A, 1)]
    assert fired[0].late


def test_fire_is_nothing_before_time_and_nothing_for_final_rows() -> None:
    row = DeadlineRow(CID, A, 1, "spj", MON, at(2026, 3, 2, 11), at(2026, 3, 2, 10, 36))
    assert fire(row, at(2026, 3, 2, 10), late_after=timedelta(0)) is None
    for state in (DeadlineState.PAUSED, DeadlineState.MET, DeadlineState.BREACHED, DeadlineState.SUPERSEDED):
        from dataclasses import replace

        assert fire(replace(row, state=state), at(2026, 3, 3), late_after=timedelta(0)) is None


def test_complaint_received_long_ago_breaches_at_once() -> None:
    case = Case()
    case.apply(received(at(2026, 1, 5, 9)), now=MON)
    fired = case.fire_at(MON, on_time=False)
    assert ev(fired) == [(BREACH, R, 1)]
    assert fired[0].late


def test_unknown_year_is_reported_and_counted_as_weekdays() -> None:
    told: list[int] = []
    calendar = WorkingCalendar.from_sources(on_unknown_year=told.append)
    out = apply_fact(
        open_case(CID, "p"), {}, received(at(2031, 3, 3, 10)), policy=SlaPolicy(),
        rules=ClockRules(calendar), now=at(2031, 3, 3, 10),
    )  # fmt: skip
    assert told == [2031]
    assert out.deadlines[(R, 1)].due_at == at(2031, 3, 10, 17, 30)


# --- out of order -----------------------------------------------------------------------------------------------


def test_facts_before_received_are_parked_then_applied_in_order() -> None:
    case = Case()
    assert case.apply(assigned(at(2026, 3, 2, 9, 1))) == []
    assert case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 9, 20))) == []
    assert case.codes == ["parked", "parked"]
    assert len(case.case.parked) == 2
    events = case.apply(received(at(2026, 3, 2, 9)))
    assert ev(events) == [(SET, R, 1), (SET, A, 1), (SET, F, 1), (SET, R, 1), (MET, A, 1)]
    assert case.case.parked == ()


def test_accept_before_its_assignment_waits_for_it() -> None:
    case = Case()
    case.apply(received())
    assert case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 9, 30))) == []
    assert case.codes == ["parked"]
    events = case.apply(assigned(at(2026, 3, 2, 9, 10)))
    assert ev(events)[-1] == (MET, A, 1)


def test_stale_and_duplicate_assignments_change_nothing() -> None:
    case = Case()
    case.apply(received())
    first = assigned()
    case.apply(first)
    assert case.apply(first.model_copy(update={"event_id": str(uuid4())})) == []  # same assignment again
    case.apply(assigned(at(2026, 3, 2, 10), 2, lead="scj"))
    assert case.apply(assigned(at(2026, 3, 2, 11), 1, lead="jrb")) == []  # an older round
    assert case.codes == ["duplicate", "stale"]
    assert case.rows[(A, 1)].state is DeadlineState.SUPERSEDED


def test_resolve_before_accept_closes_the_round_and_a_late_accept_revives_nothing() -> None:
    case = Case()
    case.apply(received())
    case.apply(assigned())
    case.apply(fact(FactKind.RESOLVE, at(2026, 3, 2, 10)))
    assert case.rows[(A, 1)].state is DeadlineState.SUPERSEDED
    assert case.apply(fact(FactKind.ACCEPT, at(2026, 3, 2, 9, 50))) == []
    assert case.rows[(A, 1)].state is DeadlineState.SUPERSEDED
    assert case.apply(assigned(at(2026, 3, 2, 11))) == []  # round 1 is over


def test_duplicates_of_one_fact_kind_are_ignored() -> None:
    case = resolved_case()
    assert case.apply(fact(FactKind.RESOLVE, at(2026, 3, 3, 11))) == []
    assert case.apply(fact(FactKind.RESUME, at(2026, 3, 3, 11))) == []
    assert case.apply(received()) == []
    assert case.codes == ["duplicate", "duplicate", "duplicate"]


# --- batches and policies ---------------------------------------------------------------------------------------


def test_fold_batch_groups_by_case_and_keeps_each_case_on_its_own_policy() -> None:
    old, new = SlaPolicy(), SlaPolicy(accept=Window.working_hours(4))
    other = "hotline:TL-2"
    known = open_case(CID, "old").model_copy(update={"received_at": MON, "category": "other", "urgency": "normal"})
    facts = [assigned(), received().model_copy(update={"complaint_id": other}),
             assigned().model_copy(update={"complaint_id": other})]  # fmt: skip
    out = fold_batch(
        {CID: known}, {}, facts, policies={"old": old, "new": new}, current_policy_id="new", rules=RULES, now=MON
    )
    assert out.cases[CID].policy_id == "old"
    assert out.cases[other].policy_id == "new"
    by_case = {(r.complaint_id, r.stage): r.due_at for r in out.deadlines}
    assert by_case[(CID, A)] == at(2026, 3, 2, 11)  # 2 hours: the policy the case opened under
    assert by_case[(other, A)] == at(2026, 3, 2, 14, 30)  # 4 hours: the policy in force when it opened


def test_the_same_facts_give_the_same_events() -> None:
    facts = [received(), assigned(), fact(FactKind.ACCEPT, at(2026, 3, 2, 10)), fact(FactKind.PAUSE, MON)]
    runs = []
    for _ in range(2):
        case = Case()
        for f in facts:
            case.apply(f)
        runs.append([e.model_dump() for e in case.events])
    assert runs[0] == runs[1]


# --- from the wire ----------------------------------------------------------------------------------------------


def lifecycle(from_state: CaseState | None, to_state: CaseState, cause: str, **extra: object) -> LifecycleChanged:
    return LifecycleChanged.model_validate(
        {"occurred_at": MON, "complaint_id": CID, "from_state": from_state, "to_state": to_state, "cause": cause,
         "at": MON, **extra}
    )  # fmt: skip


S = CaseState


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (lifecycle(S.RECEIVED, S.ASSIGNED, "assigned"), None),
        (lifecycle(S.RETURNED, S.TRIAGE, "assigned"), None),
        (lifecycle(S.TRIAGE, S.ASSIGNED, "uphold_return"), None),
        (lifecycle(S.ASSIGNED, S.ACCEPTED, "accept"), FactKind.ACCEPT),
        (lifecycle(S.ACCEPTED, S.IN_PROGRESS, "contact"), FactKind.CONTACT),
        (lifecycle(S.IN_PROGRESS, S.PAUSED, "pause"), FactKind.PAUSE),
        (lifecycle(S.PAUSED, S.IN_PROGRESS, "resume"), FactKind.RESUME),
        (lifecycle(S.PAUSED, S.ACCEPTED, "something_new"), FactKind.RESUME),
        (lifecycle(S.ACCEPTED, S.RETURNED, "return", round=2), FactKind.RETURN),
        (lifecycle(S.IN_PROGRESS, S.RESOLVED, "resolve"), FactKind.RESOLVE),
        (lifecycle(S.RESOLVED, S.CLOSED, "callback"), FactKind.CLOSED),
        (lifecycle(S.RESOLVED, S.REOPENED, "callback", round=2), FactKind.REOPENED),
        (lifecycle(S.IN_PROGRESS, S.IN_PROGRESS, "request_extension", extension_days=3), None),
        (lifecycle(S.IN_PROGRESS, S.IN_PROGRESS, "approve_extension", extension_days=3), FactKind.EXTENSION),
        (lifecycle(S.IN_PROGRESS, S.IN_PROGRESS, "approve_extension"), None),
        (lifecycle(S.IN_PROGRESS, S.IN_PROGRESS, "reject_extension"), None),
        (lifecycle(S.IN_PROGRESS, S.IN_PROGRESS, "progress"), None),
    ],
)
def test_lifecycle_changes_the_clock_cares_about(change: LifecycleChanged, kind: FactKind | None) -> None:
    got = fact_of_lifecycle(change)
    assert (got.kind if got else None) == kind
    if got is not None:
        assert got.round == change.round
        assert got.event_id == str(change.event_id)


def test_lifecycle_without_at_uses_occurred_at() -> None:
    change = lifecycle(S.ASSIGNED, S.ACCEPTED, "accept").model_copy(update={"at": None})
    got = fact_of_lifecycle(change)
    assert got is not None
    assert got.at == MON


def test_received_and_assigned_facts() -> None:
    rec = ComplaintReceived(
        occurred_at=MON, complaint_id=CID, channel=Channel.HOTLINE, source_id="TL-1", received_at=MON,
        kind=Kind.COMPLAINT, category=Category.FINANCING, title="t", content="c", urgency=Urgency.URGENT,
        region_code="150500",
    )  # fmt: skip
    f = fact_of_received(rec)
    assert (f.kind, f.at, f.category, f.urgency) == (FactKind.RECEIVED, MON, Category.FINANCING, Urgency.URGENT)
    asg = ComplaintAssigned(
        occurred_at=MON, complaint_id=CID, assignment_id="a1", round=2, lead_department="jrb", level="city",
        rule_id="r", reason="x", assigned_at=MON,
    )  # fmt: skip
    g = fact_of_assigned(asg)
    assert (g.kind, g.round, g.department, g.assignment_id) == (FactKind.ASSIGNED, 2, "jrb", "a1")


def test_resolve_deadline_matches_the_policy_math() -> None:
    case = Case()
    case.apply(received(at(2026, 9, 29, 15)))
    expected = resolve_deadline(SlaPolicy(), CALENDAR, at(2026, 9, 29, 15), category=Category.OTHER,
                                urgency=Urgency.NORMAL)  # fmt: skip
    assert expected is not None
    assert case.due((R, 1)) == expected.due_at


# --- properties over arbitrary fact sequences -------------------------------------------------------------------

PROPERTY = settings(max_examples=300, deadline=None, database=None)
KINDS = list(FactKind)


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, object]]:
    """Arbitrary steps: facts of any kind, round and department, in any order (so mostly out of order and often
    refused), with scheduler rounds between them; times only move forward."""
    steps: list[tuple[str, object]] = []
    now = MON
    for _ in range(draw(st.integers(1, 25))):
        now += timedelta(minutes=draw(st.integers(0, 3 * 24 * 60)))
        if draw(st.integers(0, 3)) == 0:
            steps.append(("fire", now))
            continue
        kind = draw(st.sampled_from(KINDS))
        extra: dict[str, object] = {}
        if kind is FactKind.EXTENSION:
            extra["extension_days"] = draw(st.integers(1, 5))
        if kind is FactKind.RECEIVED:
            extra["urgency"] = draw(st.sampled_from(list(Urgency)))
        if kind is FactKind.ASSIGNED:
            extra["assignment_id"] = draw(st.sampled_from(["a1", "a2", "a3", "a4"]))
        # A fact may be reported a little after it happened.
        happened = now - timedelta(minutes=draw(st.integers(0, 120)))
        department = draw(st.sampled_from(["spj", "scj", TRIAGE]))
        steps.append(("fact", fact(kind, happened, draw(st.integers(1, 3)), department, **extra)))
    return steps


def play(steps: list[tuple[str, object]]) -> tuple[Case, list[list[SlaEvent]], list[dict[Key, DeadlineRow]]]:
    case = Case()
    per_step: list[list[SlaEvent]] = []
    snapshots: list[dict[Key, DeadlineRow]] = []
    clock = MON
    for what, item in steps:
        if what == "fire":
            assert isinstance(item, datetime)
            clock = max(clock, item)
            per_step.append(case.fire_at(clock))
        else:
            assert isinstance(item, Fact)
            clock = max(clock, item.at)
            per_step.append(case.apply(item, now=clock))
        snapshots.append(dict(case.rows))
    return case, per_step, snapshots


@PROPERTY
@given(steps=histories())
def test_each_deadline_gets_at_most_one_outcome(steps: list[tuple[str, object]]) -> None:
    case, _, _ = play(steps)
    superseded = [e.supersedes_event_id for e in case.events if e.supersedes_event_id]
    breaches = {str(e.event_id): e for e in case.events if e.type is BREACH}
    assert all(s in breaches for s in superseded)
    assert len(set(superseded)) == len(superseded)
    outcomes = Counter(
        (e.stage, e.round) for e in case.events if e.type in (MET, BREACH) and str(e.event_id) not in superseded
    )
    assert all(n == 1 for n in outcomes.values()), outcomes
    # A met overrides only a breach of the same deadline.
    for e in case.events:
        if e.supersedes_event_id:
            assert (breaches[e.supersedes_event_id].stage, breaches[e.supersedes_event_id].round) == (e.stage, e.round)
    warnings = Counter((e.stage, e.round, e.due_at) for e in case.events if e.type is WARN)
    assert all(n == 1 for n in warnings.values()), warnings


@PROPERTY
@given(steps=histories())
def test_nothing_after_closing(steps: list[tuple[str, object]]) -> None:
    case = Case()
    for what, item in steps:
        was_closed = case.case.closed
        if what == "fire":
            assert isinstance(item, datetime)
            out = case.fire_at(item)
        else:
            assert isinstance(item, Fact)
            out = case.apply(item, now=max(item.at, MON))
        if was_closed:
            assert out == []
            assert all(not r.live for r in case.rows.values())


@PROPERTY
@given(steps=histories())
def test_final_deadlines_never_come_back(steps: list[tuple[str, object]]) -> None:
    _, _, snapshots = play(steps)
    final: dict[Key, DeadlineState] = {}
    for rows in snapshots:
        for key, state in list(final.items()):
            if state is DeadlineState.BREACHED and rows[key].state is DeadlineState.MET:
                final[key] = DeadlineState.MET  # an in-time fact read after the breach: met, superseding it
                continue
            # Only a superseded accept/first_contact may be re-set, for another department in the same round.
            if state is not DeadlineState.SUPERSEDED or key[0] in (R, C):
                assert rows[key].state is state, (key, state, rows[key])
        for key, row in rows.items():
            if not row.live and key not in final:
                final[key] = row.state


@PROPERTY
@given(steps=histories())
def test_events_follow_a_deadline_set_and_rows_are_consistent(steps: list[tuple[str, object]]) -> None:
    case, _, _ = play(steps)
    announced: set[Key] = set()
    for e in case.events:
        if e.type is SET:
            announced.add((e.stage, e.round))
        else:
            assert (e.stage, e.round) in announced, e
        assert (e.escalate_to == ESCALATE_TO) == (e.type is BREACH)
        assert e.occurred_at.tzinfo is not None
    for row in case.rows.values():
        assert (row.next_fire_at is not None) == (row.state is DeadlineState.PENDING)
        assert row.warn_at <= row.due_at
    assert len({e.event_id for e in case.events}) == len(case.events)


@PROPERTY
@given(steps=histories())
def test_the_fold_is_deterministic(steps: list[tuple[str, object]]) -> None:
    first, _, _ = play(steps)
    second, _, _ = play(steps)
    assert [e.model_dump() for e in first.events] == [e.model_dump() for e in second.events]
    assert first.case == second.case


def test_parked_facts_are_bounded() -> None:
    case = Case()
    for minute in range(60):
        case.apply(fact(FactKind.PAUSE, MON + timedelta(minutes=minute)))
    assert len(case.case.parked) == 50
    assert case.codes.count("parked_dropped") == 10


def test_utc_in_utc_out() -> None:
    case = Case()
    case.apply(received(datetime(2026, 3, 2, 1, tzinfo=UTC)))
    assert case.rows[(R, 1)].due_at.utcoffset() == timedelta(0)


@PROPERTY
@given(
    # Any text an event can hold: no NUL, which every message refuses when read (shared/events/base.py), and no
    # lone surrogate, which is no UTF-8 text (none comes from the database or a message).
    complaint_id=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40),
    department=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20),
    stage=st.sampled_from(list(Stage)),
    round_=st.integers(1, 50),
    due=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(LOCAL_TZ)),
    warn_before=st.integers(0, 10**6),
    after=st.integers(-(10**6), 10**6),
    set_event_id=st.none() | st.uuids().map(str),
)
def test_the_direct_json_of_a_firing_is_the_event(
    complaint_id: str,
    department: str,
    stage: Stage,
    round_: int,
    due: datetime,
    warn_before: int,
    after: int,
    set_event_id: str | None,
) -> None:
    warn = due - timedelta(seconds=warn_before, microseconds=warn_before % 7)
    row = DeadlineRow(complaint_id, stage, round_, department, warn, due, warn, set_event_id=set_event_id)
    firing = fire(row, warn + timedelta(seconds=warn_before + after if after > 0 else 0), late_after=RULES.late_after)
    assert firing is not None
    assert SlaEvent.model_validate_json(firing.payload()) == firing.event
    assert firing.event.model_dump_json().encode() == firing.payload()


def test_firing_ids_are_uuid5_of_what_fired() -> None:
    from uuid import uuid5

    from services.sla.clockwork import _IDS

    row = DeadlineRow(CID, A, 2, "spj", MON, at(2026, 3, 2, 11), at(2026, 3, 2, 10, 36))
    firing = fire(row, at(2026, 3, 2, 12), late_after=timedelta(0))
    assert firing is not None
    micros = (firing.target - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert firing.event_id == uuid5(_IDS, f"{CID}/accept/2/breached/{micros}")


@st.composite
def prompt_cases(draw: st.DrawFn) -> list[tuple[str, object]]:
    """A case handled promptly through the state machine's own order (accept, contact, maybe a pause, maybe an
    extension, resolve, then a callback that closes it or reopens it for another round), every step within the
    hour, with the scheduler running between steps."""
    when = MON + timedelta(minutes=draw(st.integers(0, 5 * 24 * 60)))
    steps: list[tuple[str, object]] = [("fact", received(when, draw(st.sampled_from(list(Urgency)))))]

    def step(kind: FactKind, round_: int, **extra: object) -> None:
        nonlocal when
        when += timedelta(seconds=draw(st.integers(1, 900)))
        steps.append(("fire", when))
        steps.append(("fact", fact(kind, when, round_, **extra)))

    for round_ in range(1, draw(st.integers(1, 3)) + 1):
        if round_ > 1:
            step(FactKind.REOPENED, round_)
        when += timedelta(seconds=draw(st.integers(1, 60)))
        steps.append(("fact", assigned(when, round_)))
        step(FactKind.ACCEPT, round_)
        step(FactKind.CONTACT, round_)
        if draw(st.booleans()):
            step(FactKind.PAUSE, round_)
            step(FactKind.RESUME, round_)
        if draw(st.booleans()):
            step(FactKind.EXTENSION, round_, extension_days=draw(st.integers(1, 3)))
        step(FactKind.RESOLVE, round_)
    step(FactKind.CLOSED, round_)
    steps.append(("fire", when + timedelta(days=60)))
    return steps


@PROPERTY
@given(steps=prompt_cases())
def test_a_case_handled_promptly_meets_every_deadline_and_never_warns(steps: list[tuple[str, object]]) -> None:
    case, _, _ = play(steps)
    assert [e for e in case.events if e.type in (WARN, BREACH)] == []
    met = {(e.stage, e.round) for e in case.events if e.type is MET}
    rounds = max(r for _, r in met)
    expected = {(s, r) for r in range(1, rounds + 1) for s in (A, F, R, C)}
    assert met == expected
    assert case.case.closed
    assert all(not r.live for r in case.rows.values())
