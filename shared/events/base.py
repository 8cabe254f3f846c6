"""The envelope every canonical event carries (contract section 3) and the rules for its times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""An offset-aware time, held in UTC; pydantic writes it as RFC 3339 with a `Z`."""


class Message(BaseModel):
    """A message on the wire: frozen, and unknown fields ignored (a consumer must tolerate minor additions)."""

    model_config = ConfigDict(frozen=True, extra="ignore", use_enum_values=False)

    @model_validator(mode="after")
    def _no_nul(self) -> Message:
        """No string of a message holds a NUL (JSON `\\u0000`): PostgreSQL stores none in text or jsonb, so a record
        carrying one is refused when read (a dead letter saying which field), never left to fail in the database as if
        processing had failed. Free text an edge takes from outside is cleaned before this (shared/text.py)."""
        for name, value in self.__dict__.items():
            if isinstance(value, str):
                if "\x00" in value:
                    raise ValueError(f"field {name!r} contains a NUL character (\\u0000), which cannot be stored")
            elif isinstance(value, tuple) and any(isinstance(v, str) and "\x00" in v for v in value):
                raise ValueError(f"field {name!r} contains a NUL character (\\u0000), which cannot be stored")
        return self

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


class Event(Message):
    """Envelope of every event the project writes."""

    event_id: UUID = Field(default_factory=uuid4, description="Unique id of this event; consumers dedupe on it.")
    event_type: str = Field(description="What happened, e.g. `complaint.received`.")
    schema_version: int = Field(default=1, description="Version of this event's shape; 1 in contract v1.")
    occurred_at: UtcDatetime = Field(description="When the project recorded the fact (UTC).")
    complaint_id: str = Field(description="`<channel>:<source id>`, stable for a (channel, source id) pair.")
    causation_id: str | None = Field(
        default=None, description="event_id or action_id that led to this event; null for intake's first event."
    )


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-ready dict of a model (times as RFC 3339 strings)."""
    return model.model_dump(mode="json")


class GroupEvent(Message):
    """Envelope of the events about several cases (contract 10.3, 10.4): the same fields as `Event`, but the
    subject is an item or a warning, named by the subclass's id field, with the cases it links in `complaint_ids`."""

    event_id: UUID = Field(default_factory=uuid4, description="Unique id of this event; consumers dedupe on it.")
    event_type: str = Field(description="What happened, e.g. `supervision.changed`.")
    schema_version: int = Field(default=1, description="Version of this event's shape; 1 in contract v1.")
    occurred_at: UtcDatetime = Field(description="When the project recorded the fact (UTC).")
    causation_id: str | None = Field(default=None, description="event_id that led to this event, when there is one.")
    complaint_ids: list[str] = Field(description="The cases this event concerns.")
