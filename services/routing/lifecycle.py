"""The life of a case (contract 3.3, 3.4, 3.6) as a pure state machine: what a department action, a
callback or an assignment does to a case, or why it is refused. No I/O and no clock.

The service folds every fact through these functions and keeps the returned `CaseSnapshot`:

- `assign_case(case, placement)`: a routing decision (or a directive below) places the case.
- `decide_action(case, action)`: a department action (`departments.actions`).
- `decide_callback(case, callback)`: the hotline's callback visit (回访, `hotline.callbacks`).

Each gives `Accepted` (the new snapshot, the lifecycle transitions to publish, and what the service must
do next) or `Refused` (status 403, 409 or 422 and a reason; nothing changes). When `Accepted` carries
`reroute_excluding`, the service routes the complaint with that `exclude` (rules.route_complaint) and
hands the decision to `assign_case`; when it carries `assign_to`, it hands that to `assign_case`; when
`assign_case` accepts, `Accepted.assignment` and `case.round` are the `complaint.assigned` to publish.

Transition table, by the case's effective state ("=" the state stays; anything not listed is refused
with 409):

    received     (waiting for routing)   assign_case → assigned, or triage when the desk leads
    assigned     accept → accepted; return → returned
    accepted     contact → in_progress; pause → paused; return → returned; resolve → resolved;
                 request_extension =; approve_extension / reject_extension = (when one is pending)
    in_progress  progress =; pause → paused; resolve → resolved; request_extension =;
                 approve_extension / reject_extension = (when one is pending)
    paused       resume → the state before the pause; approve_extension / reject_extension =
    resolved     (waiting for the callback)   callback → closed (satisfied or basically satisfied, and
                 resolved) or → reopened (重办: unsatisfied, or not resolved)
    closed       terminal: everything refused
    reopened     (waiting for routing)   assign_case → assigned
    returned     (waiting for routing)   assign_case → assigned, or triage
    triage       uphold_return / overturn_return / reassign = with `assign_to`; assign_case → assigned

Order of checks, so that a refusal names the most basic problem: a fact for another case → 422; a
department with no part in the case (not its lead, an assisting department, one that returned it, the
bureau or the desk) → 403 whatever the state, which it must not learn; a case no department can act on
(received, returned, reopened: waiting for routing; resolved: waiting for the callback; closed: terminal)
→ 409 for any party; the actor's permission → 403; the state table → 409;
missing fields → 422; then the conditions of the action (an extension already asked for this round, none
pending, no return to decide) → 409.

Choices where the contract is silent:
- Who may act: the lead (主办) holds the case and takes every handling action; an assisting department
  (协办) may only report `progress`; `approve_extension` / `reject_extension` belong to the supervising
  bureau `yshj` alone; `uphold_return`, `overturn_return` and `reassign` to the triage desk `triage` alone.
- `contact` (首次联系) needs the case accepted (签收) first: first contact is its own stage with its own
  deadline, and an implicit accept would hide a missed accept deadline. A second `contact` is refused:
  later contacts are `progress`.
- `progress` only in progress (after first contact); `resolve` (办结) from accepted or in progress, not
  while paused (resume first); `return` (退单) only before first contact (assigned or accepted).
- A case assigned to the triage desk counts as state triage whatever its stored state: the desk places
  cases, it never accepts or handles them.
- Rounds: a case starts in round 1; each return and each reopening adds one (contract 3.2), so the
  assignment that follows carries the new round. An assignment made by the triage desk stays in the round
  of the return that brought the case there. The extension allowance resets with each round.
- A second extension request in the same round is refused, whether the first is pending, approved or
  rejected (once per round). `resolve` makes a pending request moot (it is dropped, and a later decision
  is refused); a return drops it too. `yshj` may decide while the case is paused. `approve_extension`
  grants the requested days, or the `working_days` it carries (the bureau may grant fewer or more, 1-10).
- `uphold_return` (the return stands) needs `lead_department`: a department other than the triage desk and
  than the one that returned it (to send it back, overturn). The case keeps the assisting departments it had,
  minus the new lead. `overturn_return` gives the case back to the returning department with the assignment
  it had (that return counts against it in reports). A case that came to the desk by a return must have the
  return decided (uphold or overturn) before the desk can `reassign` it, so that the overturned share is
  right; `reassign` is for cases that reached the desk otherwise (category `other`, nothing fits).
  All three give rule_id `manual`; a department the desk places the case on no longer counts as having
  returned it, so a later return by it excludes it again only from then.
- Reopening (重办) gives the case back to the lead that resolved it, with the same assisting departments,
  level and rule: the department that handled it redoes it in a new round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final, Literal, Protocol

from services.routing.rules import MANUAL_RULE_ID, TRIAGE
from shared.domain import DEPARTMENTS, is_department
from shared.events import ActionType, CallbackResult, CaseState, DepartmentAction

SUPERVISOR: Final = "yshj"
"""The supervising bureau (市营商环境建设监督局): decides extensions."""

Level = Literal["city", "county"]
RefusalStatus = Literal[403, 409, 422]

_S = CaseState
_A = ActionType

ALLOWED_STATES: Final[Mapping[ActionType, frozenset[CaseState]]] = {
    _A.ACCEPT: frozenset({_S.ASSIGNED}),
    _A.CONTACT: frozenset({_S.ACCEPTED}),
    _A.PROGRESS: frozenset({_S.IN_PROGRESS}),
    _A.PAUSE: frozenset({_S.ACCEPTED, _S.IN_PROGRESS}),
    _A.RESUME: frozenset({_S.PAUSED}),
    _A.RETURN: frozenset({_S.ASSIGNED, _S.ACCEPTED}),
    _A.REQUEST_EXTENSION: frozenset({_S.ACCEPTED, _S.IN_PROGRESS}),
    _A.RESOLVE: frozenset({_S.ACCEPTED, _S.IN_PROGRESS}),
    _A.APPROVE_EXTENSION: frozenset({_S.ACCEPTED, _S.IN_PROGRESS, _S.PAUSED}),
    _A.REJECT_EXTENSION: frozenset({_S.ACCEPTED, _S.IN_PROGRESS, _S.PAUSED}),
    _A.UPHOLD_RETURN: frozenset({_S.TRIAGE}),
    _A.OVERTURN_RETURN: frozenset({_S.TRIAGE}),
    _A.REASSIGN: frozenset({_S.TRIAGE}),
}
"""The states in which each action may be taken (the table in the module docstring)."""

_WAITING: Final[Mapping[CaseState, str]] = {
    _S.RECEIVED: "is waiting to be routed",
    _S.RETURNED: "was returned and is waiting to be routed again",
    _S.REOPENED: "was reopened and is waiting to be assigned again",
    _S.RESOLVED: "is resolved and waiting for the callback visit",
    _S.CLOSED: "is closed",
}
_ASSIGNABLE: Final = frozenset({_S.RECEIVED, _S.RETURNED, _S.REOPENED, _S.TRIAGE})
_HELD: Final = frozenset({_S.ASSIGNED, _S.ACCEPTED, _S.IN_PROGRESS, _S.PAUSED, _S.RESOLVED, _S.CLOSED, _S.TRIAGE})
_PAUSABLE: Final = frozenset({_S.ACCEPTED, _S.IN_PROGRESS})

_LEAD_ONLY: Final = frozenset({_A.ACCEPT, _A.CONTACT, _A.PAUSE, _A.RESUME, _A.RETURN, _A.REQUEST_EXTENSION, _A.RESOLVE})
_SUPERVISOR_ONLY: Final = frozenset({_A.APPROVE_EXTENSION, _A.REJECT_EXTENSION})
_TRIAGE_ONLY: Final = frozenset({_A.UPHOLD_RETURN, _A.OVERTURN_RETURN, _A.REASSIGN})

_REQUIRED: Final[Mapping[ActionType, tuple[str, ...]]] = {
    _A.RETURN: ("reason_code", "reason"),
    _A.PAUSE: ("reason",),
    _A.RESOLVE: ("note",),
    _A.REQUEST_EXTENSION: ("working_days",),
    _A.UPHOLD_RETURN: ("lead_department",),
    _A.REASSIGN: ("lead_department",),
}


class Placement(Protocol):
    """What an assignment needs; rules.RoutingDecision and Assignment both have it."""

    @property
    def lead_department(self) -> str: ...
    @property
    def assisting_departments(self) -> tuple[str, ...]: ...
    @property
    def level(self) -> Level: ...
    @property
    def rule_id(self) -> str: ...
    @property
    def reason(self) -> str: ...


@dataclass(frozen=True)
class Assignment:
    """Who holds a case (派单): lead (主办), assisting (协办), level, and the rule that decided."""

    lead_department: str
    assisting_departments: tuple[str, ...] = ()
    level: Level = "city"
    rule_id: str = MANUAL_RULE_ID
    reason: str = ""


@dataclass(frozen=True)
class CaseSnapshot:
    """What the state machine knows of a case between two facts."""

    complaint_id: str
    state: CaseState = CaseState.RECEIVED
    round: int = 1
    lead_department: str | None = None
    assisting_departments: tuple[str, ...] = ()
    level: Level | None = None
    rule_id: str | None = None
    previous_state_before_pause: CaseState | None = None
    extension_requested_this_round: bool = False
    extension_pending: bool = False
    extension_requested_days: int | None = None
    returned_from: Assignment | None = None
    """The assignment the latest return gave up, until the case is placed on a department again."""
    returned_by: frozenset[str] = frozenset()
    """Departments whose returns stand: routing passes them over."""

    def __post_init__(self) -> None:
        if self.round < 1:
            raise ValueError("round starts at 1")
        if (self.state is _S.PAUSED) != (self.previous_state_before_pause is not None):
            raise ValueError("previous_state_before_pause is set exactly when the case is paused")
        if self.previous_state_before_pause is not None and self.previous_state_before_pause not in _PAUSABLE:
            raise ValueError("only an accepted or in-progress case can have been paused")
        if self.extension_pending and not (self.extension_requested_this_round and self.extension_requested_days):
            raise ValueError("a pending extension was requested this round, with its working days")
        if self.state in _HELD and self.lead_department is None:
            raise ValueError(f"a case in state {self.state.value} has a lead department")
        if self.state is _S.TRIAGE and self.lead_department != TRIAGE:
            raise ValueError("a case in state triage is held by the triage desk")
        if self.lead_department is not None and self.lead_department in self.assisting_departments:
            raise ValueError("the lead department cannot also assist")

    @property
    def last_returned_by(self) -> str | None:
        return self.returned_from.lead_department if self.returned_from else None

    @property
    def effective_state(self) -> CaseState:
        """The state the rules apply to: a case assigned to the triage desk is at triage."""
        if self.state is _S.ASSIGNED and self.lead_department == TRIAGE:
            return _S.TRIAGE
        return self.state

    @property
    def awaits_return_verdict(self) -> bool:
        return self.effective_state is _S.TRIAGE and self.returned_from is not None


def new_case(complaint_id: str) -> CaseSnapshot:
    """A complaint just received (受理), before routing."""
    return CaseSnapshot(complaint_id=complaint_id)


@dataclass(frozen=True)
class Transition:
    """One `complaints.lifecycle` change."""

    from_state: CaseState | None
    to_state: CaseState
    cause: str


@dataclass(frozen=True)
class Accepted:
    """The fact is taken: keep `case`, publish `transitions`, then do what the directives say."""

    case: CaseSnapshot
    transitions: tuple[Transition, ...] = ()
    reroute_excluding: frozenset[str] | None = None
    """Route again with these departments excluded, then `assign_case` the decision."""
    assign_to: Assignment | None = None
    """Place the case here (no rules involved): `assign_case(case, assign_to)`."""
    assignment: Assignment | None = None
    """Set by `assign_case`: publish `complaint.assigned` with it and `case.round`."""
    extension_requested_days: int | None = None
    extension_decision: Literal["approved", "rejected"] | None = None
    extension_granted_days: int | None = None
    """Working days the resolve deadline moves by (with `approved`)."""

    @property
    def state(self) -> CaseState:
        return self.case.state


@dataclass(frozen=True)
class Refused:
    """The fact is refused and changes nothing: 403 not this actor's, 409 not in this state, 422 malformed."""

    status: RefusalStatus
    reason: str


Decision = Accepted | Refused


def _name(code: str) -> str:
    return f"{code} ({DEPARTMENTS[code]})" if code in DEPARTMENTS else code


def _level_of(code: str) -> Level:
    return "county" if code.startswith("gov-") else "city"


def _moved(case: CaseSnapshot, new: CaseSnapshot, cause: str) -> Accepted:
    return Accepted(case=new, transitions=(Transition(case.state, new.state, cause),))


# --- assignments -----------------------------------------------------------------------------------------


def assign_case(case: CaseSnapshot, placement: Placement) -> Decision:
    """Place a case that waits for it (received, returned, reopened, at triage) on a lead department."""
    state = case.effective_state
    if state not in _ASSIGNABLE:
        return Refused(409, f"case {case.complaint_id} is {state.value} and held by {case.lead_department}")
    lead = placement.lead_department
    if not is_department(lead):
        return Refused(422, f"unknown lead department {lead!r}")
    if state is _S.TRIAGE and lead == TRIAGE:
        return Refused(409, f"case {case.complaint_id} is already with the triage desk")
    assisting = tuple(dict.fromkeys(code for code in placement.assisting_departments if code != lead))
    unknown = [code for code in assisting if not is_department(code)]
    if unknown:
        return Refused(422, f"unknown assisting department(s): {', '.join(unknown)}")
    assignment = Assignment(lead, assisting, placement.level, placement.rule_id, placement.reason)
    to = _S.TRIAGE if lead == TRIAGE else _S.ASSIGNED
    new = replace(
        case,
        state=to,
        lead_department=lead,
        assisting_departments=assisting,
        level=placement.level,
        rule_id=placement.rule_id,
        previous_state_before_pause=None,
        # A return waits for the desk's verdict only while the case sits at the desk.
        returned_from=case.returned_from if to is _S.TRIAGE else None,
    )
    return Accepted(case=new, transitions=(Transition(case.state, to, "assigned"),), assignment=assignment)


# --- department actions ----------------------------------------------------------------------------------


def _party_to(case: CaseSnapshot, department: str) -> bool:
    """Whether `department` has a part in the case: it leads, assists, returned it, or is the bureau or the desk."""
    return (
        department in (case.lead_department, SUPERVISOR, TRIAGE)
        or department in case.assisting_departments
        or department in case.returned_by
    )


def _permission(case: CaseSnapshot, action: DepartmentAction) -> Refused | None:
    actor, kind = action.department, action.action
    if kind in _SUPERVISOR_ONLY:
        if actor != SUPERVISOR:
            return Refused(403, f"only the supervising bureau {_name(SUPERVISOR)} may {kind.value}")
        return None
    if kind in _TRIAGE_ONLY:
        if actor != TRIAGE:
            return Refused(403, f"only the triage desk {_name(TRIAGE)} may {kind.value}")
        return None
    if actor == case.lead_department:
        return None
    if kind is _A.PROGRESS and actor in case.assisting_departments:
        return None
    if actor in case.assisting_departments:
        return Refused(
            403,
            f"{_name(actor)} assists on case {case.complaint_id} and may only report progress; "
            f"the lead is {case.lead_department}",
        )
    return Refused(403, f"{_name(actor)} does not hold case {case.complaint_id} (lead: {case.lead_department})")


def _missing_field(action: DepartmentAction) -> Refused | None:
    for name in _REQUIRED.get(action.action, ()):
        value = getattr(action, name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return Refused(422, f"{action.action.value} needs the field `{name}`")
    days = action.working_days
    if action.action is _A.REQUEST_EXTENSION and days is not None and not 1 <= days <= 10:
        return Refused(422, "request_extension needs `working_days` between 1 and 10")
    return None


def decide_action(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    """What a department action does to the case, or why it is refused (contract 3.3)."""
    if action.complaint_id != case.complaint_id:
        return Refused(422, f"action {action.action_id} is for case {action.complaint_id}, not {case.complaint_id}")
    kind = action.action
    state = case.effective_state
    if not _party_to(case, action.department):
        # Before any state: a department with no part in the case learns no more than a GET tells it (403).
        return Refused(403, f"{_name(action.department)} does not hold case {case.complaint_id}")
    if state in _WAITING:
        return Refused(409, f"{kind.value} refused: case {case.complaint_id} {_WAITING[state]}")
    refused = _permission(case, action) or (
        None
        if state in ALLOWED_STATES[kind]
        else Refused(409, f"{kind.value} is not allowed on case {case.complaint_id} in state {state.value}")
    )
    refused = refused or _missing_field(action)
    if refused is not None:
        return refused
    return _HANDLERS[kind](case, action)


def _accept(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    return _moved(case, replace(case, state=_S.ACCEPTED), action.action.value)


def _contact(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    return _moved(case, replace(case, state=_S.IN_PROGRESS), action.action.value)


def _progress(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    return Accepted(case=case)


def _pause(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    new = replace(case, state=_S.PAUSED, previous_state_before_pause=case.state)
    return _moved(case, new, action.action.value)


def _resume(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    previous = case.previous_state_before_pause or _S.ACCEPTED  # CaseSnapshot guarantees it when paused
    return _moved(case, replace(case, state=previous, previous_state_before_pause=None), action.action.value)


def _return(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    lead = action.department
    given_up = Assignment(
        lead_department=lead,
        assisting_departments=case.assisting_departments,
        level=case.level or _level_of(lead),
        rule_id=case.rule_id or MANUAL_RULE_ID,
    )
    returned_by = case.returned_by | {lead}
    new = replace(
        case,
        state=_S.RETURNED,
        round=case.round + 1,
        returned_from=given_up,
        returned_by=returned_by,
        extension_requested_this_round=False,
        extension_pending=False,
        extension_requested_days=None,
    )
    return replace(_moved(case, new, action.action.value), reroute_excluding=returned_by)


def _request_extension(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    if case.extension_requested_this_round:
        return Refused(409, f"an extension was already requested in round {case.round} of {case.complaint_id}")
    days = action.working_days
    new = replace(case, extension_requested_this_round=True, extension_pending=True, extension_requested_days=days)
    return Accepted(case=new, extension_requested_days=days)


def _decide_extension(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    if not case.extension_pending:
        return Refused(409, f"no extension request is pending on case {case.complaint_id}")
    new = replace(case, extension_pending=False)
    if action.action is _A.REJECT_EXTENSION:
        return Accepted(case=new, extension_decision="rejected")
    granted = action.working_days or case.extension_requested_days
    return Accepted(case=new, extension_decision="approved", extension_granted_days=granted)


def _resolve(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    # A pending extension request is moot once the work is done.
    return _moved(case, replace(case, state=_S.RESOLVED, extension_pending=False), action.action.value)


def _desk_target(case: CaseSnapshot, action: DepartmentAction) -> str | Refused:
    lead = action.lead_department or ""
    if not is_department(lead):
        return Refused(422, f"{action.action.value}: unknown lead_department {lead!r}")
    if lead == TRIAGE:
        return Refused(422, f"{action.action.value}: lead_department must be a department, not the triage desk")
    return lead


def _uphold_return(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    given_up = case.returned_from
    if not case.awaits_return_verdict or given_up is None:
        return Refused(409, f"no return awaits a decision on case {case.complaint_id}")
    lead = _desk_target(case, action)
    if isinstance(lead, Refused):
        return lead
    if lead == given_up.lead_department:
        return Refused(422, f"uphold_return cannot send the case back to {lead}, which returned it: overturn it")
    assign_to = Assignment(
        lead_department=lead,
        assisting_departments=tuple(code for code in given_up.assisting_departments if code != lead),
        level=_level_of(lead),
        rule_id=MANUAL_RULE_ID,
        reason=f"12345 派单席维持 {_name(given_up.lead_department)} 的退单，改由 {_name(lead)} 主办（人工派单）",
    )
    return Accepted(case=replace(case, returned_by=case.returned_by - {lead}), assign_to=assign_to)


def _overturn_return(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    given_up = case.returned_from
    if not case.awaits_return_verdict or given_up is None:
        return Refused(409, f"no return awaits a decision on case {case.complaint_id}")
    lead = given_up.lead_department
    assign_to = replace(
        given_up,
        rule_id=MANUAL_RULE_ID,
        reason=f"12345 派单席驳回 {_name(lead)} 的退单，仍由其主办（人工派单）",
    )
    return Accepted(case=replace(case, returned_by=case.returned_by - {lead}), assign_to=assign_to)


def _reassign(case: CaseSnapshot, action: DepartmentAction) -> Decision:
    if case.awaits_return_verdict:
        return Refused(
            409,
            f"case {case.complaint_id} came to the desk by a return from {case.last_returned_by}: "
            "decide it first with uphold_return (and lead_department) or overturn_return",
        )
    lead = _desk_target(case, action)
    if isinstance(lead, Refused):
        return lead
    assign_to = Assignment(
        lead_department=lead,
        level=_level_of(lead),
        rule_id=MANUAL_RULE_ID,
        reason=f"12345 派单席人工派单：由 {_name(lead)} 主办",
    )
    return Accepted(case=replace(case, returned_by=case.returned_by - {lead}), assign_to=assign_to)


_HANDLERS: Final = {
    _A.ACCEPT: _accept,
    _A.CONTACT: _contact,
    _A.PROGRESS: _progress,
    _A.PAUSE: _pause,
    _A.RESUME: _resume,
    _A.RETURN: _return,
    _A.REQUEST_EXTENSION: _request_extension,
    _A.RESOLVE: _resolve,
    _A.APPROVE_EXTENSION: _decide_extension,
    _A.REJECT_EXTENSION: _decide_extension,
    _A.UPHOLD_RETURN: _uphold_return,
    _A.OVERTURN_RETURN: _overturn_return,
    _A.REASSIGN: _reassign,
}


# --- callbacks -------------------------------------------------------------------------------------------


def decide_callback(case: CaseSnapshot, callback: CallbackResult) -> Decision:
    """The callback visit (回访): closes a resolved case, or reopens it (重办) for a new round."""
    if callback.complaint_id != case.complaint_id:
        return Refused(422, f"callback is for case {callback.complaint_id}, not {case.complaint_id}")
    if case.state is not _S.RESOLVED:
        return Refused(409, f"a callback needs a resolved case; {case.complaint_id} is {case.state.value}")
    if callback.resolved and callback.satisfaction in ("satisfied", "basically_satisfied"):
        return _moved(case, replace(case, state=_S.CLOSED), "callback")
    lead = case.lead_department or TRIAGE  # CaseSnapshot guarantees a lead for a resolved case
    why = "问题未解决" if not callback.resolved else "企业不满意"
    new = replace(
        case,
        state=_S.REOPENED,
        round=case.round + 1,
        extension_requested_this_round=False,
        extension_pending=False,
        extension_requested_days=None,
    )
    assign_to = Assignment(
        lead_department=lead,
        assisting_departments=case.assisting_departments,
        level=case.level or _level_of(lead),
        rule_id=case.rule_id or MANUAL_RULE_ID,
        reason=f"回访{why}，重办：仍由 {_name(lead)} 主办（第 {case.round + 1} 轮）",
    )
    return replace(_moved(case, new, "callback"), assign_to=assign_to)
