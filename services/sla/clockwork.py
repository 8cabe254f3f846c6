"""The clock's decisions (contract 7): what each fact does to a case's deadlines, and what a deadline that falls due
fires. Pure: the policy, the calendar and `now` are arguments; no I/O, no system clock, deterministic event ids.

A case's deadlines are keyed by (stage, round):

- resolve (办结): one per resolve window; round 1 counted from `received_at`, and round r counted from the
  reopening (重办) that started round r. A return (退单) keeps the window running; its department follows the case.
- accept (签收) and first_contact (首次联系): one per assignment round, counted from the assignment, for the lead
  department; the triage desk gets none (it places cases, it never accepts them).
- callback (回访): one per resolve, counted from the resolve action, in the round of that resolve; it belongs to
  the 12345 hotline (`hotline`), which makes the callbacks, not to the department that resolved.

Rules, as built (docs/sla.md explains each):

- A deadline is *live* (pending, or paused while the case is paused) until it is met, breached or superseded;
  those three are final: nothing brings a deadline back to life.
- Deadlines are judged by event time. The fact that completes a stage meets a live deadline if it happened
  (`at`) no later than the due, or while the clock was stopped; otherwise that same fact breaches it (once, as
  the scheduler would have). The scheduler holds a breach until sla has read everything published up to the
  due plus a grace (`fire`'s `horizon`); a fact that happened in time but was read after its breach went out
  (lag beyond the grace) still meets the deadline, and its `met` names the breach it supersedes
  (`supersedes_event_id`). A fact that happened after the due only *settles* a breached deadline (no longer
  counted as overdue and open). So a deadline's final word is one `met` or one `breached`.
- `deadline_set` goes out when a deadline starts running, when its due moves (pause/resume, extension), and
  when the department holding it changes (the resolve deadline follows the case from department to department).
- A pause stops every live clock whose due it precedes; a resume moves those dues by the paused working time.
  An approved extension moves the live resolve deadline by its working days. A warning already sent is sent
  again only if the move puts the 80% point later.
- A new assignment round, a return, a resolve or a reopening supersedes the live accept and first_contact
  deadlines of the rounds it ends; a reopening supersedes a live resolve deadline of an older window; closing
  supersedes everything live. After closing every fact is ignored: no breach for a closed case.
- Facts that arrive before they can be understood are parked on the case and applied when their prerequisite
  arrives: anything before `complaint.received` (the category and urgency choose the windows), and an accept or
  first contact before the assignment of its round. Facts about a round already over are ignored as stale.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import EllipsisType
from typing import Any, Final, Protocol
from uuid import UUID, uuid5

from pydantic import BaseModel, ConfigDict, Field

from services.sla.policy import Deadline, SlaPolicy, compute_deadline
from shared.calendar import WorkingCalendar
from shared.domain import Category, Urgency
from shared.events import CaseState, ComplaintAssigned, ComplaintReceived, LifecycleChanged, SlaEvent
from shared.events.base import UtcDatetime
from shared.events.sla import SlaEventType, Stage

ESCALATE_TO: Final = "yshj"
"""The supervising bureau (市营商环境建设监督局): every breach is escalated to it."""
TRIAGE: Final = "triage"
"""The 12345 manual triage desk (派单席): it holds cases but never accepts them, so it gets no accept deadlines."""
HOTLINE: Final = "hotline"
"""The 12345 hotline's callback desk (12345 热线回访): it makes the callbacks, so the callback stage is its own."""
UNASSIGNED: Final = "unassigned"
"""The department of a resolve deadline before the case's first assignment is known."""
MAX_PARKED: Final = 50
"""Parked facts kept per case; beyond this the oldest is dropped (and counted), so one case cannot grow unbounded."""

_IDS: Final = UUID("6d1c2a8e-5b0f-4c47-9a43-53a1a0c1b7e2")
"""Namespace of the clock's event ids: uuid5 of what caused the event, so the same input gives the same ids."""

Key = tuple[Stage, int]
"""A deadline's identity within its case: (stage, round)."""


class FactKind(StrEnum):
    """The facts the clock cares about, whichever topic brought them."""

    RECEIVED = "received"
    ASSIGNED = "assigned"
    ACCEPT = "accept"
    CONTACT = "contact"
    PAUSE = "pause"
    RESUME = "resume"
    RETURN = "return"
    RESOLVE = "resolve"
    EXTENSION = "extension"
    CLOSED = "closed"
    REOPENED = "reopened"


class Fact(BaseModel):
    """One fact about a case, reduced to what the clock needs (kept as JSON while parked)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: FactKind
    event_id: str = Field(description="The event that carried it: the causation of what the clock emits.")
    complaint_id: str
    at: UtcDatetime = Field(description="When it happened (received_at, assigned_at, the action's `at`).")
    round: int = Field(default=1, ge=1, description="The case's round after the fact.")
    department: str | None = Field(default=None, description="The lead after an assignment, else who holds it.")
    category: Category | None = None
    urgency: Urgency | None = None
    assignment_id: str | None = None
    extension_days: int | None = Field(default=None, ge=1)


def fact_of_received(event: ComplaintReceived) -> Fact:
    return Fact(
        kind=FactKind.RECEIVED,
        event_id=str(event.event_id),
        complaint_id=event.complaint_id,
        at=event.received_at,
        category=event.category,
        urgency=event.urgency,
    )


def fact_of_assigned(event: ComplaintAssigned) -> Fact:
    return Fact(
        kind=FactKind.ASSIGNED,
        event_id=str(event.event_id),
        complaint_id=event.complaint_id,
        at=event.assigned_at,
        round=event.round,
        department=event.lead_department,
        assignment_id=event.assignment_id,
    )


_S = CaseState
_BY_CAUSE: Final = {
    "accept": FactKind.ACCEPT,
    "contact": FactKind.CONTACT,
    "pause": FactKind.PAUSE,
    "resume": FactKind.RESUME,
    "return": FactKind.RETURN,
    "resolve": FactKind.RESOLVE,
    "approve_extension": FactKind.EXTENSION,
}
_BY_STATE: Final = {
    _S.PAUSED: FactKind.PAUSE,
    _S.RETURNED: FactKind.RETURN,
    _S.RESOLVED: FactKind.RESOLVE,
}


def kind_of_lifecycle(event: LifecycleChanged) -> FactKind | None:
    """Which clock fact a state change is, if any: by the state it reaches for closing and reopening (the cause
    is `callback`), else by its cause, else by the move itself. Assignments come from complaints.assigned."""
    if event.to_state is _S.CLOSED:
        return FactKind.CLOSED
    if event.to_state is _S.REOPENED:
        return FactKind.REOPENED
    kind = _BY_CAUSE.get(event.cause)
    if kind is not None:
        return kind
    if event.from_state is event.to_state:
        return None
    if event.from_state is _S.PAUSED and event.to_state in (_S.ACCEPTED, _S.IN_PROGRESS):
        return FactKind.RESUME
    return _BY_STATE.get(event.to_state)


def fact_of_lifecycle(event: LifecycleChanged) -> Fact | None:
    """The clock fact of a lifecycle change; None when it does not concern the clock (progress, a rejected or a
    requested extension, an assignment, an approval without working days)."""
    kind = kind_of_lifecycle(event)
    if kind is None or (kind is FactKind.EXTENSION and not event.extension_days):
        return None
    return Fact(
        kind=kind,
        event_id=str(event.event_id),
        complaint_id=event.complaint_id,
        at=event.at or event.occurred_at,
        round=event.round,
        department=event.lead_department or event.department,
        extension_days=event.extension_days if kind is FactKind.EXTENSION else None,
    )


class DeadlineState(StrEnum):
    PENDING = "pending"  # the clock runs: it warns, then breaches
    PAUSED = "paused"  # the case is paused before the due: nothing fires until it resumes
    MET = "met"
    BREACHED = "breached"
    SUPERSEDED = "superseded"  # no longer applies (returned, resolved, reopened, closed, moved on)


LIVE: Final = frozenset({DeadlineState.PENDING, DeadlineState.PAUSED})


@dataclass(frozen=True, slots=True)
class DeadlineRow:
    """One deadline as the store keeps it."""

    complaint_id: str
    stage: Stage
    round: int
    department: str
    started_at: datetime
    due_at: datetime
    warn_at: datetime
    state: DeadlineState = DeadlineState.PENDING
    warned_for: datetime | None = None
    """The warn_at whose warning went out; a later warn_at re-arms the warning."""
    settled_at: datetime | None = None
    """When it stopped mattering: met, superseded, or (breached) when the stage was finally done."""
    set_event_id: str | None = None
    """The `deadline_set` that announced its current due: the causation of its warning and breach."""
    breach_event_id: str | None = None
    """The `breached` event that went out for it: what a `met` read later supersedes."""

    @property
    def key(self) -> Key:
        return (self.stage, self.round)

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def overdue_open(self) -> bool:
        """Breached and its stage still not done (the `sla_overdue_open` gauge counts these)."""
        return self.state is DeadlineState.BREACHED and self.settled_at is None

    @property
    def next_fire_at(self) -> datetime | None:
        """When the scheduler must look at it next: its warning if not sent yet (and before the due), else its due."""
        if self.state is not DeadlineState.PENDING:
            return None
        if self.warn_at < self.due_at and (self.warned_for is None or self.warn_at > self.warned_for):
            return self.warn_at
        return self.due_at


@dataclass(frozen=True)
class ClockRules:
    """What the clock needs besides the facts: the calendar (with the working hours) and when a firing is late."""

    calendar: WorkingCalendar
    late_after: timedelta = timedelta(seconds=60)
    """An event fired more than this after its time carries `late: true` (the service was down or behind)."""


@dataclass(frozen=True)
class Note:
    """Why a fact did less than it might have: parked, ignored (closed, stale, duplicate) or nothing to do."""

    code: str
    fact: FactKind
    detail: str


class PauseSpan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    paused_at: UtcDatetime
    resumed_at: UtcDatetime | None = None


class CaseClock(BaseModel):
    """What the clock remembers of a case between facts (kept as JSON on the case's row)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    complaint_id: str
    policy_id: str = Field(description="The SLA policy copied onto the case when the clock first saw it.")
    received_at: UtcDatetime | None = None
    category: Category | None = None
    urgency: Urgency | None = None
    lead_department: str | None = None
    assigned_round: int = Field(default=0, description="The highest assignment round seen.")
    assignment_id: str | None = None
    over_through: int = Field(default=0, description="Accept and first_contact of rounds up to this one are over.")
    resolve_round: int = Field(default=1, description="Round of the running resolve window.")
    resolve_from: UtcDatetime | None = None
    extension_days: int = Field(default=0, description="Working days approved for the running resolve window.")
    resolved: bool = Field(default=False, description="The running resolve window was resolved.")
    closed: bool = False
    pauses: tuple[PauseSpan, ...] = ()
    parked: tuple[Fact, ...] = ()

    @property
    def open_pause(self) -> PauseSpan | None:
        return next((p for p in self.pauses if p.resumed_at is None), None)


def open_case(complaint_id: str, policy_id: str) -> CaseClock:
    """A case the clock has not seen before, under the policy in force now."""
    return CaseClock(complaint_id=complaint_id, policy_id=policy_id)


@dataclass(frozen=True)
class Outcome:
    """What one fact (or a batch of them) did: the case, its deadlines, what changed, what to publish, notes."""

    case: CaseClock
    deadlines: Mapping[Key, DeadlineRow]
    changed: frozenset[Key]
    events: tuple[SlaEvent, ...]
    notes: tuple[Note, ...]


def sla_event(
    kind: SlaEventType,
    row: DeadlineRow,
    *,
    event_id: UUID,
    now: datetime,
    cause: str | None,
    late: bool = False,
    supersedes: str | None = None,
) -> SlaEvent:
    """The `complaint.sla` event about a deadline."""
    return SlaEvent(
        event_id=event_id,
        occurred_at=now,
        complaint_id=row.complaint_id,
        causation_id=cause,
        type=kind,
        stage=row.stage,
        due_at=row.due_at,
        round=row.round,
        department=row.department,
        escalate_to=ESCALATE_TO if kind is SlaEventType.BREACHED else None,
        late=late,
        supersedes_event_id=supersedes,
    )


class _Fold:
    """Applies facts to one case, collecting the changes; the functions below are its only users."""

    def __init__(
        self,
        case: CaseClock,
        deadlines: Mapping[Key, DeadlineRow],
        policy: SlaPolicy,
        rules: ClockRules,
        now: datetime,
    ) -> None:
        self.case, self.rows = case, dict(deadlines)
        self.policy, self.rules, self.now = policy, rules, now
        self.changed: set[Key] = set()
        self.events: list[SlaEvent] = []
        self.notes: list[Note] = []
        self._sequence: Counter[str] = Counter()
        self._handlers: dict[FactKind, Callable[[Fact], bool]] = {
            FactKind.ASSIGNED: self._assigned,
            FactKind.ACCEPT: self._accept,
            FactKind.CONTACT: self._contact,
            FactKind.PAUSE: self._pause,
            FactKind.RESUME: self._resume,
            FactKind.RETURN: self._return,
            FactKind.RESOLVE: self._resolve,
            FactKind.EXTENSION: self._extension,
            FactKind.CLOSED: self._closed,
            FactKind.REOPENED: self._reopened,
        }

    def outcome(self) -> Outcome:
        return Outcome(self.case, dict(self.rows), frozenset(self.changed), tuple(self.events), tuple(self.notes))

    # --- the fold ---------------------------------------------------------------------------------------------

    def apply(self, fact: Fact) -> None:
        if fact.complaint_id != self.case.complaint_id:
            raise ValueError(f"fact {fact.event_id} is about {fact.complaint_id}, not {self.case.complaint_id}")
        if self._dispatch(fact, quiet=False):
            self._unpark()

    def _dispatch(self, fact: Fact, *, quiet: bool) -> bool:
        """Apply a fact; False when it had to be parked."""
        if self.case.closed:
            self._note("ignored_closed", fact, "the case is closed")
            return True
        if fact.kind is FactKind.RECEIVED:
            return self._received(fact)
        if self.case.received_at is None:
            return self._park(fact, "waiting for complaint.received", quiet=quiet)
        if self._handlers[fact.kind](fact):
            return True
        return self._park(fact, f"waiting for the assignment of round {fact.round}", quiet=quiet)

    def _park(self, fact: Fact, why: str, *, quiet: bool) -> bool:
        parked = (*self.case.parked, fact)
        if len(parked) > MAX_PARKED:
            self._note("parked_dropped", parked[0], f"more than {MAX_PARKED} facts parked: the oldest is dropped")
            parked = parked[1:]
        self.case = self.case.model_copy(update={"parked": parked})
        if not quiet:
            self._note("parked", fact, why)
        return False

    def _unpark(self) -> None:
        """Retry parked facts, in the order they came, for as long as one of them goes through."""
        while self.case.parked:
            waiting = self.case.parked
            self.case = self.case.model_copy(update={"parked": ()})
            progressed = False
            for fact in waiting:
                progressed = self._dispatch(fact, quiet=True) or progressed
            if not progressed:
                return

    # --- helpers ----------------------------------------------------------------------------------------------

    def _note(self, code: str, fact: Fact, detail: str) -> None:
        self.notes.append(Note(code, fact.kind, detail))

    def _put(self, row: DeadlineRow) -> None:
        self.rows[row.key] = row
        self.changed.add(row.key)

    def _emit(
        self, kind: SlaEventType, row: DeadlineRow, cause: Fact, *, late: bool = False, supersedes: str | None = None
    ) -> UUID:
        self._sequence[cause.event_id] += 1
        event_id = uuid5(_IDS, f"{cause.event_id}/{self._sequence[cause.event_id]}")
        self.events.append(
            sla_event(kind, row, event_id=event_id, now=self.now, cause=cause.event_id, late=late,
                      supersedes=supersedes)
        )  # fmt: skip
        return event_id

    def _compute(self, stage: Stage, start: datetime, *, ignore_open_pause: bool = False) -> Deadline | None:
        case = self.case
        pauses = [(p.paused_at, p.resumed_at) for p in case.pauses if not (ignore_open_pause and p.resumed_at is None)]
        return compute_deadline(
            self.policy,
            self.rules.calendar,
            stage,
            start,
            category=case.category or Category.OTHER,
            urgency=case.urgency or Urgency.NORMAL,
            pauses=pauses,
            extension_days=case.extension_days if stage is Stage.RESOLVE else 0,
        )

    def _start(self, stage: Stage, round_: int, start: datetime, department: str, cause: Fact) -> None:
        """A new deadline: running (announced) or, when the case is paused, waiting for the resume."""
        deadline = self._compute(stage, start)
        if deadline is None:
            nominal = self._compute(stage, start, ignore_open_pause=True)
            assert nominal is not None  # without an open pause the clock always reaches its due
            row = DeadlineRow(
                self.case.complaint_id, stage, round_, department, start, nominal.due_at, nominal.warn_at,
                DeadlineState.PAUSED,
            )  # fmt: skip
            self._put(row)
            return
        row = DeadlineRow(self.case.complaint_id, stage, round_, department, start, deadline.due_at, deadline.warn_at)
        self._announce(row, cause)

    def _announce(self, row: DeadlineRow, cause: Fact) -> None:
        event_id = self._emit(SlaEventType.DEADLINE_SET, row, cause)
        self._put(replace(row, set_event_id=str(event_id)))

    def _recompute(self, row: DeadlineRow, cause: Fact) -> None:
        """A live deadline after its case's pauses or extension changed."""
        deadline = self._compute(row.stage, row.started_at)
        if deadline is None:
            if row.state is DeadlineState.PENDING:
                self._put(replace(row, state=DeadlineState.PAUSED))
            return
        moved = replace(row, due_at=deadline.due_at, warn_at=deadline.warn_at, state=DeadlineState.PENDING)
        if moved.due_at != row.due_at or row.set_event_id is None:
            self._announce(moved, cause)
        elif moved != row:
            self._put(moved)

    def _meet(self, row: DeadlineRow, fact: Fact) -> None:
        """The stage is done at `fact.at`: met in time, or breached now if the breach has not gone out yet."""
        if row.live:
            if row.set_event_id is None:
                # Set while the case was paused and never announced: announce it, so no met comes out of nowhere.
                self._announce(row, fact)
                row = self.rows[row.key]
            if row.state is DeadlineState.PAUSED or fact.at <= row.due_at:
                met = replace(row, state=DeadlineState.MET, settled_at=fact.at)
                self._put(met)
                self._emit(SlaEventType.MET, met, fact)
            else:
                breached = replace(row, state=DeadlineState.BREACHED, settled_at=fact.at)
                late = self.now - row.due_at > self.rules.late_after
                breach_id = self._emit(SlaEventType.BREACHED, breached, fact, late=late)
                self._put(replace(breached, breach_event_id=str(breach_id)))
        elif row.state is DeadlineState.BREACHED and fact.at <= row.due_at:
            # Done in time, read after the breach went out (sla or the upstream lagged beyond the grace): the
            # fact's own time decides, so the deadline is met after all, and the met names the breach it overrides.
            met = replace(row, state=DeadlineState.MET, settled_at=fact.at)
            self._put(met)
            superseded = row.breach_event_id or str(firing_event_id(row, SlaEventType.BREACHED, row.due_at))
            self._emit(SlaEventType.MET, met, fact, supersedes=superseded)
        elif row.overdue_open:
            self._put(replace(row, settled_at=fact.at))
        else:
            self._note("already_final", fact, f"{row.stage.value} of round {row.round} is already {row.state.value}")

    def _retire(self, row: DeadlineRow, at: datetime) -> None:
        """The deadline no longer applies: superseded if live, settled if breached and still open."""
        if row.live:
            self._put(replace(row, state=DeadlineState.SUPERSEDED, settled_at=at))
        elif row.overdue_open:
            self._put(replace(row, settled_at=at))

    def _rows(self, *stages: Stage, below: int | None = None, through: int | None = None) -> list[DeadlineRow]:
        rows = [r for r in self.rows.values() if r.stage in stages]
        if below is not None:
            rows = [r for r in rows if r.round < below]
        if through is not None:
            rows = [r for r in rows if r.round <= through]
        return sorted(rows, key=lambda r: (r.round, list(Stage).index(r.stage)))

    # --- the facts --------------------------------------------------------------------------------------------

    def _received(self, fact: Fact) -> bool:
        if self.case.received_at is not None:
            self._note("duplicate", fact, "the case was already received")
            return True
        self.case = self.case.model_copy(
            update={
                "received_at": fact.at,
                "category": fact.category or Category.OTHER,
                "urgency": fact.urgency or Urgency.NORMAL,
                "resolve_round": 1,
                "resolve_from": fact.at,
            }
        )
        self._start(Stage.RESOLVE, 1, fact.at, self.case.lead_department or UNASSIGNED, fact)
        return True

    def _assigned(self, fact: Fact) -> bool:
        case, round_, lead = self.case, fact.round, fact.department or UNASSIGNED
        if round_ < case.assigned_round or round_ <= case.over_through:
            self._note("stale", fact, f"round {round_} is over")
            return True
        if round_ == case.assigned_round and fact.assignment_id == case.assignment_id:
            self._note("duplicate", fact, f"assignment {fact.assignment_id} is already known")
            return True
        for row in self._rows(Stage.ACCEPT, Stage.FIRST_CONTACT, below=round_):
            self._retire(row, fact.at)
        self.case = case.model_copy(
            update={"assigned_round": round_, "assignment_id": fact.assignment_id, "lead_department": lead}
        )
        for stage in (Stage.ACCEPT, Stage.FIRST_CONTACT):
            current = self.rows.get((stage, round_))
            if current is not None and (
                current.department == lead or current.state in (DeadlineState.MET, DeadlineState.BREACHED)
            ):
                continue
            if current is not None:
                # Placed on another department within the round (the triage desk): the earlier holder is off the hook.
                self._retire(current, fact.at)
            if lead != TRIAGE:
                self._start(stage, round_, fact.at, lead, fact)
        resolve = self.rows.get((Stage.RESOLVE, self.case.resolve_round))
        if resolve is not None and resolve.live and resolve.department != lead:
            moved = replace(resolve, department=lead)
            if moved.state is DeadlineState.PENDING:
                self._announce(moved, fact)
            else:
                self._put(moved)
        return True

    def _stage_done(self, fact: Fact, stage: Stage) -> bool:
        if fact.round > self.case.assigned_round:
            return False
        row = self.rows.get((stage, fact.round))
        if row is None:
            self._note("no_deadline", fact, f"no {stage.value} deadline in round {fact.round}")
        else:
            self._meet(row, fact)
        return True

    def _accept(self, fact: Fact) -> bool:
        return self._stage_done(fact, Stage.ACCEPT)

    def _contact(self, fact: Fact) -> bool:
        return self._stage_done(fact, Stage.FIRST_CONTACT)

    def _pause(self, fact: Fact) -> bool:
        if self.case.open_pause is not None:
            self._note("duplicate", fact, "the case is already paused")
            return True
        self.case = self.case.model_copy(update={"pauses": (*self.case.pauses, PauseSpan(paused_at=fact.at))})
        for row in [r for r in self._rows(*Stage) if r.live]:
            self._recompute(row, fact)
        return True

    def _close_pause(self, at: datetime) -> bool:
        pauses = self.case.pauses
        if not pauses or pauses[-1].resumed_at is not None:
            return False
        last = pauses[-1]
        closed = last.model_copy(update={"resumed_at": max(at, last.paused_at)})
        self.case = self.case.model_copy(update={"pauses": (*pauses[:-1], closed)})
        return True

    def _resume(self, fact: Fact) -> bool:
        if not self._close_pause(fact.at):
            self._note("duplicate", fact, "the case is not paused")
            return True
        for row in [r for r in self._rows(*Stage) if r.live]:
            self._recompute(row, fact)
        return True

    def _return(self, fact: Fact) -> bool:
        for row in self._rows(Stage.ACCEPT, Stage.FIRST_CONTACT, below=fact.round):
            self._retire(row, fact.at)
        self.case = self.case.model_copy(update={"over_through": max(self.case.over_through, fact.round - 1)})
        return True

    def _resolve(self, fact: Fact) -> bool:
        if self.case.resolved:
            self._note("duplicate", fact, "the case is already resolved")
            return True
        # The work is done: a pause still open ends here (the state machine resumes before resolving).
        if self._close_pause(fact.at):
            for row in [r for r in self._rows(*Stage) if r.live and r.stage is not Stage.RESOLVE]:
                self._recompute(row, fact)
        resolve = self.rows.get((Stage.RESOLVE, self.case.resolve_round))
        if resolve is not None:
            self._meet(resolve, fact)
        for row in self._rows(Stage.ACCEPT, Stage.FIRST_CONTACT, through=fact.round):
            self._retire(row, fact.at)
        self.case = self.case.model_copy(
            update={"resolved": True, "over_through": max(self.case.over_through, fact.round)}
        )
        if (Stage.CALLBACK, fact.round) not in self.rows:
            self._start(Stage.CALLBACK, fact.round, fact.at, HOTLINE, fact)
        return True

    def _extension(self, fact: Fact) -> bool:
        if self.case.resolved:
            self._note("already_final", fact, "the case is resolved: nothing to extend")
            return True
        self.case = self.case.model_copy(
            update={"extension_days": self.case.extension_days + (fact.extension_days or 0)}
        )
        resolve = self.rows.get((Stage.RESOLVE, self.case.resolve_round))
        if resolve is None or not resolve.live:
            state = "missing" if resolve is None else resolve.state.value
            self._note("already_final", fact, f"the resolve deadline is {state}: the extension moves nothing")
            return True
        self._recompute(resolve, fact)
        return True

    def _settle_callbacks(self, fact: Fact) -> None:
        for row in self._rows(Stage.CALLBACK):
            if row.live or row.overdue_open:
                self._meet(row, fact)

    def _closed(self, fact: Fact) -> bool:
        self._settle_callbacks(fact)
        for row in self._rows(*Stage):
            self._retire(row, fact.at)
        dropped = self.case.parked
        for parked in dropped:
            self._note("ignored_closed", parked, "parked fact dropped: the case is closed")
        self.case = self.case.model_copy(update={"closed": True, "parked": ()})
        return True

    def _reopened(self, fact: Fact) -> bool:
        round_ = fact.round
        if round_ <= self.case.resolve_round:
            self._note("stale", fact, f"the resolve window of round {round_} is already known")
            return True
        self._settle_callbacks(fact)
        for row in self._rows(Stage.ACCEPT, Stage.FIRST_CONTACT, below=round_) + self._rows(Stage.RESOLVE):
            self._retire(row, fact.at)
        self._close_pause(fact.at)
        self.case = self.case.model_copy(
            update={
                "resolve_round": round_,
                "resolve_from": fact.at,
                "extension_days": 0,
                "resolved": False,
                "over_through": max(self.case.over_through, round_ - 1),
            }
        )
        department = self.case.lead_department or fact.department or UNASSIGNED
        self._start(Stage.RESOLVE, round_, fact.at, department, fact)
        return True


def apply_fact(
    case: CaseClock,
    deadlines: Mapping[Key, DeadlineRow],
    fact: Fact,
    *,
    policy: SlaPolicy,
    rules: ClockRules,
    now: datetime,
) -> Outcome:
    """What `fact` does to a case (with the deadlines it has), under the case's own policy."""
    return apply_facts(case, deadlines, [fact], policy=policy, rules=rules, now=now)


def apply_facts(
    case: CaseClock,
    deadlines: Mapping[Key, DeadlineRow],
    facts: Iterable[Fact],
    *,
    policy: SlaPolicy,
    rules: ClockRules,
    now: datetime,
) -> Outcome:
    """Facts about one case, in the order they came, folded into one outcome."""
    fold = _Fold(case, deadlines, policy, rules, now)
    for fact in facts:
        fold.apply(fact)
    return fold.outcome()


@dataclass(frozen=True)
class BatchOutcome:
    """A batch of facts over many cases: the cases and deadlines to save, the events to publish (in order)."""

    cases: dict[str, CaseClock] = field(default_factory=dict)
    deadlines: list[DeadlineRow] = field(default_factory=list)
    events: list[SlaEvent] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


def fold_batch(
    cases: Mapping[str, CaseClock],
    deadlines: Mapping[str, Mapping[Key, DeadlineRow]],
    facts: Sequence[Fact],
    *,
    policies: Mapping[str, SlaPolicy],
    current_policy_id: str,
    rules: ClockRules,
    now: datetime,
) -> BatchOutcome:
    """Every fact of a consumed batch, grouped by case (a case's facts keep their order); a case not seen before
    opens under `current_policy_id`. `policies` holds every policy a case refers to."""
    by_case: dict[str, list[Fact]] = {}
    for fact in facts:
        by_case.setdefault(fact.complaint_id, []).append(fact)
    result = BatchOutcome()
    for complaint_id, case_facts in by_case.items():
        case = cases.get(complaint_id) or open_case(complaint_id, current_policy_id)
        outcome = apply_facts(
            case,
            deadlines.get(complaint_id, {}),
            case_facts,
            policy=policies[case.policy_id],
            rules=rules,
            now=now,
        )
        result.cases[complaint_id] = outcome.case
        result.deadlines.extend(outcome.deadlines[key] for key in sorted(outcome.changed, key=_key_order))
        result.events.extend(outcome.events)
        result.notes.extend(outcome.notes)
    return result


_STAGE_RANK: Final = {stage: rank for rank, stage in enumerate(Stage)}  # `list(Stage).index` per key was a hot spot


def _key_order(key: Key) -> tuple[int, int]:
    return (key[1], _STAGE_RANK[key[0]])


# --- the scheduler's decision -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Firing:
    """What a due deadline fires: the row after it, and the warning or breach, meant for `target`, sent at `now`."""

    row: DeadlineRow
    kind: SlaEventType
    target: datetime
    now: datetime
    event_id: UUID
    late: bool

    @property
    def event(self) -> SlaEvent:
        return sla_event(self.kind, self.row, event_id=self.event_id, now=self.now, cause=self.row.set_event_id,
                         late=self.late)  # fmt: skip

    def payload(self) -> bytes:
        """The event as JSON, written directly: the scheduler's hot path (tens of thousands a second after a
        downtime) skips building and validating a model per event. It parses to exactly `self.event`."""
        row = self.row
        return _PAYLOAD.format(
            event_id=self.event_id,
            occurred_at=_rfc3339(self.now),
            complaint_id=_json_text(row.complaint_id),
            causation_id="null" if row.set_event_id is None else _json_text(row.set_event_id),
            type=_KIND_TEXT[self.kind],
            stage=_STAGE_TEXT[row.stage],
            due_at=_rfc3339(row.due_at),
            round=row.round,
            department=_json_text(row.department),
            escalate_to=f'"{ESCALATE_TO}"' if self.kind is SlaEventType.BREACHED else "null",
            late="true" if self.late else "false",
        ).encode("utf-8")


_PAYLOAD: Final = (
    '{{"event_id":"{event_id}","event_type":"complaint.sla","schema_version":1,"occurred_at":"{occurred_at}",'
    '"complaint_id":{complaint_id},"causation_id":{causation_id},"type":"{type}","stage":"{stage}",'
    '"due_at":"{due_at}","round":{round},"department":{department},"escalate_to":{escalate_to},"late":{late},'
    '"supersedes_event_id":null}}'
)
_STAGE_TEXT: Final = {stage: stage.value for stage in Stage}  # enum .value is slow on the hot path
_KIND_TEXT: Final = {kind: kind.value for kind in SlaEventType}
_json_text: Final = json.encoder.encode_basestring  # a JSON string literal; non-ASCII stays as it is (UTF-8)


def _rfc3339(moment: datetime) -> str:
    return _utc(moment).isoformat()[:-6] + "Z"  # UTC's isoformat ends in +00:00


_NO_HOLD: Final = timedelta(0)


def fire(
    row: DeadlineRow,
    now: datetime,
    *,
    late_after: timedelta,
    horizon: datetime | EllipsisType | None = ...,
    grace: timedelta = _NO_HOLD,
) -> Firing | None:
    """The warning or breach of a deadline whose next_fire_at has come; None if nothing is due (or it is held).

    A breach at the due (100% of the window), escalated to `yshj`, after which the deadline is final; a warning at
    `warn_at` (80%) if the due is still ahead. When both are past (the service was down, or the deadline was set
    already late), only the breach goes out: a warning after the breach would tell nobody anything.

    Event time: a breach goes out only once sla has read every fact published up to its due plus the grace, which
    `horizon` says (the scheduler's `BreachHorizon`: None while nothing is known, so every breach waits; left out,
    as in pure tests, sla is taken as caught up to `now`). Until then the row waits, warning included, since a
    warning after the due tells nobody anything. Warnings before the due go out on the wall clock: they are
    advisory, and a department needs them in time. `late` marks an event sent more than `late_after` after the
    time it was meant for (a breach is meant for its due plus `grace`, the hold every breach gets).
    """
    target = row.next_fire_at
    if target is None or target > now:
        return None
    # Rows are built directly rather than with dataclasses.replace: this runs for every deadline that fires.
    if row.due_at <= now:
        if horizon is None or (horizon is not ... and row.due_at > horizon):
            return None  # held: a fact that happened in time may still be on its way
        kind, target, state, warned_for = SlaEventType.BREACHED, row.due_at, DeadlineState.BREACHED, row.warned_for
        meant = target + grace
    else:
        kind, state, warned_for = SlaEventType.WARNING, row.state, row.warn_at
        meant = target
    event_id = firing_event_id(row, kind, target)
    after = DeadlineRow(
        row.complaint_id, row.stage, row.round, row.department, row.started_at, row.due_at, row.warn_at, state,
        warned_for, row.settled_at, row.set_event_id,
        str(event_id) if kind is SlaEventType.BREACHED else row.breach_event_id,
    )  # fmt: skip
    return Firing(after, kind, target, now, event_id, now - meant > late_after)


def firing_event_id(row: DeadlineRow, kind: SlaEventType, target: datetime) -> UUID:
    """The id of the warning or breach the scheduler fires for `row` at `target`: the same row, the same id."""
    micros = (target - _EPOCH) // _MICROSECOND
    return _uuid5(f"{row.complaint_id}/{_STAGE_TEXT[row.stage]}/{row.round}/{_KIND_TEXT[kind]}/{micros}")


# --- the scheduler's hot path: a claimed batch at once ---------------------------------------------------------

DUE_COLUMNS: Final = (
    "id", "complaint_id", "stage", "round", "department", "due_at", "warn_at", "warned_for", "set_event_id",
)  # fmt: skip
"""What the scheduler's claim reads of a row, in this order: all `fire` looks at of a pending row (a claimed row
is pending: its next_fire_at is set, which the table's CHECK allows only then), nothing else."""


class DueRecord(Protocol):
    """A claimed row as the database gives it (an asyncpg Record, or a tuple): the DUE_COLUMNS by position."""

    def __getitem__(self, index: int, /) -> Any: ...


@dataclass(slots=True)
class FiredBatch:
    """What `fire_batch` decided for a claimed batch, ready for the store and the metrics."""

    breached_ids: list[int] = field(default_factory=list)
    breach_event_ids: list[str] = field(default_factory=list)
    """The breach's event id per breached row (its `breach_event_id` from now on)."""
    warned_ids: list[int] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    """One event per firing: its Kafka key (the complaint id) and its JSON, in the order the rows came."""
    meant: list[float] = field(default_factory=list)
    """Per firing, POSIX seconds: when it was meant to go out (a breach: its due plus the grace)."""
    labels: Counter[tuple[SlaEventType, str, str]] = field(default_factory=Counter)
    """Firings per (kind, stage, department)."""

    @property
    def fired(self) -> int:
        return len(self.payloads)


def fire_batch(
    records: Iterable[DueRecord],
    now: datetime,
    *,
    late_after: timedelta,
    horizon: datetime | None,
    grace: timedelta = _NO_HOLD,
) -> FiredBatch:
    """`fire` for every claimed row at once, straight to what the store writes: the same decisions, event ids and
    event JSON, byte for byte (a unit test compares them with `fire` and `Firing.payload` on arbitrary rows), without
    a DeadlineRow, a Firing or a UUID per row. The rows must be pending (the claim reads only those)."""
    out = FiredBatch()
    breached_ids, breach_event_ids, warned_ids = out.breached_ids, out.breach_event_ids, out.warned_ids
    keys, payloads, meant, labels = out.keys, out.payloads, out.meant, out.labels
    head = f'","event_type":"complaint.sla","schema_version":1,"occurred_at":"{_rfc3339(now)}","complaint_id":'
    tails = {
        (kind, late): f',"escalate_to":{escalate},"late":{"true" if late else "false"},"supersedes_event_id":null}}'
        for kind, escalate in ((SlaEventType.BREACHED, f'"{ESCALATE_TO}"'), (SlaEventType.WARNING, "null"))
        for late in (False, True)
    }
    breached, warning = SlaEventType.BREACHED, SlaEventType.WARNING
    breached_text, warning_text = _KIND_TEXT[breached], _KIND_TEXT[warning]
    # Late when now - meant > late_after, i.e. meant < now - late_after (a breach is meant for its due + grace):
    # exact datetime comparisons, as in `fire`, with no arithmetic per row.
    late_warning_before = now - late_after
    late_breach_before = late_warning_before - grace
    grace_s = grace.total_seconds()
    for rec in records:
        due, warn, warned_for = rec[5], rec[6], rec[7]
        # Its warning if not sent yet, else its due (DeadlineRow.next_fire_at of a pending row).
        target = warn if warn < due and (warned_for is None or warn > warned_for) else due
        if target > now:
            continue
        if due <= now:
            if horizon is None or due > horizon:
                continue  # held: a fact that happened in time may still be on its way
            kind, kind_text, target = breached, breached_text, due
            late, meant_s = due < late_breach_before, due.timestamp() + grace_s
        else:
            kind, kind_text = warning, warning_text
            late, meant_s = target < late_warning_before, target.timestamp()
        row_id, complaint_id, stage, round_, department, cause = rec[0], rec[1], rec[2], rec[3], rec[4], rec[8]
        stage_text = _STAGE_TEXT[_STAGES[stage]]  # an unknown stage fails here, as Stage(stage) would
        event_id = _uuid5_text(f"{complaint_id}/{stage_text}/{round_}/{kind_text}/{(target - _EPOCH) // _MICROSECOND}")
        if kind is breached:
            breached_ids.append(row_id)
            breach_event_ids.append(event_id)
        else:
            warned_ids.append(row_id)
        keys.append(complaint_id.encode("utf-8"))
        payloads.append(
            (
                f'{{"event_id":"{event_id}{head}{_json_text(complaint_id)},"causation_id":'
                f'{"null" if cause is None else _json_text(cause)},"type":"{kind_text}","stage":"{stage_text}",'
                f'"due_at":"{_rfc3339(due)}","round":{round_},"department":{_json_text(department)}{tails[kind, late]}'
            ).encode()
        )
        meant.append(meant_s)
        labels[kind, stage_text, department] += 1
    return out


_STAGES: Final = {stage.value: stage for stage in Stage}
_IDS_SHA1: Final = hashlib.sha1(_IDS.bytes, usedforsecurity=False)
_VARIANT: Final = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def _uuid5_text(name: str) -> str:
    """str(uuid5(_IDS, name)), without a UUID: the hex of the SHA-1 with the version and variant bits set."""
    sha = _IDS_SHA1.copy()
    sha.update(name.encode("utf-8"))
    x = sha.hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


def _uuid5(name: str) -> UUID:
    """uuid5(_IDS, name), without uuid5's own overhead (the same value)."""
    return UUID(bytes=hashlib.sha1(_IDS.bytes + name.encode("utf-8"), usedforsecurity=False).digest()[:16], version=5)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)
