"""The SLA clock against real Apache Kafka and PostgreSQL, the service run as its own process(es).

The clock runs on real time with short windows: working hours 00:00-24:00, an overrides file that makes the dates
around today working days, and a policy in seconds (docs/sla.md, "short windows"). Facts are produced straight onto
complaints.received / .assigned / .lifecycle, back-dated where a test wants a deadline to fall due soon. Nothing
here asserts on how long anything took: waits are upper bounds, and `late` is only asserted where the deadline
fell due while no scheduler was running.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest

from services.sla import store
from shared.domain import Category, Channel, Kind, Urgency
from shared.events import CaseState, ComplaintAssigned, ComplaintReceived, DeadLetter, LifecycleChanged, SlaEvent
from shared.events.base import Message
from shared.events.sla import SlaEventType, Stage
from shared.migrate import migrate
from tests.support.infra import (
    Env,
    ServiceProcess,
    collect,
    metric_sum,
    produce,
    rewind_group,
    short_clock_environ,
    wait_for_line,
    wait_for_metric,
)

pytestmark = pytest.mark.integration

SET, WARN, BREACH, MET = SlaEventType.DEADLINE_SET, SlaEventType.WARNING, SlaEventType.BREACHED, SlaEventType.MET
A, F, R, C = Stage.ACCEPT, Stage.FIRST_CONTACT, Stage.RESOLVE, Stage.CALLBACK

# Seconds, on a clock that runs all day every day of the test: urgent cases resolve within 10 s.
POLICY = {
    "accept": {"unit": "seconds", "amount": 20},
    "first_contact": {"unit": "seconds", "amount": 24},
    "resolve": {"unit": "seconds", "amount": 30},
    "callback": {"unit": "seconds", "amount": 10},
    "extension_day": {"unit": "seconds", "amount": 4},
    "by_urgency": {"urgent": {"resolve": {"unit": "seconds", "amount": 10}}},
}


def sla_environ(env: Env, **extra: str) -> dict[str, str]:
    return short_clock_environ(env, POLICY, SLA_GAUGE_INTERVAL_S="1", **extra)


def start_sla(env: Env, name: str = "sla", **extra: str) -> ServiceProcess:
    return ServiceProcess("sla", sla_environ(env, **extra), env.tmp / f"{name}.log").start()


def now() -> datetime:
    return datetime.now(UTC)


def received(cid: str, at: datetime, urgency: Urgency = Urgency.NORMAL) -> ComplaintReceived:
    return ComplaintReceived(
        occurred_at=at, complaint_id=cid, channel=Channel.HOTLINE, source_id=cid.split(":", 1)[1], received_at=at,
        kind=Kind.COMPLAINT, category=Category.GOVERNMENT_SERVICES, title="办事难", content="窗口材料反复退回",
        urgency=urgency, region_code="150500",
    )  # fmt: skip


def assigned(cid: str, at: datetime, round_: int = 1, lead: str = "spj") -> ComplaintAssigned:
    return ComplaintAssigned(
        occurred_at=at, complaint_id=cid, assignment_id=str(uuid4()), round=round_, lead_department=lead,
        level="city", rule_id="default", reason="按类别派单", assigned_at=at,
    )  # fmt: skip


S = CaseState
MOVES = {
    "accept": (S.ASSIGNED, S.ACCEPTED),
    "contact": (S.ACCEPTED, S.IN_PROGRESS),
    "pause": (S.IN_PROGRESS, S.PAUSED),
    "resume": (S.PAUSED, S.IN_PROGRESS),
    "resolve": (S.IN_PROGRESS, S.RESOLVED),
    "closed": (S.RESOLVED, S.CLOSED),
    "reopened": (S.RESOLVED, S.REOPENED),
    "approve_extension": (S.IN_PROGRESS, S.IN_PROGRESS),
}


def changed(cid: str, what: str, at: datetime, round_: int = 1, **extra: Any) -> LifecycleChanged:
    from_state, to_state = MOVES[what]
    cause = "callback" if what in ("closed", "reopened") else what
    return LifecycleChanged(
        occurred_at=at, complaint_id=cid, from_state=from_state, to_state=to_state, cause=cause, round=round_,
        department="spj", lead_department="spj", at=at, **extra,
    )  # fmt: skip


async def send(env: Env, *events: Message) -> None:
    by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
    topics = {ComplaintReceived: env.topics.received, ComplaintAssigned: env.topics.assigned,
              LifecycleChanged: env.topics.lifecycle}  # fmt: skip
    for event in events:
        assert isinstance(event, ComplaintReceived | ComplaintAssigned | LifecycleChanged)
        by_topic.setdefault(topics[type(event)], []).append((event.complaint_id.encode(), event.to_json_bytes()))
    for topic, items in by_topic.items():
        await produce(env.bootstrap, topic, items)


async def sla_events(env: Env, until: Any, timeout_s: float = 60.0, settle_s: float = 2.0) -> list[SlaEvent]:
    records = await collect(
        env.bootstrap,
        [env.topics.sla],
        lambda rs: until([SlaEvent.model_validate_json(r.value) for r in rs]),
        timeout_s=timeout_s,
        settle_s=settle_s,
    )
    return [SlaEvent.model_validate_json(r.value) for r in records]


def of(
    events: list[SlaEvent], cid: str, kind: SlaEventType | None = None, stage: Stage | None = None
) -> list[SlaEvent]:
    return [
        e
        for e in events
        if e.complaint_id == cid and (kind is None or e.type is kind) and (stage is None or e.stage is stage)
    ]


def outcomes(events: list[SlaEvent], kinds: tuple[SlaEventType, ...] = (BREACH,)) -> Counter[tuple[str, Stage, int]]:
    return Counter((e.complaint_id, e.stage, e.round) for e in events if e.type in kinds)


async def wait_until(moment: datetime) -> None:
    delay = (moment - now()).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)


async def metrics_of(service: ServiceProcess) -> str:
    async with httpx.AsyncClient(base_url=service.url, timeout=5) as http:
        return (await http.get("/metrics")).text


# ---------------------------------------------------------------------------------------------------------------


async def test_deadlines_are_set_warned_breached_and_met(env: Env) -> None:
    sla = start_sla(env)
    try:
        t = now()
        met, late, old, parked = "hotline:MET-1", "hotline:LATE-1", "hotline:OLD-1", "hotline:PARK-1"
        # Parked: the assignment and the accept come before the complaint itself.
        await send(env, assigned(parked, t), changed(parked, "accept", t + timedelta(seconds=1)))
        await send(
            env,
            received(met, t),
            assigned(met, t),
            # Back-dated: accept due t+2, first contact t+6, resolve t+2 (the warnings are already past or near).
            received(late, t - timedelta(seconds=28)),
            assigned(late, t - timedelta(seconds=18)),
            # Received in 2000: its resolve deadline passed long ago, and 2000 is a year whose schedule no source
            # publishes (2001 on are published by the holidays package).
            received(old, datetime(2000, 3, 3, 2, tzinfo=UTC)),
        )
        await produce(env.bootstrap, env.topics.lifecycle, [(b"hotline:BAD", b'{"not": "a lifecycle event"')])
        await send(env, received(parked, t))
        # The department acts once the case is on the clock (waiting on the clock's own events, not on a sleep);
        # the facts carry their own times, which is what the clock judges by.
        await sla_events(env, lambda es: {e.stage for e in of(es, met, SET)} >= {A, F, R}, timeout_s=30, settle_s=0)
        t1 = t + timedelta(seconds=1)
        await send(env, changed(met, "accept", t1), changed(met, "contact", t1), changed(met, "resolve", t1))
        await send(env, changed(met, "closed", t1 + timedelta(seconds=1)))

        def done(events: list[SlaEvent]) -> bool:
            return (
                len(of(events, late, BREACH)) >= 3
                and len(of(events, old, BREACH)) >= 1
                and len(of(events, met, MET)) >= 4
                and len(of(events, parked, MET)) >= 1
            )

        events = await sla_events(env, done, settle_s=2)
        text = await metrics_of(sla)
        async with httpx.AsyncClient(base_url=sla.url, timeout=10) as http:
            spec = (await http.get("/asyncapi")).text
            ready = await http.get("/readyz")
        # Replaying every input topic from offset 0 sets, fires and meets nothing again.
        sla.stop()
        inputs = [env.topics.received, env.topics.assigned, env.topics.lifecycle]
        consumed = len(await collect(env.bootstrap, inputs, lambda rs: len(rs) >= 13, timeout_s=10))  # all sent
        await rewind_group(env.bootstrap, f"{env.prefix}sla", inputs)
        sla.start()
        assert await wait_for_metric(sla.url, "consumer_batch_records_sum", consumed), sla.log_tail()
        replayed = await sla_events(env, lambda es: len(es) >= len(events), settle_s=2)
    finally:
        sla.stop()
    # (Warnings and breaches may still come: the parked case's clocks run on. What facts cause must not repeat.)
    by_facts = Counter(e.event_id for e in events if e.type in (SET, MET))
    assert Counter(e.event_id for e in replayed if e.type in (SET, MET)) == by_facts, "the replay set or met again"
    assert all(n == 1 for n in outcomes(replayed).values())
    assert ready.status_code == 200, ready.text
    assert env.topics.sla in spec
    assert "SlaEvent" in spec

    # A case done in time: every stage set, then met; the callback counted from the resolve; never a warning.
    assert [(e.type, e.stage) for e in of(events, met) if e.type is not SET] == [(MET, A), (MET, F), (MET, R), (MET, C)]
    assert {e.stage for e in of(events, met, SET)} == {A, F, R, C}
    assert of(events, met, SET, R)[0].department == "unassigned"
    assert of(events, met, SET, R)[-1].department == "spj"
    # A late case: each stage breached exactly once, escalated to the supervising bureau.
    assert outcomes(of(events, late)) == {(late, A, 1): 1, (late, F, 1): 1, (late, R, 1): 1}
    assert all(e.escalate_to == "yshj" and e.department == "spj" for e in of(events, late, BREACH))
    assert all(n == 1 for n in outcomes(of(events, late), (WARN,)).values())
    # Long ago: breached at once, marked late, no warning after the fact.
    (old_breach,) = of(events, old, BREACH)
    assert old_breach.late
    assert old_breach.department == "unassigned"
    assert of(events, old, WARN) == []
    # Parked facts applied once the complaint arrived: the accept, made in time, is met.
    assert [e.stage for e in of(events, parked, MET)] == [A]
    # Chains: a warning or breach is caused by the deadline_set that announced its due.
    announced = {str(e.event_id) for e in events if e.type is SET}
    assert all(e.causation_id in announced for e in events if e.type in (WARN, BREACH) and e.complaint_id != old)
    # Metrics: counters per stage and department, the overdue gauge from the database, the unknown year.
    assert metric_sum(text, "sla_breaches_total") >= 4
    assert 'sla_breaches_total{department="spj",stage="accept"} 1.0' in text
    assert 'sla_calendar_year_missing{year="2000"} 1.0' in text
    assert metric_sum(text, "sla_overdue_open") >= 1
    # The malformed record became a dead letter and did not stop the others.
    letters = await collect(env.bootstrap, [env.topics.dlq], lambda rs: len(rs) >= 1, timeout_s=20)
    (letter,) = [DeadLetter.model_validate_json(r.value) for r in letters]
    assert (letter.service, letter.error_type, letter.source_key) == ("sla", "invalid_event", "hotline:BAD")


async def test_killed_during_due_time_fires_each_missed_deadline_once_late(env: Env) -> None:
    # No grace: a breach is meant for its due, so those that fell due while no scheduler ran are late.
    sla = start_sla(env, SLA_LATE_AFTER_S="1", SLA_BREACH_GRACE_SECONDS="0")
    t = now()
    # Group A falls due at t+5 (the moment of the kill), group B at t+8 (while the service is down).
    group_a = [f"hotline:KA-{i}" for i in range(40)]
    group_b = [f"hotline:KB-{i}" for i in range(40)]
    try:
        await send(
            env,
            *[received(c, t - timedelta(seconds=25)) for c in group_a],
            *[received(c, t - timedelta(seconds=22)) for c in group_b],
        )
        await sla_events(env, lambda es: len(of_type(es, SET)) >= 80, timeout_s=30, settle_s=0)
        await wait_until(t + timedelta(seconds=5, milliseconds=100))
        sla.kill()
        killed_at = now()
        await wait_until(max(t + timedelta(seconds=10), killed_at + timedelta(seconds=3)))
        sla.start()

        def done(events: list[SlaEvent]) -> bool:
            return len(outcomes(events)) >= 80

        events = await sla_events(env, done, timeout_s=60, settle_s=2)
    finally:
        sla.stop()
    breaches = outcomes(events)
    assert set(breaches) == {(c, R, 1) for c in group_a + group_b}
    assert all(n == 1 for n in breaches.values()), [k for k, n in breaches.items() if n > 1]
    # Whatever fell due while no scheduler ran (group B, unless this machine was very slow) went out late.
    missed = [e for e in events if e.type is BREACH and e.due_at > killed_at]
    assert missed
    assert all(e.late for e in missed)
    assert all(n == 1 for n in outcomes(events, (WARN,)).values())


def of_type(events: list[SlaEvent], kind: SlaEventType) -> list[SlaEvent]:
    return [e for e in events if e.type is kind]


async def test_two_replicas_fire_each_deadline_once_and_a_dead_holders_claims_are_taken_again(env: Env) -> None:
    first, second = (ServiceProcess("sla", sla_environ(env, SLA_BATCH_SIZE="25"), env.tmp / f"{name}.log")
                     for name in ("sla-1", "sla-2"))  # fmt: skip
    await asyncio.gather(asyncio.to_thread(first.start), asyncio.to_thread(second.start))
    try:
        t = now()
        cases = [f"hotline:TWO-{i}" for i in range(300)]
        held = [f"hotline:HELD-{i}" for i in range(20)]
        # 300 urgent cases: every warning at t+8 and every breach at t+10, all at once.
        await send(env, *[received(c, t, Urgency.URGENT) for c in cases])
        # 20 more, due at t+16, whose rows a third party (a replica about to die) holds.
        await send(env, *[received(c, t + timedelta(seconds=6), Urgency.URGENT) for c in held])
        await sla_events(env, lambda es: len(of_type(es, SET)) >= 320, timeout_s=30, settle_s=0)
        holder = await asyncpg.connect(env.database_url, server_settings={"search_path": "sla"})
        tx = holder.transaction()
        await tx.start()
        claimed = await holder.fetch(
            "SELECT complaint_id FROM deadlines WHERE complaint_id LIKE 'hotline:HELD-%' FOR UPDATE"
        )
        assert len(claimed) == 20
        locked_at = now()
        await wait_until(t + timedelta(seconds=18))  # past every due
        events = await sla_events(env, lambda es: len(outcomes(es)) >= 300, timeout_s=30, settle_s=1)
        fired_held = [e for e in events if e.complaint_id in held and e.type in (WARN, BREACH)]
        assert all(e.occurred_at < locked_at for e in fired_held), "a held row fired"
        holder.terminate()  # the holder dies without committing: its locks go with its connection

        def done(events: list[SlaEvent]) -> bool:
            return len(outcomes(events)) >= 320

        events = await sla_events(env, done, timeout_s=30, settle_s=2)
        texts = [await metrics_of(first), await metrics_of(second)]
    finally:
        first.stop()
        second.stop()
    breaches, warnings = outcomes(events), outcomes(events, (WARN,))
    print(f"breaches fired per replica: {[metric_sum(text, 'sla_breaches_total') for text in texts]}")
    assert set(breaches) == {(c, R, 1) for c in cases + held}
    assert all(n == 1 for n in breaches.values()), [k for k, n in breaches.items() if n > 1]
    assert all(n == 1 for n in warnings.values()), [k for k, n in warnings.items() if n > 1]
    assert sum(metric_sum(text, "sla_breaches_total") for text in texts) == 320


async def test_resolve_racing_its_deadline_gives_exactly_one_final_word(env: Env) -> None:
    sla = start_sla(env)
    try:
        t = now()
        racing = [f"hotline:RACE-{i}" for i in range(60)]
        in_time = [f"hotline:ONTIME-{i}" for i in range(20)]
        too_late = [f"hotline:LATE-{i}" for i in range(20)]
        everyone = racing + in_time + too_late
        await send(env, *[received(c, t, Urgency.URGENT) for c in everyone], *[assigned(c, t) for c in everyone])
        await sla_events(env, lambda es: len(of_type(es, SET)) >= 100 * 4, timeout_s=30, settle_s=0)
        # In time, then closed by the callback: no breach of anything, ever after.
        resolved_at = t + timedelta(seconds=2)
        await wait_until(resolved_at)
        await send(env, *[changed(c, "resolve", resolved_at) for c in in_time])
        await send(env, *[changed(c, "closed", resolved_at + timedelta(seconds=1)) for c in in_time])
        # Resolved 0.1 s before the due (t+10), reported around it: in time, so met (the breach is held for the
        # grace; should one go out all the same, the met supersedes it).
        for half, moment in ((racing[:30], 9_950), (racing[30:], 10_020)):
            await wait_until(t + timedelta(milliseconds=moment))
            await send(env, *[changed(c, "resolve", t + timedelta(seconds=9, milliseconds=900)) for c in half])
        # Resolved after the due.
        await wait_until(t + timedelta(seconds=11))
        await send(env, *[changed(c, "resolve", t + timedelta(seconds=10, milliseconds=500)) for c in too_late])

        def done(events: list[SlaEvent]) -> bool:
            decided = {c for c in everyone if final_words(events, c)}
            # Every case decided, and the closed cases' callbacks past their due (t+13) and the grace.
            return (
                len(decided) >= 100 and bool(events) and max(e.occurred_at for e in events) > t + timedelta(seconds=19)
            )

        events = await sla_events(env, done, timeout_s=60, settle_s=2)
    finally:
        sla.stop()
    resolve = [e for e in events if e.stage is R]
    race = Counter(e.type.value for e in resolve if e.complaint_id in racing and e.type in (MET, BREACH))
    print(f"racing resolves: {dict(race)}")  # a breach here would be superseded by its met
    assert {c: final_words(events, c) for c in everyone} == {
        **{c: [MET] for c in racing + in_time},
        **{c: [BREACH] for c in too_late},
    }
    closed_breaches = [e for e in events if e.complaint_id in in_time and e.type is BREACH]
    assert closed_breaches == [], "a case closed in time was breached"
    assert len([e for e in events if e.complaint_id in in_time and e.type is MET and e.stage is C]) == 20


async def test_extension_pause_and_reopening_supersede_the_old_deadline(env: Env) -> None:
    sla = start_sla(env)
    try:
        t = now()
        extended, paused, reopened = "hotline:EXT-1", "hotline:PAUSE-1", "hotline:REOPEN-1"
        await send(env, *[received(c, t, Urgency.URGENT) for c in (extended, paused, reopened)])
        await send(env, *[assigned(c, t) for c in (extended, paused, reopened)])
        await send(env, *[changed(c, "accept", t) for c in (extended, paused, reopened)])
        await send(env, *[changed(c, "contact", t) for c in (extended, paused, reopened)])
        await wait_until(t + timedelta(seconds=2))
        # Extension of 2 "days" of 4 working seconds: the resolve due moves from t+10 to t+18.
        await send(env, changed(extended, "approve_extension", t + timedelta(seconds=2), extension_days=2))
        # Paused from t+2 to t+5: the resolve due moves from t+10 to t+13.
        await send(env, changed(paused, "pause", t + timedelta(seconds=2)))
        # Resolved at t+1, reopened at t+2 (round 2): a new resolve window from t+2, due t+12.
        await send(env, changed(reopened, "resolve", t + timedelta(seconds=1)))
        await send(env, changed(reopened, "reopened", t + timedelta(seconds=2), round_=2))
        await send(env, assigned(reopened, t + timedelta(seconds=2), round_=2))
        await wait_until(t + timedelta(seconds=5))
        await send(env, changed(paused, "resume", t + timedelta(seconds=5)))

        def done(events: list[SlaEvent]) -> bool:
            return all(of(events, c, BREACH, R) for c in (extended, paused, reopened))

        events = await sla_events(env, done, timeout_s=60, settle_s=2)
    finally:
        sla.stop()

    def dues(cid: str, kind: SlaEventType) -> list[tuple[int, datetime]]:
        return [(e.round, e.due_at) for e in of(events, cid, kind, R)]

    assert dues(extended, SET)[-1] == (1, t + timedelta(seconds=18))
    assert dues(extended, BREACH) == [(1, t + timedelta(seconds=18))]
    assert dues(paused, SET)[-1] == (1, t + timedelta(seconds=13))
    assert dues(paused, BREACH) == [(1, t + timedelta(seconds=13))]
    assert dues(reopened, MET) == [(1, t + timedelta(seconds=10))]
    assert dues(reopened, SET)[-1] == (2, t + timedelta(seconds=12))
    assert dues(reopened, BREACH) == [(2, t + timedelta(seconds=12))]
    assert [e.round for e in of(events, reopened, MET, C)] == [1]
    assert {(e.stage, e.round) for e in of(events, reopened, SET)} >= {(A, 2), (F, 2), (R, 2), (C, 1)}


async def test_overdue_gauge_counts_open_breaches_from_the_database(env: Env) -> None:
    # The gauge's query against the migrated schema: breached and not done, or past due and not fired yet.
    await migrate(env.database_url, ("sla",))
    conn = await asyncpg.connect(env.database_url, server_settings={"search_path": "sla"})
    try:
        t = now()
        await conn.execute(
            "INSERT INTO deadlines (complaint_id, stage, round, department, started_at, due_at, warn_at, state, "
            "next_fire_at, settled_at, updated_at) VALUES "
            "('a', 'accept', 1, 'spj', $1, $1, $1, 'breached', NULL, NULL, $1),"
            "('b', 'accept', 1, 'spj', $1, $1, $1, 'breached', NULL, $1, $1),"
            "('c', 'resolve', 1, 'scj', $1, $1, $1, 'pending', $1, NULL, $1),"
            "('d', 'resolve', 1, 'scj', $1, $2, $1, 'pending', $2, NULL, $1)",
            t - timedelta(hours=1),
            t + timedelta(hours=1),
        )
        counts = await store.overdue_open(conn, t)
    finally:
        await conn.close()
    assert counts == {("spj", "accept"): 1, ("scj", "resolve"): 1}


# --- event time: a deadline is judged on when things happened, not on when sla read them -----------------------


def final_words(events: list[SlaEvent], cid: str, stage: Stage = R) -> list[SlaEventType]:
    """The outcomes of a deadline that stand: a breach a later `met` supersedes does not."""
    superseded = {e.supersedes_event_id for e in events if e.supersedes_event_id}
    return [
        e.type for e in of(events, cid, stage=stage) if e.type in (MET, BREACH) and str(e.event_id) not in superseded
    ]


async def test_stopped_across_the_due_while_resolved_in_time_is_met_after_the_restart(env: Env) -> None:
    sla = start_sla(env, SLA_BREACH_GRACE_SECONDS="1")
    cid = "hotline:DOWN-1"
    t = now()
    due = t + timedelta(seconds=4)  # urgent: resolve within 10 s of receipt
    try:
        await send(env, received(cid, due - timedelta(seconds=10), Urgency.URGENT), assigned(cid, t))
        await sla_events(env, lambda es: bool(of(es, cid, SET, R)), timeout_s=30, settle_s=0)
        sla.kill()
        # Resolved in time while sla is down; sla comes back after the due.
        await send(env, changed(cid, "resolve", due - timedelta(seconds=1)))
        await wait_until(due + timedelta(seconds=1))
        sla.start()
        events = await sla_events(env, lambda es: bool(of(es, cid, MET, R)), timeout_s=60, settle_s=1)
    finally:
        sla.stop()
    assert of(events, cid, BREACH, R) == [], "a breach went out before sla had read the resolve"
    assert final_words(events, cid) == [MET]
    (met,) = of(events, cid, MET, R)
    assert met.supersedes_event_id is None


async def test_upstream_held_back_less_or_more_than_the_grace(env: Env) -> None:
    grace = 6
    sla = start_sla(env, SLA_BREACH_GRACE_SECONDS=str(grace))
    within, beyond = "hotline:HELD-IN", "hotline:HELD-OUT"
    t = now()
    due = t + timedelta(seconds=4)
    done_at = due - timedelta(seconds=1)  # both resolved in time; the facts reach the topic late
    try:
        await send(env, *[received(c, due - timedelta(seconds=10), Urgency.URGENT) for c in (within, beyond)])
        await send(env, *[assigned(c, t) for c in (within, beyond)])
        await sla_events(env, lambda es: all(of(es, c, SET, R) for c in (within, beyond)), timeout_s=30, settle_s=0)
        # Held back 2 s (less than the grace): published after the due, before the breach may go out.
        await wait_until(due + timedelta(seconds=1))
        await send(env, changed(within, "resolve", done_at))
        # Held back until its breach is out (more than the grace): the met comes after, superseding it.
        first = await sla_events(env, lambda es: bool(of(es, beyond, BREACH, R)), timeout_s=60, settle_s=0)
        await send(env, changed(beyond, "resolve", done_at))
        events = await sla_events(env, lambda es: bool(of(es, beyond, MET, R)), timeout_s=60, settle_s=1)
        gauge_cleared = await wait_for_line(sla.url, 'sla_overdue_open{department="spj",stage="resolve"} 0.0', 20)
        text = await metrics_of(sla)
    finally:
        sla.stop()
    assert of(first, within, BREACH, R) == [], "a breach went out for a fact held back less than the grace"
    assert of(events, within, BREACH, R) == []
    assert final_words(events, within) == [MET]
    (breach,) = of(events, beyond, BREACH, R)
    assert breach.escalate_to == "yshj"
    assert breach.occurred_at >= due + timedelta(seconds=grace)  # held for the grace (event times, not wall time)
    (met,) = of(events, beyond, MET, R)
    assert met.supersedes_event_id == str(breach.event_id)
    assert final_words(events, beyond) == [MET]
    assert gauge_cleared, "the superseded breach is still counted as overdue and open"
    assert 'sla_breaches_superseded_total{department="spj",stage="resolve"} 1.0' in text


async def test_down_across_dues_with_a_backlog_fires_each_missed_deadline_once_late_after_catching_up(
    env: Env,
) -> None:
    """The fault suite's "sla down an hour" in small, with its grace: deadlines set before the outage and deadlines
    whose assignments were published during it fall due while no sla runs; on the restart, with those facts (and
    more) to read first, each fires once, marked late, and a stage done in time during the outage is met instead."""
    grace, late_after = 2, 1
    sla = start_sla(env, SLA_LATE_AFTER_S=str(late_after), SLA_BREACH_GRACE_SECONDS=str(grace))
    before = [f"hotline:DA-{i}" for i in range(30)]  # set before the outage
    during = [f"hotline:DB-{i}" for i in range(30)]  # assigned while sla is away, read after the restart
    in_time = [f"hotline:DC-{i}" for i in range(10)]  # accepted in time while sla is away
    backlog = [f"hotline:DF-{i}" for i in range(300)]  # more to read after the restart, due after it
    t = now()
    try:
        await send(env, *[received(c, t - timedelta(seconds=10)) for c in before])
        await send(env, *[assigned(c, t - timedelta(seconds=10)) for c in before])  # accept due t+10, contact t+14
        await sla_events(env, lambda es: sum(e.stage is A for e in of_type(es, SET)) >= 30, timeout_s=60, settle_s=0)
        sla.kill()
        killed = now()
        at = killed - timedelta(seconds=15)  # accept due 5 s, first contact 9 s into the outage
        await send(env, *[received(c, at) for c in during + in_time], *[received(c, killed) for c in backlog])
        await send(env, *[assigned(c, at) for c in during + in_time], *[assigned(c, killed) for c in backlog])
        await send(env, *[changed(c, "accept", at + timedelta(seconds=18)) for c in in_time])
        await wait_until(killed + timedelta(seconds=12))
        restarted = now()
        sla.start()
        missed = {(c, s, 1) for c in before + during for s in (A, F)} | {(c, F, 1) for c in in_time}

        def done(events: list[SlaEvent]) -> bool:
            fired = outcomes(events)
            return all(k in fired for k in missed) and len(of_type(events, MET)) >= len(in_time)

        events = await sla_events(env, done, timeout_s=120, settle_s=2)
    finally:
        sla.stop()
    breaches = outcomes(events)
    assert all(n == 1 for n in breaches.values()), [k for k, n in breaches.items() if n > 1]
    assert {(c, A, 1) for c in in_time}.isdisjoint(breaches), "a breach for a stage done in time"
    assert {e.complaint_id for e in of_type(events, MET) if e.stage is A} == set(in_time)
    sets = {(e.complaint_id, e.stage, e.round): e.due_at for e in of_type(events, SET)}
    fell_due = {k for k, due in sets.items() if due is not None and killed < due < restarted and k in breaches}
    assert {(c, A, 1) for c in during} <= fell_due
    late_before = restarted - timedelta(seconds=grace + late_after)
    for e in of_type(events, BREACH):
        if (e.complaint_id, e.stage, e.round) not in fell_due:
            continue
        assert e.occurred_at >= restarted, f"{e.complaint_id} {e.stage}: breached while no sla ran"
        if e.due_at is not None and e.due_at < late_before:
            assert e.late, f"{e.complaint_id} {e.stage} fell due while sla was away, fired at the restart, not late"
