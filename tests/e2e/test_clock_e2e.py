"""Routing's real output joined to the clock: intake, routing and sla run as their own processes on real Apache
Kafka and PostgreSQL. A raw hotline work order goes in; the deadlines that come out must be those the real policy
and calendar give for the real assignment (departments and due times), and the department's actions over HTTP and
the hotline's callback over Kafka must meet them. Nothing here is built by hand between the services."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.sla.app import build_calendar
from services.sla.policy import SlaPolicy, compute_deadline
from shared.domain import Channel
from shared.events import CallbackResult, ComplaintAssigned, ComplaintReceived, LifecycleChanged, SlaEvent
from shared.events.sla import SlaEventType, Stage
from shared.observability import Metrics
from shared.settings import Settings
from tests.support.infra import Env, ServiceProcess, collect, produce

pytestmark = pytest.mark.integration

SET, BREACH, MET = SlaEventType.DEADLINE_SET, SlaEventType.BREACHED, SlaEventType.MET
A, F, R, C = Stage.ACCEPT, Stage.FIRST_CONTACT, Stage.RESOLVE, Stage.CALLBACK
LEAD = "gov-150523"  # 开鲁县: 属地管理 (contract 6.1)


class Topics:
    """Everything the services wrote, read from the beginning each time (the waits are on these events)."""

    def __init__(self, env: Env) -> None:
        t = env.topics
        self.env = env
        self.names = [t.received, t.assigned, t.lifecycle, t.sla]
        self.records: list[Any] = []

    async def wait(self, done: Callable[[Topics], bool], timeout_s: float = 90.0) -> None:
        def until(records: list[Any]) -> bool:
            self.records = records
            return done(self)

        self.records = await collect(self.env.bootstrap, self.names, until, timeout_s=timeout_s)
        assert done(self), f"timed out; sla events so far: {[(e.type, e.stage) for e in self.sla()]}"

    def _of(self, topic: str, model: Any) -> list[Any]:
        seen: dict[str, Any] = {}
        for r in self.records:
            if r.topic == topic:
                event = model.model_validate_json(r.value)
                seen.setdefault(str(event.event_id), event)
        return list(seen.values())

    def received(self) -> list[ComplaintReceived]:
        return self._of(self.env.topics.received, ComplaintReceived)

    def assigned(self) -> list[ComplaintAssigned]:
        return self._of(self.env.topics.assigned, ComplaintAssigned)

    def lifecycle(self) -> list[LifecycleChanged]:
        return self._of(self.env.topics.lifecycle, LifecycleChanged)

    def sla(self, kind: SlaEventType | None = None, stage: Stage | None = None) -> list[SlaEvent]:
        return [
            e
            for e in self._of(self.env.topics.sla, SlaEvent)
            if (kind is None or e.type is kind) and (stage is None or e.stage is stage)
        ]


async def test_routing_output_sets_and_meets_the_deadlines_of_the_real_policy(env: Env) -> None:
    procs = [ServiceProcess(name, env.environ(), env.tmp / f"{name}.log") for name in ("intake", "routing", "sla")]
    for proc in procs:  # one after the other: on a fresh broker the group coordinator takes a while to come up
        await asyncio.to_thread(proc.start)
    routing = procs[1]
    order = f"E2E{uuid.uuid4().hex[:10].upper()}"
    cid = f"hotline:{order}"
    seen = Topics(env)
    try:
        raw = {
            "gdbh": order,
            "ldsj": (datetime.now(UTC) + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S"),
            "ldhm": "139-1234-5678",
            "sqlx": "投诉",
            "sqfl": "融资贷款",
            "sqbt": "续贷审批拖延",
            "sqnr": "银行续贷审批拖延三个月，请协调。",
            "ssqy": "开鲁县",
        }
        body = json.dumps(raw, ensure_ascii=False).encode()
        await produce(env.bootstrap, env.topics.intake(Channel.HOTLINE), [(order.encode(), body)])

        # The clock sets the stages of the assignment routing made (waiting on its events, never on a sleep).
        def stages_set(s: Topics) -> bool:
            resolve = s.sla(SET, R)
            return {e.stage for e in s.sla(SET)} >= {A, F, R} and resolve[-1].department == LEAD

        await seen.wait(stages_set)
        (received,) = seen.received()
        (assigned,) = seen.assigned()
        assert assigned.lead_department == LEAD

        # The department acts over HTTP, as a department does; the hotline calls back over Kafka.
        key = {"Authorization": f"Bearer {env.keys[f'department:{LEAD}']}"}
        async with httpx.AsyncClient(base_url=routing.url, timeout=20) as http:
            for kind, extra in (("accept", {}), ("contact", {"note": "已联系"}), ("resolve", {"note": "已协调放款"})):
                action = {"action_id": f"a-{uuid.uuid4().hex[:12]}", "complaint_id": cid, "department": LEAD,
                          "action": kind, "at": datetime.now(UTC).isoformat(), **extra}  # fmt: skip
                resp = await http.post(f"/v1/cases/{cid}/actions", json=action, headers=key)
                assert resp.status_code == 200, resp.text
        await seen.wait(lambda s: {e.stage for e in s.sla(MET)} >= {A, F, R} and bool(s.sla(SET, C)))
        callback = CallbackResult(
            complaint_id=cid, callback_at=datetime.now(UTC), satisfaction="satisfied", resolved=True, comment="回访"
        )
        await produce(env.bootstrap, env.topics.callbacks, [(cid.encode(), callback.to_json_bytes())])
        await seen.wait(lambda s: bool(s.sla(MET, C)))
    finally:
        for proc in procs:
            proc.stop()

    # The due times the real policy and calendar give, from the facts' own times.
    policy, calendar = SlaPolicy(), build_calendar(Settings(), Metrics("sla"))

    def due(stage: Stage, start: datetime) -> datetime:
        deadline = compute_deadline(
            policy, calendar, stage, start, category=received.category, urgency=received.urgency
        )
        assert deadline is not None
        return deadline.due_at

    resolve_at = next(c.at for c in seen.lifecycle() if c.cause == "resolve")
    assert resolve_at is not None
    last_set = {e.stage: e for e in seen.sla(SET)}
    assert {stage: (e.department, e.due_at, e.round) for stage, e in last_set.items()} == {
        A: (LEAD, due(A, assigned.assigned_at), 1),
        F: (LEAD, due(F, assigned.assigned_at), 1),
        R: (LEAD, due(R, received.received_at), 1),
        C: ("hotline", due(C, resolve_at), 1),  # the 12345 hotline makes the callbacks (contract 6.1)
    }
    met = {e.stage: e for e in seen.sla(MET)}
    assert set(met) == {A, F, R, C}
    assert all(e.department == last_set[stage].department for stage, e in met.items())
    assert all(e.supersedes_event_id is None for e in met.values())
    assert seen.sla(BREACH) == []
    assert all(e.complaint_id == cid for e in seen.sla())
