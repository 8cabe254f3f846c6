"""A consumer's last resort on real PostgreSQL: `give_up_as_dead_letter` (what reporting's three consumers call
when a record fails for good for a reason other than its data) stores one `processing_failed` dead letter with its
outgoing `complaints.dlq` message in one transaction, counts it and wakes the relay; the same record given up again
(a redelivery after a crash) makes nothing more."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest

from services.reporting.worker import SERVICE
from shared.db import create_pool
from shared.events import DeadLetter
from shared.kafka import RawRecord
from shared.migrate import migrate
from shared.observability import Metrics
from shared.service import ServiceContext, give_up_as_dead_letter
from tests.support.infra import Env

pytestmark = pytest.mark.integration


class _Relay:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


async def test_a_record_given_up_is_one_dead_letter_with_its_message_and_a_redelivery_adds_none(env: Env) -> None:
    await migrate(env.database_url, (SERVICE,))
    pool = await create_pool(env.database_url, SERVICE)
    relay, metrics = _Relay(), Metrics(SERVICE)
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    ctx = ServiceContext(
        SERVICE, env.settings(), env.topics, metrics, cast(Any, None), lambda: now, pool,
        cast(Any, None), cast(Any, None), cast(Any, relay), cast(Any, None),
    )  # fmt: skip
    record = RawRecord(env.topics.assigned, 3, 41, b"key\x00bytes", b'{"not": "read"}')
    try:
        for _ in range(2):
            await give_up_as_dead_letter(ctx, record, RuntimeError("a bug, 13800138000"), 5, service=SERVICE)
        letters = await pool.fetch(
            "SELECT source_topic, source_partition, source_offset, error_type, attempts, reason FROM dead_letters"
        )
        outbox = await pool.fetch("SELECT topic, key, value FROM outbox")
    finally:
        await pool.close()
    assert [tuple(r)[:5] for r in letters] == [(env.topics.assigned, 3, 41, "processing_failed", 5)]
    assert letters[0]["reason"].startswith("RuntimeError: a bug"), letters[0]["reason"]
    assert "13800138000" not in letters[0]["reason"], "a phone number in a reason is masked"
    (message,) = outbox
    assert message["topic"] == env.topics.dlq
    assert bytes(message["key"]) == b"key\x00bytes"
    letter = DeadLetter.model_validate_json(message["value"])
    assert (letter.service, letter.error_type, letter.source_offset, letter.attempts) == (
        SERVICE, "processing_failed", 41, 5
    )  # fmt: skip
    assert letter.reason.startswith("RuntimeError: a bug")
    assert metrics.dead_letters.labels(env.topics.assigned)._value.get() == 1
    assert relay.woken == 2
