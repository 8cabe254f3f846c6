"""The case state machine: every (state, action) pair against the transition table, who may act, the
fields each action needs, extensions once per round, pause and resume, returns and the triage desk,
callbacks, and random sequences that never raise and never leave closed."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.routing.lifecycle import (
    ALLOWED_STATES,
    Accepted,
    Assignment,
    CaseSnapshot,
    Refused,
    Transition,
    assign_case,
    decide_action,
    decide_callback,
    new_case,
)
from services.routing.rules import FALLBACK_RULE_ID, MANUAL_RULE_ID, load_default_rules, route_complaint
from shared.domain import Category, Channel, Kind, Urgency
from shared.events import ActionType, CallbackResult, CaseState, ComplaintReceived, DepartmentAction, ReturnReason

S, A = CaseState, ActionType
CID = "hotline:TL2026112600123"
AT = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
LEAD, ASSISTING = "fgw", ("czj",)
_ids = itertools.count(1)

# The expected outcome of every allowed (state, action) pair; every other pair is refused with 409.
EXPECTED: dict[tuple[CaseState, ActionType], CaseState] = {
    (S.ASSIGNED, A.ACCEPT): S.ACCEPTED,
    (S.ASSIGNED, A.RETURN): S.RETURNED,
    (S.ACCEPTED, A.CONTACT): S.IN_PROGRESS,
    (S.ACCEPTED, A.PAUSE): S.PAUSED,
    (S.ACCEPTED, A.RETURN): S.RETURNED,
    (S.ACCEPTED, A.REQUEST_EXTENSION): S.ACCEPTED,
    (S.ACCEPTED, A.RESOLVE): S.RESOLVED,
    (S.ACCEPTED, A.APPROVE_EXTENSION): S.ACCEPTED,
    (S.ACCEPTED, A.REJECT_EXTENSION): S.ACCEPTED,
    (S.IN_PROGRESS, A.PROGRESS): S.IN_PROGRESS,
    (S.IN_PROGRESS, A.PAUSE): S.PAUSED,
    (S.IN_PROGRESS, A.REQUEST_EXTENSION): S.IN_PROGRESS,
    (S.IN_PROGRESS, A.RESOLVE): S.RESOLVED,
    (S.IN_PROGRESS, A.APPROVE_EXTENSION): S.IN_PROGRESS,
    (S.IN_PROGRESS, A.REJECT_EXTENSION): S.IN_PROGRESS,
    (S.PAUSED, A.RESUME): S.ACCEPTED,  # the state before the pause (accepted in these fixtures)
    (S.PAUSED, A.APPROVE_EXTENSION): S.PAUSED,
    (S.PAUSED, A.REJECT_EXTENSION): S.PAUSED,
    (S.TRIAGE, A.UPHOLD_RETURN): S.TRIAGE,
    (S.TRIAGE, A.OVERTURN_RETURN): S.TRIAGE,
    (S.TRIAGE, A.REASSIGN): S.TRIAGE,
}
WAITING = {S.RECEIVED, S.RETURNED, S.REOPENED, S.RESOLVED, S.CLOSED}  # no department can act


def case_in(state: CaseState, **changes: Any) -> CaseSnapshot:
    """A consistent snapshot in `state`, held by fgw with czj assisting (the triage desk at triage)."""
    fields: dict[str, Any] = {
        "complaint_id": CID,
        "state": state,
        "lead_department": LEAD,
        "assisting_departments": ASSISTING,
        "level": "city",
        "rule_id": "sector-policy-fulfillment",
    }
    if state is S.RECEIVED:
        fields.update(lead_department=None, assisting_departments=(), level=None, rule_id=None)
    if state is S.PAUSED:
        fields["previous_state_before_pause"] = S.ACCEPTED
    if state is S.TRIAGE:
        fields.update(lead_department="triage", assisting_departments=(), rule_id=FALLBACK_RULE_ID)
    fields.update(changes)
    return CaseSnapshot(**fields)


def act(kind: ActionType, department: str = LEAD, **fields: Any) -> DepartmentAction:
    return DepartmentAction(
        action_id=f"a-{next(_ids)}", complaint_id=CID, department=department, action=kind, at=AT, **fields
    )


def well_formed(kind: ActionType, lead: str = LEAD) -> DepartmentAction:
    """The action done by the one entitled to it (`lead` for the holder's actions), with every field it needs."""
    if kind in (A.APPROVE_EXTENSION, A.REJECT_EXTENSION):
        return act(kind, "yshj")
    if kind in (A.UPHOLD_RETURN, A.REASSIGN):
        return act(kind, "triage", lead_department="spj")
    if kind is A.OVERTURN_RETURN:
        return act(kind, "triage")
    needs: dict[ActionType, dict[str, Any]] = {
        A.RETURN: {"reason_code": ReturnReason.NOT_OUR_DUTY, "reason": "不属于本单位职责"},
        A.PAUSE: {"reason": "等待企业补充材料"},
        A.RESOLVE: {"note": "已协调兑现补贴"},
        A.REQUEST_EXTENSION: {"working_days": 5},
    }
    return act(kind, lead, **needs.get(kind, {}))


def decision_actor(kind: ActionType) -> str:
    return well_formed(kind).department


def case_for(state: CaseState, kind: ActionType) -> CaseSnapshot:
    """A snapshot in `state` meeting the action's own conditions, so that only the state decides."""
    changes: dict[str, Any] = {}
    if kind in (A.APPROVE_EXTENSION, A.REJECT_EXTENSION):
        changes.update(extension_requested_this_round=True, extension_pending=True, extension_requested_days=5)
    if kind in (A.UPHOLD_RETURN, A.OVERTURN_RETURN):
        changes["returned_from"] = Assignment(LEAD, ASSISTING, "city", "sector-policy-fulfillment")
    return case_in(state, **changes)


def accepted(decision: Accepted | Refused) -> Accepted:
    assert isinstance(decision, Accepted), decision
    return decision


def refused(decision: Accepted | Refused, status: int) -> Refused:
    assert isinstance(decision, Refused), decision
    assert decision.status == status, decision
    return decision


Satisfaction = Literal["satisfied", "basically_satisfied", "unsatisfied"]


def callback(satisfaction: Satisfaction = "satisfied", *, resolved: bool = True) -> CallbackResult:
    return CallbackResult(complaint_id=CID, callback_at=AT, satisfaction=satisfaction, resolved=resolved)


# --- every (state, action) pair ------------------------------------------------------------------------------


def test_module_table_agrees_with_the_expected_table() -> None:
    assert set(ALLOWED_STATES) == set(ActionType)
    assert {(state, kind) for kind, states in ALLOWED_STATES.items() for state in states} == set(EXPECTED)


@pytest.mark.parametrize("kind", list(ActionType))
@pytest.mark.parametrize("state", list(CaseState))
def test_every_state_and_action_follows_the_table(state: CaseState, kind: ActionType) -> None:
    case = case_for(state, kind)
    decision = decide_action(case, well_formed(kind, case.lead_department or LEAD))
    expected = EXPECTED.get((state, kind))
    if expected is None:
        # A received case has no lead yet: a department is no party to it (403); the bureau and the desk are.
        no_party = state is S.RECEIVED and decision_actor(kind) not in ("yshj", "triage")
        assert refused(decision, 403 if no_party else 409).reason
        return
    result = accepted(decision)
    assert result.state is expected
    if expected is state:
        assert result.transitions == ()
    else:
        assert result.transitions == (Transition(state, expected, kind.value),)


@pytest.mark.parametrize("kind", list(ActionType))
@pytest.mark.parametrize("state", list(CaseState))
def test_a_department_that_does_not_hold_the_case_is_refused(state: CaseState, kind: ActionType) -> None:
    # scj neither leads nor assists, nor is it yshj or the triage desk.
    action = well_formed(kind).model_copy(update={"department": "scj"})
    decision = decide_action(case_for(state, kind), action)
    # 403 in every state, and the reason does not give the state away (a GET of the case answers 403 too).
    assert state.value not in refused(decision, 403).reason


@pytest.mark.parametrize("kind", list(ActionType))
def test_closed_is_terminal_for_everyone(kind: ActionType) -> None:
    for department in (LEAD, "czj", "yshj", "triage"):
        action = well_formed(kind).model_copy(update={"department": department})
        reason = refused(decide_action(case_for(S.CLOSED, kind), action), 409).reason
        assert reason == f"{kind.value} refused: case {CID} is closed"
    refused(decide_callback(case_in(S.CLOSED), callback()), 409)
    refused(decide_callback(case_in(S.CLOSED), callback("unsatisfied")), 409)


# --- who may act ---------------------------------------------------------------------------------------------


def test_an_assisting_department_may_only_report_progress() -> None:
    assert accepted(decide_action(case_in(S.IN_PROGRESS), act(A.PROGRESS, "czj"))).transitions == ()
    for kind in (A.ACCEPT, A.CONTACT, A.PAUSE, A.RETURN, A.RESOLVE, A.REQUEST_EXTENSION, A.RESUME):
        state = S.PAUSED if kind is A.RESUME else S.ASSIGNED if kind is A.ACCEPT else S.ACCEPTED
        action = well_formed(kind).model_copy(update={"department": "czj"})
        assert "may only report progress" in refused(decide_action(case_in(state), action), 403).reason


def test_only_the_supervising_bureau_decides_extensions() -> None:
    case = case_for(S.IN_PROGRESS, A.APPROVE_EXTENSION)
    for department in (LEAD, "czj", "triage"):
        refused(decide_action(case, act(A.APPROVE_EXTENSION, department)), 403)
        refused(decide_action(case, act(A.REJECT_EXTENSION, department)), 403)
    assert accepted(decide_action(case, act(A.APPROVE_EXTENSION, "yshj"))).extension_decision == "approved"


def test_only_the_triage_desk_decides_returns_and_reassigns() -> None:
    case = case_for(S.TRIAGE, A.UPHOLD_RETURN)
    for department in (LEAD, "yshj", "spj"):
        refused(decide_action(case, act(A.UPHOLD_RETURN, department, lead_department="spj")), 403)
        refused(decide_action(case, act(A.OVERTURN_RETURN, department)), 403)
        refused(decide_action(case_in(S.TRIAGE), act(A.REASSIGN, department, lead_department="spj")), 403)


def test_the_desk_never_handles_a_case_itself() -> None:
    at_desk = case_in(S.TRIAGE)
    for kind in (A.ACCEPT, A.CONTACT, A.RESOLVE, A.PROGRESS):
        refused(decide_action(at_desk, well_formed(kind).model_copy(update={"department": "triage"})), 409)
    # A case stored as assigned to the desk counts as at triage.
    stored = case_in(S.ASSIGNED, lead_department="triage", assisting_departments=())
    assert stored.effective_state is S.TRIAGE
    refused(decide_action(stored, act(A.ACCEPT, "triage")), 409)
    result = accepted(decide_action(stored, act(A.REASSIGN, "triage", lead_department="scj")))
    assert result.assign_to is not None
    placed = accepted(assign_case(result.case, result.assign_to))
    assert placed.transitions == (Transition(S.ASSIGNED, S.ASSIGNED, "assigned"),)
    assert placed.case.lead_department == "scj"


def test_the_desk_acts_only_on_cases_it_holds() -> None:
    refused(decide_action(case_in(S.ASSIGNED), act(A.REASSIGN, "triage", lead_department="spj")), 409)


# --- fields ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "kind", "fields", "missing"),
    [
        (S.ASSIGNED, A.RETURN, {"reason": "不属于本单位职责"}, "reason_code"),
        (S.ASSIGNED, A.RETURN, {"reason_code": ReturnReason.WRONG_REGION}, "reason"),
        (S.ACCEPTED, A.RETURN, {"reason_code": ReturnReason.DUPLICATE, "reason": "   "}, "reason"),
        (S.ACCEPTED, A.PAUSE, {}, "reason"),
        (S.IN_PROGRESS, A.PAUSE, {"reason": ""}, "reason"),
        (S.ACCEPTED, A.RESOLVE, {}, "note"),
        (S.IN_PROGRESS, A.RESOLVE, {"note": " \n"}, "note"),
        (S.ACCEPTED, A.REQUEST_EXTENSION, {}, "working_days"),
    ],
)
def test_missing_fields_are_refused_with_422(
    state: CaseState, kind: ActionType, fields: dict[str, Any], missing: str
) -> None:
    assert f"`{missing}`" in refused(decide_action(case_in(state), act(kind, **fields)), 422).reason


@pytest.mark.parametrize("kind", [A.UPHOLD_RETURN, A.REASSIGN])
def test_the_desk_must_name_a_real_department(kind: ActionType) -> None:
    case = case_for(S.TRIAGE, kind)
    assert "lead_department" in refused(decide_action(case, act(kind, "triage")), 422).reason
    assert "unknown" in refused(decide_action(case, act(kind, "triage", lead_department="bank")), 422).reason
    assert "triage desk" in refused(decide_action(case, act(kind, "triage", lead_department="triage")), 422).reason


def test_an_action_for_another_case_is_refused() -> None:
    action = act(A.ACCEPT).model_copy(update={"complaint_id": "hotline:other"})
    refused(decide_action(case_in(S.ASSIGNED), action), 422)
    other = callback().model_copy(update={"complaint_id": "hotline:other"})
    refused(decide_callback(case_in(S.RESOLVED), other), 422)


def test_state_is_checked_before_fields() -> None:
    # A malformed return on a case in progress: the state is the more basic problem.
    refused(decide_action(case_in(S.IN_PROGRESS), act(A.RETURN)), 409)


# --- handling ------------------------------------------------------------------------------------------------


def test_contact_needs_an_accepted_case_and_happens_once() -> None:
    refused(decide_action(case_in(S.ASSIGNED), act(A.CONTACT)), 409)
    in_progress = accepted(decide_action(case_in(S.ACCEPTED), act(A.CONTACT))).case
    refused(decide_action(in_progress, act(A.CONTACT)), 409)


@pytest.mark.parametrize("before", [S.ACCEPTED, S.IN_PROGRESS])
def test_pause_and_resume_restore_the_state_before_the_pause(before: CaseState) -> None:
    paused = accepted(decide_action(case_in(before), act(A.PAUSE, reason="等待企业补充材料")))
    assert paused.transitions == (Transition(before, S.PAUSED, "pause"),)
    assert paused.case.previous_state_before_pause is before
    refused(decide_action(paused.case, act(A.PAUSE, reason="again")), 409)
    refused(decide_action(paused.case, act(A.RESOLVE, note="done")), 409)
    resumed = accepted(decide_action(paused.case, act(A.RESUME)))
    assert resumed.transitions == (Transition(S.PAUSED, before, "resume"),)
    assert resumed.case == case_in(before)
    refused(decide_action(resumed.case, act(A.RESUME)), 409)


def test_an_extension_is_requested_once_per_round() -> None:
    requested = accepted(decide_action(case_in(S.IN_PROGRESS), act(A.REQUEST_EXTENSION, working_days=3)))
    assert requested.extension_requested_days == 3
    assert requested.transitions == ()
    assert requested.case.extension_pending
    assert (
        "already requested"
        in refused(decide_action(requested.case, act(A.REQUEST_EXTENSION, working_days=2)), 409).reason
    )
    approved = accepted(decide_action(requested.case, act(A.APPROVE_EXTENSION, "yshj")))
    assert (approved.extension_decision, approved.extension_granted_days) == ("approved", 3)
    assert not approved.case.extension_pending
    refused(decide_action(approved.case, act(A.APPROVE_EXTENSION, "yshj")), 409)
    refused(decide_action(approved.case, act(A.REQUEST_EXTENSION, working_days=2)), 409)


def test_the_bureau_may_grant_other_days_or_reject() -> None:
    case = case_for(S.ACCEPTED, A.APPROVE_EXTENSION)
    fewer = accepted(decide_action(case, act(A.APPROVE_EXTENSION, "yshj", working_days=2)))
    assert fewer.extension_granted_days == 2
    rejected = accepted(decide_action(case, act(A.REJECT_EXTENSION, "yshj")))
    assert (rejected.extension_decision, rejected.extension_granted_days) == ("rejected", None)
    refused(decide_action(rejected.case, act(A.REQUEST_EXTENSION, working_days=2)), 409)


def test_no_extension_decision_without_a_request() -> None:
    refused(decide_action(case_in(S.IN_PROGRESS), act(A.APPROVE_EXTENSION, "yshj")), 409)
    refused(decide_action(case_in(S.IN_PROGRESS), act(A.REJECT_EXTENSION, "yshj")), 409)


def test_resolving_drops_a_pending_extension() -> None:
    resolved = accepted(decide_action(case_for(S.IN_PROGRESS, A.APPROVE_EXTENSION), act(A.RESOLVE, note="办结")))
    assert resolved.case.state is S.RESOLVED
    assert not resolved.case.extension_pending
    refused(decide_action(resolved.case, act(A.APPROVE_EXTENSION, "yshj")), 409)


def test_a_new_round_allows_a_new_extension() -> None:
    case = case_in(S.IN_PROGRESS, extension_requested_this_round=True, extension_requested_days=4)
    resolved = accepted(decide_action(case, act(A.RESOLVE, note="办结"))).case
    reopened = accepted(decide_callback(resolved, callback("unsatisfied")))
    assert reopened.assign_to is not None
    again = accepted(assign_case(reopened.case, reopened.assign_to)).case
    again = accepted(decide_action(again, act(A.ACCEPT))).case
    assert again.round == 2
    accepted(decide_action(again, act(A.REQUEST_EXTENSION, working_days=2)))


# --- assignment, returns and the triage desk ---------------------------------------------------------------


def complaint(category: str, region: str) -> ComplaintReceived:
    return ComplaintReceived(
        occurred_at=AT,
        complaint_id=CID,
        channel=Channel.HOTLINE,
        source_id="TL2026112600123",
        received_at=AT,
        kind=Kind.COMPLAINT,
        category=Category(category),
        title="补贴未兑现",
        content="企业反映补贴未兑现",
        urgency=Urgency.NORMAL,
        region_code=region,
    )


def test_first_assignment_is_round_one() -> None:
    decision = route_complaint(complaint("policy_fulfillment", "150523"), load_default_rules())
    result = accepted(assign_case(new_case(CID), decision))
    assert result.transitions == (Transition(S.RECEIVED, S.ASSIGNED, "assigned"),)
    assert result.case.round == 1
    assert result.assignment == Assignment(
        "gov-150523", ("fgw", "czj"), "county", "territorial-county", decision.reason
    )
    assert (result.case.lead_department, result.case.assisting_departments, result.case.level) == (
        "gov-150523",
        ("fgw", "czj"),
        "county",
    )


def test_a_complaint_no_one_can_place_goes_to_the_desk() -> None:
    decision = route_complaint(complaint("other", "150523"), load_default_rules())
    result = accepted(assign_case(new_case(CID), decision))
    assert result.transitions == (Transition(S.RECEIVED, S.TRIAGE, "assigned"),)
    placed = accepted(decide_action(result.case, act(A.REASSIGN, "triage", lead_department="gov-150523")))
    assert placed.assign_to is not None
    assert (placed.assign_to.rule_id, placed.assign_to.level) == (MANUAL_RULE_ID, "county")
    done = accepted(assign_case(placed.case, placed.assign_to))
    assert done.transitions == (Transition(S.TRIAGE, S.ASSIGNED, "assigned"),)
    assert done.case.round == 1  # a placement by the desk is not a return


@pytest.mark.parametrize("state", sorted(set(CaseState) - {S.RECEIVED, S.RETURNED, S.REOPENED, S.TRIAGE}))
def test_a_held_case_cannot_be_assigned_again(state: CaseState) -> None:
    refused(assign_case(case_in(state), Assignment("spj")), 409)


def test_assignment_checks_its_departments() -> None:
    refused(assign_case(new_case(CID), Assignment("bank")), 422)
    refused(assign_case(new_case(CID), Assignment("spj", ("nobody",))), 422)
    refused(assign_case(case_in(S.TRIAGE), Assignment("triage")), 409)
    placed = accepted(assign_case(new_case(CID), Assignment("spj", ("spj", "czj", "czj"))))
    assert placed.case.assisting_departments == ("czj",)


def test_a_return_goes_to_the_next_rule_then_to_the_desk() -> None:
    rules = load_default_rules()
    filed = complaint("policy_fulfillment", "150523")
    case = accepted(assign_case(new_case(CID), route_complaint(filed, rules))).case

    returned = accepted(
        decide_action(case, act(A.RETURN, "gov-150523", reason_code=ReturnReason.NOT_OUR_DUTY, reason="市级政策"))
    )
    assert returned.transitions == (Transition(S.ASSIGNED, S.RETURNED, "return"),)
    assert returned.reroute_excluding == frozenset({"gov-150523"})
    assert (returned.case.round, returned.case.last_returned_by) == (2, "gov-150523")
    refused(decide_action(returned.case, act(A.ACCEPT, "gov-150523")), 409)

    rerouted = accepted(assign_case(returned.case, route_complaint(filed, rules, returned.reroute_excluding)))
    assert (rerouted.case.lead_department, rerouted.case.round, rerouted.case.state) == ("fgw", 2, S.ASSIGNED)
    assert rerouted.case.returned_from is None  # placed by a rule: no verdict for the desk to give

    fgw = accepted(decide_action(rerouted.case, act(A.ACCEPT, "fgw"))).case
    second = accepted(
        decide_action(fgw, act(A.RETURN, "fgw", reason_code=ReturnReason.INSUFFICIENT_INFO, reason="信息不全"))
    )
    assert second.reroute_excluding == frozenset({"gov-150523", "fgw"})
    at_desk = accepted(assign_case(second.case, route_complaint(filed, rules, second.reroute_excluding)))
    assert at_desk.transitions == (Transition(S.RETURNED, S.TRIAGE, "assigned"),)
    assert at_desk.case.awaits_return_verdict
    assert at_desk.case.round == 3
    assert (
        "decide it first"
        in refused(decide_action(at_desk.case, act(A.REASSIGN, "triage", lead_department="spj")), 409).reason
    )


def returned_to_desk() -> CaseSnapshot:
    """fgw returned a city policy case; no rule fits any more; the desk holds it."""
    rules = load_default_rules()
    filed = complaint("policy_fulfillment", "150500")
    case = accepted(assign_case(new_case(CID), route_complaint(filed, rules))).case
    result = accepted(decide_action(case, act(A.RETURN, reason_code=ReturnReason.NOT_OUR_DUTY, reason="非本单位")))
    assert result.reroute_excluding is not None
    return accepted(assign_case(result.case, route_complaint(filed, rules, result.reroute_excluding))).case


def test_the_desk_upholds_a_return() -> None:
    case = returned_to_desk()
    refused(decide_action(case, act(A.UPHOLD_RETURN, "triage", lead_department="fgw")), 422)  # overturn instead
    upheld = accepted(decide_action(case, act(A.UPHOLD_RETURN, "triage", lead_department="gxj")))
    assert upheld.transitions == ()
    assert upheld.assign_to is not None
    assert upheld.assign_to == Assignment("gxj", ("czj",), "city", MANUAL_RULE_ID, upheld.assign_to.reason)
    assert "维持" in upheld.assign_to.reason
    placed = accepted(assign_case(upheld.case, upheld.assign_to))
    assert (placed.case.lead_department, placed.case.rule_id, placed.case.round) == ("gxj", MANUAL_RULE_ID, 2)
    assert placed.case.returned_by == frozenset({"fgw"})
    assert placed.transitions == (Transition(S.TRIAGE, S.ASSIGNED, "assigned"),)


def test_the_desk_overturns_a_return() -> None:
    case = returned_to_desk()
    overturned = accepted(decide_action(case, act(A.OVERTURN_RETURN, "triage")))
    assert overturned.assign_to is not None
    assert (overturned.assign_to.lead_department, overturned.assign_to.assisting_departments) == ("fgw", ("czj",))
    assert overturned.assign_to.rule_id == MANUAL_RULE_ID
    placed = accepted(assign_case(overturned.case, overturned.assign_to))
    assert (placed.case.lead_department, placed.case.state, placed.case.returned_by) == ("fgw", S.ASSIGNED, frozenset())
    # Returning it again sends it to routing without fgw once more.
    again = accepted(decide_action(placed.case, act(A.RETURN, reason_code=ReturnReason.DUPLICATE, reason="重复")))
    assert again.reroute_excluding == frozenset({"fgw"})


def test_the_desk_decides_only_a_return_that_brought_the_case() -> None:
    refused(decide_action(case_in(S.TRIAGE), act(A.OVERTURN_RETURN, "triage")), 409)
    refused(decide_action(case_in(S.TRIAGE), act(A.UPHOLD_RETURN, "triage", lead_department="spj")), 409)


# --- callbacks -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("satisfaction", ["satisfied", "basically_satisfied"])
def test_a_satisfied_callback_closes_the_case(satisfaction: Satisfaction) -> None:
    result = accepted(decide_callback(case_in(S.RESOLVED), callback(satisfaction)))
    assert result.transitions == (Transition(S.RESOLVED, S.CLOSED, "callback"),)
    assert (result.reroute_excluding, result.assign_to) == (None, None)


@pytest.mark.parametrize(
    ("satisfaction", "resolved"),
    [("unsatisfied", True), ("unsatisfied", False), ("satisfied", False), ("basically_satisfied", False)],
)
def test_an_unsatisfied_or_unresolved_callback_reopens_the_case(satisfaction: Satisfaction, resolved: bool) -> None:
    result = accepted(decide_callback(case_in(S.RESOLVED, round=2), callback(satisfaction, resolved=resolved)))
    assert result.transitions == (Transition(S.RESOLVED, S.REOPENED, "callback"),)
    assert result.case.round == 3
    assert result.assign_to is not None
    assert (result.assign_to.lead_department, result.assign_to.assisting_departments) == (LEAD, ASSISTING)
    assert result.assign_to.rule_id == "sector-policy-fulfillment"
    assert "重办" in result.assign_to.reason
    placed = accepted(assign_case(result.case, result.assign_to))
    assert placed.transitions == (Transition(S.REOPENED, S.ASSIGNED, "assigned"),)
    assert placed.case.round == 3


@pytest.mark.parametrize("state", sorted(set(CaseState) - {S.RESOLVED}))
def test_a_callback_needs_a_resolved_case(state: CaseState) -> None:
    refused(decide_callback(case_in(state), callback()), 409)


def test_a_whole_case_from_receipt_to_close() -> None:
    rules = load_default_rules()
    case = new_case(CID)
    chain: list[Transition] = []
    steps: list[Any] = [
        lambda c: assign_case(c, route_complaint(complaint("government_integrity", "150525"), rules)),
        lambda c: decide_action(c, act(A.ACCEPT, "gov-150525")),
        lambda c: decide_action(c, act(A.CONTACT, "gov-150525")),
        lambda c: decide_action(c, act(A.PROGRESS, "gxj")),
        lambda c: decide_action(c, act(A.REQUEST_EXTENSION, "gov-150525", working_days=5)),
        lambda c: decide_action(c, act(A.APPROVE_EXTENSION, "yshj")),
        lambda c: decide_action(c, act(A.PAUSE, "gov-150525", reason="等待企业提供合同")),
        lambda c: decide_action(c, act(A.RESUME, "gov-150525")),
        lambda c: decide_action(c, act(A.RESOLVE, "gov-150525", note="欠款已支付")),
        lambda c: decide_callback(c, callback("basically_satisfied")),
    ]
    for step in steps:
        result = accepted(step(case))
        chain += result.transitions
        case = result.case
    assert [(t.from_state, t.to_state) for t in chain] == [
        (S.RECEIVED, S.ASSIGNED),
        (S.ASSIGNED, S.ACCEPTED),
        (S.ACCEPTED, S.IN_PROGRESS),
        (S.IN_PROGRESS, S.PAUSED),
        (S.PAUSED, S.IN_PROGRESS),
        (S.IN_PROGRESS, S.RESOLVED),
        (S.RESOLVED, S.CLOSED),
    ]
    assert case.state is S.CLOSED


# --- snapshots keep their invariants -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"state": S.PAUSED},  # paused without the state before
        {"state": S.ACCEPTED, "previous_state_before_pause": S.ACCEPTED},
        {"state": S.PAUSED, "previous_state_before_pause": S.ASSIGNED},
        {"state": S.ACCEPTED, "extension_pending": True},
        {"state": S.ACCEPTED, "lead_department": None},
        {"state": S.TRIAGE, "lead_department": "spj"},
        {"state": S.ACCEPTED, "assisting_departments": (LEAD,)},
        {"state": S.ACCEPTED, "round": 0},
    ],
)
def test_an_inconsistent_snapshot_cannot_be_built(changes: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"complaint_id": CID, "lead_department": LEAD} | changes
    with pytest.raises(ValueError, match=r"."):
        CaseSnapshot(**fields)


# --- random sequences ---------------------------------------------------------------------------------------

ROLES = ("entitled", "lead", "assisting", "yshj", "triage", "stranger", "returner")
TARGETS = ("spj", "gxj", "gov-150523", "triage", "bank", None, "returner")
SATISFACTION: tuple[Satisfaction, ...] = ("satisfied", "basically_satisfied", "unsatisfied")


@st.composite
def steps(draw: st.DrawFn) -> tuple[Any, ...]:
    """One fact: mostly one that fits the case's state (so that long cases happen), else anything by anyone."""
    return (
        draw(st.sampled_from(["fitting"] * 3 + ["any", "callback"])),
        draw(st.integers(0, 100)),  # which fitting action
        draw(st.sampled_from(list(ActionType))),
        draw(st.sampled_from(ROLES)),
        draw(st.integers(0, 9)) > 0,  # with its fields, mostly
        draw(st.integers(1, 10)),
        draw(st.sampled_from(TARGETS)),
        draw(st.sampled_from(SATISFACTION)),
        draw(st.booleans()),
    )


def _department(case: CaseSnapshot, role: str, kind: ActionType) -> str:
    if role == "entitled":
        if kind in (A.APPROVE_EXTENSION, A.REJECT_EXTENSION):
            return "yshj"
        if kind in (A.UPHOLD_RETURN, A.OVERTURN_RETURN, A.REASSIGN):
            return "triage"
        role = "lead"
    return {
        "lead": case.lead_department or "fgw",
        "assisting": case.assisting_departments[0] if case.assisting_departments else "czj",
        "returner": case.last_returned_by or "jw",
        "stranger": "scj",
    }.get(role, role)


def _decide(case: CaseSnapshot, step: tuple[Any, ...]) -> Accepted | Refused:
    how, pick, kind, role, with_fields, days, target, satisfaction, resolved = step
    if how == "fitting":
        options: list[ActionType | None] = [k for k in ActionType if case.effective_state in ALLOWED_STATES[k]]
        options += [None] if case.state is S.RESOLVED else []  # None: the callback
        if not options:
            return Refused(409, "nothing fits")
        chosen = options[pick % len(options)]
        if chosen is None:
            return decide_callback(case, callback(satisfaction, resolved=resolved))
        kind, role = chosen, "entitled"
    elif how == "callback":
        return decide_callback(case, callback(satisfaction, resolved=resolved))
    fields: dict[str, Any] = {}
    if with_fields:
        fields = {
            "reason_code": ReturnReason.NOT_OUR_DUTY,
            "reason": "原因",
            "note": "说明",
            "working_days": days,
            "lead_department": _department(case, target, kind) if target == "returner" else target,
        }
    return decide_action(case, act(kind, _department(case, role, kind), **fields))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    category=st.sampled_from(list(Category)),
    region=st.sampled_from(["150500", "150523", "150571"]),
    script=st.lists(steps(), max_size=40),
)
def test_random_sequences_never_raise_and_never_leave_closed(
    category: Category, region: str, script: list[tuple[Any, ...]]
) -> None:
    rules = load_default_rules()
    filed = complaint(category.value, region)
    case = accepted(assign_case(new_case(CID), route_complaint(filed, rules))).case
    closed = False
    for step in script:
        before = case
        decision = _decide(case, step)
        if isinstance(decision, Refused):
            assert decision.status in (403, 409, 422)
            assert decision.reason
            continue
        # The transitions chain from the old state to the new one.
        state = before.state
        for transition in decision.transitions:
            assert transition.from_state is state
            state = transition.to_state
        assert state is decision.case.state
        case = decision.case
        # Follow the directives as the service would; the placement must always be taken.
        if decision.reroute_excluding is not None:
            routed = route_complaint(filed, rules, decision.reroute_excluding)
            case = accepted(assign_case(case, routed)).case
        if decision.assign_to is not None:
            case = accepted(assign_case(case, decision.assign_to)).case
        assert case.round >= before.round
        assert case.lead_department not in case.assisting_departments
        if closed:
            assert case.state is S.CLOSED
        closed = closed or case.state is S.CLOSED
        event(f"reached {case.state.value}")
        if decision.transitions:
            event(f"by {decision.transitions[-1].cause}")
    if closed:
        assert case.state is S.CLOSED


# --- the claimed time decides nothing ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ActionType))
@pytest.mark.parametrize("state", list(CaseState))
@pytest.mark.parametrize("claimed", [datetime(2000, 1, 1, tzinfo=UTC), datetime(2099, 1, 1, tzinfo=UTC)])
def test_an_actions_claimed_time_changes_no_decision(state: CaseState, kind: ActionType, claimed: datetime) -> None:
    # Contract 3.6: the fact's time is routing's receipt (casework stamps it); the department's `at` is a claim
    # only, so a backdated or future-dated action is decided exactly like one dated now.
    case = case_for(state, kind)
    action = well_formed(kind, case.lead_department or LEAD)
    assert decide_action(case, action.model_copy(update={"at": claimed})) == decide_action(case, action)


def test_a_callbacks_claimed_time_changes_no_decision() -> None:
    case = case_in(S.RESOLVED)
    for result in (callback(), callback("unsatisfied")):
        assert decide_callback(
            case, result.model_copy(update={"callback_at": AT.replace(year=2000)})
        ) == decide_callback(case, result)
