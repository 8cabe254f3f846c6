"""`complaints.sla` events (contract 3.5) and `complaints.lifecycle` state changes (3.6)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from shared.events.base import Event, UtcDatetime


class Stage(StrEnum):
    ACCEPT = "accept"  # 签收
    FIRST_CONTACT = "first_contact"  # 首次联系
    RESOLVE = "resolve"  # 办结
    CALLBACK = "callback"  # 回访


class SlaEventType(StrEnum):
    DEADLINE_SET = "deadline_set"
    WARNING = "warning"
    BREACHED = "breached"
    MET = "met"


class SlaEvent(Event):
    """A deadline set, warned, breached or met (限时反馈)."""

    event_type: Literal["complaint.sla"] = "complaint.sla"
    schema_version: Literal[1] = 1
    type: SlaEventType
    stage: Stage
    due_at: UtcDatetime
    round: int = Field(ge=1)
    department: str
    escalate_to: str | None = Field(default=None, description="`yshj` on a breach.")
    late: bool = Field(default=False, description="Fired after its time (the service was down).")
    supersedes_event_id: str | None = Field(
        default=None,
        description="On a `met`: the `breached` event it overrides. The fact that met the deadline happened in time"
        " but was read after the breach went out (lag beyond the grace); the deadline's final word is `met`.",
    )


class CaseState(StrEnum):
    RECEIVED = "received"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    PAUSED = "paused"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REOPENED = "reopened"
    RETURNED = "returned"
    TRIAGE = "triage"


class LifecycleChanged(Event):
    """A case moved from one state to another, or (from_state == to_state) a fact the clock needs without a move:
    an extension requested, approved or rejected."""

    event_type: Literal["complaint.lifecycle"] = "complaint.lifecycle"
    schema_version: Literal[1] = 1
    from_state: CaseState | None = Field(description="State before; null for a new case.")
    to_state: CaseState = Field(description="State after.")
    cause: str = Field(description="What caused it: an action (`accept`, `return`, …), `assigned`, `callback`.")
    round: int = Field(default=1, ge=1, description="Assignment round of the case after the change.")
    department: str | None = Field(default=None, description="Department that acted, or the lead after assignment.")
    lead_department: str | None = Field(default=None, description="Department holding the case after the change.")
    at: UtcDatetime | None = Field(
        default=None,
        description="When the product took the fact (routing's receipt of the action or callback, or the assignment): "
        "the time the clock and the reports judge by.",
    )
    claimed_at: UtcDatetime | None = Field(
        default=None,
        description="The time the department's action (its `at`) or the callback (`callback_at`) claims, for "
        "information only; null for what routing does itself (an assignment).",
    )
    action_id: str | None = Field(default=None, description="The department action that caused it, if any.")
    extension_days: int | None = Field(
        default=None, description="Working days of an extension requested or approved (cause *_extension)."
    )
    reason_code: str | None = Field(default=None, description="With `return`: the return's reason code.")
    note: str | None = Field(default=None, description="With `resolve`: the reply the enterprise sees (contract 3.6).")
    satisfaction: Literal["satisfied", "basically_satisfied", "unsatisfied"] | None = Field(
        default=None, description="With `callback`: the enterprise's satisfaction (contract 3.4)."
    )
    resolved: bool | None = Field(
        default=None, description="With `callback`: whether the enterprise says the problem is solved."
    )
