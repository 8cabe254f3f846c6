"""`survey.responded` on `surveys.responses` (contract 10.2): one satisfaction questionnaire (满意度问卷), as intake
took it. It concerns no single case, so it carries `response_id` in place of `complaint_id`."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from shared.domain import Category
from shared.events.base import Message, UtcDatetime
from shared.events.received import Enterprise


class SurveyResponded(Message):
    """An enterprise answered the satisfaction survey."""

    event_id: UUID = Field(description="Unique id of this event, the same for the same responseId; consumers dedupe.")
    event_type: Literal["survey.responded"] = "survey.responded"
    schema_version: Literal[1] = 1
    occurred_at: UtcDatetime = Field(description="When intake took the response (UTC).")
    response_id: str = Field(description="The survey system's own id (`responseId`); the message key.")
    answered_at: UtcDatetime = Field(description="When the enterprise answered (UTC).")
    enterprise: Enterprise | None = Field(default=None, description="The enterprise that answered, if named.")
    region_code: str = Field(description="6-digit division code; 150500 (the city) when unknown.")
    scores: dict[Category, int] = Field(description="1 (very dissatisfied) to 5 (very satisfied), per category rated.")
    comment: str | None = Field(default=None, description="The enterprise's comment, as given.")
    complaint_ids: tuple[str, ...] = Field(
        default=(),
        description="Complaints opened from it: each score of 1-2 with a comment (`survey:<id>#<category>`).",
    )
    quality_flags: tuple[str, ...] = Field(default=(), description="Soft faults found in the input.")
