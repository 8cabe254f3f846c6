"""`supervision.changed` on `complaints.supervision` (contract 10.3): every change of a supervision item (督查事项)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from shared.events.base import GroupEvent, UtcDatetime


class Phenomenon(StrEnum):
    """The four phenomena the bureau supervises; each is also the complaint category of the same code."""

    CORRUPTION = "corruption"  # 涉企贪腐
    JUDICIAL = "judicial"  # 司法不公
    GOVERNMENT_INTEGRITY = "government_integrity"  # 违约失信
    LAW_ENFORCEMENT = "law_enforcement"  # 执法混乱


class SupervisionStatus(StrEnum):
    OPENED = "opened"  # 立项
    SUPERVISING = "supervising"  # 督办中
    TRANSFERRED = "transferred"  # 移交
    CONCLUDED = "concluded"  # 办结


class SupervisionChange(StrEnum):
    OPENED = "opened"
    FOLLOW_UP = "follow_up"
    TRANSFERRED = "transferred"
    WARNING = "warning"
    OVERDUE = "overdue"
    CONCLUDED = "concluded"


class SupervisionChanged(GroupEvent):
    """A supervision item opened, followed up (督办), transferred (移交), warned, overdue or concluded (办结)."""

    event_type: Literal["supervision.changed"] = "supervision.changed"
    schema_version: Literal[1] = 1
    item_id: str = Field(description="The supervision item; the message key.")
    phenomenon: Phenomenon = Field(description="corruption, judicial, government_integrity or law_enforcement.")
    status: SupervisionStatus = Field(description="The item's status after the change.")
    change: SupervisionChange = Field(description="What changed.")
    due_at: UtcDatetime = Field(description="When the item falls due (working days from opening, UTC).")
    note: str | None = Field(
        default=None,
        description="The follow-up or transfer note, the reason of an opening, or the conclusion's result.",
    )
    transferred_to: str | None = Field(default=None, description="Department the item is transferred to (`jw`).")
    decided_by: str | None = Field(default=None, description="With `concluded`: the deciding department.")
    by: str | None = Field(
        default=None, description="Who made the change: a key's scope, or `rule` / `clock` for what reporting does."
    )
