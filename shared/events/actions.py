"""Inbound facts from outside systems: department actions (3.3) and callback results (3.4)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from shared.events.base import Message, UtcDatetime
from shared.text import TEXT_SANITIZED, check_identifier, sanitize_fields

TEXT_FLAGS = (TEXT_SANITIZED,)
"""The flags the product itself sets on an inbound message; any other a sender puts in `quality_flags` is dropped."""


def _storable(data: Any, fields: tuple[str, ...]) -> Any:
    """Free text made storable and flagged (shared/text.py); the flags are the product's, not the sender's."""
    if isinstance(data, dict) and "quality_flags" in data:
        given = data["quality_flags"]
        kept = [f for f in given if f in TEXT_FLAGS] if isinstance(given, list | tuple) else []
        data = {**data, "quality_flags": kept}
    return sanitize_fields(data, fields)


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
    quality_flags: tuple[str, ...] = Field(
        default=(), description="Set by the product: `text_sanitized` when note or reason had characters removed."
    )

    _free_text = model_validator(mode="before")(lambda data: _storable(data, ("note", "reason")))
    _identifiers = field_validator("action_id", "complaint_id", "department", "lead_department")(
        lambda v: v if v is None else check_identifier(v)
    )


class CallbackResult(Message):
    """The hotline's callback visit (回访) to the enterprise."""

    complaint_id: str = Field(min_length=1, max_length=200)
    callback_at: UtcDatetime
    satisfaction: Literal["satisfied", "basically_satisfied", "unsatisfied"]
    resolved: bool
    comment: str | None = Field(default=None, max_length=20000)
    quality_flags: tuple[str, ...] = Field(
        default=(), description="Set by the product: `text_sanitized` when the comment had characters removed."
    )

    _free_text = model_validator(mode="before")(lambda data: _storable(data, ("comment",)))
    _identifiers = field_validator("complaint_id")(check_identifier)
