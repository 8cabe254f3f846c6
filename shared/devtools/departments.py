"""A stand-in for the department systems and the hotline's callback visits, for demos and end-to-end runs.

`DepartmentSimulator` reads `complaints.assigned` and `complaints.lifecycle` (its own consumer group) and, after
short randomized delays, writes what departments and the hotline would: on `departments.actions` accept (签收),
first contact, progress and resolve (办结); now and then a return (退单) with a reason code, or an extension request
that the supervising bureau (yshj) approves; the triage desk upholds or overturns returns and places `other` cases
by hand; and on `hotline.callbacks` the callback visit (回访): mostly satisfied, about one in ten unsatisfied, which
reopens the case (重办) for a new round.

At speed 1 a case goes from assignment to closed in about half a minute to a minute (the delays below); `speed`
divides every delay. `DepartmentPlayer` is the pure part (what to do and when); the simulator is its I/O. It is
best effort, as a stand-in may be: what is scheduled when it stops, or cannot be sent, is dropped and counted.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from services.routing.lifecycle import SUPERVISOR
from services.routing.rules import TRIAGE
from shared.clock import Clock, system_clock
from shared.devtools.stopping import Stopped, close_soon, until_stopped
from shared.events import (
    ActionType,
    CallbackResult,
    CaseState,
    ComplaintAssigned,
    DepartmentAction,
    LifecycleChanged,
    ReturnReason,
)
from shared.kafka import make_producers, security_kwargs
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)

# Seconds at speed 1: (low, high) of a uniform draw.
DELAYS: Final[dict[str, tuple[float, float]]] = {
    "accept": (2.0, 10.0),
    "return": (2.0, 8.0),
    "contact": (2.0, 10.0),
    "progress": (2.0, 8.0),
    "extension": (1.0, 4.0),
    "approve": (1.0, 4.0),
    "resolve": (5.0, 20.0),
    "desk": (2.0, 6.0),
    "callback": (5.0, 15.0),
}
# Where the desk sends a case it places by hand (a plausible city department for an unclassified complaint).
DESK_CHOICES: Final = ("spj", "scj", "gxj", "zjj", "fgw", "sfj")
HORIZON: Final = timedelta(minutes=2)
"""Facts older than this when the simulator starts are history, not work: it does not act on them."""

Message = DepartmentAction | CallbackResult


@dataclass(frozen=True)
class Planned:
    """One message to send `delay_s` seconds (at speed 1) after the fact that caused it."""

    delay_s: float
    message: Message


@dataclass
class DepartmentPlayer:
    """Decides what departments, the desk, the bureau and the hotline do about a fact; no I/O, seeded."""

    rng: random.Random
    return_share: float = 0.05
    extension_share: float = 0.05
    unsatisfied_share: float = 0.10
    overturn_share: float = 0.5
    leads: dict[str, str] = field(default_factory=dict)
    """complaint_id → the last department (not the desk) that held it: who a return at the desk came from."""

    def _id(self) -> str:
        return f"sim-{self.rng.getrandbits(64):016x}"

    def _delay(self, kind: str) -> float:
        low, high = DELAYS[kind]
        return self.rng.uniform(low, high)

    def _action(
        self, assigned: ComplaintAssigned, department: str, kind: ActionType, at: datetime, **fields: object
    ) -> DepartmentAction:
        return DepartmentAction.model_validate(
            {
                "action_id": self._id(),
                "complaint_id": assigned.complaint_id,
                "department": department,
                "action": kind,
                "at": at,
                **fields,
            }
        )

    def on_assigned(self, assigned: ComplaintAssigned, now: datetime) -> list[Planned]:
        """The lead's work on a new assignment (or the desk's decision), as timed actions in order."""
        if assigned.lead_department == TRIAGE:
            return self._desk(assigned, now)
        self.leads[assigned.complaint_id] = assigned.lead_department
        lead = assigned.lead_department
        plan: list[Planned] = []
        elapsed = 0.0

        def then(kind: str, action: ActionType, **fields: object) -> None:
            nonlocal elapsed
            elapsed += self._delay(kind)
            at = now + timedelta(seconds=elapsed)
            department = SUPERVISOR if action is ActionType.APPROVE_EXTENSION else lead
            plan.append(Planned(elapsed, self._action(assigned, department, action, at, **fields)))

        if self.rng.random() < self.return_share:
            reason = self.rng.choice(list(ReturnReason))
            then("return", ActionType.RETURN, reason_code=reason, reason=f"模拟退单：{reason.value}")
            return plan
        then("accept", ActionType.ACCEPT)
        then("contact", ActionType.CONTACT, note="已电话联系企业，了解诉求")
        if self.rng.random() < 0.5:
            then("progress", ActionType.PROGRESS, note="正在协调相关单位办理")
        if self.rng.random() < self.extension_share:
            days = self.rng.randint(1, 5)
            then("extension", ActionType.REQUEST_EXTENSION, working_days=days, reason="涉及多部门协调，申请延期")
            then("approve", ActionType.APPROVE_EXTENSION, note="同意延期")
        then("resolve", ActionType.RESOLVE, note="已办结，向企业反馈办理结果")
        return plan

    def _desk(self, assigned: ComplaintAssigned, now: datetime) -> list[Planned]:
        # Routing sends a case to the desk in round 1 when no rule places it (other); in a later round only after
        # a return (a reopening goes back to the lead that resolved it), so the return awaits the desk's verdict.
        delay = self._delay("desk")
        at = now + timedelta(seconds=delay)
        if assigned.round == 1:
            lead = self.rng.choice(DESK_CHOICES)
            return [Planned(delay, self._action(assigned, TRIAGE, ActionType.REASSIGN, at, lead_department=lead))]
        returned_by = self.leads.get(assigned.complaint_id)
        if returned_by is not None and self.rng.random() < self.overturn_share:
            overturn = self._action(assigned, TRIAGE, ActionType.OVERTURN_RETURN, at, note="退单理由不成立")
            return [Planned(delay, overturn)]
        lead = self.rng.choice([code for code in DESK_CHOICES if code != returned_by])
        uphold = self._action(
            assigned, TRIAGE, ActionType.UPHOLD_RETURN, at, lead_department=lead, note="退单成立，改派"
        )
        return [Planned(delay, uphold)]

    def on_resolved(self, changed: LifecycleChanged, now: datetime) -> list[Planned]:
        """The hotline's callback visit after a resolve."""
        delay = self._delay("callback")
        unsatisfied = self.rng.random() < self.unsatisfied_share
        satisfaction: Literal["satisfied", "basically_satisfied", "unsatisfied"] = (
            "unsatisfied" if unsatisfied else self.rng.choice(("satisfied", "satisfied", "basically_satisfied"))
        )
        callback = CallbackResult(
            complaint_id=changed.complaint_id,
            callback_at=now + timedelta(seconds=delay),
            satisfaction=satisfaction,
            resolved=not unsatisfied or self.rng.random() < 0.5,
            comment="企业对办理结果不满意" if unsatisfied else "企业表示满意",
        )
        return [Planned(delay, callback)]

    def on_closed(self, complaint_id: str) -> None:
        self.leads.pop(complaint_id, None)


@dataclass
class SimulatorStats:
    sent: Counter[str] = field(default_factory=Counter)
    closed: int = 0
    reopened: int = 0
    refused_seen: int = 0

    def line(self) -> str:
        actions = " ".join(f"{k}={v}" for k, v in sorted(self.sent.items()))
        return f"departments: {actions} closed={self.closed} reopened={self.reopened}"


class DepartmentSimulator:
    """Plays the department systems and the hotline's callbacks against a running system (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        speed: float = 1.0,
        seed: int | None = None,
        *,
        clock: Clock = system_clock,
        group: str = "department-simulator",
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.settings, self.speed, self.clock = settings, speed, clock
        self.topics = Topics(settings.topic_prefix)
        self.group = f"{settings.topic_prefix}{group}"
        self.player = DepartmentPlayer(random.Random(seed))
        self.stats = SimulatorStats()
        self._queue: list[tuple[float, int, Message]] = []
        self._seq = itertools.count()

    def _schedule(self, plan: Sequence[Planned]) -> None:
        base = time.monotonic()
        for item in plan:
            heapq.heappush(self._queue, (base + item.delay_s / self.speed, next(self._seq), item.message))

    def _rescale(self, message: Message, now: datetime) -> Message:
        # Times in a plan are at speed 1; the message says when it is really sent (and never in the future).
        if isinstance(message, DepartmentAction):
            return message.model_copy(update={"at": now})
        return message.model_copy(update={"callback_at": now})

    def handle(self, topic: str, value: bytes, started: datetime) -> None:
        """Take one fact from the system and schedule the answers to it."""
        now = self.clock()
        try:
            if topic == self.topics.assigned:
                assigned = ComplaintAssigned.model_validate_json(value)
                if assigned.occurred_at >= started - HORIZON:
                    self._schedule(self.player.on_assigned(assigned, now))
            elif topic == self.topics.lifecycle:
                changed = LifecycleChanged.model_validate_json(value)
                if changed.occurred_at < started - HORIZON:
                    return
                if changed.to_state is CaseState.RESOLVED and changed.from_state is not CaseState.RESOLVED:
                    self._schedule(self.player.on_resolved(changed, now))
                elif changed.to_state is CaseState.CLOSED:
                    self.stats.closed += 1
                    self.player.on_closed(changed.complaint_id)
                elif changed.to_state is CaseState.REOPENED:
                    self.stats.reopened += 1
        except ValidationError as exc:
            log.warning("simulator skipped a message it cannot read", extra={"topic": topic, "error": str(exc)[:300]})

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: read facts, send the scheduled actions and callbacks when they fall due."""
        started = self.clock()
        consumer = AIOKafkaConsumer(
            self.topics.assigned,
            self.topics.lifecycle,
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=self.group,
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            metadata_max_age_ms=5000,
            **security_kwargs(self.settings),
        )
        producers = make_producers(self.settings, "complaints-department-simulator")
        pending: list[tuple[AIOKafkaProducer, asyncio.Future[object]]] = []
        try:
            await until_stopped(consumer.start(), stop)
            await until_stopped(producers.start(), stop)
            while not stop.is_set():
                wait_ms = 200
                if self._queue:
                    wait_ms = max(0, min(wait_ms, int((self._queue[0][0] - time.monotonic()) * 1000)))
                batch = await until_stopped(consumer.getmany(timeout_ms=wait_ms, max_records=1000), stop)
                for records in batch.values():
                    for record in records:
                        if record.value is not None:
                            self.handle(record.topic, record.value, started)
                while self._queue and self._queue[0][0] <= time.monotonic():
                    _, _, message = heapq.heappop(self._queue)
                    message = self._rescale(message, self.clock())
                    if isinstance(message, DepartmentAction):
                        topic, kind = self.topics.actions, message.action.value
                    else:
                        topic, kind = self.topics.callbacks, f"callback_{message.satisfaction}"
                    producer: AIOKafkaProducer | None = None
                    try:
                        producer = current = await until_stopped(producers.get(), stop)
                        sent = await until_stopped(
                            current.send(topic, message.to_json_bytes(), key=message.complaint_id.encode()), stop
                        )
                    except KafkaError as exc:  # a simulator drops what it cannot send, and says so
                        self.stats.sent["failed"] += 1
                        if producer is not None:
                            await producers.failed(producer, exc)
                        log.warning("simulator could not send", extra={"topic": topic, "error": repr(exc)[:300]})
                        continue
                    pending.append((producer, sent))
                    self.stats.sent[kind] += 1
                if pending:
                    waited = list(pending)
                    pending.clear()
                    results = await until_stopped(asyncio.gather(*(f for _, f in waited), return_exceptions=True), stop)
                    for (used, _), result in zip(waited, results, strict=True):
                        if isinstance(result, BaseException):
                            self.stats.sent["failed"] += 1
                            # A failed delivery spoils an idempotent producer (shared.kafka.Producers): replace it.
                            await producers.failed(used, result, spoilt=True)
                            log.warning("simulator message not delivered", extra={"error": repr(result)[:300]})
        except Stopped:
            pass
        finally:
            # Bounded: with the broker gone, flushing and leaving the group would wait for a long time.
            await close_soon(asyncio.gather(*(f for _, f in pending), return_exceptions=True))
            await close_soon(producers.stop())
            await close_soon(consumer.stop())
            log.info("department simulator stopped", extra={"stats": self.stats.line()})
