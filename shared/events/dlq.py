"""`complaints.dlq` (contract 3.7): what could not be processed, with its reason and its bytes."""

from __future__ import annotations

import base64
from uuid import UUID, uuid4

from pydantic import Field

from shared.events.base import Message, UtcDatetime


class DeadLetter(Message):
    """A message no service could process; `complaints dlq replay` sends it back once the cause is fixed."""

    dead_letter_id: UUID = Field(default_factory=uuid4)
    source_topic: str = Field(description="Topic (or `http:<path>`) the message came from.")
    source_key: str | None = Field(default=None, description="Its key, as text.")
    source_partition: int | None = None
    source_offset: int | None = None
    service: str = Field(description="Service that gave up on it.")
    reason: str = Field(description="Why, in words a person can read; phone numbers masked.")
    error_type: str = Field(description="Short, bounded code of the fault, e.g. `invalid_json`.")
    first_seen_at: UtcDatetime
    attempts: int = Field(ge=1)
    payload_b64: str = Field(description="The original bytes, whole, base64.")

    def payload(self) -> bytes:
        return base64.b64decode(self.payload_b64)
