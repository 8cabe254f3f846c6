"""Inbound facts from outside systems: department actions (3.3) and callback results (3.4)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from shared.events.base import Message, UtcDatetime


class ActionType(StrEnum):
    ACCEPT = "accept"  # 签收
    RETURN = "return"  # 退单
    CONTACT = "contact"  # 首次联系
    PROGRESS = "progress"
    PAUSE = "pause"
    RESUME = "resume"
    REQUEST_EXTENSION = "request_extension"
    RESOLVE = "resolve"  # 办结
    APPROVE_EXTENSION = "approve_extension"
    REJECT_EXTENSION = "reject_extension"
    UPHOLD_RETURN = "uphold_return"  # triage desk: the return stands
    OVERTURN_RETURN = "overturn_return"  # triage desk: the case goes back
    REASSIGN = "reassign"  # triage desk: place a case it holds by hand (rule_id `manual`)


class ReturnReason(StrEnum):
    NOT_OUR_DUTY = "not_our_duty"
    WRONG_REGION = "wrong_region"
    INSUFFICIENT_INFO = "insufficient_info"
    DUPLICATE = "duplicate"


class DepartmentAction(Message):
    """What a department system did on a case; `action_id` makes it idempotent."""

    action_id: str = Field(min_length=1, max_length=128, description="Unique id; the same id twice is one action.")
    complaint_id: str = Field(min_length=1, max_length=200)
    department: str = Field(min_length=1, max_length=64, description="Code of the acting department.")
    action: ActionType
    at: UtcDatetime = Field(description="When the department acted.")
    note: str | None = Field(default=None, max_length=20000)
    reason_code: ReturnReason | None = Field(default=None, description="With `return`.")
    reason: str | None = Field(default=None, max_length=4000, description="With `return` and `pause`.")
    working_days: int | None = Field(default=None, ge=1, le=10, description="With `request_extension`.")
    lead_department: str | None = Field(default=None, description="With `uphold_return`: where triage sends it.")


class CallbackResult(Message):
    """The hotline's callback visit (回访) to the enterprise."""

    complaint_id: str = Field(min_length=1, max_length=200)
    callback_at: UtcDatetime
    satisfaction: Literal["satisfied", "basically_satisfied", "unsatisfied"]
    resolved: bool
    comment: str | None = Field(default=None, max_length=20000)
