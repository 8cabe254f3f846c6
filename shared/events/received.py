"""`complaint.received` (contract 3.1): intake's canonical form of a raw message of any channel."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.domain import Category, Channel, Kind, Urgency
from shared.events.base import Event, Message, UtcDatetime


class Enterprise(Message):
    name: str | None = Field(default=None, description="Enterprise name as given (企业名称).")
    uscc: str | None = Field(default=None, description="Unified social credit code (统一社会信用代码), upper case.")
    uscc_valid: bool | None = Field(
        default=None, description="Whether the code passes its GB 32100-2015 check character; null without a code."
    )


class Contact(Message):
    name: str | None = Field(default=None, description="Contact person (联系人).")
    phone: str | None = Field(
        default=None,
        description="Digits only (13912345678, 04758234567). For the handling department only: shown masked elsewhere.",
    )


class ComplaintReceived(Event):
    """A complaint accepted by intake (受理)."""

    event_type: Literal["complaint.received"] = "complaint.received"
    schema_version: Literal[1] = 1
    channel: Channel = Field(description="hotline, complaint_line, supervisor, portal, visit or survey.")
    source_id: str = Field(description="The source system's own id (工单编号, ticketId, report id).")
    received_at: UtcDatetime = Field(description="When the source received it (UTC).")
    kind: Kind = Field(description="consultation, request, complaint, report or suggestion.")
    category: Category = Field(description="Business-environment category; label first, then keywords.")
    title: str = Field(description="Title as given, or derived from the content.")
    content: str = Field(description="Content as given.")
    urgency: Urgency = Field(description="normal or urgent.")
    region_code: str = Field(description="6-digit division code; 150500 (the city) when unknown.")
    enterprise: Enterprise | None = Field(default=None, description="The enterprise concerned, if named.")
    contact: Contact | None = Field(default=None, description="Who to contact, null when anonymous or unknown.")
    anonymous: bool = Field(default=False, description="The enterprise asked not to be named (匿名).")
    quality_flags: tuple[str, ...] = Field(
        default=(), description="Soft faults found in the input: uscc_invalid, region_unknown, category_unmapped, …"
    )
