"""The known-answer scenario of the reports (contract 7.1): 21 complaints over three departments, built from the real
event models, with every figure of the November summary worked out by hand below (see each case's comment).

Times: every case of the period is received 2026-11-02 09:00 local (T0); assignments at T0 + 0.1 h; accept due 2 h
after the assignment, first contact 24 h after it, resolve 120 h after the receipt (the windows do not matter here:
the figures compare the facts' times with the `due_at` the SLA events announce).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.domain import Category, Channel, Kind, Urgency
from shared.events import CaseState, ComplaintAssigned, ComplaintReceived, Enterprise, LifecycleChanged, SlaEvent
from shared.events.sla import SlaEventType, Stage

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)  # 09:00 local
PERIOD = (date(2026, 11, 1), date(2026, 11, 30))
S = CaseState
Fact = ComplaintReceived | ComplaintAssigned | LifecycleChanged | SlaEvent


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


class Case:
    """One complaint's facts, written in the order they happen (the tests shuffle them)."""

    def __init__(self, cid: str, channel: Channel, category: Category, *, at: datetime = T0, uscc: str | None = None):
        self.cid, self.state, self.round = cid, S.RECEIVED, 1
        self.facts: list[Fact] = [
            ComplaintReceived(
                occurred_at=at, complaint_id=cid, channel=channel, source_id=cid.split(":", 1)[1], received_at=at,
                kind=Kind.COMPLAINT, category=category, title="营商环境问题", content="企业反映的问题",
                urgency=Urgency.NORMAL, region_code="150500",
                enterprise=Enterprise(name="通辽某某建材有限公司", uscc=uscc, uscc_valid=True) if uscc else None,
            )
        ]  # fmt: skip
        self.set(Stage.RESOLVE, 1, "unassigned", at + timedelta(hours=120), at)

    def set(self, stage: Stage, r: int, dept: str, due: datetime, at: datetime, cause: str | None = None) -> SlaEvent:
        event = SlaEvent(
            occurred_at=at, complaint_id=self.cid, type=SlaEventType.DEADLINE_SET, stage=stage, due_at=due, round=r,
            department=dept, causation_id=cause,
        )  # fmt: skip
        self.facts.append(event)
        return event

    def word(self, kind: SlaEventType, stage: Stage, r: int, dept: str, due: datetime, at: datetime) -> None:
        self.facts.append(
            SlaEvent(occurred_at=at, complaint_id=self.cid, type=kind, stage=stage, due_at=due, round=r, department=dept)
        )

    def assign(self, r: int, lead: str, at: datetime, cause: str = "assigned") -> Case:
        self.facts.append(
            ComplaintAssigned(
                occurred_at=at, complaint_id=self.cid, assignment_id=f"{self.cid}#{r}{lead}", round=r,
                lead_department=lead, level="city", rule_id="manual", reason="test", assigned_at=at,
            )
        )  # fmt: skip
        to = S.TRIAGE if lead == "triage" else S.ASSIGNED
        self.move(cause, to, r, lead, at, lead=lead)
        if lead != "triage":
            self.set(Stage.ACCEPT, r, lead, at + timedelta(hours=2), at)
            self.set(Stage.FIRST_CONTACT, r, lead, at + timedelta(hours=24), at)
        return self

    def move(self, cause: str, to: CaseState, r: int, dept: str | None, at: datetime, **extra: Any) -> LifecycleChanged:
        event = LifecycleChanged(
            occurred_at=at, complaint_id=self.cid, from_state=self.state, to_state=to, cause=cause, round=r,
            department=dept, lead_department=extra.pop("lead", dept), at=at, **extra,
        )  # fmt: skip
        self.facts.append(event)
        self.state, self.round = to, r
        return event

    # Department actions on round r (lead `d`), at a number of hours after T0.
    def accept(self, d: str, hours: float, r: int = 1) -> Case:
        self.move("accept", S.ACCEPTED, r, d, h(hours))
        return self

    def contact(self, d: str, hours: float, r: int = 1) -> Case:
        self.move("contact", S.IN_PROGRESS, r, d, h(hours))
        return self

    def resolve(self, d: str, hours: float, r: int = 1) -> Case:
        self.move("resolve", S.RESOLVED, r, d, h(hours), note="已办结")
        return self

    def callback(self, hours: float, satisfaction: str, resolved: bool) -> Case:
        closes = resolved and satisfaction != "unsatisfied"
        to = S.CLOSED if closes else S.REOPENED
        self.move("callback", to, self.round if closes else self.round + 1, None, h(hours),
                  satisfaction=satisfaction, resolved=resolved)  # fmt: skip
        return self

    def breach(self, stage: Stage, d: str, due_hours: float, r: int = 1) -> Case:
        self.word(SlaEventType.BREACHED, stage, r, d, h(due_hours), h(due_hours))
        return self

    def met(self, stage: Stage, d: str, due_hours: float, at_hours: float, r: int = 1) -> Case:
        self.word(SlaEventType.MET, stage, r, d, h(due_hours), h(at_hours))
        return self


def scenario() -> list[Fact]:
    A, F, R = Stage.ACCEPT, Stage.FIRST_CONTACT, Stage.RESOLVE  # noqa: N806 - short names keep a case on a line
    gov, mkt, fin = Category.GOVERNMENT_SERVICES, Category.MARKET_REGULATION, Category.FINANCING
    HL, CL, SU = Channel.HOTLINE, Channel.COMPLAINT_LINE, Channel.SUPERVISOR  # noqa: N806
    cases: list[Case] = []

    def new(cid: str, channel: Channel, category: Category, **kw: Any) -> Case:
        case = Case(cid, channel, category, **kw)
        cases.append(case)
        return case

    # spj (hotline, government_services): accept due 2.1 h, contact due 24.1 h, resolve due 120 h.
    # S1: all on time, callback satisfied → closed.
    new("hotline:S1", HL, gov).assign(1, "spj", h(0.1)).accept("spj", 1).met(A, "spj", 2.1, 1).contact("spj", 5) \
        .resolve("spj", 50).callback(60, "satisfied", True)
    # S2: contact late, resolve late, callback basically satisfied → closed (late).
    new("hotline:S2", HL, gov).assign(1, "spj", h(0.1)).accept("spj", 1).breach(F, "spj", 24.1).contact("spj", 30) \
        .breach(R, "spj", 120).resolve("spj", 130).callback(140, "basically_satisfied", True)
    # S3: extension approved (+48 h), resolved after the first due but before the extended one; no callback yet.
    s3 = new("hotline:S3", HL, gov).assign(1, "spj", h(0.1)).accept("spj", 1).contact("spj", 3)
    ext = s3.move("approve_extension", S.IN_PROGRESS, 1, "yshj", h(100), extension_days=2)
    s3.set(R, 1, "spj", h(168), h(100), cause=str(ext.event_id))
    s3.resolve("spj", 150)
    # S4: accept late, contact in time, resolve breached and still open → overdue.
    new("hotline:S4", HL, gov).assign(1, "spj", h(0.1)).breach(A, "spj", 2.1).accept("spj", 3).contact("spj", 5) \
        .breach(R, "spj", 120)
    # S5: never accepted: accept breached → overdue, in the response base, not in the contact base.
    new("hotline:S5", HL, gov).assign(1, "spj", h(0.1)).breach(A, "spj", 2.1)
    # S6: resolved, callback unsatisfied (though solved) → reopened (round 2, new resolve window), redone on time, then satisfied.
    s6 = new("hotline:S6", HL, gov).assign(1, "spj", h(0.1)).accept("spj", 1).contact("spj", 2).resolve("spj", 40)
    s6.callback(50, "unsatisfied", True)
    s6.set(R, 2, "spj", h(170), h(50))
    s6.assign(2, "spj", h(50)).accept("spj", 51, r=2).contact("spj", 52, r=2).resolve("spj", 100, r=2) \
        .callback(110, "satisfied", True)
    # S7: all on time, callback basically satisfied → closed.
    new("hotline:S7", HL, gov).assign(1, "spj", h(0.1)).accept("spj", 2).contact("spj", 20).resolve("spj", 119) \
        .callback(125, "basically_satisfied", True)

    # scj (complaint line, market_regulation).
    # C1: on time throughout, satisfied → closed.
    new("complaint_line:C1", CL, mkt).assign(1, "scj", h(0.1)).accept("scj", 1).contact("scj", 2) \
        .resolve("scj", 30).callback(40, "satisfied", True)
    # C2: scj returns it; triage upholds the return and sends it to jrb, which does it on time (case → jrb).
    c2 = new("complaint_line:C2", CL, mkt).assign(1, "scj", h(0.1))
    c2.move("return", S.RETURNED, 2, "scj", h(1), reason_code="not_our_duty")
    c2.assign(2, "triage", h(1))
    c2.assign(2, "jrb", h(3), cause="uphold_return").accept("jrb", 4, r=2).contact("jrb", 6, r=2) \
        .resolve("jrb", 60, r=2)
    # C3: scj returns it; triage overturns; scj accepts in time; open, contact not yet due.
    c3 = new("complaint_line:C3", CL, mkt).assign(1, "scj", h(0.1))
    c3.move("return", S.RETURNED, 2, "scj", h(1), reason_code="wrong_region")
    c3.assign(2, "triage", h(1))
    c3.assign(2, "scj", h(3), cause="overturn_return").accept("scj", 4, r=2)
    # C4: accepted in time, open.
    new("complaint_line:C4", CL, mkt).assign(1, "scj", h(0.1)).accept("scj", 2)
    # C5: accepted in time but read late: a breach, then a met that supersedes it; open, not overdue.
    new("complaint_line:C5", CL, mkt).assign(1, "scj", h(0.1)).accept("scj", 2).breach(A, "scj", 2.1) \
        .met(A, "scj", 2.1, 2.5)
    # C6: assigned only, nothing due yet.
    new("complaint_line:C6", CL, mkt).assign(1, "scj", h(0.1))
    # C7: accepted late, contact in time, resolved in time, no callback.
    new("complaint_line:C7", CL, mkt).assign(1, "scj", h(0.1)).breach(A, "scj", 2.1).accept("scj", 2.5) \
        .contact("scj", 10).resolve("scj", 100)

    # jrb (supervisor, financing).
    # J1: resolved late, satisfied → closed.
    new("supervisor:J1", SU, fin).assign(1, "jrb", h(0.1)).accept("jrb", 1).contact("jrb", 3).breach(R, "jrb", 120) \
        .resolve("jrb", 125).callback(130, "satisfied", True)
    # J2: resolved in time; callback satisfied but not solved → reopened, reassigned, accepted; open.
    j2 = new("supervisor:J2", SU, fin).assign(1, "jrb", h(0.1)).accept("jrb", 1).contact("jrb", 3).resolve("jrb", 20)
    j2.callback(30, "satisfied", False)
    j2.set(R, 2, "jrb", h(150), h(30))
    j2.assign(2, "jrb", h(30)).accept("jrb", 31, r=2)
    # J3: resolved in time, no callback.
    new("supervisor:J3", SU, fin).assign(1, "jrb", h(0.1)).accept("jrb", 1).contact("jrb", 3).resolve("jrb", 90)
    # J4: never assigned.
    new("supervisor:J4", SU, fin)
    # J5: October, outside the period.
    new("supervisor:J5", SU, fin, at=datetime(2026, 10, 15, 2, tzinfo=UTC)).assign(
        1, "jrb", datetime(2026, 10, 15, 3, tzinfo=UTC)
    )
    # J6: accepted in time, never contacted: first contact breached → overdue.
    new("supervisor:J6", SU, fin).assign(1, "jrb", h(0.1)).accept("jrb", 1).breach(F, "jrb", 24.1)
    return [f for case in cases for f in case.facts]


def _g(key: str, name: str, counts: str, rates: str) -> dict[str, Any]:
    """A group's expected figures from two lines written by hand, in the order of the 7.1 table."""
    names_c = [
        "received", "resolved", "closed", "open", "overdue_open", "on_time", "on_time_after_extension", "late",
        "assignments", "accepted_on_time", "returns", "returns_overturned", "callbacks", "satisfied", "solved",
        "contacted_on_time",
    ]  # fmt: skip
    names_r = [
        "resolution_rate", "on_time_rate", "response_rate", "return_rate", "satisfaction_rate", "solved_rate",
        "contact_rate",
    ]  # fmt: skip
    values_c = [int(v) for v in counts.split()]
    values_r = [None if v == "null" else float(v) for v in rates.split()]
    return {"key": key, "name": name, **dict(zip(names_c, values_c, strict=True)), **dict(zip(names_r, values_r, strict=True))}


#                rec res clo open od ot ote late asg aot ret rov cb sat sol cot
EXPECTED_GROUPS = [
    _g("jrb", "市地方金融管理局", "5 3 1 2 1 2 0 1 6 6 0 0 2 2 1 4",
       "0.6 0.6667 1.0 0.0 1.0 0.5 0.8"),
    _g("scj", "市市场监督管理局", "6 2 1 4 0 2 0 0 8 4 2 1 1 1 1 2",
       "0.3333 1.0 0.5714 0.25 1.0 1.0 0.5"),
    _g("spj", "市行政审批和政务服务局", "7 5 4 2 2 3 1 1 8 6 0 0 5 4 5 6",
       "0.7143 0.8 0.75 0.0 0.8 1.0 0.8571"),
    _g("triage", "12345 派单席", "0 0 0 0 0 0 0 0 2 0 0 0 0 0 0 0",
       "null null null 0.0 null null null"),
    _g("unassigned", "未派单", "1 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0",
       "0.0 null null null null null null"),
]  # fmt: skip
EXPECTED_TOTAL = _g("all", "合计", "19 10 6 9 3 7 1 2 24 16 2 1 8 7 7 12", "0.5263 0.8 0.7619 0.0833 0.875 0.875 0.75")
