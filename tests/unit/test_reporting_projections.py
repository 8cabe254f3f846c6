"""The reports' pure core: the known-answer scenario (tests/support/reporting_scenario.py, worked out by hand) gives
every figure of 7.1 per group and in total, whatever the order of its facts and however often they are replayed."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from services.reporting.projections import (
    FIGURES,
    TOTAL_DIMENSION,
    TOTAL_KEY,
    ZERO,
    Contribution,
    Counts,
    Fact,
    FoldState,
    fold_batch,
    fold_case,
    merge_deltas,
    rate,
    rollup_delta,
    summary,
)
from services.reporting.repeats import RepeatCase, find_repeats
from tests.support.reporting_scenario import EXPECTED_GROUPS, EXPECTED_TOTAL, PERIOD, scenario

Rollups = dict[tuple[date, str, str], Counts]


def project(facts: list[Fact], batch: int = 7) -> Rollups:
    """What the service does, without I/O: batches of facts; per touched case, fold all its facts so far, subtract its
    old contribution, add the new one."""
    kept: dict[str, list[Fact]] = {}
    seen: set[str] = set()
    contributions: dict[str, Contribution] = {}
    rollups: Rollups = {}
    for i in range(0, len(facts), batch):
        touched = set()
        for fact in facts[i : i + batch]:
            if str(fact.event_id) in seen:
                continue
            seen.add(str(fact.event_id))
            kept.setdefault(fact.complaint_id, []).append(fact)
            touched.add(fact.complaint_id)
        deltas = []
        for cid in sorted(touched):
            new = fold_case(cid, kept[cid]).contribution
            deltas.append(rollup_delta(contributions.get(cid, Contribution()), new))
            contributions[cid] = new
        for key, counts in merge_deltas(deltas).items():
            rollups[key] = tuple(a + b for a, b in zip(rollups.get(key, ZERO), counts, strict=True))
    return {k: v for k, v in rollups.items() if any(v)}


def project_kept(facts: list[Fact], batch: int = 7, forget: frozenset[str] = frozenset()) -> Rollups:
    """What the service does since migration 004: per touched case, its kept state (through JSON, as in the cases
    table) plus the batch's new facts, folded by `fold_batch`. A case in `forget` loses its kept state after its
    first batch (a row stored before the migration), so it is folded again from all its stored facts once."""
    stored: dict[str, list[Fact]] = {}
    seen: set[str] = set()
    kept: dict[str, tuple[Contribution, str | None]] = {}
    rollups: Rollups = {}
    for i in range(0, len(facts), batch):
        fresh: dict[str, list[Fact]] = {}
        for fact in facts[i : i + batch]:
            if str(fact.event_id) in seen:
                continue
            seen.add(str(fact.event_id))
            stored.setdefault(fact.complaint_id, []).append(fact)
            fresh.setdefault(fact.complaint_id, []).append(fact)
        cases: dict[str, tuple[Contribution, FoldState]] = {}
        for cid, new in fresh.items():
            contribution, text = kept.get(cid, (Contribution(), json.dumps(FoldState().to_json())))
            state = FoldState.from_json(json.loads(text)) if text is not None else None
            if state is None:
                cases[cid] = (contribution, FoldState().with_facts(stored[cid]))
            else:
                cases[cid] = (contribution, state.with_facts(new))
        folded, delta = fold_batch(cases)
        for f in folded:
            cid = f.profile.complaint_id
            state_text = None if cid in forget else json.dumps(cases[cid][1].to_json(), ensure_ascii=False)
            kept[cid] = (Contribution.from_json(json.loads(json.dumps(f.contribution.to_json()))), state_text)
        for key, counts in delta.items():
            rollups[key] = tuple(a + b for a, b in zip(rollups.get(key, ZERO), counts, strict=True))
    return {k: v for k, v in rollups.items() if any(v)}


def answer(rollups: Rollups, group_by: str = "department") -> dict[str, object]:
    start, end = PERIOD
    groups: dict[str, Counts] = {}
    total = ZERO
    for (day, dim, key), counts in rollups.items():
        if not start <= day <= end:
            continue
        if dim == group_by:
            groups[key] = tuple(a + b for a, b in zip(groups.get(key, ZERO), counts, strict=True))
        if (dim, key) == (TOTAL_DIMENSION, TOTAL_KEY):
            total = tuple(a + b for a, b in zip(total, counts, strict=True))
    return summary(group_by, groups, total, start=start, end=end, as_of=datetime(2026, 11, 29, 2, tzinfo=UTC))


def test_known_answer_per_department_and_total() -> None:
    got = answer(project(scenario()))
    assert got["groups"] == EXPECTED_GROUPS
    assert got["total"] == EXPECTED_TOTAL
    assert sorted(EXPECTED_TOTAL)[:] == sorted(["key", "name", *FIGURES])  # every figure of the table is checked
    assert list(got["total"])[2:] == list(FIGURES)  # type: ignore[call-overload]  # in the table's order


def test_other_groupings_count_each_case_once() -> None:
    rollups = project(scenario())
    for group_by, keys in (
        ("channel", {"hotline": 7, "complaint_line": 7, "supervisor": 5}),
        ("category", {"government_services": 7, "market_regulation": 7, "financing": 5}),
        ("region", {"150500": 19}),
    ):
        got = answer(rollups, group_by)
        assert {g["key"]: g["received"] for g in got["groups"]} == keys  # type: ignore[index, union-attr]
        # Every case and assignment is in exactly one group of these dimensions: the groups add up to the total.
        for figure in ("received", "assignments", "returns", "callbacks", "accepted_on_time", "overdue_open"):
            assert sum(g[figure] for g in got["groups"]) == EXPECTED_TOTAL[figure]  # type: ignore[index, union-attr]
        assert got["total"] == EXPECTED_TOTAL
    names = {g["key"]: g["name"] for g in answer(rollups, "channel")["groups"]}  # type: ignore[index, union-attr]
    assert names["hotline"] == "12345政务服务便民热线"
    assert answer(rollups, "category")["groups"][0]["name"] == "融资信贷"  # type: ignore[index]
    assert answer(rollups, "region")["groups"][0]["name"] == "通辽市"  # type: ignore[index]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), batch=st.integers(min_value=1, max_value=60))
def test_any_order_and_replays_give_the_same_rollups(seed: int, batch: int) -> None:
    facts = scenario()
    expected = project(facts)
    shuffled = facts * 2  # every fact replayed
    random.Random(seed).shuffle(shuffled)
    assert project(shuffled + facts, batch) == expected


def test_kept_state_in_order_gives_the_same_rollups_as_folding_every_fact() -> None:
    facts = scenario()
    expected = project(facts)
    in_order = sorted(facts, key=lambda f: (f.occurred_at, str(f.event_id)))
    for batch in (1, 3, 50):
        assert project_kept(in_order, batch) == expected
    assert answer(project_kept(in_order))["groups"] == EXPECTED_GROUPS


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), batch=st.integers(min_value=1, max_value=60))
def test_kept_state_out_of_order_and_replayed_gives_the_same_rollups(seed: int, batch: int) -> None:
    facts = scenario()
    expected = project(facts)
    shuffled = facts * 2
    rng = random.Random(seed)
    rng.shuffle(shuffled)
    cases = sorted({f.complaint_id for f in facts})
    forget = frozenset(rng.sample(cases, k=len(cases) // 3))  # some rows without a kept state, folded from the facts
    assert project_kept(shuffled + facts, batch) == expected
    assert project_kept(shuffled, batch, forget) == expected


def test_a_kept_state_round_trips_through_json_and_folds_like_the_events() -> None:
    facts = scenario()
    by_case: dict[str, list[Fact]] = {}
    for fact in facts:
        by_case.setdefault(fact.complaint_id, []).append(fact)
    for cid, events in by_case.items():
        state = FoldState().with_facts(events)
        again = FoldState.from_json(json.loads(json.dumps(state.to_json(), ensure_ascii=False)))
        assert again is not None
        assert again.facts == state.facts  # every field, enums and times (UTC) included
        assert fold_case(cid, again.facts) == fold_case(cid, events)
        assert again.with_facts(events) == again  # a replay adds nothing
    assert FoldState.from_json(None) is None
    assert FoldState.from_json({"v": 0, "facts": []}) is None  # another version: folded from the stored facts


def test_rates_round_half_up_to_four_decimals() -> None:
    assert rate(1, 3) == 0.3333
    assert rate(2, 3) == 0.6667
    assert rate(1, 8) == 0.125
    assert rate(33, 48) == 0.6875
    assert rate(5, 100000 * 2) == 0.0  # 0.000025 → 0.0000
    assert rate(1, 40000 * 2 // 2 * 2) == 0.0
    assert rate(5, 10000 * 2) == 0.0003  # 0.00025 → half up
    assert rate(0, 0) is None


def test_repeats_ninety_days_and_consecutive_years() -> None:
    def case(cid: str, day: str, key: str = "uscc:X", category: str = "financing") -> RepeatCase:
        at = datetime.fromisoformat(day + "T02:00:00+00:00")
        return RepeatCase(cid, at, key, "某公司", "X", category)

    cases = [
        case("a", "2025-12-20"),
        case("b", "2026-02-10"),  # 52 days after a
        case("c", "2026-11-05"),  # far from b
        case("d", "2026-11-20"),  # 15 days after c
        case("e", "2026-11-06", key="name:乙公司"),
        case("f", "2026-11-07", key="name:乙公司", category="taxes_fees"),
    ]
    got = find_repeats(cases, date(2026, 11, 1), date(2026, 11, 30))
    assert [(r["kind"], r["complaint_ids"]) for r in got] == [
        ("consecutive_years", ["a", "b", "c", "d"]),
        ("same_enterprise_90d", ["c", "d"]),
    ]
    assert got[0]["enterprise"] == {"name": "某公司", "uscc": "X"}
    # a..b (90 days) is outside the period: reported only when asked about it.
    early = find_repeats(cases, date(2026, 2, 1), date(2026, 2, 28))
    assert ("same_enterprise_90d", ["a", "b"]) in [(r["kind"], r["complaint_ids"]) for r in early]
