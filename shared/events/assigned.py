"""`complaint.assigned` (contract 3.2): routing's decision, sent to department systems (派单)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.events.base import Event, UtcDatetime


class ComplaintAssigned(Event):
    """A complaint assigned to a lead department, with assisting ones (派单)."""

    event_type: Literal["complaint.assigned"] = "complaint.assigned"
    schema_version: Literal[1] = 1
    assignment_id: str = Field(description="Unique id of this assignment.")
    round: int = Field(ge=1, description="1 for the first assignment, +1 after each return or reopening.")
    lead_department: str = Field(description="Code of the lead department (主办); `triage` for manual triage.")
    assisting_departments: tuple[str, ...] = Field(default=(), description="Codes of assisting departments (协办).")
    level: Literal["city", "county"] = Field(description="city or county.")
    rule_id: str = Field(description="The routing rule that decided, or `manual`.")
    reason: str = Field(description="One sentence a person can read on why the case went there.")
    assigned_at: UtcDatetime = Field(description="When it was assigned (UTC).")
