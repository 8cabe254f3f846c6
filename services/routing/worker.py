"""Routing's consumers: complaints.received is routed and assigned (派单); department actions and the hotline's
callbacks go through the case state machine; SLA events are kept as the deadline read model.

Each batch is parsed, decided by the pure core (casework.py), and saved with its processed-message rows, history and
outgoing events in one transaction; the outbox relay publishes. HTTP actions go through the same `apply`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, TypeVar

import asyncpg
from faststream.kafka.annotations import KafkaMessage
from pydantic import BaseModel, ValidationError

from services.routing import casework, store
from services.routing.casework import CaseFacts, Effects
from services.routing.lifecycle import CaseSnapshot, Refused
from services.routing.rulebook import RuleBook
from services.routing.rules import (
    RuleSet,
)
from services.routing.views import (
    describe_validation,
)
from shared.events import (
    CallbackResult,
    ComplaintReceived,
    DeadLetter,
    DepartmentAction,
    SlaEvent,
)
from shared.kafka import RawRecord
from shared.kafka import dead_letter_of as shared_dead_letter
from shared.service import (
    ServiceContext,
    batch_subscriber,
    consume_batch,
)

log = logging.getLogger(__name__)
SERVICE: Final = "routing"
GROUP: Final = "routing"
OPEN_GAUGE_INTERVAL_S: Final = 5.0
_ERROR_OF_STATUS: Final = {400: "invalid_json", 403: "forbidden", 404: "unknown_case", 409: "conflict", 422: "invalid"}
M = TypeVar("M", bound=BaseModel)


def dead_letter_of(record: RawRecord, error_type: str, reason: str, now: datetime, attempts: int = 1) -> DeadLetter:
    return shared_dead_letter(record, error_type, reason, now, service=SERVICE, attempts=attempts)


def parse(model: type[M], record: RawRecord) -> M | tuple[str, str]:
    """The record as a message model, or (error_type, reason) for its dead letter."""
    try:
        return model.model_validate_json(record.value)
    except ValidationError as exc:
        return describe_validation(exc)


Decide = Callable[[CaseSnapshot, CaseFacts, RuleSet, datetime], Effects | Refused]


@dataclass(frozen=True)
class Incoming:
    """A fact about an existing case (an action or a callback), ready for the state machine."""

    key: str
    complaint_id: str
    fingerprint: str
    kind: str
    at: datetime
    body: str
    decide: Decide
    ids: dict[str, str] = field(default_factory=dict)
    taken_at: datetime | None = None
    """When the product took the fact, if earlier than this read: the broker's append time of a Kafka record."""

    def received(self, now: datetime) -> datetime:
        """The time the fact is judged by (lifecycle `at`): the broker's stamp, never later than now."""
        return now if self.taken_at is None else min(self.taken_at, now)


def action_fact(action: DepartmentAction) -> Incoming:
    return Incoming(
        key=f"action:{action.action_id}",
        complaint_id=action.complaint_id,
        # The same action_id for another case, department or action is a client's mistake, not a duplicate.
        fingerprint=f"{action.complaint_id}|{action.department}|{action.action.value}",
        kind="action",
        at=action.at,
        body=action.model_dump_json(),
        decide=lambda case, facts, rules, now: casework.act(case, facts, action, rules, now),
        ids={"action_id": action.action_id},
    )


def callback_fact(callback: CallbackResult) -> Incoming:
    return Incoming(
        key=casework.callback_key(callback),
        complaint_id=callback.complaint_id,
        fingerprint=f"{callback.satisfaction}|{callback.resolved}",
        kind="callback",
        at=callback.callback_at,
        body=callback.model_dump_json(),
        decide=lambda case, facts, rules, now: casework.call_back(case, facts, callback, rules, now),
    )


@dataclass(frozen=True)
class Outcome:
    """What became of one incoming fact: 200 taken (or a duplicate), 403/409/422 refused, 404 unknown case."""

    status: int
    body: dict[str, Any]
    effects: Effects | None = None

    @property
    def refused(self) -> bool:
        return self.status >= 400

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", ""))


def _refusal(status: int, reason: str) -> Outcome:
    return Outcome(status, {"error": _ERROR_OF_STATUS.get(status, "error"), "reason": reason})


class RoutingWorker:
    """Routing's handlers: each batch in one transaction, shared by the Kafka and HTTP sides."""

    def __init__(self, ctx: ServiceContext, rules: RuleBook) -> None:
        self.ctx, self.rules = ctx, rules
        self._tasks: list[asyncio.Task[None]] = []

    # -- complaints.received

    async def take_received(self, records: list[RawRecord]) -> None:
        ctx = self.ctx
        now = ctx.clock()
        complaints: list[ComplaintReceived] = []
        letters: list[DeadLetter] = []
        for record in records:
            parsed = parse(ComplaintReceived, record)
            if isinstance(parsed, tuple):
                letters.append(dead_letter_of(record, *parsed, now))
            else:
                complaints.append(parsed)
        async with ctx.pool.acquire() as conn, conn.transaction():
            marks = [store.ProcessedMark(f"received:{c.event_id}", c.complaint_id) for c in complaints]
            new_keys = await store.mark_processed(conn, marks, now)
            todo: dict[str, ComplaintReceived] = {}
            for c in complaints:
                if f"received:{c.event_id}" in new_keys and c.complaint_id not in todo:
                    todo[c.complaint_id] = c
            decided: list[store.NewCase] = []
            if todo:
                rules = await self.rules.current(conn, now)
                decided = [
                    store.NewCase(c, c.model_dump_json(), casework.receive(c, rules, now)) for c in todo.values()
                ]
            inserted = await store.insert_cases(conn, decided, now)
            kept = [n for n in decided if n.complaint.complaint_id in inserted]
            taken = [
                (
                    store.HistoryEntry(n.complaint.complaint_id, "received", n.complaint.received_at, n.encoded),
                    n.effects,
                )
                for n in kept
            ]
            await store.save_effects(conn, taken, now, ctx.topics)
            fresh_letters = await store.save_dead_letters(conn, letters, ctx.topics.dlq)
        for n in kept:
            self.count(n.effects)
            for a in n.effects.assignments:
                waited = (a.assigned_at - n.complaint.occurred_at).total_seconds()
                ctx.metrics.intake_to_assignment.labels(n.complaint.channel.value).observe(max(0.0, waited))
        if len(decided) > len(kept):
            log.warning("complaint.received for a known case ignored", extra={"count": len(decided) - len(kept)})
        self.count_letters(fresh_letters)
        ctx.relay.wake()

    # -- departments.actions and hotline.callbacks

    async def apply(self, conn: asyncpg.Connection[Any], items: Sequence[Incoming], now: datetime) -> list[Outcome]:
        """Fold actions or callbacks, in order, into their cases, in the caller's transaction."""
        if not items:
            return []
        rows = await store.lock_cases(conn, [i.complaint_id for i in items])
        # Read after the locks: a transaction that took the same fact first has committed by now.
        done = await store.processed(conn, [i.key for i in items])
        rules = await self.rules.current(conn, now)
        cases = {cid: row.case for cid, row in rows.items()}
        changed: dict[str, tuple[CaseSnapshot, datetime | None]] = {}
        marks: list[store.ProcessedMark] = []
        taken: list[tuple[store.HistoryEntry, Effects]] = []
        outcomes: list[Outcome] = []
        for item in items:
            prior = done.get(item.key)
            if prior is not None:
                if prior.fingerprint != item.fingerprint:
                    outcomes.append(_refusal(409, f"{item.key} was already taken for a different {item.kind}"))
                else:
                    outcomes.append(Outcome(200, {**(prior.outcome or {}), "duplicate": True}))
                continue
            row = rows.get(item.complaint_id)
            if row is None:
                outcomes.append(_refusal(404, f"no case {item.complaint_id}"))
                continue
            result = item.decide(cases[item.complaint_id], row.facts, rules, item.received(now))
            if isinstance(result, Refused):
                outcomes.append(_refusal(result.status, result.reason))
                continue
            cases[item.complaint_id] = result.case
            assigned_at = result.assignments[-1].assigned_at if result.assignments else None
            changed[item.complaint_id] = (result.case, assigned_at or changed.get(item.complaint_id, (None, None))[1])
            body = {**item.ids, **result.outcome()}
            done[item.key] = store.Processed(item.complaint_id, item.fingerprint, body)
            marks.append(store.ProcessedMark(item.key, item.complaint_id, item.fingerprint, body))
            taken.append((store.HistoryEntry(item.complaint_id, item.kind, item.at, item.body), result))
            outcomes.append(Outcome(200, {**body, "duplicate": False}, result))
        await store.update_cases(conn, list(changed.values()), now)
        await store.mark_processed(conn, marks, now)
        await store.save_effects(conn, taken, now, self.ctx.topics)
        return outcomes

    async def _take_facts(
        self, records: list[RawRecord], to_fact: Callable[[RawRecord], Incoming | tuple[str, str]]
    ) -> None:
        ctx = self.ctx
        now = ctx.clock()
        letters: list[DeadLetter] = []
        items: list[tuple[RawRecord, Incoming]] = []
        for record in records:
            fact = to_fact(record)
            if isinstance(fact, tuple):
                letters.append(dead_letter_of(record, *fact, now))
            else:
                items.append((record, replace(fact, taken_at=record.appended_at)))
        async with ctx.pool.acquire() as conn, conn.transaction():
            outcomes = await self.apply(conn, [fact for _, fact in items], now)
            for (record, _), outcome in zip(items, outcomes, strict=True):
                if outcome.refused:
                    letters.append(dead_letter_of(record, str(outcome.body["error"]), outcome.reason, now))
            fresh_letters = await store.save_dead_letters(conn, letters, ctx.topics.dlq)
        for outcome in outcomes:
            if outcome.effects is not None:
                self.count(outcome.effects)
        self.count_letters(fresh_letters)
        ctx.relay.wake()

    async def take_actions(self, records: list[RawRecord]) -> None:
        def to_fact(record: RawRecord) -> Incoming | tuple[str, str]:
            parsed = parse(DepartmentAction, record)
            return parsed if isinstance(parsed, tuple) else action_fact(parsed)

        await self._take_facts(records, to_fact)

    async def take_callbacks(self, records: list[RawRecord]) -> None:
        def to_fact(record: RawRecord) -> Incoming | tuple[str, str]:
            parsed = parse(CallbackResult, record)
            return parsed if isinstance(parsed, tuple) else callback_fact(parsed)

        await self._take_facts(records, to_fact)

    # -- complaints.sla

    async def take_sla(self, records: list[RawRecord]) -> None:
        ctx = self.ctx
        now = ctx.clock()
        events: list[SlaEvent] = []
        letters: list[DeadLetter] = []
        for record in records:
            parsed = parse(SlaEvent, record)
            if isinstance(parsed, tuple):
                letters.append(dead_letter_of(record, *parsed, now))
            else:
                events.append(parsed)
        async with ctx.pool.acquire() as conn, conn.transaction():
            marks = [store.ProcessedMark(f"sla:{e.event_id}", e.complaint_id) for e in events]
            new_keys = await store.mark_processed(conn, marks, now)
            fresh: list[SlaEvent] = []
            for e in events:
                if f"sla:{e.event_id}" in new_keys:
                    new_keys.discard(f"sla:{e.event_id}")
                    fresh.append(e)
            await store.apply_sla_events(conn, fresh, now)
            fresh_letters = await store.save_dead_letters(conn, letters, ctx.topics.dlq)
        self.count_letters(fresh_letters)
        if fresh_letters:
            ctx.relay.wake()

    async def give_up(self, record: RawRecord, exc: BaseException, attempts: int) -> None:
        """A record that failed for good for a reason other than its data (a bug): dead-lettered, counted."""
        now = self.ctx.clock()
        letter = dead_letter_of(record, "processing_failed", f"{type(exc).__name__}: {exc}"[:500], now, attempts)
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            fresh = await store.save_dead_letters(conn, [letter], self.ctx.topics.dlq)
        self.count_letters(fresh)
        self.ctx.relay.wake()

    # -- metrics

    def count(self, effects: Effects) -> None:
        m = self.ctx.metrics
        for a in effects.assignments:
            m.assigned.labels(a.lead_department, a.level).inc()
        if effects.returned is not None:
            m.returned.labels(*effects.returned).inc()

    def count_letters(self, letters: Sequence[DeadLetter]) -> None:
        for d in letters:
            self.ctx.metrics.dead_letters.labels(d.source_topic).inc()
            log.warning(
                "dead letter",
                extra={
                    "source_topic": d.source_topic,
                    "offset": d.source_offset,
                    "error_type": d.error_type,
                    "reason": d.reason,
                },
            )

    async def watch_open_cases(self, interval_s: float = OPEN_GAUGE_INTERVAL_S) -> None:
        """complaints_open from the database, so every replica reports the same, whole figure (take max, not sum)."""
        gauge = self.ctx.metrics.complaints_open
        seen: set[tuple[str, str]] = set()
        while True:
            try:
                counts = await store.open_counts(self.ctx.pool)
                now_seen = {(department, state) for department, state, _ in counts}
                for department, state, n in counts:
                    gauge.labels(department, state).set(n)
                for labels in seen - now_seen:
                    gauge.labels(*labels).set(0)
                seen |= now_seen
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a gauge can wait for the next round
                log.warning("complaints_open not refreshed", extra={"error": repr(exc)[:300]})
            await asyncio.sleep(interval_s)

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.watch_open_cases(), name="routing-open-cases"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # -- the subscriber's wrapper

    async def on_batch(
        self, msg: Any, group: str, where: str, handle: Callable[[list[RawRecord]], Awaitable[None]]
    ) -> None:
        await consume_batch(self.ctx, msg, handle, self.give_up, group=group, where=where)


def subscribe(
    ctx: ServiceContext,
    worker: RoutingWorker,
    topic: str,
    name: str,
    handle: Callable[[list[RawRecord]], Awaitable[None]],
    description: str,
) -> None:
    group = ctx.group(GROUP, topic)
    subscriber = batch_subscriber(ctx, topic, group_id=group, title=f"routing.{name}", description=description)

    async def handler(msg: KafkaMessage) -> None:
        await worker.on_batch(msg, group, f"consumer.{name}", handle)

    subscriber(handler)

