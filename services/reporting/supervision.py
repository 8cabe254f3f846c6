"""Supervision items (督查事项台账, contract 10.3): which cases open one, the item's status machine, its due time on
the clock's working calendar, and the bulletin's section. Pure: times and the calendar are arguments.

opened 立项 → supervising 督办中 → transferred 移交 → concluded 办结; a corruption item opens already transferred to
`jw`. See docs/supervision.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from html import escape
from typing import Any, Final, Literal

from shared.calendar import WorkingCalendar, as_utc
from shared.domain import DEPARTMENTS, Category
from shared.events.supervision import Phenomenon, SupervisionChange, SupervisionChanged, SupervisionStatus

PHENOMENON_NAMES: Final = {
    Phenomenon.CORRUPTION: "涉企贪腐",
    Phenomenon.JUDICIAL: "司法不公",
    Phenomenon.GOVERNMENT_INTEGRITY: "违约失信",
    Phenomenon.LAW_ENFORCEMENT: "执法混乱",
}
STATUS_NAMES: Final = {
    SupervisionStatus.OPENED: "立项",
    SupervisionStatus.SUPERVISING: "督办中",
    SupervisionStatus.TRANSFERRED: "移交",
    SupervisionStatus.CONCLUDED: "办结",
}
OPEN_STATUSES: Final = (SupervisionStatus.OPENED, SupervisionStatus.SUPERVISING, SupervisionStatus.TRANSFERRED)
DISCIPLINE: Final = "jw"
"""市纪委监委: a corruption item goes to it from the start."""
CORRUPTION_NOTE: Final = "涉企贪腐问题线索，依规移交市纪委监委"
RULE: Final = "rule"
"""`by` of what reporting does itself: an item opened by the category rule."""
CLOCK: Final = "clock"
"""`by` of a warning or an overdue fired by the due time."""
MAX_TEXT: Final = 4000


class Refused(Exception):  # noqa: N818 - a refusal, not a fault: the HTTP side turns it into its status code
    """A change the item's state or the caller's scope does not allow: `status` is the HTTP code to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def phenomenon_of(category: Category | str) -> Phenomenon | None:
    """The phenomenon a case of this category shows, if it is one of the four the bureau supervises."""
    try:
        return Phenomenon(str(category))
    except ValueError:
        return None


def item_id_for(complaint_id: str, phenomenon: Phenomenon) -> str:
    """One item per case and phenomenon: the same case read twice (a replay) opens nothing new."""
    digest = hashlib.sha256(f"{phenomenon.value}|{complaint_id}".encode()).hexdigest()[:12].upper()
    return f"DC-{digest}"


@dataclass(frozen=True, slots=True)
class DueRule:
    """How long an item has: N working days (17:30 of the Nth working day after the opening's local date) or N
    working hours/minutes/seconds (the short units are for drills and tests, as for the SLA windows)."""

    amount: int = 10
    unit: Literal["days", "hours", "minutes", "seconds"] = "days"
    warn_ratio: float = 0.8

    def __post_init__(self) -> None:
        if self.amount < 1:
            raise ValueError(f"a supervision item needs at least 1 {self.unit}, got {self.amount}")
        if not 0 < self.warn_ratio <= 1:
            raise ValueError(f"warn_ratio must be in (0, 1], got {self.warn_ratio}")


_UNITS: Final = {"hours": timedelta(hours=1), "minutes": timedelta(minutes=1), "seconds": timedelta(seconds=1)}


def due_times(rule: DueRule, calendar: WorkingCalendar, opened_at: datetime) -> tuple[datetime, datetime]:
    """(warn_at, due_at) of an item opened at `opened_at`, on the SLA clock's calendar and by the same functions:
    the due is `working_days_after` (or the working time added), the warning when `warn_ratio` of that working
    time has run."""
    start = as_utc(opened_at)
    if rule.unit == "days":
        due = calendar.working_days_after(start, rule.amount)
        budget = calendar.working_time_between(start, due)
    else:
        budget = _UNITS[rule.unit] * rule.amount
        due = calendar.add_working_time(start, budget)
    warn = calendar.add_working_time(start, budget * rule.warn_ratio)
    return warn, due


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A 督办 note with its date."""

    at: datetime
    note: str
    by: str

    def to_json(self) -> dict[str, str]:
        return {"at": as_utc(self.at).isoformat().replace("+00:00", "Z"), "note": self.note, "by": self.by}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FollowUp:
        return cls(datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00")), str(data["note"]), str(data["by"]))


@dataclass(frozen=True, slots=True)
class SupervisionItem:
    item_id: str
    phenomenon: Phenomenon
    complaint_ids: tuple[str, ...]
    opened_at: datetime
    opened_by: str
    reason: str | None
    status: SupervisionStatus
    warn_at: datetime
    due_at: datetime
    warned_at: datetime | None = None
    overdue_at: datetime | None = None
    transferred_to: str | None = None
    transfer_note: str | None = None
    transferred_at: datetime | None = None
    follow_ups: tuple[FollowUp, ...] = field(default_factory=tuple)
    result: str | None = None
    decided_by: str | None = None
    concluded_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status is not SupervisionStatus.CONCLUDED


def open_item(
    complaint_id: str,
    phenomenon: Phenomenon,
    opened_at: datetime,
    *,
    by: str,
    reason: str | None,
    rule: DueRule,
    calendar: WorkingCalendar,
) -> SupervisionItem:
    """立项: a new item for one case. A corruption item opens already transferred to `jw`, with a note."""
    warn, due = due_times(rule, calendar, opened_at)
    item = SupervisionItem(
        item_id=item_id_for(complaint_id, phenomenon),
        phenomenon=phenomenon,
        complaint_ids=(complaint_id,),
        opened_at=as_utc(opened_at),
        opened_by=by,
        reason=reason,
        status=SupervisionStatus.OPENED,
        warn_at=warn,
        due_at=due,
    )
    if phenomenon is Phenomenon.CORRUPTION:
        item = replace(
            item,
            status=SupervisionStatus.TRANSFERRED,
            transferred_to=DISCIPLINE,
            transfer_note=CORRUPTION_NOTE,
            transferred_at=item.opened_at,
        )
    return item


def required_text(value: str | None, what: str) -> str:
    text = (value or "").strip()
    if not text:
        raise Refused(422, f"{what} is required and must not be empty")
    if len(text) > MAX_TEXT:
        raise Refused(422, f"{what} is longer than {MAX_TEXT} characters")
    if "\x00" in text:
        raise Refused(422, f"{what} contains a NUL character")
    return text


def _department(value: str | None, what: str) -> str:
    code = required_text(value, what)
    if code not in DEPARTMENTS:
        raise Refused(422, f"{what} {code[:40]!r} is not a department code (contract 6.1)")
    return code


def _still_open(item: SupervisionItem) -> None:
    if not item.is_open:
        raise Refused(409, f"item {item.item_id} is concluded already")


def follow_up(item: SupervisionItem, note: str | None, *, by: str, at: datetime) -> SupervisionItem:
    """督办: a dated note. The first one moves an opened item to supervising; a transferred item stays transferred."""
    _still_open(item)
    entry = FollowUp(as_utc(at), required_text(note, "note"), by)
    status = SupervisionStatus.SUPERVISING if item.status is SupervisionStatus.OPENED else item.status
    return replace(item, status=status, follow_ups=(*item.follow_ups, entry))


def transfer(item: SupervisionItem, to: str | None, note: str | None, *, at: datetime) -> SupervisionItem:
    """移交: to a department (by default `jw`), with a note; once."""
    _still_open(item)
    if item.status is SupervisionStatus.TRANSFERRED:
        raise Refused(409, f"item {item.item_id} is transferred already (to {item.transferred_to})")
    department = _department(to or DISCIPLINE, "to_department")
    return replace(
        item,
        status=SupervisionStatus.TRANSFERRED,
        transferred_to=department,
        transfer_note=required_text(note, "note"),
        transferred_at=as_utc(at),
    )


def may_conclude(item: SupervisionItem, scope: str) -> bool:
    """admin and the bureau conclude any item; a department key only the items transferred to it (`jw` its own)."""
    if scope in {"admin", "department:yshj"}:
        return True
    return item.status is SupervisionStatus.TRANSFERRED and scope == f"department:{item.transferred_to}"


def conclude(
    item: SupervisionItem, result: str | None, decided_by: str | None, *, scope: str, at: datetime
) -> SupervisionItem:
    """办结: needs the result text and the deciding department; a department key decides in its own name only."""
    _still_open(item)
    if not may_conclude(item, scope):
        raise Refused(403, f"{scope} may not conclude item {item.item_id}: it is not transferred to that department")
    text = required_text(result, "result")
    department = _department(decided_by, "decided_by")
    if scope.startswith("department:") and scope != f"department:{department}":
        raise Refused(403, f"a key of {scope} concludes in its own name, not for {department!r}")
    return replace(
        item, status=SupervisionStatus.CONCLUDED, result=text, decided_by=department, concluded_at=as_utc(at)
    )


def due_firings(item: SupervisionItem, now: datetime) -> tuple[SupervisionItem, list[SupervisionChange]]:
    """What the due time fires at `now`, each once: `warning` at warn_at, `overdue` at due_at. An item found past
    its due with no warning sent (reporting was down) gets only the `overdue`: a warning after the fact says
    nothing. A concluded item fires nothing."""
    if not item.is_open:
        return item, []
    now = as_utc(now)
    if item.overdue_at is None and now >= item.due_at:
        return replace(item, overdue_at=now, warned_at=item.warned_at or now), [SupervisionChange.OVERDUE]
    if item.warned_at is None and item.overdue_at is None and now >= item.warn_at:
        return replace(item, warned_at=now), [SupervisionChange.WARNING]
    return item, []


def next_firing(item: SupervisionItem) -> datetime | None:
    """When this item fires next (None: nothing left to fire)."""
    if not item.is_open or item.overdue_at is not None:
        return None
    return item.due_at if item.warned_at is not None else item.warn_at


def changed_event(
    item: SupervisionItem, change: SupervisionChange, *, at: datetime, by: str, causation_id: str | None = None
) -> SupervisionChanged:
    """The message of one change on `complaints.supervision`."""
    note: str | None = None
    if change is SupervisionChange.OPENED:
        note = item.transfer_note if item.status is SupervisionStatus.TRANSFERRED else item.reason
    elif change is SupervisionChange.FOLLOW_UP and item.follow_ups:
        note = item.follow_ups[-1].note
    elif change is SupervisionChange.TRANSFERRED:
        note = item.transfer_note
    elif change is SupervisionChange.CONCLUDED:
        note = item.result
    return SupervisionChanged(
        occurred_at=as_utc(at),
        causation_id=causation_id,
        complaint_ids=list(item.complaint_ids),
        item_id=item.item_id,
        phenomenon=item.phenomenon,
        status=item.status,
        change=change,
        due_at=item.due_at,
        note=note,
        transferred_to=item.transferred_to,
        decided_by=item.decided_by,
        by=by,
    )


def _z(moment: datetime | None) -> str | None:
    return None if moment is None else as_utc(moment).isoformat().replace("+00:00", "Z")


def item_view(item: SupervisionItem, now: datetime) -> dict[str, Any]:
    """An item as the endpoints answer it."""
    return {
        "item_id": item.item_id,
        "phenomenon": item.phenomenon.value,
        "phenomenon_name": PHENOMENON_NAMES[item.phenomenon],
        "complaint_ids": list(item.complaint_ids),
        "opened_at": _z(item.opened_at),
        "opened_by": item.opened_by,
        "reason": item.reason,
        "status": item.status.value,
        "status_name": STATUS_NAMES[item.status],
        "due_at": _z(item.due_at),
        "warn_at": _z(item.warn_at),
        "overdue": item.is_open and as_utc(now) >= item.due_at,
        "warned_at": _z(item.warned_at),
        "overdue_at": _z(item.overdue_at),
        "transferred_to": item.transferred_to,
        "transfer_note": item.transfer_note,
        "transferred_at": _z(item.transferred_at),
        "follow_ups": [f.to_json() for f in item.follow_ups],
        "conclusion": None
        if item.concluded_at is None
        else {"result": item.result, "decided_by": item.decided_by, "concluded_at": _z(item.concluded_at)},
    }


# --- the bulletin's section ---------------------------------------------------------------------------------------


def bulletin_section(counts: Mapping[tuple[str, str], int], overdue_open: int = 0) -> tuple[str, str]:
    """(heading, HTML) of the bulletin's supervision section: items by phenomenon (rows) and status (columns), with
    totals. `counts` maps (phenomenon, status) to a number of items; every text is escaped."""
    heading = "督查事项"
    statuses = list(SupervisionStatus)
    rows: list[str] = []
    column_totals = dict.fromkeys(statuses, 0)
    for phenomenon in Phenomenon:
        cells = [int(counts.get((phenomenon.value, s.value), 0)) for s in statuses]
        for s, n in zip(statuses, cells, strict=True):
            column_totals[s] += n
        rows.append(
            f'<tr><th scope="row">{escape(PHENOMENON_NAMES[phenomenon])}</th>'
            + "".join(f'<td class="num">{n}</td>' for n in cells)
            + f'<td class="num">{sum(cells)}</td></tr>'
        )
    total = sum(column_totals.values())
    rows.append(
        '<tr class="total"><th scope="row">合计</th>'
        + "".join(f'<td class="num">{column_totals[s]}</td>' for s in statuses)
        + f'<td class="num">{total}</td></tr>'
    )
    head = "".join(f'<th scope="col">{escape(STATUS_NAMES[s])}</th>' for s in statuses)
    summary = (
        f"<p>督查事项共 {total} 件，其中办结 {column_totals[SupervisionStatus.CONCLUDED]} 件，"
        f"已超期未办结 {int(overdue_open)} 件。</p>"
        if total
        else '<p class="empty">暂无督查事项。</p>'
    )
    table = (
        '<table class="supervision"><thead><tr><th scope="col">问题类型</th>'
        + head
        + '<th scope="col">合计</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )
    return heading, summary + table


def count_items(items: Sequence[SupervisionItem]) -> dict[tuple[str, str], int]:
    """(phenomenon, status) → number of items: what the bulletin and the gauge show."""
    out: dict[tuple[str, str], int] = {}
    for item in items:
        key = (item.phenomenon.value, item.status.value)
        out[key] = out.get(key, 0) + 1
    return out
