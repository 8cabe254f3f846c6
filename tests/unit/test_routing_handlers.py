"""Routing's handler logic without I/O: the events each fact gives (casework.py), the snapshot's JSON form, the rule
set in force (rules_in_force), what the HTTP side shows (views.py), and the department simulator's plans played
through the real state machine until every case closes."""

from __future__ import annotations

import random
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.routing.casework import (
    CaseFacts,
    Effects,
    act,
    call_back,
    callback_key,
    facts_of,
    receive,
    snapshot_from_json,
    snapshot_to_json,
)
from services.routing.lifecycle import Assignment, CaseSnapshot, Refused
from services.routing.rules import RuleSet, load_default_rules, load_rules, rules_in_force
from services.routing.views import (
    DryRunComplaint,
    case_summary,
    current_deadlines,
    describe_validation,
    dry_run_place,
    fact_view,
    inline_schema,
    mask_complaint,
)
from shared.devtools.departments import DepartmentPlayer, DepartmentSimulator
from shared.domain import Category, Channel, Kind, Urgency
from shared.events import (
    ActionType,
    CallbackResult,
    CaseState,
    ComplaintAssigned,
    ComplaintReceived,
    Contact,
    DepartmentAction,
    LifecycleChanged,
)
from shared.settings import Settings

NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
RULES = load_default_rules()


def complaint(category: Category = Category.FINANCING, region: str = "150523", n: int = 1) -> ComplaintReceived:
    return ComplaintReceived(
        occurred_at=NOW - timedelta(seconds=5),
        complaint_id=f"hotline:TL{n:05d}",
        channel=Channel.HOTLINE,
        source_id=f"TL{n:05d}",
        received_at=NOW - timedelta(minutes=1),
        kind=Kind.COMPLAINT,
        category=category,
        title="续贷审批拖延",
        content="联系电话 13912345678",
        urgency=Urgency.NORMAL,
        region_code=region,
        contact=Contact(name="李女士", phone="13912345678"),
    )


def action(case: CaseSnapshot, department: str, kind: str, at: datetime = NOW, **fields: Any) -> DepartmentAction:
    return DepartmentAction.model_validate(
        {
            "action_id": f"a-{kind}-{department}-{case.round}",
            "complaint_id": case.complaint_id,
            "department": department,
            "action": kind,
            "at": at,
            **fields,
        }
    )


def taken(result: Effects | Refused) -> Effects:
    assert isinstance(result, Effects), result
    return result


def moves(effects: Effects) -> list[tuple[str | None, str, str]]:
    return [(t.from_state.value if t.from_state else None, t.to_state.value, t.cause) for t in effects.transitions]


# --- what each fact publishes ---------------------------------------------------------------------------------


def test_a_received_complaint_is_assigned_in_round_one() -> None:
    c = complaint()
    effects = receive(c, RULES, NOW)
    (assigned,) = effects.assignments
    assert (assigned.round, assigned.lead_department, assigned.assisting_departments) == (1, "gov-150523", ("jrb",))
    assert (assigned.level, assigned.rule_id, assigned.assigned_at) == ("county", "territorial-county", NOW)
    assert assigned.causation_id == str(c.event_id)
    assert moves(effects) == [("received", "assigned", "assigned")]
    (change,) = effects.transitions
    assert (change.department, change.lead_department, change.at, change.round) == ("gov-150523", "gov-150523", NOW, 1)
    assert effects.rules_versions == {assigned.assignment_id: RULES.version}
    assert effects.case.state is CaseState.ASSIGNED


def test_the_same_fact_gives_the_same_event_ids() -> None:
    c = complaint()
    first, again = receive(c, RULES, NOW), receive(c, RULES, NOW)
    assert [e.event_id for e in first.events] == [e.event_id for e in again.events]
    assert first.assignments[0].assignment_id == again.assignments[0].assignment_id
    assert len({e.event_id for e in first.events}) == len(first.events)


def test_what_no_rule_places_goes_to_the_triage_desk() -> None:
    effects = receive(complaint(Category.OTHER, "150500"), RULES, NOW)
    assert moves(effects) == [("received", "triage", "assigned")]
    assert effects.assignments[0].lead_department == "triage"
    assert effects.case.effective_state is CaseState.TRIAGE


def test_a_return_is_routed_again_in_a_new_round() -> None:
    c = complaint()
    case = receive(c, RULES, NOW).case
    ret = action(case, "gov-150523", "return", reason_code="not_our_duty", reason="属金融监管")
    effects = taken(act(case, facts_of(c), ret, RULES, NOW))
    assert moves(effects) == [("assigned", "returned", "return"), ("returned", "assigned", "assigned")]
    returned, reassigned = effects.transitions
    assert (returned.reason_code, returned.department, returned.round, returned.action_id) == (
        "not_our_duty",
        "gov-150523",
        2,
        ret.action_id,
    )
    assert reassigned.action_id == ret.action_id
    (assigned,) = effects.assignments
    assert (assigned.round, assigned.lead_department, assigned.rule_id) == (2, "jrb", "sector-financing")
    assert assigned.causation_id == ret.action_id
    assert effects.returned == ("gov-150523", "not_our_duty")
    assert effects.case.returned_by == frozenset({"gov-150523"})


def test_an_action_is_judged_by_routing_receipt_and_carries_its_claimed_time() -> None:
    # Contract 3.6: `at` is when the product took the fact; the department's own time travels as `claimed_at`.
    c = complaint()
    case = receive(c, RULES, NOW).case
    for claimed in (NOW - timedelta(hours=1), NOW + timedelta(hours=1), NOW):
        effects = taken(act(case, facts_of(c), action(case, "gov-150523", "accept", claimed), RULES, NOW))
        (change,) = effects.transitions
        assert (change.at, change.claimed_at) == (NOW, claimed)


def test_a_backdated_resolve_is_taken_at_receipt() -> None:
    # A resolve claimed a week ago (before the assignment, past any deadline) meets nothing: it counts from now.
    c = complaint(Category.GOVERNMENT_SERVICES, "150500")
    facts = facts_of(c)
    case = receive(c, RULES, NOW - timedelta(days=10)).case
    for kind in ("accept", "contact"):
        case = taken(act(case, facts, action(case, "spj", kind, NOW - timedelta(days=9)), RULES, NOW)).case
    week_ago = NOW - timedelta(days=7)
    resolved = taken(act(case, facts, action(case, "spj", "resolve", week_ago, note="已办结"), RULES, NOW))
    (change,) = resolved.transitions
    assert (change.cause, change.at, change.claimed_at) == ("resolve", NOW, week_ago)
    assert change.occurred_at == NOW
    # On the wire as well: the lifecycle message a consumer reads says both.
    wire = LifecycleChanged.model_validate_json(change.to_json_bytes())
    assert (wire.at, wire.claimed_at) == (NOW, week_ago)


def test_extension_and_desk_facts_take_the_receipt_time_too() -> None:
    c = complaint(Category.GOVERNMENT_SERVICES, "150500")
    facts = facts_of(c)
    case = receive(c, RULES, NOW).case
    case = taken(act(case, facts, action(case, "spj", "accept"), RULES, NOW)).case
    claimed = NOW - timedelta(days=3)
    asked = taken(act(case, facts, action(case, "spj", "request_extension", claimed, working_days=2), RULES, NOW))
    assert [(t.at, t.claimed_at) for t in asked.transitions] == [(NOW, claimed)]
    ret = action(asked.case, "spj", "return", claimed, reason_code="not_our_duty", reason="x")
    returned = taken(act(asked.case, facts, ret, RULES, NOW))
    assert {t.at for t in returned.transitions} == {NOW}
    # The re-routing after the return is routing's own act: no department claimed a time for it.
    assert [t.claimed_at for t in returned.transitions] == [claimed, None]


def test_a_callback_is_judged_by_receipt_and_carries_its_visit_time() -> None:
    c = complaint(Category.GOVERNMENT_SERVICES, "150500")
    facts = facts_of(c)
    case = receive(c, RULES, NOW).case
    for kind, extra in (("accept", {}), ("contact", {}), ("resolve", {"note": "已办结"})):
        case = taken(act(case, facts, action(case, "spj", kind, **extra), RULES, NOW)).case
    visited = NOW - timedelta(days=5)
    result = CallbackResult(
        complaint_id=c.complaint_id, callback_at=visited, satisfaction="unsatisfied", resolved=False
    )
    reopened = taken(call_back(case, facts, result, RULES, NOW))
    assert [(t.to_state.value, t.at, t.claimed_at) for t in reopened.transitions] == [
        ("reopened", NOW, visited),
        ("assigned", NOW, None),
    ]


def test_extension_facts_are_lifecycle_events_that_keep_the_state() -> None:
    c = complaint(Category.GOVERNMENT_SERVICES, "150500")
    facts = facts_of(c)
    case = receive(c, RULES, NOW).case
    case = taken(act(case, facts, action(case, "spj", "accept"), RULES, NOW)).case
    asked = taken(act(case, facts, action(case, "spj", "request_extension", working_days=4), RULES, NOW))
    assert moves(asked) == [("accepted", "accepted", "request_extension")]
    assert asked.transitions[0].extension_days == 4
    approved = taken(act(asked.case, facts, action(case, "yshj", "approve_extension", working_days=3), RULES, NOW))
    assert moves(approved) == [("accepted", "accepted", "approve_extension")]
    assert (approved.transitions[0].extension_days, approved.transitions[0].department) == (3, "yshj")
    again = act(approved.case, facts, action(case, "spj", "request_extension", working_days=2), RULES, NOW)
    assert isinstance(again, Refused)
    assert again.status == 409
    rejected = taken(act(asked.case, facts, action(case, "yshj", "reject_extension"), RULES, NOW))
    assert moves(rejected) == [("accepted", "accepted", "reject_extension")]
    assert rejected.transitions[0].extension_days is None
    progress = taken(act(rejected.case, facts, action(case, "spj", "contact"), RULES, NOW))
    assert taken(act(progress.case, facts, action(case, "spj", "progress"), RULES, NOW)).events == ()


def test_the_desk_decisions_name_themselves_as_the_cause() -> None:
    c = complaint(Category.CORRUPTION, "150500")
    facts = facts_of(c)
    case = receive(c, RULES, NOW).case
    ret = action(case, "jw", "return", reason_code="wrong_region", reason="不属本级")
    at_desk = taken(act(case, facts, ret, RULES, NOW))
    assert moves(at_desk)[-1] == ("returned", "triage", "assigned")
    assert at_desk.assignments[0].rule_id == "fallback-triage"
    upheld = taken(
        act(at_desk.case, facts, action(at_desk.case, "triage", "uphold_return", lead_department="sfj"), RULES, NOW)
    )
    assert moves(upheld) == [("triage", "assigned", "uphold_return")]
    assert (upheld.assignments[0].lead_department, upheld.assignments[0].rule_id) == ("sfj", "manual")
    assert upheld.rules_versions == {}
    overturned = taken(act(at_desk.case, facts, action(at_desk.case, "triage", "overturn_return"), RULES, NOW))
    assert moves(overturned) == [("triage", "assigned", "overturn_return")]
    assert overturned.assignments[0].lead_department == "jw"
    assert overturned.transitions[0].action_id is not None


def test_refusals_change_nothing_and_say_why() -> None:
    c = complaint()
    case = receive(c, RULES, NOW).case
    refused = act(case, facts_of(c), action(case, "spj", "accept"), RULES, NOW)
    assert isinstance(refused, Refused)
    assert refused.status == 403
    assert "does not hold" in refused.reason


def test_callbacks_close_or_reopen() -> None:
    c = complaint(Category.GOVERNMENT_SERVICES, "150500")
    facts = facts_of(c)
    case = receive(c, RULES, NOW).case
    for kind, extra in (("accept", {}), ("contact", {}), ("resolve", {"note": "已办结"})):
        case = taken(act(case, facts, action(case, "spj", kind, **extra), RULES, NOW)).case
    good = CallbackResult(
        complaint_id=c.complaint_id, callback_at=NOW, satisfaction="basically_satisfied", resolved=True
    )
    closed = taken(call_back(case, facts, good, RULES, NOW))
    assert moves(closed) == [("resolved", "closed", "callback")]
    assert closed.transitions[0].causation_id == callback_key(good)
    bad = good.model_copy(update={"satisfaction": "unsatisfied"})
    reopened = taken(call_back(case, facts, bad, RULES, NOW))
    assert moves(reopened) == [("resolved", "reopened", "callback"), ("reopened", "assigned", "assigned")]
    (assigned,) = reopened.assignments
    assert (assigned.round, assigned.lead_department, assigned.causation_id) == (2, "spj", callback_key(bad))
    assert isinstance(call_back(closed.case, facts, good, RULES, NOW), Refused)


def test_callback_key_names_the_case_and_the_time_in_utc() -> None:
    local = datetime.fromisoformat("2026-11-26T10:00:00+08:00")
    result = CallbackResult(complaint_id="hotline:X", callback_at=local, satisfaction="satisfied", resolved=True)
    assert callback_key(result) == "callback:hotline:X@2026-11-26T02:00:00Z"


def test_the_outcome_an_http_caller_gets() -> None:
    c = complaint()
    case = receive(c, RULES, NOW).case
    ret = action(case, "gov-150523", "return", reason_code="not_our_duty", reason="x")
    outcome = taken(act(case, facts_of(c), ret, RULES, NOW)).outcome()
    assert outcome["state"] == "assigned"
    assert outcome["round"] == 2
    assert outcome["lead_department"] == "jrb"
    assert outcome["assignment"]["rule_id"] == "sector-financing"
    assert [t["to_state"] for t in outcome["transitions"]] == ["returned", "assigned"]


# --- the snapshot as JSON -------------------------------------------------------------------------------------

KINDS = list(ActionType)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(["lead", "triage", "yshj", "czj"])), max_size=12))
def test_every_snapshot_survives_its_json_form(steps: list[tuple[ActionType, str]]) -> None:
    c = complaint(Category.POLICY_FULFILLMENT, "150500")
    facts = facts_of(c)
    case = receive(c, RULES, NOW).case
    assert snapshot_from_json(snapshot_to_json(case)) == case
    for n, (kind, who) in enumerate(steps):
        department = case.lead_department if who == "lead" else who
        fields: dict[str, Any] = {
            "reason_code": "not_our_duty",
            "reason": "原因",
            "note": "说明",
            "working_days": 3,
            "lead_department": "spj",
            "action_id": f"s{n}",
        }
        result = act(case, facts, action(case, department or "triage", kind.value, **fields), RULES, NOW)
        if isinstance(result, Effects):
            case = result.case
        assert snapshot_from_json(snapshot_to_json(case)) == case


def test_a_snapshot_with_everything_set_round_trips() -> None:
    case = CaseSnapshot(
        complaint_id="hotline:X",
        state=CaseState.PAUSED,
        round=3,
        lead_department="fgw",
        assisting_departments=("czj",),
        level="city",
        rule_id="sector-policy-fulfillment",
        previous_state_before_pause=CaseState.IN_PROGRESS,
        extension_requested_this_round=True,
        extension_pending=True,
        extension_requested_days=5,
        returned_from=Assignment("gov-150523", ("fgw", "czj"), "county", "territorial-county", "属地"),
        returned_by=frozenset({"gov-150523", "spj"}),
    )
    assert snapshot_from_json(snapshot_to_json(case)) == case


# --- the rule set in force --------------------------------------------------------------------------------------


def _with(version: str, effective_from: str) -> RuleSet:
    text = (
        f'version: "{version}"\neffective_from: "{effective_from}"\n'
        "rules:\n  - id: fallback-triage\n    assign: {lead: triage, level: city}\n"
    )
    return load_rules(text)


def test_posted_sets_take_over_at_their_time() -> None:
    base = RULES
    later = _with("2027.1", "2027-01-01T00:00:00+08:00")
    assert rules_in_force(base, [later], NOW) is base
    assert rules_in_force(base, [later], datetime(2027, 1, 2, tzinfo=UTC)) is later


def test_a_posted_set_at_the_base_time_replaces_the_base() -> None:
    same_time = _with("2026.1-fix", "2026-01-01T00:00:00+08:00")
    assert rules_in_force(RULES, [same_time], NOW) is same_time


def test_before_every_set_the_base_applies() -> None:
    future_base = _with("2030.1", "2030-01-01T00:00:00+08:00")
    assert rules_in_force(future_base, [], NOW) is future_base
    assert rules_in_force(future_base, [_with("2031.1", "2031-01-01T00:00:00+08:00")], NOW) is future_base


# --- views --------------------------------------------------------------------------------------------------------


def test_phone_numbers_are_whole_for_the_lead_only() -> None:
    body = complaint().model_dump(mode="json")
    assert mask_complaint(body, True)["contact"]["phone"] == "13912345678"
    masked = mask_complaint(body, False)
    assert masked["contact"]["phone"] == "139****5678"
    assert "13912345678" not in masked["content"]
    assert body["contact"]["phone"] == "13912345678"  # the stored fact is untouched
    note = fact_view("action", NOW, NOW, {"note": "回电 13912345678", "action_id": "a-13912345678"}, False)
    assert note["fact"]["note"] == "回电 139****5678"
    assert note["fact"]["action_id"] == "a-13912345678"  # only free text is masked


def _deadline(stage: str, round_: int, hours: int, status: str = "set") -> dict[str, Any]:
    return {
        "complaint_id": "c",
        "stage": stage,
        "round": round_,
        "department": "spj",
        "due_at": NOW + timedelta(hours=hours),
        "status": status,
        "escalate_to": None,
        "late": False,
    }


def test_a_list_shows_the_current_rounds_deadlines_and_the_resolve_deadline() -> None:
    rows = [_deadline("accept", 1, 1, "met"), _deadline("resolve", 1, 48), _deadline("accept", 2, 3)]
    shown = current_deadlines(rows, 2)
    assert [(d["stage"], d["round"]) for d in shown] == [("accept", 2), ("resolve", 1)]
    assert current_deadlines([], 1) == []


def test_a_case_summary_names_the_viewers_role() -> None:
    row = {
        "complaint_id": "hotline:TL00001",
        "channel": "hotline",
        "category": "financing",
        "region_code": "150523",
        "urgency": "normal",
        "received_at": NOW,
        "state": "assigned",
        "round": 1,
        "lead_department": "gov-150523",
        "assisting_departments": ["jrb"],
        "level": "county",
        "rule_id": "territorial-county",
        "assigned_at": NOW,
        "updated_at": NOW,
        "complaint": complaint().model_dump_json(),
    }
    lead = case_summary(row, [], "gov-150523")
    assisting = case_summary(row, [], "jrb")
    assert (lead["role"], lead["contact"]["phone"]) == ("lead", "13912345678")
    assert (assisting["role"], assisting["contact"]["phone"]) == ("assisting", "139****5678")
    assert lead["received_at"].endswith("Z")


def test_dry_run_places_by_category_or_by_text() -> None:
    assert dry_run_place(DryRunComplaint(category=Category.FINANCING, region_code="开鲁县")) == (
        Category.FINANCING,
        "150523",
        [],
    )
    category, region, notes = dry_run_place(DryRunComplaint(content="企业发票领用受限", region_code="火星"))
    assert (category, region) == (Category.TAXES_FEES, "150500")
    assert len(notes) == 2
    with pytest.raises(ValueError, match="category"):
        dry_run_place(DryRunComplaint())


def test_validation_errors_read_as_sentences() -> None:
    with pytest.raises(ValidationError) as not_json:
        DepartmentAction.model_validate_json(b"{oops")
    assert describe_validation(not_json.value)[0] == "invalid_json"
    with pytest.raises(ValidationError) as missing:
        DepartmentAction.model_validate_json(b'{"action_id": "x", "action": "fly"}')
    kind, reason = describe_validation(missing.value)
    assert kind == "invalid_message"
    assert "complaint_id" in reason
    assert "action" in reason


def test_the_documented_action_body_has_no_dangling_references() -> None:
    schema = inline_schema(DepartmentAction)
    assert "$ref" not in str(schema)
    assert "accept" in str(schema["properties"]["action"])


# --- the department simulator, played through the real state machine --------------------------------------------


def _play(player: DepartmentPlayer, c: ComplaintReceived, rules: RuleSet, max_steps: int = 200) -> CaseSnapshot:
    """Feed every fact the system publishes to the player, and every message it plans back to the system, in order,
    until the case closes. Each planned message must be taken: the simulator never asks for what would be refused."""
    facts: CaseFacts = facts_of(c)
    first = receive(c, rules, NOW)
    case = first.case
    queue: deque[ComplaintAssigned | LifecycleChanged] = deque(first.events)
    steps = 0
    while queue and steps < max_steps:
        steps += 1
        event = queue.popleft()
        if isinstance(event, ComplaintAssigned):
            plan = player.on_assigned(event, NOW)
        elif event.to_state is CaseState.RESOLVED and event.from_state is not CaseState.RESOLVED:
            plan = player.on_resolved(event, NOW)
        else:
            continue
        for planned in plan:
            message = planned.message
            if isinstance(message, DepartmentAction):
                result = act(case, facts, message, rules, NOW)
            else:
                result = call_back(case, facts, message, rules, NOW)
            assert isinstance(result, Effects), (message, result)
            case = result.case
            queue.extend(result.events)
    return case


@pytest.mark.parametrize("seed", range(60))
def test_the_simulated_departments_take_every_case_to_closed(seed: int) -> None:
    rng = random.Random(seed)
    # Returns, extensions and unhappy callbacks far more often than in a demo, to walk every path.
    player = DepartmentPlayer(rng, return_share=0.35, extension_share=0.35, unsatisfied_share=0.35)
    c = complaint(rng.choice(list(Category)), rng.choice(["150500", "150523", "150581"]), n=seed)
    final = _play(player, c, RULES)
    assert final.state is CaseState.CLOSED, final


def test_plans_are_timed_in_order_and_reproducible() -> None:
    assigned = receive(complaint(), RULES, NOW).assignments[0]
    a = DepartmentPlayer(random.Random(1)).on_assigned(assigned, NOW)
    b = DepartmentPlayer(random.Random(1)).on_assigned(assigned, NOW)
    assert [p.message for p in a] == [p.message for p in b]
    delays = [p.delay_s for p in a]
    assert delays == sorted(delays)
    assert delays[-1] < 90


def test_the_simulator_needs_a_positive_speed() -> None:
    with pytest.raises(ValueError, match="speed"):
        DepartmentSimulator(Settings(), speed=0)
