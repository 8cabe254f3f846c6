"""Retention: the processed-message tables and the dead letters are pruned by age, in bounded batches, by a periodic
task in each service (docs/operations.md, "Retention").

Only rows that dedupe nothing else are pruned. A replay from offset 0 after pruning still changes nothing, because
every effect is deduped on its natural key, which is kept: intake's complaints on complaint_id (channel + source id),
routing's cases on complaint_id, the sla clock's facts by its own fold (a case received, an assignment id known, a
round over, a closed case: a replayed fact is a noted duplicate). Routing's action, callback and sla keys are the
natural keys of those facts (and what an HTTP caller is told again), so they are kept. A dead letter pruned and then
made again by a replay keeps its id (service, topic, partition, offset): a consumer of `complaints.dlq` dedupes it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from shared.clock import Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    """One table's pruning: a DELETE of at most $2 rows older than the cutoff $1; which retention setting applies."""

    name: str
    sql: str
    setting: str  # "processed" or "dead_letters"


DEAD_LETTERS = Rule(
    "dead_letters",
    """DELETE FROM dead_letters WHERE dead_letter_id IN (
        SELECT dead_letter_id FROM dead_letters WHERE first_seen_at < $1 ORDER BY first_seen_at LIMIT $2)""",
    "dead_letters",
)
ROUTING_RECEIVED = Rule(
    "processed_received",
    """DELETE FROM processed WHERE message_key IN (
        SELECT message_key FROM processed WHERE message_key LIKE 'received:%' AND processed_at < $1
        ORDER BY processed_at LIMIT $2)""",
    "processed",
)
SLA_PROCESSED = Rule(
    "processed",
    """DELETE FROM processed WHERE event_id IN (
        SELECT event_id FROM processed WHERE processed_at < $1 ORDER BY processed_at LIMIT $2)""",
    "processed",
)
RULES: dict[str, tuple[Rule, ...]] = {
    "intake": (DEAD_LETTERS,),  # intake dedupes on the complaints table itself: no processed-message table
    "routing": (ROUTING_RECEIVED, DEAD_LETTERS),
    "sla": (SLA_PROCESSED, DEAD_LETTERS),
    "reporting": (DEAD_LETTERS,),  # its facts are its read model, kept by event id; only dead letters age out
}


@dataclass(frozen=True)
class Retention:
    processed_days: float
    dead_letter_days: float
    batch_size: int

    def days(self, rule: Rule) -> float:
        return self.processed_days if rule.setting == "processed" else self.dead_letter_days


async def prune_once(
    pool: asyncpg.Pool[Any], rules: tuple[Rule, ...], retention: Retention, clock: Clock, *, max_batches: int = 100
) -> dict[str, int]:
    """Delete what is past retention, one batch per transaction (short locks), at most `max_batches` per table a round;
    returns how many rows each rule deleted."""
    deleted: dict[str, int] = {}
    for rule in rules:
        cutoff = clock() - timedelta(days=retention.days(rule))
        total = 0
        for _ in range(max_batches):
            status = await pool.execute(rule.sql, cutoff, retention.batch_size)
            n = int(status.rsplit(" ", 1)[-1])
            total += n
            if n < retention.batch_size:
                break
            await asyncio.sleep(0)  # let the consumers in between batches
        deleted[rule.name] = total
        if total:
            log.info("pruned", extra={"table": rule.name, "rows": total, "cutoff": cutoff.isoformat()})
    return deleted


async def prune_forever(
    pool: asyncpg.Pool[Any], rules: tuple[Rule, ...], retention: Retention, clock: Clock, interval_s: float
) -> None:
    while True:
        try:
            await prune_once(pool, rules, retention, clock)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - pruning can wait for the next round
            log.warning("pruning failed, will try next round", extra={"error": repr(exc)[:300]})
        await asyncio.sleep(interval_s)
