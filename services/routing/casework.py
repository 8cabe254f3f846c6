"""What routing publishes and keeps for each fact about a case: pure functions from (case, fact, rules, now) to
the new snapshot and the `complaint.assigned` / `complaint.lifecycle` events, on top of the state machine
(lifecycle.py) and the rules (rules.py). No I/O and no clock: the service loads, calls, and saves.

Event ids are derived from the cause (the received event's id, the action's id, the callback's key) and the
event's place among the effects, so the same fact can never give two different events, even by mistake.

Choices where the contract is silent:
- Every assignment publishes `complaint.assigned` and a lifecycle transition into `assigned` (or `triage`) with
  cause `assigned`; when a triage-desk action placed the case, the cause is that action (`uphold_return`,
  `overturn_return`, `reassign`), so that reports can count the desk's verdicts from the lifecycle alone.
- Extension requests and decisions are lifecycle events with from_state == to_state and causes
  `request_extension` (extension_days: requested), `approve_extension` (extension_days: granted) and
  `reject_extension`, so the clock learns of them.
- `at` of every transition is `now`, routing's receipt of the fact (contract 3.6): the clock and the reports judge
  by when the product took an action or callback, so a backdated action cannot meet a deadline. The action's own
  `at` (a callback's `callback_at`) travels as `claimed_at`, for information; an assignment has none.
- A callback has no id in the contract: its key is `callback:<complaint_id>@<callback_at>` (UTC, RFC 3339),
  and that key is the `causation_id` of what it causes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from uuid import UUID, uuid5

from services.routing.lifecycle import (
    Accepted,
    Assignment,
    CaseSnapshot,
    Placement,
    Refused,
    Transition,
    assign_case,
    decide_action,
    decide_callback,
    new_case,
)
from services.routing.rules import RuleSet, decide_route, route_complaint
from shared.domain import Category, Channel
from shared.events import (
    ActionType,
    CallbackResult,
    CaseState,
    ComplaintAssigned,
    ComplaintReceived,
    DepartmentAction,
    LifecycleChanged,
)

EVENT_NAMESPACE: Final = UUID("6f1c2a4e-5b0d-4c39-9a51-2d7e8f3b1c60")
_DESK_ACTIONS: Final = frozenset({ActionType.UPHOLD_RETURN, ActionType.OVERTURN_RETURN, ActionType.REASSIGN})
_EXTENSION_ACTIONS: Final = frozenset(
    {ActionType.REQUEST_EXTENSION, ActionType.APPROVE_EXTENSION, ActionType.REJECT_EXTENSION}
)


@dataclass(frozen=True)
class CaseFacts:
    """What routing keeps of the received complaint beside the snapshot: enough to route it again."""

    complaint_id: str
    channel: Channel
    category: Category
    region_code: str
    received_at: datetime


@dataclass(frozen=True)
class Effects:
    """A fact taken: the case after it, and the events to store and publish, in order."""

    case: CaseSnapshot
    events: tuple[ComplaintAssigned | LifecycleChanged, ...] = ()
    rules_versions: Mapping[str, str] = field(default_factory=dict)
    """assignment_id → version of the rule set that decided it (manual placements have none)."""
    returned: tuple[str, str] | None = None
    """(department, reason_code) of an accepted return (退单), for complaints_returned_total."""

    @property
    def assignments(self) -> tuple[ComplaintAssigned, ...]:
        return tuple(e for e in self.events if isinstance(e, ComplaintAssigned))

    @property
    def transitions(self) -> tuple[LifecycleChanged, ...]:
        return tuple(e for e in self.events if isinstance(e, LifecycleChanged))

    def outcome(self) -> dict[str, Any]:
        """What the HTTP caller is told (and told again, with duplicate: true, for the same action_id)."""
        assigned = self.assignments[-1] if self.assignments else None
        return {
            "complaint_id": self.case.complaint_id,
            "state": self.case.effective_state.value,
            "round": self.case.round,
            "lead_department": self.case.lead_department,
            "assisting_departments": list(self.case.assisting_departments),
            "transitions": [
                {
                    "from_state": t.from_state.value if t.from_state else None,
                    "to_state": t.to_state.value,
                    "cause": t.cause,
                }
                for t in self.transitions
            ],
            "assignment": None
            if assigned is None
            else {
                "assignment_id": assigned.assignment_id,
                "round": assigned.round,
                "lead_department": assigned.lead_department,
                "assisting_departments": list(assigned.assisting_departments),
                "level": assigned.level,
                "rule_id": assigned.rule_id,
                "reason": assigned.reason,
            },
        }


def callback_key(callback: CallbackResult) -> str:
    """The dedupe key of a callback result (it carries no id): complaint and time of the visit."""
    return f"callback:{callback.complaint_id}@{callback.callback_at.isoformat().replace('+00:00', 'Z')}"


def facts_of(complaint: ComplaintReceived) -> CaseFacts:
    return CaseFacts(
        complaint.complaint_id, complaint.channel, complaint.category, complaint.region_code, complaint.received_at
    )


class _Builder:
    """Collects the events of one fact, numbering their ids from the cause."""

    def __init__(self, cause_key: str, causation_id: str, now: datetime, action_id: str | None = None) -> None:
        self.cause_key, self.causation_id, self.now, self.action_id = cause_key, causation_id, now, action_id
        self.events: list[ComplaintAssigned | LifecycleChanged] = []
        self.versions: dict[str, str] = {}

    def _next_id(self) -> UUID:
        return uuid5(EVENT_NAMESPACE, f"{self.cause_key}#{len(self.events)}")

    def transition(
        self,
        t: Transition,
        case: CaseSnapshot,
        *,
        department: str | None,
        claimed_at: datetime | None = None,
        extension_days: int | None = None,
        reason_code: str | None = None,
        cause: str | None = None,
        callback: CallbackResult | None = None,
        note: str | None = None,
    ) -> None:
        self.events.append(
            LifecycleChanged(
                event_id=self._next_id(),
                occurred_at=self.now,
                complaint_id=case.complaint_id,
                causation_id=self.causation_id,
                from_state=t.from_state,
                to_state=t.to_state,
                cause=cause or t.cause,
                round=case.round,
                department=department,
                lead_department=case.lead_department,
                at=self.now,
                claimed_at=claimed_at,
                action_id=self.action_id,
                extension_days=extension_days,
                reason_code=reason_code,
                note=note,
                satisfaction=callback.satisfaction if callback is not None else None,
                resolved=callback.resolved if callback is not None else None,
            )
        )

    def assign(self, case: CaseSnapshot, placement: Placement, *, cause: str | None = None) -> CaseSnapshot | Refused:
        placed = assign_case(case, placement)
        if isinstance(placed, Refused):
            return placed
        assignment = placed.assignment or Assignment(placement.lead_department)
        event_id = self._next_id()
        assigned = ComplaintAssigned(
            event_id=event_id,
            occurred_at=self.now,
            complaint_id=case.complaint_id,
            causation_id=self.causation_id,
            assignment_id=str(uuid5(EVENT_NAMESPACE, f"assignment:{self.cause_key}#{len(self.events)}")),
            round=placed.case.round,
            lead_department=assignment.lead_department,
            assisting_departments=assignment.assisting_departments,
            level=assignment.level,
            rule_id=assignment.rule_id,
            reason=assignment.reason,
            assigned_at=self.now,
        )
        self.events.append(assigned)
        version = getattr(placement, "rules_version", None)
        if isinstance(version, str):
            self.versions[assigned.assignment_id] = version
        for t in placed.transitions:
            self.transition(t, placed.case, department=assignment.lead_department, cause=cause)
        return placed.case


def receive(complaint: ComplaintReceived, rules: RuleSet, now: datetime) -> Effects:
    """A new complaint (受理): routed with the rules in force and assigned in round 1 (派单)."""
    build = _Builder(f"received:{complaint.event_id}", str(complaint.event_id), now)
    placed = build.assign(new_case(complaint.complaint_id), route_complaint(complaint, rules))
    if isinstance(placed, CaseSnapshot):
        return Effects(placed, tuple(build.events), build.versions)
    # A valid rule set always places a new case: this is a bug, and the record goes to the dead letters.
    raise RuntimeError(f"routing could not place {complaint.complaint_id}: {placed.reason}")


def _follow(
    build: _Builder, accepted: Accepted, facts: CaseFacts, rules: RuleSet, desk_action: ActionType | None
) -> CaseSnapshot | Refused:
    """Do what an accepted fact's directives say: route again without the departments that returned it, or place
    the case where the desk (or a reopening) says."""
    case = accepted.case
    if accepted.reroute_excluding is not None:
        decision = decide_route(facts.category, facts.region_code, rules, exclude=accepted.reroute_excluding)
        return build.assign(case, decision)
    if accepted.assign_to is not None:
        return build.assign(case, accepted.assign_to, cause=desk_action.value if desk_action is not None else None)
    return case


def act(
    case: CaseSnapshot, facts: CaseFacts, action: DepartmentAction, rules: RuleSet, now: datetime
) -> Effects | Refused:
    """A department action (contract 3.3): refused with a reason, or its transitions and any new assignment."""
    decided = decide_action(case, action)
    if isinstance(decided, Refused):
        return decided
    build = _Builder(f"action:{action.action_id}", action.action_id, now, action.action_id)
    claimed = action.at
    kind = action.action
    reason_code = action.reason_code.value if kind is ActionType.RETURN and action.reason_code else None
    note = action.note if kind is ActionType.RESOLVE else None
    for t in decided.transitions:
        build.transition(
            t, decided.case, department=action.department, claimed_at=claimed, reason_code=reason_code, note=note
        )
    if kind in _EXTENSION_ACTIONS:
        # Not a move, but a fact the clock needs: the state stays, extension_days says how many were asked or granted.
        state = decided.case.effective_state
        days = {
            ActionType.REQUEST_EXTENSION: decided.extension_requested_days,
            ActionType.APPROVE_EXTENSION: decided.extension_granted_days,
        }.get(kind)
        build.transition(
            Transition(state, state, kind.value),
            decided.case,
            department=action.department,
            claimed_at=claimed,
            extension_days=days,
        )
    after = _follow(build, decided, facts, rules, kind if kind in _DESK_ACTIONS else None)
    if isinstance(after, Refused):
        return after
    returned = (action.department, reason_code) if reason_code else None
    return Effects(after, tuple(build.events), build.versions, returned)


def call_back(
    case: CaseSnapshot, facts: CaseFacts, callback: CallbackResult, rules: RuleSet, now: datetime
) -> Effects | Refused:
    """The callback visit (回访): closes the case, or reopens it (重办) and assigns it for a new round."""
    decided = decide_callback(case, callback)
    if isinstance(decided, Refused):
        return decided
    key = callback_key(callback)
    build = _Builder(key, key, now)
    for t in decided.transitions:
        build.transition(t, decided.case, department=None, claimed_at=callback.callback_at, callback=callback)
    after = _follow(build, decided, facts, rules, None)
    if isinstance(after, Refused):
        return after
    return Effects(after, tuple(build.events), build.versions)


# --- the snapshot as JSON (kept in the cases table) ---------------------------------------------------------


def _assignment_dict(a: Assignment | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {
        "lead_department": a.lead_department,
        "assisting_departments": list(a.assisting_departments),
        "level": a.level,
        "rule_id": a.rule_id,
        "reason": a.reason,
    }


def snapshot_to_json(case: CaseSnapshot) -> dict[str, Any]:
    return {
        "complaint_id": case.complaint_id,
        "state": case.state.value,
        "round": case.round,
        "lead_department": case.lead_department,
        "assisting_departments": list(case.assisting_departments),
        "level": case.level,
        "rule_id": case.rule_id,
        "previous_state_before_pause": case.previous_state_before_pause.value
        if case.previous_state_before_pause
        else None,
        "extension_requested_this_round": case.extension_requested_this_round,
        "extension_pending": case.extension_pending,
        "extension_requested_days": case.extension_requested_days,
        "returned_from": _assignment_dict(case.returned_from),
        "returned_by": sorted(case.returned_by),
    }


def snapshot_from_json(data: Mapping[str, Any]) -> CaseSnapshot:
    given = data.get("returned_from")
    returned_from = (
        None
        if given is None
        else Assignment(
            lead_department=given["lead_department"],
            assisting_departments=tuple(given["assisting_departments"]),
            level=given["level"],
            rule_id=given["rule_id"],
            reason=given.get("reason", ""),
        )
    )
    paused_from = data.get("previous_state_before_pause")
    return CaseSnapshot(
        complaint_id=data["complaint_id"],
        state=CaseState(data["state"]),
        round=int(data["round"]),
        lead_department=data.get("lead_department"),
        assisting_departments=tuple(data.get("assisting_departments") or ()),
        level=data.get("level"),
        rule_id=data.get("rule_id"),
        previous_state_before_pause=CaseState(paused_from) if paused_from else None,
        extension_requested_this_round=bool(data.get("extension_requested_this_round")),
        extension_pending=bool(data.get("extension_pending")),
        extension_requested_days=data.get("extension_requested_days"),
        returned_from=returned_from,
        returned_by=frozenset(data.get("returned_by") or ()),
    )
