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
    source_key: str | None = Field(
        default=None,
        description="Its key, as text: exact when the key is UTF-8 without NUL; otherwise each byte that is not "
        "(a NUL, an invalid sequence) is written `\\xNN`. The exact bytes are in `source_key_b64`.",
    )
    source_key_b64: str | None = Field(default=None, description="Its key's exact bytes, base64; null without a key.")
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

    def key_bytes(self) -> bytes | None:
        """The source key's exact bytes (a dead letter written before `source_key_b64` existed: its text, as UTF-8)."""
        if self.source_key_b64 is not None:
            return base64.b64decode(self.source_key_b64)
        return None if self.source_key is None else self.source_key.encode("utf-8", errors="surrogateescape")
