"""Routing service: places each received complaint on a department (派单), takes the departments' actions and the
hotline's callbacks through the case state machine, keeps a read model of the SLA deadlines, and serves cases,
dry runs and rule sets over HTTP.

Every handler parses, calls the pure core (casework.py on top of rules.py and lifecycle.py), and saves the case,
its processed-message row, its history and its outgoing events in one transaction; the outbox relay publishes.
Offsets are committed only after that commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

import asyncpg
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from faststream.kafka.annotations import KafkaMessage
from pydantic import BaseModel, ValidationError

from services.routing import casework, store
from services.routing.casework import CaseFacts, Effects
from services.routing.lifecycle import SUPERVISOR, CaseSnapshot, Refused
from services.routing.rules import (
    DEFAULT_RULES_FILE,
    RulesError,
    RuleSet,
    decide_route,
    load_default_rules,
    load_rules,
    rules_in_force,
)
from services.routing.views import (
    DryRunRequest,
    case_summary,
    deadline_view,
    describe_validation,
    dry_run_place,
    fact_view,
    inline_schema,
    mask_complaint,
)
from shared.auth import Principal
from shared.db import is_transient
from shared.domain import is_department
from shared.events import (
    CallbackResult,
    CaseState,
    ComplaintAssigned,
    ComplaintReceived,
    DeadLetter,
    DepartmentAction,
    LifecycleChanged,
    SlaEvent,
)
from shared.kafka import RawRecord
from shared.kafka import dead_letter_of as shared_dead_letter
from shared.service import (
    CallerDep,
    ServiceContext,
    batch_subscriber,
    consume_batch,
    context,
    create_service_app,
    read_limited,
)
from shared.settings import Settings

log = logging.getLogger(__name__)
SERVICE: Final = "routing"
GROUP: Final = "routing"
MAX_ACTION_BYTES: Final = 64 * 1024
MAX_RULES_BYTES: Final = 256 * 1024
OPEN_GAUGE_INTERVAL_S: Final = 5.0
_ERROR_OF_STATUS: Final = {400: "invalid_json", 403: "forbidden", 404: "unknown_case", 409: "conflict", 422: "invalid"}
M = TypeVar("M", bound=BaseModel)


class RulesFileError(RuntimeError):
    """The rules file named by ROUTING_RULES cannot be read."""


# --- rule sets ----------------------------------------------------------------------------------------------


class RuleBook:
    """The base rule set (the rules file) and the sets posted through the API, picked by time (rules_in_force).

    Posted sets are immutable rows; each transaction that routes reads the versions it has not seen yet, so every
    replica routes with the same sets.
    """

    def __init__(self, base: RuleSet, source: str, text: str) -> None:
        self.base, self.source, self.text = base, source, text
        self.posted: dict[str, RuleSet] = {}
        self._unusable: set[str] = set()

    async def refresh(self, conn: asyncpg.Connection[Any]) -> None:
        for version, text in await store.rule_sets_except(conn, set(self.posted) | self._unusable):
            try:
                self.posted[version] = load_rules(text, source=f"rule set {version} (database)")
            except RulesError as exc:  # validated when posted; only a code change could make it fail now
                log.error(  # noqa: TRY400 - the problems are in the message; a traceback would add nothing
                    "stored rule set no longer loads; ignored", extra={"version": version, "error": str(exc)}
                )
                self._unusable.add(version)

    def in_force(self, at: datetime) -> RuleSet:
        return rules_in_force(self.base, self.posted.values(), at)

    async def current(self, conn: asyncpg.Connection[Any], at: datetime) -> RuleSet:
        await self.refresh(conn)
        return self.in_force(at)


def load_rule_book(settings: Settings) -> RuleBook:
    """The rules file in force at start: ROUTING_RULES, else the default. A broken file stops the service here, with
    every problem and its line in the message."""
    if settings.routing_rules is None:
        source = f"services/routing/{DEFAULT_RULES_FILE}"
        from importlib import resources

        text = resources.files("services.routing").joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")
        return RuleBook(load_default_rules(), source, text)
    path = settings.routing_rules
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesFileError(f"ROUTING_RULES={path}: cannot read the rules file: {exc}") from exc
    return RuleBook(load_rules(text, source=str(path)), str(path), text)


# --- the consume side ---------------------------------------------------------------------------------------


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


class Router:
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
            result = item.decide(cases[item.complaint_id], row.facts, rules, now)
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
                items.append((record, fact))
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


def _subscribe(
    ctx: ServiceContext,
    router: Router,
    topic: str,
    name: str,
    handle: Callable[[list[RawRecord]], Awaitable[None]],
    description: str,
) -> None:
    group = ctx.group(GROUP, topic)
    subscriber = batch_subscriber(ctx, topic, group_id=group, title=f"routing.{name}", description=description)

    async def handler(msg: KafkaMessage) -> None:
        await router.on_batch(msg, group, f"consumer.{name}", handle)

    subscriber(handler)


async def setup(ctx: ServiceContext) -> None:
    try:
        rules = load_rule_book(ctx.settings)
    except (RulesError, RulesFileError) as exc:
        log.critical("routing rules refused, not starting: %s", exc)
        raise
    log.info("routing rules loaded", extra={"source": rules.source, "version": rules.base.version})
    router = Router(ctx, rules)
    ctx.extras["router"] = router
    t = ctx.topics
    _subscribe(
        ctx,
        router,
        t.received,
        "received",
        router.take_received,
        "complaint.received (3.1): each new complaint is routed and assigned.",
    )
    _subscribe(
        ctx,
        router,
        t.actions,
        "actions",
        router.take_actions,
        "Department actions (3.3); refused ones become dead letters.",
    )
    _subscribe(
        ctx,
        router,
        t.callbacks,
        "callbacks",
        router.take_callbacks,
        "Callback results (3.4): close or reopen (重办) resolved cases.",
    )
    _subscribe(
        ctx, router, t.sla, "sla", router.take_sla, "SLA events (3.5), kept as routing's read model of the deadlines."
    )
    ctx.broker.publisher(
        t.assigned,
        schema=ComplaintAssigned,
        title="complaints.assigned",
        description="Assignments (3.2, 派单), keyed by complaint_id; round +1 after each return or reopening.",
    )
    ctx.broker.publisher(
        t.lifecycle,
        schema=LifecycleChanged,
        title="complaints.lifecycle",
        description="State changes of cases (3.6), and extension facts with from_state == to_state.",
    )
    ctx.broker.publisher(
        t.dlq,
        schema=DeadLetter,
        title="complaints.dlq",
        description="Records routing could not take (invalid, refused, unknown case), with reason and bytes.",
    )
    router.start()


async def teardown(ctx: ServiceContext) -> None:
    router: Router | None = ctx.extras.get("router")
    if router is not None:
        await router.stop()


# --- HTTP ---------------------------------------------------------------------------------------------------

router = APIRouter(tags=["routing"])


def _routing(request: Request) -> tuple[ServiceContext, Router]:
    ctx = context(request)
    found: Router = ctx.extras["router"]
    return ctx, found


def _parse_body(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        error_type, reason = describe_validation(exc)
        raise HTTPException(
            400 if error_type == "invalid_json" else 422, {"error": error_type, "reason": reason}
        ) from None


def _require_admin(caller: Principal) -> None:
    if not caller.is_admin:
        raise HTTPException(403, {"error": "forbidden", "reason": "this needs an admin key"})


def _unavailable(exc: BaseException) -> HTTPException:
    return HTTPException(
        503,
        {"error": "unavailable", "reason": "the database is not reachable; retry later"},
        headers={"Retry-After": "5"},
    )


@router.post(
    "/v1/cases/{complaint_id}/actions",
    summary="A department action on a case (contract 3.3)",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(DepartmentAction)}}}
    },
    responses={200: {"description": "Taken, or the same action_id again (`duplicate: true`)"}},
)
async def post_action(complaint_id: str, request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx, routing = _routing(request)
    department = caller.department()
    if department is None:
        raise HTTPException(403, {"error": "forbidden", "reason": "only a department key may act on a case"})
    action = _parse_body(DepartmentAction, await read_limited(request, MAX_ACTION_BYTES))
    if action.complaint_id != complaint_id:
        raise HTTPException(
            422, {"error": "invalid", "reason": f"the path names case {complaint_id}, the body {action.complaint_id}"}
        )
    if action.department != department:
        raise HTTPException(
            403, {"error": "forbidden", "reason": f"this key acts for {department}, not for {action.department}"}
        )
    now = ctx.clock()
    try:
        async with asyncio.timeout(10), ctx.pool.acquire() as conn, conn.transaction():
            (outcome,) = await routing.apply(conn, [action_fact(action)], now)
    except Exception as exc:
        if is_transient(exc):
            raise _unavailable(exc) from exc
        raise
    if outcome.effects is not None:
        routing.count(outcome.effects)
        ctx.relay.wake()
    if outcome.refused:
        log.info(
            "action refused", extra={"action_id": action.action_id, "status": outcome.status, "reason": outcome.reason}
        )
        raise HTTPException(outcome.status, outcome.body)
    return JSONResponse(outcome.body)


@router.get("/v1/departments/{code}/cases", summary="A department's cases, with their deadlines")
async def department_cases(
    code: str,
    request: Request,
    state: str | None = Query(default=None, description="Only cases in this state (3.6)."),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
    caller: Principal = CallerDep,
) -> JSONResponse:
    ctx, _ = _routing(request)
    if caller.department() != code:
        raise HTTPException(403, {"error": "forbidden", "reason": f"this needs the key of department {code}"})
    if state is not None and state not in {s.value for s in CaseState}:
        raise HTTPException(
            422,
            {"error": "invalid", "reason": f"unknown state {state!r}: one of {', '.join(s.value for s in CaseState)}"},
        )
    rows = await store.department_cases(ctx.pool, code, state, limit, offset)
    deadlines: dict[str, list[Any]] = {}
    for d in await store.deadlines(ctx.pool, [r["complaint_id"] for r in rows]):
        deadlines.setdefault(d["complaint_id"], []).append(d)
    cases = [case_summary(r, deadlines.get(r["complaint_id"], []), code) for r in rows]
    return JSONResponse({"department": code, "state": state, "limit": limit, "offset": offset, "cases": cases})


@router.get("/v1/cases/{complaint_id}", summary="One case: its facts in order, deadlines and state")
async def get_case(complaint_id: str, request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx, _ = _routing(request)
    row = await store.case(ctx.pool, complaint_id)
    if row is None:
        raise HTTPException(404, {"error": "not_found", "reason": f"no case {complaint_id}"})
    viewer = caller.department()
    lead = row["lead_department"]
    allowed = caller.is_admin or (
        viewer is not None
        and (
            viewer in (lead, SUPERVISOR)
            or viewer in (row["assisting_departments"] or ())
            or await store.held_by(ctx.pool, complaint_id, viewer)
        )
    )
    if not allowed:
        raise HTTPException(
            403, {"error": "forbidden", "reason": f"case {complaint_id} is not held by this key's department"}
        )
    full = viewer is not None and viewer == lead
    complaint = mask_complaint(_json_object(row["complaint"]), full)
    body = {
        "complaint_id": complaint_id,
        "state": row["state"],
        "round": row["round"],
        "lead_department": lead,
        "assisting_departments": list(row["assisting_departments"] or ()),
        "level": row["level"],
        "rule_id": row["rule_id"],
        "complaint": complaint,
        "assignments": [
            {
                "assignment_id": a["assignment_id"],
                "round": a["round"],
                "lead_department": a["lead_department"],
                "assisting_departments": list(a["assisting_departments"]),
                "level": a["level"],
                "rule_id": a["rule_id"],
                "rules_version": a["rules_version"],
                "reason": a["reason"],
                "assigned_at": a["assigned_at"].isoformat().replace("+00:00", "Z"),
            }
            for a in await store.assignments_of(ctx.pool, complaint_id)
        ],
        "deadlines": [deadline_view(d) for d in await store.deadlines(ctx.pool, [complaint_id])],
        "history": [
            fact_view(h["kind"], h["at"], h["recorded_at"], _json_object(h["body"]), full)
            for h in await store.history(ctx.pool, complaint_id)
        ],
    }
    return JSONResponse(body)


def _json_object(value: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(value) if isinstance(value, str) else dict(value)
    return loaded


@router.post(
    "/v1/routing/dry-run",
    summary="Where a complaint would go, under the rules in force or a proposed set; assigns nothing",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(DryRunRequest)}}}
    },
)
async def dry_run(request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx, routing = _routing(request)
    _require_admin(caller)
    req = _parse_body(DryRunRequest, await read_limited(request, MAX_RULES_BYTES))
    unknown = [code for code in req.exclude if not is_department(code)]
    if unknown:
        raise HTTPException(
            422, {"error": "invalid", "reason": f"unknown department(s) in exclude: {', '.join(unknown)}"}
        )
    try:
        category, region, notes = dry_run_place(req.complaint)
    except ValueError as exc:
        raise HTTPException(422, {"error": "invalid", "reason": str(exc)}) from None
    at = req.at or ctx.clock()
    if req.rules is not None:
        rule_set = _load_posted_rules(req.rules, "proposed rules")
    else:
        async with ctx.pool.acquire() as conn:
            rule_set = await routing.rules.current(conn, at)
    decision = decide_route(category, region, rule_set, exclude=frozenset(req.exclude))
    return JSONResponse(
        {
            "lead_department": decision.lead_department,
            "assisting_departments": list(decision.assisting_departments),
            "level": decision.level,
            "rule_id": decision.rule_id,
            "reason": decision.reason,
            "rules_version": decision.rules_version,
            "passed_over": list(decision.passed_over),
            "category": category.value,
            "region_code": region,
            "proposed": req.rules is not None,
            "at": at.isoformat().replace("+00:00", "Z"),
            "notes": notes,
        }
    )


def _load_posted_rules(text: str, source: str) -> RuleSet:
    try:
        return load_rules(text, source=source)
    except RulesError as exc:
        raise HTTPException(
            422,
            {
                "error": "invalid_rules",
                "reason": str(exc),
                "problems": [{"line": p.line, "where": p.where, "message": p.message} for p in exc.problems],
            },
        ) from None


def _rule_set_view(rule_set: RuleSet, *, source: str, in_force: bool, **extra: Any) -> dict[str, Any]:
    return {
        "version": rule_set.version,
        "effective_from": rule_set.effective_from.isoformat(),
        "source": source,
        "in_force": in_force,
        "rules": [r.id for r in rule_set.rules],
        **extra,
    }


@router.get("/v1/routing/rules", summary="The rule sets (the file's and those posted) and the one in force")
async def list_rules(request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx, routing = _routing(request)
    _require_admin(caller)
    now = ctx.clock()
    async with ctx.pool.acquire() as conn:
        in_force = await routing.rules.current(conn, now)
    book = routing.rules
    sets = [_rule_set_view(book.base, source="file", in_force=in_force is book.base, path=book.source)]
    for row in await store.rule_set_list(ctx.pool):
        posted = book.posted.get(row["version"])
        if posted is not None:
            sets.append(
                _rule_set_view(
                    posted,
                    source="api",
                    in_force=in_force is posted,
                    created_at=row["created_at"].isoformat(),
                    created_by=row["created_by"],
                )
            )
    sets.sort(key=lambda s: s["effective_from"])
    return JSONResponse({"at": now.isoformat(), "in_force": in_force.version, "sets": sets})


@router.get("/v1/routing/rules/{version}", summary="One rule set as its YAML text")
async def get_rules(version: str, request: Request, caller: Principal = CallerDep) -> PlainTextResponse:
    ctx, routing = _routing(request)
    _require_admin(caller)
    text = routing.rules.text if version == routing.rules.base.version else await store.rule_set_yaml(ctx.pool, version)
    if text is None:
        raise HTTPException(404, {"error": "not_found", "reason": f"no rule set {version!r}"})
    return PlainTextResponse(text, media_type="application/yaml")


@router.post(
    "/v1/routing/rules",
    status_code=201,
    summary="Post a new versioned rule set (YAML or JSON) taking effect at its effective_from",
    openapi_extra={"requestBody": {"required": True, "content": {"application/yaml": {"schema": {"type": "string"}}}}},
)
async def post_rules(request: Request, caller: Principal = CallerDep) -> JSONResponse:
    ctx, routing = _routing(request)
    _require_admin(caller)
    raw = await read_limited(request, MAX_RULES_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, {"error": "invalid_utf8", "reason": "a rules file is UTF-8 text"}) from None
    # A broken set is refused here, before anything is stored: the sets in force stay as they were.
    rule_set = _load_posted_rules(text, "POST /v1/routing/rules")
    book = routing.rules
    now = ctx.clock()
    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            await book.refresh(conn)
            clash = _clash(rule_set, [book.base, *book.posted.values()])
            if clash:
                raise HTTPException(409, {"error": "conflict", "reason": clash})
            await store.insert_rule_set(conn, rule_set.version, rule_set.effective_from, text, now, caller.scope)
    except asyncpg.UniqueViolationError:
        raise HTTPException(
            409, {"error": "conflict", "reason": "a rule set with this version or effective_from was just posted"}
        ) from None
    book.posted[rule_set.version] = rule_set
    in_force = book.in_force(now)
    log.info(
        "rule set posted", extra={"version": rule_set.version, "effective_from": rule_set.effective_from.isoformat()}
    )
    return JSONResponse(
        _rule_set_view(rule_set, source="api", in_force=in_force is rule_set, created_at=now.isoformat()),
        status_code=201,
    )


def _clash(new: RuleSet, existing: Sequence[RuleSet]) -> str | None:
    for old in existing:
        if old.version == new.version:
            return f"rule set version {new.version!r} exists already; rule sets are immutable, post a new version"
        if old.effective_from == new.effective_from:
            return (
                f"rule set {old.version!r} takes effect at {old.effective_from.isoformat()} too: "
                "give the new set another effective_from"
            )
    return None


def create_app(settings: Settings | None = None) -> Any:
    return create_service_app(
        SERVICE,
        routers=[router],
        setup=setup,
        teardown=teardown,
        settings=settings,
        description="Routes complaints to departments (派单), takes their actions and the callbacks, serves cases.",
    )
