"""Routing against real Apache Kafka and PostgreSQL, the services run as their own processes.

Most tests share one world (intake and routing on one database and topic prefix, started once for the module) and
keep apart by complaint id; the tests that kill, refuse to start or simulate get worlds of their own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from shared.devtools.departments import DepartmentSimulator
from shared.devtools.dev import dev_scopes
from shared.domain import Category, Channel, Kind, Urgency
from shared.events import (
    CallbackResult,
    ComplaintAssigned,
    ComplaintReceived,
    Contact,
    DeadLetter,
    DepartmentAction,
    LifecycleChanged,
    SlaEvent,
)
from tests.support.infra import Env, ServiceProcess, create_database, make_keys, produce, unique, wait_for_metric

pytestmark = pytest.mark.integration


class Tap:
    """Reads topics from the beginning, in the background, for the life of a test world."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap, self.topics = bootstrap, topics
        self.records: list[Any] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> Tap:
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            metadata_max_age_ms=1000,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                self.records.extend(records)
            if batch:
                self._changed.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def on(self, topic: str, key: str | None = None) -> list[Any]:
        return [r for r in self.records if r.topic == topic and (key is None or (r.key and r.key.decode() == key))]

    async def wait(self, done: Callable[[], bool], timeout_s: float = 45.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or 'a condition'}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))


@dataclass
class World:
    env: Env
    routing: ServiceProcess
    intake: ServiceProcess | None
    tap: Tap

    @property
    def t(self) -> Any:
        return self.env.topics

    def key(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env.keys[scope]}"}

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.routing.url, timeout=20)

    def assigned(self, cid: str) -> list[ComplaintAssigned]:
        return _unique_events(ComplaintAssigned, self.tap.on(self.t.assigned, cid))

    def lifecycle(self, cid: str) -> list[LifecycleChanged]:
        return _unique_events(LifecycleChanged, self.tap.on(self.t.lifecycle, cid))

    def moves(self, cid: str) -> list[tuple[str | None, str, str]]:
        return [(e.from_state.value if e.from_state else None, e.to_state.value, e.cause) for e in self.lifecycle(cid)]

    def letters(self, cid: str) -> list[DeadLetter]:
        return [DeadLetter.model_validate_json(r.value) for r in self.tap.on(self.t.dlq, cid)]

    async def wait_assigned(self, cid: str, count: int = 1) -> list[ComplaintAssigned]:
        await self.tap.wait(lambda: len(self.assigned(cid)) >= count, what=f"{count} assignment(s) of {cid}")
        return self.assigned(cid)

    async def wait_state(self, cid: str, state: str, count: int = 1) -> None:
        await self.tap.wait(
            lambda: sum(e.to_state.value == state for e in self.lifecycle(cid)) >= count,
            what=f"{cid} reaching {state}",
        )

    async def wait_letters(self, cid: str, count: int) -> list[DeadLetter]:
        await self.tap.wait(lambda: len(self.letters(cid)) >= count, what=f"{count} dead letter(s) for {cid}")
        return self.letters(cid)

    async def receive(self, *complaints: ComplaintReceived) -> None:
        await produce(
            self.env.bootstrap, self.t.received, [(c.complaint_id.encode(), c.to_json_bytes()) for c in complaints]
        )

    async def act_kafka(self, *actions: DepartmentAction) -> None:
        await produce(
            self.env.bootstrap, self.t.actions, [(a.complaint_id.encode(), a.to_json_bytes()) for a in actions]
        )

    async def act(self, http: httpx.AsyncClient, action: DepartmentAction, scope: str | None = None) -> httpx.Response:
        return await http.post(
            f"/v1/cases/{action.complaint_id}/actions",
            content=action.to_json_bytes(),
            headers=self.key(scope or f"department:{action.department}"),
        )

    async def call_back(self, cid: str, satisfaction: str, resolved: bool = True, at: datetime | None = None) -> None:
        callback = CallbackResult(
            complaint_id=cid,
            callback_at=at or datetime.now(UTC),
            satisfaction=satisfaction,  # type: ignore[arg-type]
            resolved=resolved,
            comment="回访",
        )
        await produce(self.env.bootstrap, self.t.callbacks, [(cid.encode(), callback.to_json_bytes())])


def _unique_events(model: Any, records: list[Any]) -> list[Any]:
    """Events in order, a republished copy (same event_id, byte-identical) counted once."""
    seen: dict[str, bytes] = {}
    out = []
    for r in records:
        event = model.model_validate_json(r.value)
        key = str(event.event_id)
        if key in seen:
            assert seen[key] == r.value, f"two different messages share event_id {key}"
            continue
        seen[key] = r.value
        out.append(event)
    return out


def complaint(
    tag: str,
    category: Category,
    region_code: str = "150500",
    *,
    phone: str | None = "13912345678",
    channel: Channel = Channel.HOTLINE,
) -> ComplaintReceived:
    now = datetime.now(UTC)
    return ComplaintReceived(
        occurred_at=now,
        complaint_id=f"{channel.value}:{tag}",
        channel=channel,
        source_id=tag,
        received_at=now - timedelta(minutes=1),
        kind=Kind.COMPLAINT,
        category=category,
        title=f"测试诉求 {tag}",
        content=f"企业反映问题，联系电话 {phone}" if phone else "企业反映问题",
        urgency=Urgency.NORMAL,
        region_code=region_code,
        contact=Contact(name="王先生", phone=phone) if phone else None,
    )


def action(cid: str, department: str, kind: str, **fields: Any) -> DepartmentAction:
    return DepartmentAction.model_validate(
        {
            "action_id": fields.pop("action_id", f"a-{uuid.uuid4().hex[:12]}"),
            "complaint_id": cid,
            "department": department,
            "action": kind,
            "at": datetime.now(UTC),
            **fields,
        }
    )


async def _make_env(kafka_bootstrap: str, postgres_url: str, tmp: Path) -> Env:
    name = unique("r")
    url = await create_database(postgres_url, name)
    keys_file = tmp / "keys.yaml"
    keys = make_keys(keys_file, dev_scopes())
    return Env(kafka_bootstrap, url, f"{name}.", keys_file, keys, tmp)


async def _start_world(env: Env, *, with_intake: bool, **environ: str) -> World:
    routing = ServiceProcess("routing", env.environ(**environ), env.tmp / "routing.log").start()
    intake = ServiceProcess("intake", env.environ(), env.tmp / "intake.log").start() if with_intake else None
    t = env.topics
    tap = await Tap(env.bootstrap, [t.received, t.assigned, t.lifecycle, t.dlq]).start()
    return World(env, routing, intake, tap)


async def _stop_world(world: World) -> None:
    await world.tap.stop()
    for proc in (world.intake, world.routing):
        if proc is not None:
            proc.stop()


@pytest.fixture(scope="module")
async def world(
    kafka_bootstrap: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    env = await _make_env(kafka_bootstrap, postgres_url, tmp_path_factory.mktemp("routing"))
    w = await _start_world(env, with_intake=True)
    try:
        yield w
    finally:
        await _stop_world(w)


def tag() -> str:
    return f"T{uuid.uuid4().hex[:10].upper()}"


# --- the whole loop -----------------------------------------------------------------------------------------


async def test_whole_loop_from_a_raw_hotline_message_to_closed(world: World) -> None:
    order = tag()
    raw = {
        "gdbh": order,
        "ldsj": (datetime.now(UTC) + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S"),
        "ldhm": "139-1234-5678",
        "lxr": "李女士",
        "qymc": "开鲁玉米深加工有限公司",
        "sqlx": "投诉",
        "sqfl": "融资贷款",
        "sqbt": "续贷审批拖延",
        "sqnr": "银行续贷审批拖延三个月，请协调。联系电话13912345678",
        "ssqy": "开鲁县",
    }
    await produce(
        world.env.bootstrap,
        world.t.intake(Channel.HOTLINE),
        [(order.encode(), json.dumps(raw, ensure_ascii=False).encode())],
    )
    cid = f"hotline:{order}"
    (assigned,) = await world.wait_assigned(cid)
    (received,) = [ComplaintReceived.model_validate_json(r.value) for r in world.tap.on(world.t.received, cid)]
    # 属地管理: 开鲁县 leads, the city's financing bureau assists (contract 6.1).
    assert (assigned.round, assigned.lead_department, assigned.assisting_departments, assigned.level) == (
        1,
        "gov-150523",
        ("jrb",),
        "county",
    )
    assert assigned.rule_id == "territorial-county"
    assert "开鲁县" in assigned.reason
    assert assigned.causation_id == str(received.event_id)
    lead = "gov-150523"
    async with world.http() as http:
        for kind, extra in (("accept", {}), ("contact", {"note": "已联系"}), ("resolve", {"note": "已协调放款"})):
            resp = await world.act(http, action(cid, lead, kind, **extra))
            assert resp.status_code == 200, resp.text
            assert resp.json()["duplicate"] is False
        assert resp.json()["state"] == "resolved"
        await world.call_back(cid, "satisfied")
        await world.wait_state(cid, "closed")
        assert world.moves(cid) == [
            ("received", "assigned", "assigned"),
            ("assigned", "accepted", "accept"),
            ("accepted", "in_progress", "contact"),
            ("in_progress", "resolved", "resolve"),
            ("resolved", "closed", "callback"),
        ]
        changes = world.lifecycle(cid)
        assert all(c.round == 1 and c.lead_department == lead for c in changes)
        assert all(c.action_id for c in changes[1:4])
        assert changes[0].action_id is None
        assert [c.department for c in changes[:4]] == [lead] * 4
        assert all(c.at is not None and c.at <= c.occurred_at for c in changes)
        assert changes[0].causation_id == str(received.event_id)

        # Routing's read model of the SLA deadlines (the sla service owns the clock; here we play it).
        due = datetime.now(UTC) + timedelta(days=3)
        sla = SlaEvent(
            occurred_at=datetime.now(UTC),
            complaint_id=cid,
            type="deadline_set",
            stage="resolve",
            due_at=due,
            round=1,
            department=lead,
        )
        await produce(world.env.bootstrap, world.t.sla, [(cid.encode(), sla.to_json_bytes())])

        async def deadlines_shown() -> dict[str, Any]:
            for _ in range(100):
                body = (await http.get(f"/v1/cases/{cid}", headers=world.key(f"department:{lead}"))).json()
                if body["deadlines"]:
                    return body
                await asyncio.sleep(0.2)
            raise AssertionError("the deadline never showed")

        case = await deadlines_shown()
        assert case["state"] == "closed"
        assert case["deadlines"] == [
            {
                "stage": "resolve",
                "round": 1,
                "department": lead,
                "due_at": due.isoformat().replace("+00:00", "Z"),
                "status": "set",
                "escalate_to": None,
                "late": False,
            }
        ]
        kinds = [h["kind"] for h in case["history"]]
        assert kinds == [
            "received", "assigned", "lifecycle",
            "action", "lifecycle", "action", "lifecycle", "action", "lifecycle",
            "callback", "lifecycle", "sla",
        ]  # fmt: skip
        # The lead (the handling department) sees the phone number whole; an assisting department sees it masked.
        assert case["complaint"]["contact"]["phone"] == "13912345678"
        assert "13912345678" in case["complaint"]["content"]
        seen_by_jrb = (await http.get(f"/v1/cases/{cid}", headers=world.key("department:jrb"))).json()
        assert seen_by_jrb["complaint"]["contact"]["phone"] == "139****5678"
        assert "13912345678" not in json.dumps(seen_by_jrb, ensure_ascii=False)
        listed = (await http.get("/v1/departments/jrb/cases", headers=world.key("department:jrb"))).json()["cases"]
        (mine,) = [c for c in listed if c["complaint_id"] == cid]
        assert mine["role"] == "assisting"
        assert mine["contact"]["phone"] == "139****5678"
        assert mine["deadlines"][0]["stage"] == "resolve"
        lead_list = await http.get(
            f"/v1/departments/{lead}/cases?state=closed", headers=world.key(f"department:{lead}")
        )
        (as_lead,) = [c for c in lead_list.json()["cases"] if c["complaint_id"] == cid]
        assert as_lead["role"] == "lead"
        assert as_lead["contact"]["phone"] == "13912345678"
        assert (await http.get(f"/v1/cases/{cid}", headers=world.key("department:scj"))).status_code == 403
        assert (await http.get("/v1/cases/hotline:NOPE", headers=world.key("admin"))).status_code == 404
        assert (await http.get(f"/v1/cases/{cid}", headers=world.key("admin"))).status_code == 200

        metrics = (await http.get("/metrics")).text
        assert 'complaints_assigned_total{department="gov-150523",level="county"}' in metrics
        assert 'intake_to_assignment_seconds_count{channel="hotline"}' in metrics


# --- returns ------------------------------------------------------------------------------------------------


async def test_a_return_is_routed_to_the_next_rule(world: World) -> None:
    c = complaint(tag(), Category.FINANCING, "150523")
    await world.receive(c)
    (first,) = await world.wait_assigned(c.complaint_id)
    assert first.lead_department == "gov-150523"
    async with world.http() as http:
        resp = await world.act(
            http, action(c.complaint_id, "gov-150523", "return", reason_code="not_our_duty", reason="属金融监管职责")
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["round"] == 2
        assert body["lead_department"] == "jrb"
        assert body["assignment"]["rule_id"] == "sector-financing"
    first, second = await world.wait_assigned(c.complaint_id, 2)
    # The next rule that fits without the returning department: the city's financing bureau, round 2 (contract 3.2).
    assert (second.round, second.lead_department, second.assisting_departments, second.level, second.rule_id) == (
        2,
        "jrb",
        (),
        "city",
        "sector-financing",
    )
    assert second.causation_id == body["action_id"]
    await world.wait_state(c.complaint_id, "assigned", 2)
    assert world.moves(c.complaint_id) == [
        ("received", "assigned", "assigned"),
        ("assigned", "returned", "return"),
        ("returned", "assigned", "assigned"),
    ]
    returned = world.lifecycle(c.complaint_id)[1]
    assert (returned.reason_code, returned.department, returned.round) == ("not_our_duty", "gov-150523", 2)
    assert await wait_for_metric(
        world.routing.url, 'complaints_returned_total{department="gov-150523",reason_code="not_our_duty"}', 1
    )
    # complaints_open is counted from the database (every few seconds), so it holds with many replicas.
    assert await wait_for_metric(world.routing.url, 'complaints_open{department="jrb",state="assigned"}', 1)


async def test_returns_at_the_triage_desk_upheld_and_overturned(world: World) -> None:
    upheld, overturned = complaint(tag(), Category.CORRUPTION, "150525"), complaint(tag(), Category.CORRUPTION)
    await world.receive(upheld, overturned)
    for c in (upheld, overturned):
        (first,) = await world.wait_assigned(c.complaint_id)
        assert (first.lead_department, first.level, first.rule_id) == ("jw", "city", "city-only-corruption")
    async with world.http() as http:
        for c in (upheld, overturned):
            resp = await world.act(
                http, action(c.complaint_id, "jw", "return", reason_code="wrong_region", reason="不属本单位管辖")
            )
            assert resp.status_code == 200, resp.text
            _, at_desk = await world.wait_assigned(c.complaint_id, 2)
            # No other rule fits corruption: the triage desk decides (fallback-triage), round 2.
            assert (at_desk.lead_department, at_desk.round, at_desk.rule_id) == ("triage", 2, "fallback-triage")
            assert world.moves(c.complaint_id)[-1] == ("returned", "triage", "assigned")
        # The desk cannot reassign a returned case before deciding the return.
        early = await world.act(http, action(upheld.complaint_id, "triage", "reassign", lead_department="sfj"))
        assert early.status_code == 409, early.text
        resp = await world.act(http, action(upheld.complaint_id, "triage", "uphold_return", lead_department="sfj"))
        assert resp.status_code == 200, resp.text
        resp = await world.act(http, action(overturned.complaint_id, "triage", "overturn_return"))
        assert resp.status_code == 200, resp.text
        *_, up = await world.wait_assigned(upheld.complaint_id, 3)
        *_, over = await world.wait_assigned(overturned.complaint_id, 3)
        assert (up.lead_department, up.round, up.rule_id) == ("sfj", 2, "manual")
        assert (over.lead_department, over.round, over.rule_id) == ("jw", 2, "manual")
        await world.wait_state(upheld.complaint_id, "assigned", 2)
        await world.wait_state(overturned.complaint_id, "assigned", 2)
        assert world.moves(upheld.complaint_id)[-1] == ("triage", "assigned", "uphold_return")
        assert world.moves(overturned.complaint_id)[-1] == ("triage", "assigned", "overturn_return")
        # Each now holds its case: jw may accept the overturned one, and no longer the upheld one.
        assert (await world.act(http, action(overturned.complaint_id, "jw", "accept"))).status_code == 200
        assert (await world.act(http, action(upheld.complaint_id, "jw", "accept"))).status_code == 403
        assert (await world.act(http, action(upheld.complaint_id, "sfj", "accept"))).status_code == 200


async def test_an_unsatisfied_callback_opens_round_two(world: World) -> None:
    c = complaint(tag(), Category.GOVERNMENT_SERVICES)
    await world.receive(c)
    (first,) = await world.wait_assigned(c.complaint_id)
    assert first.lead_department == "spj"
    cid = c.complaint_id
    # Over Kafka this time: the department system writes departments.actions.
    await world.act_kafka(
        action(cid, "spj", "accept"), action(cid, "spj", "contact"), action(cid, "spj", "resolve", note="已办结")
    )
    await world.wait_state(cid, "resolved")
    at = datetime.now(UTC)
    await world.call_back(cid, "unsatisfied", resolved=False, at=at)
    first, second = await world.wait_assigned(cid, 2)
    assert (second.round, second.lead_department, second.rule_id) == (2, "spj", first.rule_id)
    assert second.assignment_id != first.assignment_id
    assert second.causation_id == f"callback:{cid}@{at.isoformat().replace('+00:00', 'Z')}"
    await world.wait_state(cid, "assigned", 2)
    assert world.moves(cid)[-2:] == [("resolved", "reopened", "callback"), ("reopened", "assigned", "assigned")]
    assert world.lifecycle(cid)[-1].round == 2
    # The same callback again changes nothing; a callback for a case that is not resolved is a dead letter.
    await world.call_back(cid, "unsatisfied", resolved=False, at=at)
    await world.call_back(cid, "satisfied")
    (letter,) = await world.wait_letters(cid, 1)
    assert letter.error_type == "conflict"
    assert "resolved" in letter.reason
    assert letter.source_topic == world.t.callbacks
    assert len(world.assigned(cid)) == 2
    assert len(world.lifecycle(cid)) == 6


# --- refusals, duplicates and keys ----------------------------------------------------------------------------


async def test_another_departments_action_is_refused_and_changes_nothing(world: World) -> None:
    c = complaint(tag(), Category.MARKET_REGULATION)
    await world.receive(c)
    cid = c.complaint_id
    (first,) = await world.wait_assigned(cid)
    assert first.lead_department == "scj"
    async with world.http() as http:
        before = (await http.get(f"/v1/cases/{cid}", headers=world.key("admin"))).json()
        resp = await world.act(http, action(cid, "spj", "accept"))
        assert resp.status_code == 403
        assert resp.json()["error"] == "forbidden"
        assert "does not hold" in resp.json()["reason"]
        # A key acting for another department than the body names.
        assert (await world.act(http, action(cid, "scj", "accept"), scope="department:spj")).status_code == 403
        # The state does not allow it: 409; a malformed body: 422; another case in the path: 422.
        assert (await world.act(http, action(cid, "scj", "resolve", note="x"))).status_code == 409
        bad = await http.post(
            f"/v1/cases/{cid}/actions", content=b'{"action_id": "x"}', headers=world.key("department:scj")
        )
        assert bad.status_code == 422
        assert "action" in bad.json()["reason"]
        wrong_path = await http.post(
            "/v1/cases/hotline:OTHER/actions",
            content=action(cid, "scj", "accept").to_json_bytes(),
            headers=world.key("department:scj"),
        )
        assert wrong_path.status_code == 422
        # On Kafka: a dead letter with its reason, the original bytes and where they came from.
        refused = action(cid, "spj", "accept")
        await world.act_kafka(refused)
        await produce(world.env.bootstrap, world.t.actions, [(cid.encode(), b"{not json")])
        letters = await world.wait_letters(cid, 2)
        by_type = {d.error_type: d for d in letters}
        assert set(by_type) == {"forbidden", "invalid_json"}
        assert base64.b64decode(by_type["forbidden"].payload_b64) == refused.to_json_bytes()
        assert "does not hold" in by_type["forbidden"].reason
        assert by_type["forbidden"].source_topic == world.t.actions
        assert by_type["forbidden"].source_offset is not None
        assert by_type["forbidden"].source_partition is not None
        after = (await http.get(f"/v1/cases/{cid}", headers=world.key("admin"))).json()
        assert after == before
        assert world.moves(cid) == [("received", "assigned", "assigned")]


async def test_the_same_action_id_twice_changes_nothing(world: World) -> None:
    c = complaint(tag(), Category.CONSTRUCTION)
    await world.receive(c)
    cid = c.complaint_id
    await world.wait_assigned(cid)
    accept = action(cid, "zjj", "accept")
    async with world.http() as http:
        first = await world.act(http, accept)
        again = await world.act(http, accept)
        assert first.status_code == again.status_code == 200
        assert first.json()["duplicate"] is False
        assert again.json()["duplicate"] is True
        assert {**first.json(), "duplicate": True} == again.json()
        # Over Kafka too, and the same id for another action is a conflict, not a duplicate.
        await world.act_kafka(accept)
        reused = await world.act(http, action(cid, "zjj", "contact", action_id=accept.action_id))
        assert reused.status_code == 409
        marker = action(cid, "zjj", "contact")
        await world.act_kafka(marker)  # behind the duplicate on the same partition
        await world.wait_state(cid, "in_progress")
        case = (await http.get(f"/v1/cases/{cid}", headers=world.key("department:zjj"))).json()
    assert world.moves(cid) == [
        ("received", "assigned", "assigned"),
        ("assigned", "accepted", "accept"),
        ("accepted", "in_progress", "contact"),
    ]
    assert [h["kind"] for h in case["history"]].count("action") == 2
    assert world.letters(cid) == []


async def test_http_keys(world: World) -> None:
    c = complaint(tag(), Category.TAXES_FEES)
    await world.receive(c)
    cid = c.complaint_id
    await world.wait_assigned(cid)
    body = action(cid, "sw", "accept").to_json_bytes()
    async with world.http() as http:
        for method, path in (
            ("GET", "/v1/departments/sw/cases"),
            ("GET", f"/v1/cases/{cid}"),
            ("POST", f"/v1/cases/{cid}/actions"),
            ("GET", "/v1/routing/rules"),
            ("POST", "/v1/routing/dry-run"),
        ):
            assert (await http.request(method, path, content=body)).status_code == 401
            bad = await http.request(method, path, content=body, headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
        for scope in ("department:spj", "admin", "reports", "channel:hotline"):
            assert (await http.get("/v1/departments/sw/cases", headers=world.key(scope))).status_code == 403
        for scope in ("admin", "reports", "channel:hotline"):
            resp = await http.post(f"/v1/cases/{cid}/actions", content=body, headers=world.key(scope))
            assert resp.status_code == 403
        for scope in ("department:sw", "reports"):
            assert (await http.get("/v1/routing/rules", headers=world.key(scope))).status_code == 403
        assert (await http.get(f"/v1/cases/{cid}", headers=world.key("reports"))).status_code == 403
        # yshj, the supervising bureau, sees every case (it decides extensions and escalations).
        assert (await http.get(f"/v1/cases/{cid}", headers=world.key("department:yshj"))).status_code == 200
        ok = await http.get("/v1/departments/sw/cases?state=assigned", headers=world.key("department:sw"))
        assert ok.status_code == 200
        assert cid in [x["complaint_id"] for x in ok.json()["cases"]]
        bad_state = await http.get("/v1/departments/sw/cases?state=lost", headers=world.key("department:sw"))
        assert bad_state.status_code == 422
        assert bad_state.json()["error"] == "invalid"
        assert (await http.get("/asyncapi")).json()["channels"]


# --- rule sets ----------------------------------------------------------------------------------------------

DEFAULT_RULES = (Path(__file__).resolve().parents[2] / "services/routing/rules.default.yaml").read_text(
    encoding="utf-8"
)


async def test_rule_sets_and_dry_runs(world: World) -> None:
    admin = world.key("admin")
    async with world.http() as http:
        dry = await http.post(
            "/v1/routing/dry-run", json={"complaint": {"category": "financing", "region_code": "开鲁县"}}, headers=admin
        )
        assert dry.status_code == 200, dry.text
        assert (dry.json()["lead_department"], dry.json()["rule_id"]) == ("gov-150523", "territorial-county")
        by_text = await http.post(
            "/v1/routing/dry-run", json={"complaint": {"content": "企业发票领用受限"}}, headers=admin
        )
        assert (by_text.json()["category"], by_text.json()["lead_department"]) == ("taxes_fees", "sw")
        excluded = await http.post(
            "/v1/routing/dry-run",
            json={"complaint": {"category": "financing", "region_code": "150523"}, "exclude": ["gov-150523"]},
            headers=admin,
        )
        assert excluded.json()["lead_department"] == "jrb"
        assert excluded.json()["passed_over"] == ["territorial-county"]
        proposed = DEFAULT_RULES.replace('version: "2026.1"', 'version: "proposal"').replace(
            "assign: {lead: jrb, level: city}", "assign: {lead: jrb, assisting: [czj], level: city}"
        )
        tried = await http.post(
            "/v1/routing/dry-run", json={"complaint": {"category": "financing"}, "rules": proposed}, headers=admin
        )
        assert (tried.json()["assisting_departments"], tried.json()["rules_version"]) == (["czj"], "proposal")
        broken = proposed.replace("lead: jrb, assisting", "lead: nobody, assisting")
        bad_try = await http.post(
            "/v1/routing/dry-run", json={"complaint": {"category": "financing"}, "rules": broken}, headers=admin
        )
        assert bad_try.status_code == 422
        assert bad_try.json()["problems"][0]["line"] > 1

        before = (await http.get("/v1/routing/rules", headers=admin)).json()
        assert before["in_force"] == "2026.1"
        refused = await http.post("/v1/routing/rules", content=broken.encode(), headers=admin)
        assert refused.status_code == 422
        problem = refused.json()["problems"][0]
        assert "nobody" in problem["message"]
        assert broken.splitlines()[problem["line"] - 1].strip().startswith("assign: {lead: nobody")
        after = (await http.get("/v1/routing/rules", headers=admin)).json()
        assert {**after, "at": None} == {**before, "at": None}

        future = proposed.replace('version: "proposal"', 'version: "2099.1"').replace(
            'effective_from: "2026-01-01T00:00:00+08:00"', 'effective_from: "2099-01-01T00:00:00+08:00"'
        )
        posted = await http.post("/v1/routing/rules", content=future.encode(), headers=admin)
        assert posted.status_code == 201, posted.text
        assert posted.json()["in_force"] is False
        assert (await http.post("/v1/routing/rules", content=future.encode(), headers=admin)).status_code == 409
        listed = (await http.get("/v1/routing/rules", headers=admin)).json()
        assert listed["in_force"] == "2026.1"
        assert [(s["version"], s["source"]) for s in listed["sets"]] == [("2026.1", "file"), ("2099.1", "api")]
        later = await http.post(
            "/v1/routing/dry-run",
            json={"complaint": {"category": "financing"}, "at": "2099-06-01T00:00:00Z"},
            headers=admin,
        )
        assert (later.json()["rules_version"], later.json()["assisting_departments"]) == ("2099.1", ["czj"])
        text = await http.get("/v1/routing/rules/2099.1", headers=admin)
        assert text.text == future
        assert (await http.get("/v1/routing/rules", headers=world.key("department:jrb"))).status_code == 403

        # A set in force now routes the next complaint (same placements as the default, another version).
        now_set = DEFAULT_RULES.replace('version: "2026.1"', 'version: "2026.11-test"').replace(
            'effective_from: "2026-01-01T00:00:00+08:00"',
            f'effective_from: "{(datetime.now(UTC) - timedelta(seconds=1)).isoformat()}"',
        )
        assert (await http.post("/v1/routing/rules", content=now_set.encode(), headers=admin)).status_code == 201
        c = complaint(tag(), Category.UTILITIES)
        await world.receive(c)
        (assigned,) = await world.wait_assigned(c.complaint_id)
        assert "2026.11-test" in assigned.reason
        case = (await http.get(f"/v1/cases/{c.complaint_id}", headers=admin)).json()
        assert case["assignments"][0]["rules_version"] == "2026.11-test"


async def test_a_broken_rules_file_is_refused_at_start(kafka_bootstrap: str, postgres_url: str, tmp_path: Path) -> None:
    env = await _make_env(kafka_bootstrap, postgres_url, tmp_path)
    rules = tmp_path / "rules.yaml"
    lines = DEFAULT_RULES.splitlines()
    bad_line = next(i for i, line in enumerate(lines) if "lead: jrb" in line)
    lines[bad_line] = lines[bad_line].replace("lead: jrb", "lead: jbr")
    rules.write_text("\n".join(lines), encoding="utf-8")
    routing = ServiceProcess("routing", env.environ(ROUTING_RULES=str(rules)), tmp_path / "routing.log")
    with pytest.raises(RuntimeError) as refused:
        routing.start(timeout_s=60)
    routing.stop()
    assert f"{rules}:{bad_line + 1}:" in str(refused.value)
    assert "unknown department 'jbr'" in str(refused.value)


# --- faults ---------------------------------------------------------------------------------------------------


def assigned_once(records: Any, want: set[str]) -> dict[str, bytes]:
    """Every complaint of `want` assigned exactly once on `complaint.assigned` (a republished copy of an event only
    byte for byte, never a second event), and nothing else: complaint id → its one assignment's bytes."""
    by_complaint: dict[str, dict[str, bytes]] = defaultdict(dict)
    for r in records:
        event = ComplaintAssigned.model_validate_json(r.value)
        copies = by_complaint[event.complaint_id]
        assert copies.get(str(event.event_id), r.value) == r.value, "a republished copy differs"
        copies[str(event.event_id)] = r.value
    assert set(by_complaint) == want
    doubled = {cid: len(events) for cid, events in by_complaint.items() if len(events) != 1}
    assert doubled == {}, f"complaints assigned more than once: {list(doubled)[:5]}"
    return {cid: next(iter(events.values())) for cid, events in by_complaint.items()}


async def test_sigkill_mid_stream_loses_and_duplicates_no_assignment(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    """2,000 complaints straight onto complaints.received; routing killed with SIGKILL once assignments flow, then
    restarted. Every complaint gets exactly one round-1 assignment. The outbox may publish a message again after the
    kill (published, not yet deleted): such copies carry the same event_id and are byte-identical, and consumers
    dedupe them on event_id; two different assignments of one complaint would be a double effect and fail here."""
    env = await _make_env(kafka_bootstrap, postgres_url, tmp_path)
    categories = list(Category)
    regions = ["150500", "150502", "150521", "150523", "150525", "150581"]
    complaints = [
        complaint(f"K{i:05d}", categories[i % len(categories)], regions[i % len(regions)], phone=None)
        for i in range(2000)
    ]
    # Small batches, so the kill lands while batches are being taken and published.
    w = await _start_world(env, with_intake=False, CONSUMER_MAX_RECORDS="20", OUTBOX_BATCH_SIZE="50")
    try:
        await w.receive(*complaints)
        await w.tap.wait(lambda: len(w.tap.on(w.t.assigned)) >= 100, what="the first assignments")
        w.routing.kill()
        conn = await asyncpg.connect(env.database_url)
        try:
            stored_at_kill = await conn.fetchval("SELECT count(*) FROM routing.cases")
        finally:
            await conn.close()
        w.routing.start()
        want = {c.complaint_id for c in complaints}
        await w.tap.wait(
            lambda: {r.key.decode() for r in w.tap.on(w.t.assigned)} >= want, timeout_s=120, what="every assignment"
        )
        await asyncio.sleep(3)  # let any late duplicate arrive
    finally:
        await _stop_world(w)
    by_complaint = assigned_once(w.tap.on(w.t.assigned), want)
    for value in by_complaint.values():
        assert ComplaintAssigned.model_validate_json(value).round == 1
    # The kill landed mid-stream: routing had taken some complaints but not all of them.
    assert 0 < stored_at_kill < len(complaints), f"routing had stored {stored_at_kill} cases when killed"


# --- the simulator ------------------------------------------------------------------------------------------


async def test_the_department_simulator_takes_cases_to_closed(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    env = await _make_env(kafka_bootstrap, postgres_url, tmp_path)
    w = await _start_world(env, with_intake=False)
    stop = asyncio.Event()
    simulator = DepartmentSimulator(env.settings(), speed=20.0, seed=5)
    task = asyncio.create_task(simulator.run(stop))
    try:
        categories = list(Category)
        complaints = [
            complaint(f"S{i:03d}", categories[i % len(categories)], "150523" if i % 2 else "150500") for i in range(24)
        ]
        await w.receive(*complaints)
        await w.tap.wait(
            lambda: all(any(e.to_state.value == "closed" for e in w.lifecycle(c.complaint_id)) for c in complaints),
            timeout_s=120,
            what="every simulated case closed",
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await _stop_world(w)
    assert simulator.stats.sent["accept"] >= len(complaints)
    assert simulator.stats.sent["resolve"] >= len(complaints)
    # Nothing the simulator did was refused.
    assert w.tap.on(w.t.dlq) == []


# --- when a fact was taken ----------------------------------------------------------------------------------


async def test_a_kafka_action_is_judged_by_when_the_broker_took_it_not_when_routing_read_it(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    """An accept written to departments.actions while routing is down (or lagging, or retrying a database fault) was
    taken by the product when the broker appended it: the lifecycle `at` is that moment, whatever routing's delay, and
    the department's own claimed time (here backdated a week) travels as `claimed_at` and decides nothing."""
    env = await _make_env(kafka_bootstrap, postgres_url, tmp_path)
    w = await _start_world(env, with_intake=False)
    try:
        c = complaint(tag(), Category.FINANCING, phone=None)
        await w.receive(c)
        (assigned,) = await w.wait_assigned(c.complaint_id)
        w.routing.kill()
        claimed = datetime.now(UTC) - timedelta(days=7)
        sent_after = datetime.now(UTC)
        await w.act_kafka(action(c.complaint_id, assigned.lead_department, "accept", at=claimed.isoformat()))
        sent_before = datetime.now(UTC)
        await asyncio.sleep(2)  # routing is away while time passes; nothing waits on this for correctness
        restarted_at = datetime.now(UTC)
        w.routing.start()
        await w.wait_state(c.complaint_id, "accepted")
    finally:
        await _stop_world(w)
    (accepted,) = [e for e in w.lifecycle(c.complaint_id) if e.cause == "accept"]
    assert accepted.at is not None
    assert sent_after - timedelta(seconds=1) <= accepted.at <= sent_before + timedelta(seconds=1)
    assert accepted.at < restarted_at
    assert accepted.claimed_at == claimed
