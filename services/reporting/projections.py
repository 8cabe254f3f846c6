"""The reporting read model's decisions (contract 7 and 7.1), pure: a case's facts, in any order, folded into the
figures it adds to the rollups; the difference between two contributions; and a summary from summed rollups.

No I/O and no clock. A case is judged only on its facts (their own times), so the same set of facts gives the
same figures whatever order they came in; docs/reporting.md gives the choices where the contract is silent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise
from operator import add, sub
from typing import Any, Final, NamedTuple

from shared.domain import CATEGORY_LABELS, DEPARTMENTS, LOCAL_TZ, REGIONS, Category
from shared.events import ComplaintAssigned, ComplaintReceived, LifecycleChanged, SlaEvent
from shared.events.sla import CaseState, SlaEventType, Stage

COUNTS: Final = (
    "received",
    "resolved",
    "closed",
    "overdue_open",
    "on_time",
    "on_time_after_extension",
    "late",
    "assignments",
    "accepted_on_time",
    "response_base",
    "returns",
    "returns_overturned",
    "callbacks",
    "satisfied",
    "solved",
    "contacted_on_time",
    "contact_base",
)
"""What a rollup row counts (the integers behind every figure of 7.1); the order of the rollups' columns."""
_IX: Final = {name: i for i, name in enumerate(COUNTS)}

FIGURES: Final = (
    "received",
    "resolved",
    "closed",
    "open",
    "overdue_open",
    "resolution_rate",
    "on_time",
    "on_time_after_extension",
    "late",
    "on_time_rate",
    "assignments",
    "accepted_on_time",
    "response_rate",
    "returns",
    "returns_overturned",
    "return_rate",
    "callbacks",
    "satisfied",
    "satisfaction_rate",
    "solved",
    "solved_rate",
    "contacted_on_time",
    "contact_rate",
)
"""The figures of 7.1, in the order of its table (the CSV and XLSX columns after `key,name`)."""

GROUP_BY: Final = ("department", "channel", "region", "category")
TOTAL_DIMENSION: Final = "total"
TOTAL_KEY: Final = "all"
UNASSIGNED: Final = "unassigned"

Counts = tuple[int, ...]
ZERO: Final[Counts] = (0,) * len(COUNTS)
Fact = ComplaintReceived | ComplaintAssigned | LifecycleChanged | SlaEvent
RowKey = tuple[str, str]
"""(dimension, key) of a rollup row, within the case's day."""


def _counts(**values: int) -> Counts:
    out = [0] * len(COUNTS)
    for name, value in values.items():
        out[_IX[name]] = value
    return tuple(out)


def _add(a: Counts, b: Counts) -> Counts:
    return tuple(map(add, a, b))


def _sub(a: Counts, b: Counts) -> Counts:
    return tuple(map(sub, a, b))


@dataclass(frozen=True)
class Contribution:
    """What one case adds to the rollups: rows of its local day of receipt. Empty before its receipt is known."""

    day: date | None = None
    rows: Mapping[RowKey, Counts] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat() if self.day else None,
            "rows": [[d, k, list(c)] for (d, k), c in sorted(self.rows.items())],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Contribution:
        if not data or not data.get("day"):
            return cls()
        return cls(date.fromisoformat(data["day"]), {(d, k): tuple(c) for d, k, c in data["rows"]})


@dataclass(frozen=True)
class CaseProfile:
    """What the case is, for grouping and for repeats."""

    complaint_id: str
    received_at: datetime | None = None
    channel: str | None = None
    region_code: str | None = None
    category: str | None = None
    department: str = UNASSIGNED
    enterprise_key: str | None = None
    enterprise_name: str | None = None
    uscc: str | None = None
    title: str | None = None

    @property
    def day(self) -> date | None:
        return self.received_at.astimezone(LOCAL_TZ).date() if self.received_at else None


@dataclass(frozen=True)
class StandingBreach:
    """An open case's overdue stage, as the bulletin lists it: the breach that still stands with the earliest due."""

    stage: str
    round: int
    due_at: datetime


@dataclass(frozen=True)
class CaseFigures:
    profile: CaseProfile
    contribution: Contribution
    overdue: StandingBreach | None = None  # set when the case counts as overdue_open


# --- the compact facts a case is folded from -------------------------------------------------------------------
#
# A case's folded state is the list of its facts (deduplicated by event id) reduced to the fields the fold reads.
# It is kept with the case (cases.fold_state) so that a batch folds a touched case from that list plus the new
# facts, without reading and re-validating every stored fact again. The fold takes the facts in any order (it
# sorts what it needs), so a fact arriving out of order costs nothing more than one arriving in order.

FOLD_STATE_VERSION: Final = 1


class ReceivedFact(NamedTuple):
    event_id: str
    occurred_at: datetime
    received_at: datetime
    channel: str
    region_code: str
    category: str
    enterprise_key: str | None
    enterprise_name: str | None
    uscc: str | None
    title: str


class AssignedFact(NamedTuple):
    event_id: str
    occurred_at: datetime
    round: int
    assigned_at: datetime
    lead_department: str


class LifecycleFact(NamedTuple):
    event_id: str
    occurred_at: datetime
    at: datetime
    """`at`, else `occurred_at`: the time the reports judge the fact by."""
    round: int
    to_state: CaseState
    cause: str
    department: str | None
    lead_department: str | None
    satisfaction: str | None
    resolved: bool | None


class SlaFact(NamedTuple):
    event_id: str
    occurred_at: datetime
    type: SlaEventType
    stage: Stage
    round: int
    due_at: datetime
    department: str
    causation_id: str | None


SlimFact = ReceivedFact | AssignedFact | LifecycleFact | SlaFact
_TAGS: Final = {ReceivedFact: "r", AssignedFact: "a", LifecycleFact: "l", SlaFact: "s"}


def slim(fact: Fact | SlimFact) -> SlimFact:
    """The fields of a fact the fold reads (a compact fact is returned as it is)."""
    if isinstance(fact, tuple):  # the compact facts are named tuples, the events are not
        return fact
    eid = str(fact.event_id)
    if isinstance(fact, ComplaintReceived):
        key, name, uscc = _enterprise(fact)
        return ReceivedFact(
            eid, fact.occurred_at, fact.received_at, fact.channel.value, fact.region_code, fact.category.value,
            key, name, uscc, fact.title,
        )  # fmt: skip
    if isinstance(fact, ComplaintAssigned):
        return AssignedFact(eid, fact.occurred_at, fact.round, fact.assigned_at, fact.lead_department)
    if isinstance(fact, LifecycleChanged):
        return LifecycleFact(
            eid, fact.occurred_at, fact.at or fact.occurred_at, fact.round, fact.to_state, fact.cause,
            fact.department, fact.lead_department, fact.satisfaction, fact.resolved,
        )  # fmt: skip
    return SlaFact(
        eid, fact.occurred_at, fact.type, fact.stage, fact.round, fact.due_at, fact.department, fact.causation_id
    )


def _t(value: datetime) -> str:
    return value.isoformat()


def slim_to_json(fact: SlimFact) -> list[Any]:
    """A compact fact as a JSON array: its tag, then its fields in order (times in ISO 8601 with offset)."""
    return [_TAGS[type(fact)], *(_t(v) if isinstance(v, datetime) else v for v in fact)]


_at = datetime.fromisoformat


def slim_from_json(row: Sequence[Any]) -> SlimFact:
    tag = row[0]
    if tag == "l":
        _, eid, occ, at, rnd, to, cause, dept, lead, sat, res = row
        return LifecycleFact(eid, _at(occ), _at(at), rnd, CaseState(to), cause, dept, lead, sat, res)
    if tag == "s":
        _, eid, occ, typ, stage, rnd, due, dept, cause_id = row
        return SlaFact(eid, _at(occ), SlaEventType(typ), Stage(stage), rnd, _at(due), dept, cause_id)
    if tag == "a":
        _, eid, occ, rnd, assigned_at, lead = row
        return AssignedFact(eid, _at(occ), rnd, _at(assigned_at), lead)
    if tag == "r":
        _, eid, occ, rec, channel, region, category, key, name, uscc, title = row
        return ReceivedFact(eid, _at(occ), _at(rec), channel, region, category, key, name, uscc, title)
    raise ValueError(f"unknown compact fact tag {tag!r}")


@dataclass(frozen=True)
class FoldState:
    """A case's folded state: its compact facts, each event id once, and their JSON rows (kept as read, so saving a
    state encodes only the facts new to it)."""

    facts: tuple[SlimFact, ...] = ()
    rows: tuple[list[Any], ...] = ()

    def with_facts(self, new: Iterable[Fact | SlimFact]) -> FoldState:
        """This state and the facts it does not hold yet (by event id; the first seen wins, as in the facts table)."""
        seen = {f.event_id for f in self.facts}
        facts, rows = list(self.facts), list(self.rows)
        for event in new:
            compact = slim(event)
            if compact.event_id not in seen:
                seen.add(compact.event_id)
                facts.append(compact)
                rows.append(slim_to_json(compact))
        return FoldState(tuple(facts), tuple(rows))

    def to_json(self) -> dict[str, Any]:
        return {"v": FOLD_STATE_VERSION, "facts": list(self.rows)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> FoldState | None:
        """The kept state; None when there is none (or of another version): fold the case from its stored facts."""
        if not data or data.get("v") != FOLD_STATE_VERSION:
            return None
        rows = data["facts"]
        return cls(tuple(slim_from_json(row) for row in rows), tuple(rows))


# --- folding one case --------------------------------------------------------------------------------------


def _lc_at(event: LifecycleFact) -> datetime:
    return event.at


def _state_order(event: LifecycleFact) -> tuple[Any, ...]:
    # One fact's events share occurred_at: a return or a reopening comes before the assignment that follows it.
    first = 0 if event.to_state in (CaseState.RETURNED, CaseState.REOPENED) else 1
    return (event.occurred_at, event.round, first, event.at, event.event_id)


def _sla_order(event: SlaFact) -> tuple[Any, ...]:
    return (event.occurred_at, event.event_id)


@dataclass
class _Deadline:
    """What the SLA events say of one (stage, round)."""

    sets: list[SlaFact] = field(default_factory=list)
    words: list[SlaFact] = field(default_factory=list)

    @property
    def due(self) -> datetime | None:
        return max(self.sets, key=_sla_order).due_at if self.sets else None

    @property
    def breached_ever(self) -> bool:
        return any(w.type is SlaEventType.BREACHED for w in self.words)

    @property
    def final_word(self) -> SlaEventType | None:
        """The latest of `met` / `breached` by event time: a `met` after a breach supersedes it."""
        return max(self.words, key=_sla_order).type if self.words else None


def _enterprise(received: ComplaintReceived) -> tuple[str | None, str | None, str | None]:
    ent = received.enterprise
    if ent is None:
        return None, None, None
    uscc = (ent.uscc or "").strip().upper() or None
    name = (ent.name or "").strip() or None
    key = f"uscc:{uscc}" if uscc else (f"name:{name}" if name else None)
    return key, name, uscc


def _on_time_class(
    resolve_at: datetime, window: _Deadline | None, extension_causes: set[str], extension_approved: bool
) -> str | None:
    """on_time, on_time_after_extension or late for the first resolve of the latest round; None while unknown."""
    if window is None or not window.sets:
        word = window.final_word if window else None
        if word is SlaEventType.MET:
            return "on_time_after_extension" if extension_approved else "on_time"
        return "late" if word is SlaEventType.BREACHED else None
    ordered = sorted(window.sets, key=_sla_order)
    final_due = ordered[-1].due_at
    shift = sum(
        (
            (later.due_at - earlier.due_at).total_seconds()
            for earlier, later in pairwise(ordered)
            if later.causation_id in extension_causes and later.due_at > earlier.due_at
        ),
        0.0,
    )
    if resolve_at > final_due:
        return "late"
    if shift and (final_due - resolve_at).total_seconds() < shift:
        return "on_time_after_extension"
    return "on_time"


def fold_case(complaint_id: str, facts: Iterable[Fact | SlimFact]) -> CaseFigures:
    """The figures of one case from all its facts (any order; duplicates by event id count once); the facts may be
    events or their compact form, mixed."""
    unique: dict[str, SlimFact] = {}
    for fact in facts:
        s = slim(fact)
        unique.setdefault(s.event_id, s)
    received: list[ReceivedFact] = []
    assigned: list[AssignedFact] = []
    changes: list[LifecycleFact] = []
    deadlines: dict[tuple[Stage, int], _Deadline] = defaultdict(_Deadline)
    for event in unique.values():
        kind = type(event)
        if kind is LifecycleFact:
            changes.append(event)  # type: ignore[arg-type]
        elif isinstance(event, SlaFact):
            if event.type is SlaEventType.DEADLINE_SET:
                deadlines[(event.stage, event.round)].sets.append(event)
            elif event.type in (SlaEventType.MET, SlaEventType.BREACHED):
                deadlines[(event.stage, event.round)].words.append(event)
        elif kind is AssignedFact:
            assigned.append(event)  # type: ignore[arg-type]
        else:
            received.append(event)  # type: ignore[arg-type]
    assignments = sorted(assigned, key=lambda a: (a.round, a.assigned_at, a.occurred_at, a.event_id))
    lifecycle = sorted(changes, key=_state_order)

    first = min(received, key=lambda r: (r.occurred_at, r.event_id)) if received else None
    department = assignments[-1].lead_department if assignments else UNASSIGNED
    if first is None:
        return CaseFigures(CaseProfile(complaint_id, department=department), Contribution())
    profile = CaseProfile(
        complaint_id,
        first.received_at,
        first.channel,
        first.region_code,
        first.category,
        department,
        first.enterprise_key,
        first.enterprise_name,
        first.uscc,
        first.title,
    )

    def by_cause(cause: str) -> list[LifecycleFact]:
        return [e for e in lifecycle if e.cause == cause]

    # The case's own figures.
    state = lifecycle[-1].to_state if lifecycle else CaseState.RECEIVED
    resolved = state in (CaseState.RESOLVED, CaseState.CLOSED)
    case: dict[str, int] = {"received": 1, "resolved": int(resolved), "closed": int(state is CaseState.CLOSED)}
    resolves = by_cause("resolve")
    if resolved and resolves:
        last_round = max(e.round for e in resolves)
        first_resolve = min(
            (e for e in resolves if e.round == last_round), key=lambda e: (_lc_at(e), e.occurred_at, e.event_id)
        )
        windows = [r for (s, r) in deadlines if s is Stage.RESOLVE and r <= last_round]
        window_round = max(windows) if windows else None
        window = deadlines.get((Stage.RESOLVE, window_round)) if window_round is not None else None
        extensions = [
            e for e in by_cause("approve_extension") if (window_round or 1) <= e.round <= last_round
        ]
        verdict = _on_time_class(
            _lc_at(first_resolve), window, {e.event_id for e in extensions}, bool(extensions)
        )
        if verdict is not None:
            case[verdict] = 1
    callbacks = by_cause("callback")
    case["callbacks"] = len(callbacks)
    case["satisfied"] = sum(
        (c.satisfaction in ("satisfied", "basically_satisfied"))
        if c.satisfaction is not None
        else c.to_state is CaseState.CLOSED
        for c in callbacks
    )
    case["solved"] = sum(
        bool(c.resolved) if c.resolved is not None else c.to_state is CaseState.CLOSED for c in callbacks
    )
    if not resolved:
        case["overdue_open"] = int(_overdue(deadlines, assignments, lifecycle))

    # Each assignment's figures, for its own department.
    per_assignment: list[tuple[str, Counts]] = []
    returns = by_cause("return")
    overturns = by_cause("overturn_return")
    for a in assignments:
        lead, r = a.lead_department, a.round
        accepted = [e for e in by_cause("accept") if e.round == r and e.department == lead]
        contacted = [e for e in by_cause("contact") if e.round == r and e.department == lead]
        returned = [e for e in returns if e.round == r + 1 and e.department == lead]
        overturned = [
            e for e in returned if any(o.round == e.round and o.lead_department == lead for o in overturns)
        ]
        acc = _stage_on_time(deadlines.get((Stage.ACCEPT, r)), accepted, lead)
        con = _stage_on_time(deadlines.get((Stage.FIRST_CONTACT, r)), contacted, lead)
        accept_passed = _passed(deadlines.get((Stage.ACCEPT, r)), lead)
        contact_passed = _passed(deadlines.get((Stage.FIRST_CONTACT, r)), lead)
        per_assignment.append(
            (
                lead,
                _counts(
                    assignments=1,
                    accepted_on_time=int(acc),
                    response_base=int(bool(accepted or returned or accept_passed)),
                    returns=len(returned),
                    returns_overturned=len(overturned),
                    contacted_on_time=int(con),
                    contact_base=int(bool(contacted or returned or contact_passed)),
                ),
            )
        )

    case_counts = _counts(**case)
    all_counts = case_counts
    for _, counts in per_assignment:
        all_counts = _add(all_counts, counts)
    rows: dict[RowKey, Counts] = {
        (TOTAL_DIMENSION, TOTAL_KEY): all_counts,
        ("channel", profile.channel or ""): all_counts,
        ("region", profile.region_code or ""): all_counts,
        ("category", profile.category or ""): all_counts,
    }
    dept_rows: dict[RowKey, Counts] = {("department", department): case_counts}
    for lead, counts in per_assignment:
        key = ("department", lead)
        dept_rows[key] = _add(dept_rows.get(key, ZERO), counts)
    rows.update(dept_rows)
    standing = None if resolved else standing_breach(deadlines, assignments, lifecycle)
    return CaseFigures(profile, Contribution(profile.day, rows), standing)


def _stage_on_time(slot: _Deadline | None, done: Sequence[LifecycleFact], lead: str) -> bool:
    """Done at or before its due (contract 7: a stage is met on time when its fact's time is at or before due_at);
    with no due known yet, the clock's final word."""
    if not done or slot is None:
        return False
    mine = [s for s in slot.sets if s.department == lead] or slot.sets
    at = min(_lc_at(e) for e in done)
    if mine:
        return at <= max(mine, key=_sla_order).due_at
    return slot.final_word is SlaEventType.MET


def _passed(slot: _Deadline | None, lead: str) -> bool:
    """The deadline has passed: sla fired its breach (at the due, judged by event time)."""
    return slot is not None and any(w.type is SlaEventType.BREACHED and w.department == lead for w in slot.words)


def _overdue(
    deadlines: Mapping[tuple[Stage, int], _Deadline],
    assignments: Sequence[AssignedFact],
    lifecycle: Sequence[LifecycleFact],
) -> bool:
    """A breach that still stands (no later `met`) on a stage of the case's current round that is not done yet."""
    return standing_breach(deadlines, assignments, lifecycle) is not None


def standing_breach(
    deadlines: Mapping[tuple[Stage, int], _Deadline],
    assignments: Sequence[AssignedFact],
    lifecycle: Sequence[LifecycleFact],
) -> StandingBreach | None:
    """Of the breaches that still stand (see `_overdue`), the one with the earliest due (then stage, round): the
    case's overdue stage. A function of the facts only, so any order of them gives the same answer."""
    current = assignments[-1].round if assignments else None
    resolve_windows = [r for (s, r) in deadlines if s is Stage.RESOLVE]
    window = max(resolve_windows) if resolve_windows else None
    done = {(e.cause, e.round) for e in lifecycle}
    standing: list[StandingBreach] = []
    for (stage, r), slot in deadlines.items():
        if slot.final_word is not SlaEventType.BREACHED:
            continue
        if (
            (stage is Stage.ACCEPT and r == current and ("accept", r) not in done)
            or (stage is Stage.FIRST_CONTACT and r == current and ("contact", r) not in done)
            or (stage is Stage.RESOLVE and r == window)
        ):
            word = max(slot.words, key=_sla_order)
            standing.append(StandingBreach(stage.value, r, word.due_at))
    return min(standing, key=lambda b: (b.due_at, b.stage, b.round), default=None)


# --- rollups -----------------------------------------------------------------------------------------------


def rollup_delta(old: Contribution, new: Contribution) -> dict[tuple[date, str, str], Counts]:
    """What to add to the rollups when a case's contribution changes from `old` to `new` (zero rows left out)."""
    delta: dict[tuple[date, str, str], Counts] = {}
    if old.day is not None:
        for (d, k), c in old.rows.items():
            delta[(old.day, d, k)] = _sub(delta.get((old.day, d, k), ZERO), c)
    if new.day is not None:
        for (d, k), c in new.rows.items():
            delta[(new.day, d, k)] = _add(delta.get((new.day, d, k), ZERO), c)
    return {key: c for key, c in delta.items() if any(c)}


def merge_deltas(deltas: Iterable[Mapping[tuple[date, str, str], Counts]]) -> dict[tuple[date, str, str], Counts]:
    """Several cases' deltas as one, in key order (so concurrent writers lock rollup rows in the same order)."""
    out: dict[tuple[date, str, str], Counts] = {}
    for delta in deltas:
        for key, c in delta.items():
            out[key] = _add(out.get(key, ZERO), c)
    return {key: out[key] for key in sorted(out) if any(out[key])}


def fold_batch(
    cases: Mapping[str, tuple[Contribution, FoldState]],
) -> tuple[list[CaseFigures], dict[tuple[date, str, str], Counts]]:
    """The touched cases of a batch, each given as (its contribution so far, its state with every fact now): their
    figures in key order, and the one rollup delta for them all (in key order)."""
    folded = [fold_case(cid, cases[cid][1].facts) for cid in sorted(cases)]
    delta = merge_deltas(rollup_delta(cases[f.profile.complaint_id][0], f.contribution) for f in folded)
    return folded, delta


# --- the answer ----------------------------------------------------------------------------------------------

CHANNEL_NAMES: Final = {
    "hotline": "12345政务服务便民热线",
    "complaint_line": "营商环境投诉专线",
    "supervisor": "特邀监督员和企业监测点",
    "portal": "网上问题线索征集",
    "visit": "走访和恳谈",
    "survey": "满意度问卷",
}
CATEGORY_NAMES: Final = {
    cat.value: next(label for label, c in CATEGORY_LABELS.items() if c is cat) for cat in Category
}
TOTAL_NAME: Final = "合计"
UNASSIGNED_NAME: Final = "未派单"


def group_name(group_by: str, key: str) -> str:
    """The Chinese name of a group key (a code not known keeps its code as its name)."""
    if key == UNASSIGNED:
        return UNASSIGNED_NAME
    table: Mapping[str, str] = {
        "department": DEPARTMENTS,
        "channel": CHANNEL_NAMES,
        "region": REGIONS,
        "category": CATEGORY_NAMES,
    }.get(group_by, {})
    return table.get(key, key)


def rate(numerator: int, denominator: int) -> float | None:
    """A rate rounded half up to 4 decimals, or None when the denominator is 0."""
    if denominator == 0:
        return None
    return float((Decimal(numerator) / Decimal(denominator)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def figures(counts: Counts) -> dict[str, int | float | None]:
    """The 7.1 figures of summed counts, in the table's order."""
    c = dict(zip(COUNTS, counts, strict=True))
    return {
        "received": c["received"],
        "resolved": c["resolved"],
        "closed": c["closed"],
        "open": c["received"] - c["resolved"],
        "overdue_open": c["overdue_open"],
        "resolution_rate": rate(c["resolved"], c["received"]),
        "on_time": c["on_time"],
        "on_time_after_extension": c["on_time_after_extension"],
        "late": c["late"],
        "on_time_rate": rate(c["on_time"] + c["on_time_after_extension"], c["resolved"]),
        "assignments": c["assignments"],
        "accepted_on_time": c["accepted_on_time"],
        "response_rate": rate(c["accepted_on_time"], c["response_base"]),
        "returns": c["returns"],
        "returns_overturned": c["returns_overturned"],
        "return_rate": rate(c["returns"], c["assignments"]),
        "callbacks": c["callbacks"],
        "satisfied": c["satisfied"],
        "satisfaction_rate": rate(c["satisfied"], c["callbacks"]),
        "solved": c["solved"],
        "solved_rate": rate(c["solved"], c["callbacks"]),
        "contacted_on_time": c["contacted_on_time"],
        "contact_rate": rate(c["contacted_on_time"], c["contact_base"]),
    }


def summary(
    group_by: str, groups: Mapping[str, Counts], total: Counts, *, start: date, end: date, as_of: datetime
) -> dict[str, Any]:
    """The summary answer of 7.1 from counts summed over the period (groups with nothing left out, by key)."""
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "group_by": group_by,
        "as_of": as_of.isoformat().replace("+00:00", "Z"),
        "groups": [
            {"key": key, "name": group_name(group_by, key), **figures(counts)}
            for key, counts in sorted(groups.items())
            if any(counts)
        ],
        "total": {"key": TOTAL_KEY, "name": TOTAL_NAME, **figures(total)},
    }


def counts_of(row: Mapping[str, Any]) -> Counts:
    return tuple(int(row[name] or 0) for name in COUNTS)


__all__ = [
    "COUNTS",
    "FIGURES",
    "GROUP_BY",
    "CaseFigures",
    "CaseProfile",
    "Contribution",
    "Counts",
    "Fact",
    "FoldState",
    "SlimFact",
    "StandingBreach",
    "fold_batch",
    "fold_case",
    "merge_deltas",
    "rollup_delta",
    "summary",
]
