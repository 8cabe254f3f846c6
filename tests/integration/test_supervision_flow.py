"""Supervision items (contract 10.3) and early warnings (10.4) in the reporting service, run as its own process on real
Kafka and PostgreSQL: received facts of the four phenomena open items (a corruption one transferred to jw) and go out
on complaints.supervision; follow-up, transfer and conclude over HTTP with their scopes; a short due time fires each
item's overdue once; a planted rising series gives one warning on complaints.alerts and in GET /v1/reports/warnings,
and replaying the topic gives no second one. Nothing waits on a fixed sleep for correctness: each wait is an upper
bound on a condition (the settle time after a condition only catches extras)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.reporting.warnings import week_start
from services.reporting.watch import bulletin_sections
from shared.calendar import as_local
from shared.db import create_pool
from shared.domain import LOCAL_TZ, Category, Channel, Kind, Urgency
from shared.events import ComplaintReceived, Enterprise
from tests.support.infra import Env, ServiceProcess, collect, metric_sum, produce, unique

pytestmark = pytest.mark.integration
DUE_SECONDS = 8


def received(
    source_id: str,
    category: Category,
    *,
    at: datetime | None = None,
    region: str = "150523",
    enterprise: Enterprise | None = None,
    title: str = "问题",
) -> ComplaintReceived:
    now = datetime.now(UTC)
    return ComplaintReceived(
        occurred_at=now, complaint_id=f"hotline:{source_id}", channel=Channel.HOTLINE, source_id=source_id,
        received_at=at or now, kind=Kind.COMPLAINT, category=category, title=title, content="内容",
        urgency=Urgency.NORMAL, region_code=region, enterprise=enterprise,
    )  # fmt: skip


def environ(env: Env) -> dict[str, str]:
    overrides = env.tmp / "calendar-overrides.yaml"
    today = as_local(datetime.now(UTC)).date()
    days = [(today + timedelta(days=d)).isoformat() for d in range(-3, 4)]
    overrides.write_text("workdays: [" + ", ".join(f'"{d}"' for d in days) + "]\n")
    return env.environ(
        SLA_CALENDAR_OVERRIDES=str(overrides),
        SLA_WORKING_HOURS="00:00-24:00",
        SUPERVISION_DUE_UNIT="seconds",
        SUPERVISION_DUE_AMOUNT=str(DUE_SECONDS),
        SUPERVISION_INTERVAL_S="0.5",
    )


def bodies(records: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]


async def produce_to_every_partition(bootstrap: str, topic: str, make: Any) -> list[str]:
    """One record per partition of `topic` (make(p) gives key and value): a marker that, once read, shows that
    every record produced before it on its partition was read too."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        ids = []
        for p in partitions:
            key, value, marker = make(p)
            await (await producer.send(topic, value, key=key, partition=p))
            ids.append(marker)
    finally:
        await producer.stop()
    return ids


async def wait_until(what: str, check: Any, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not true after {timeout_s:.0f} s")
        await asyncio.sleep(0.3)


async def test_items_open_change_over_http_and_fall_overdue_once(env: Env) -> None:
    service = ServiceProcess("reporting", environ(env), env.tmp / "reporting.log").start()
    t = env.topics
    run = unique("S")
    facts = {
        c: received(f"{run}-{c.value}", c)
        for c in (Category.CORRUPTION, Category.JUDICIAL, Category.GOVERNMENT_INTEGRITY, Category.LAW_ENFORCEMENT,
                  Category.FINANCING)
    }  # fmt: skip
    try:
        await produce(env.bootstrap, t.received, [(f.complaint_id.encode(), f.to_json_bytes()) for f in facts.values()])

        def opened(records: list[Any]) -> bool:
            return sum(1 for b in bodies(records) if b["change"] == "opened") >= 4

        records = await collect(env.bootstrap, [t.supervision], opened, timeout_s=90, settle_s=1)
        assert opened(records), service.log_tail()
        first = [b for b in bodies(records) if b["change"] == "opened"]
        assert len(first) == 4
        by_phenomenon = {b["phenomenon"]: b for b in first}
        assert set(by_phenomenon) == {"corruption", "judicial", "government_integrity", "law_enforcement"}
        assert {p: b["status"] for p, b in by_phenomenon.items()} == {
            "corruption": "transferred", "judicial": "opened", "government_integrity": "opened",
            "law_enforcement": "opened",
        }  # fmt: skip
        assert by_phenomenon["corruption"]["transferred_to"] == "jw"
        for phenomenon, body in by_phenomenon.items():
            assert body["event_type"] == "supervision.changed"
            assert body["complaint_ids"] == [facts[Category(phenomenon)].complaint_id]
            assert body["due_at"].endswith("Z")
        keys = {r.key.decode() for r in records}
        assert keys == {b["item_id"] for b in first}
        judicial = by_phenomenon["judicial"]["item_id"]
        law = by_phenomenon["law_enforcement"]["item_id"]
        corruption = by_phenomenon["corruption"]["item_id"]

        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:

            def key(scope: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {env.keys[scope]}"}

            # Reading: reports, admin, yshj see all; jw sees what is transferred to it; others 403; no key 401.
            listed = (await http.get("/v1/supervision/items", headers=key("reports"))).json()
            assert listed["total"] == 4
            jw_view = (await http.get("/v1/supervision/items", headers=key("department:jw"))).json()
            assert [i["item_id"] for i in jw_view["items"]] == [corruption]
            only = await http.get("/v1/supervision/items", params={"phenomenon": "judicial"}, headers=key("admin"))
            assert [i["item_id"] for i in only.json()["items"]] == [judicial]
            assert (
                await http.get("/v1/supervision/items", params={"status": "x"}, headers=key("admin"))
            ).status_code == 422
            assert (await http.get("/v1/supervision/items", headers=key("department:spj"))).status_code == 403
            assert (await http.get("/v1/supervision/items")).status_code == 401

            # Follow-up (yshj), transfer (admin), conclude by jw in its own name.
            url = f"/v1/supervision/items/{judicial}"
            got = await http.post(f"{url}/follow-ups", json={"note": "电话督办"}, headers=key("department:yshj"))
            assert got.status_code == 200, got.text
            assert got.json()["status"] == "supervising"
            assert got.json()["follow_ups"][0]["note"] == "电话督办"
            assert (
                await http.post(f"{url}/follow-ups", json={"note": "x"}, headers=key("department:jw"))
            ).status_code == 403
            assert (await http.post(f"{url}/follow-ups", json={"note": "x"}, headers=key("reports"))).status_code == 403
            assert (await http.post(f"{url}/follow-ups", json={"note": "  "}, headers=key("admin"))).status_code == 422
            bad = await http.post(f"{url}/follow-ups", content=b"{not json", headers=key("admin"))
            assert bad.status_code == 400
            assert (await http.post(f"{url}/conclude", json={"result": "x", "decided_by": "jw"},
                                    headers=key("department:jw"))).status_code == 403  # fmt: skip
            got = await http.post(f"{url}/transfer", json={"note": "涉嫌违纪，移交"}, headers=key("admin"))
            assert got.status_code == 200, got.text
            assert (got.json()["status"], got.json()["transferred_to"]) == ("transferred", "jw")
            assert (await http.post(f"{url}/transfer", json={"note": "again"}, headers=key("admin"))).status_code == 409
            missing = await http.post(f"{url}/conclude", json={"decided_by": "jw"}, headers=key("department:jw"))
            assert missing.status_code == 422
            assert "result" in missing.json()["reason"]
            other = await http.post(
                f"{url}/conclude", json={"result": "x", "decided_by": "yshj"}, headers=key("department:jw")
            )
            assert other.status_code == 403
            got = await http.post(
                f"{url}/conclude", json={"result": "已立案查处", "decided_by": "jw"}, headers=key("department:jw")
            )
            assert got.status_code == 200, got.text
            assert got.json()["conclusion"]["result"] == "已立案查处"
            assert (await http.post(f"{url}/conclude", json={"result": "x", "decided_by": "jw"},
                                    headers=key("admin"))).status_code == 409  # fmt: skip
            assert (await http.post("/v1/supervision/items/DC-NOPE/follow-ups", json={"note": "x"},
                                    headers=key("admin"))).status_code == 404  # fmt: skip

            # Opening by the bureau: the financing case under supervision as 违约失信; twice is 409.
            body = {"complaint_id": facts[Category.FINANCING].complaint_id, "phenomenon": "government_integrity",
                    "reason": "政府违约线索"}  # fmt: skip
            assert (await http.post("/v1/supervision/items", json=body, headers=key("reports"))).status_code == 403
            got = await http.post("/v1/supervision/items", json=body, headers=key("department:yshj"))
            assert got.status_code == 201, got.text
            manual = got.json()["item_id"]
            assert got.json()["status"] == "opened"
            assert got.json()["opened_by"] == "department:yshj"
            assert (await http.post("/v1/supervision/items", json=body, headers=key("admin"))).status_code == 409
            unknown = {**body, "complaint_id": "hotline:NO-SUCH"}
            assert (await http.post("/v1/supervision/items", json=unknown, headers=key("admin"))).status_code == 404
            wrong = {**body, "phenomenon": "financing"}
            assert (await http.post("/v1/supervision/items", json=wrong, headers=key("admin"))).status_code == 422

            spec = (await http.get("/openapi.json")).json()
            assert spec["paths"]["/v1/supervision/items"]["get"]["x-scopes"] == [
                "reports", "admin", "department:yshj", "department:jw",
            ]  # fmt: skip
            assert spec["paths"]["/v1/supervision/items"]["post"]["x-scopes"] == ["admin", "department:yshj"]
            conclude_scopes = spec["paths"]["/v1/supervision/items/{item_id}/conclude"]["post"]["x-scopes"]
            assert conclude_scopes == ["admin", "department:yshj", "department:jw"]
            for op in ("follow-ups", "transfer"):
                assert spec["paths"][f"/v1/supervision/items/{{item_id}}/{op}"]["post"]["x-scopes"] == [
                    "admin", "department:yshj",
                ]  # fmt: skip

            # The due time: every item not concluded falls overdue once (8 working seconds on an all-day clock).
            open_items = {law, corruption, by_phenomenon["government_integrity"]["item_id"], manual}

            def all_overdue(records: list[Any]) -> bool:
                return open_items <= {b["item_id"] for b in bodies(records) if b["change"] == "overdue"}

            records = await collect(env.bootstrap, [t.supervision], all_overdue, timeout_s=90, settle_s=3)
            assert all_overdue(records), service.log_tail()
            changes = bodies(records)
            for item in open_items:
                mine = [b["change"] for b in changes if b["item_id"] == item]
                assert mine.count("overdue") == 1, (item, mine)
                assert mine.count("warning") <= 1, (item, mine)
                assert mine.count("opened") == 1
            assert [b["change"] for b in changes if b["item_id"] == judicial] == [
                "opened", "follow_up", "transferred", "concluded",
            ]  # fmt: skip
            listed = (await http.get("/v1/supervision/items", headers=key("reports"))).json()
            overdue = {i["item_id"]: i for i in listed["items"]}
            assert all(overdue[i]["overdue"] and overdue[i]["overdue_at"] for i in open_items)
            assert overdue[judicial]["overdue"] is False

            # The gauge, from the database: items not concluded by phenomenon and status.
            async def gauge_right() -> bool:
                text = (await http.get("/metrics")).text
                return (
                    'supervision_items_open{phenomenon="government_integrity",status="opened"} 2.0' in text
                    and 'supervision_items_open{phenomenon="judicial",status="transferred"} 0.0' in text
                    and 'supervision_items_open{phenomenon="corruption",status="transferred"} 1.0' in text
                )

            await wait_until("the supervision gauge", gauge_right, timeout_s=30)
            assert metric_sum((await http.get("/metrics")).text, "supervision_items_open") == 4
    finally:
        service.stop()


async def test_a_rising_series_warns_once_even_when_replayed(env: Env) -> None:
    service = ServiceProcess("reporting", environ(env), env.tmp / "reporting.log").start()
    t = env.topics
    run = unique("W")
    this_week = week_start(datetime.now(UTC))

    def monday(weeks_back: int) -> datetime:
        day: date = this_week - timedelta(weeks=weeks_back)
        return datetime(day.year, day.month, day.day, 1, tzinfo=LOCAL_TZ)

    # History first, read in full before the jump (a warning is raised as soon as a count stands out, on the
    # counts read so far: history that arrives after the jump could not unsay it).
    # Background: 2 financing cases a week in 科尔沁区 for 17 weeks (no week of it ever reaches 3 cases).
    history = [
        received(f"{run}-bg{back}-{i}", Category.FINANCING, at=monday(back) + timedelta(minutes=i), region="150502")
        for back in range(1, 17)
        for i in range(2)
    ]
    # 开鲁县: one case every other week (its baseline 0.5).
    history += [
        received(f"{run}-kl{back}", Category.FINANCING, at=monday(back) + timedelta(hours=1)) for back in (8, 6, 4, 2)
    ]
    # This week: 2 in 科尔沁区 (the category: 7 against a baseline of 2.5, p ≈ 0.014, no warning) and the jump of 5
    # in 开鲁县 (against 0.5: p ≈ 0.0002, a warning).
    this = [received(f"{run}-bg0-{i}", Category.FINANCING, at=monday(0) + timedelta(minutes=i), region="150502")
            for i in range(2)]  # fmt: skip
    jump = [received(f"{run}-jump{i}", Category.FINANCING, at=monday(0) + timedelta(seconds=i)) for i in range(5)]
    facts = history + this + jump
    messages = [(f.complaint_id.encode(), f.to_json_bytes()) for f in facts]

    async def read_in_full(round_: int) -> None:
        """One judicial marker per partition, each in a week of its own far back (so none of them adds to a count
        that could warn), then wait until every marker opened its supervision item."""

        def marker(p: int) -> tuple[bytes, bytes, str]:
            fact = received(f"{run}-m{round_}-{p}", Category.JUDICIAL, at=monday(30 + 10 * round_ + p))
            return fact.complaint_id.encode(), fact.to_json_bytes(), fact.complaint_id

        markers = set(await produce_to_every_partition(env.bootstrap, t.received, marker))

        def markers_read(rs: list[Any]) -> bool:
            return markers <= {c for b in bodies(rs) for c in b["complaint_ids"]}

        opened = await collect(env.bootstrap, [t.supervision], markers_read, timeout_s=90)
        assert markers_read(opened), service.log_tail()

    try:
        await produce(env.bootstrap, t.received, [(f.complaint_id.encode(), f.to_json_bytes()) for f in history])
        await read_in_full(0)
        await produce(env.bootstrap, t.received, [(f.complaint_id.encode(), f.to_json_bytes()) for f in this + jump])
        records = await collect(env.bootstrap, [t.alerts], lambda rs: len(rs) >= 1, timeout_s=90, settle_s=3)
        assert len(records) == 1, (bodies(records), service.log_tail())
        (warning,) = bodies(records)
        assert warning["event_type"] == "warning.raised"
        assert warning["kind"] == "rising"
        assert warning["key"] == {"region_code": "150523", "category": "financing"}
        year, week, _ = this_week.isocalendar()
        assert warning["week"] == f"{year}-W{week:02d}"
        assert warning["count"] == 5
        assert warning["baseline"] == 0.5
        assert warning["p_value"] < 0.01
        assert sorted(warning["complaint_ids"]) == sorted(f.complaint_id for f in jump)
        assert records[0].key.decode() == warning["warning_id"]

        # Replay the whole topic, then one marker per partition: once every marker is read, so is the replay.
        await produce(env.bootstrap, t.received, messages)
        await read_in_full(1)
        again = await collect(env.bootstrap, [t.alerts], lambda rs: len(rs) >= 1, timeout_s=30, settle_s=2)
        assert len(again) == 1, bodies(again)

        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            auth = {"Authorization": f"Bearer {env.keys['reports']}"}
            listed = (await http.get("/v1/reports/warnings", headers=auth)).json()
            assert [w["warning_id"] for w in listed["warnings"]] == [warning["warning_id"]]
            assert listed["warnings"][0]["key_name"] == "开鲁县 · 融资信贷"
            back = (this_week - timedelta(weeks=8)).isoformat()
            old = (await http.get("/v1/reports/warnings", params={"from": back, "to": back}, headers=auth)).json()
            assert old["warnings"] == []
            assert (await http.get("/v1/reports/warnings", params={"kind": "x"}, headers=auth)).status_code == 422
            assert (await http.get("/v1/reports/warnings")).status_code == 401
            for scope in ("department:yshj", "channel:hotline"):
                other = {"Authorization": f"Bearer {env.keys[scope]}"}
                assert (await http.get("/v1/reports/warnings", headers=other)).status_code == 403
            assert (
                await http.get("/v1/reports/warnings", headers={"Authorization": f"Bearer {env.keys['admin']}"})
            ).status_code == 200
            spec = (await http.get("/openapi.json")).json()
            assert spec["paths"]["/v1/reports/warnings"]["get"]["x-scopes"] == ["reports", "admin"]
            text = (await http.get("/metrics")).text
            assert 'early_warnings_total{kind="rising"} 1.0' in text
            assert 'early_warnings_total{kind="enterprise_repeat"} 0.0' in text
            items_total = (await http.get("/v1/supervision/items", headers=auth)).json()["total"]
            assert items_total >= 2  # the judicial markers' items

        # The bulletin's two sections, read from the same tables (the lead wires them into the bulletin page).
        pool = await create_pool(env.database_url, "reporting")
        try:
            today = as_local(datetime.now(UTC)).date()
            (sup_heading, sup_html), (warn_heading, warn_html) = await bulletin_sections(
                pool, this_week, today, datetime.now(UTC)
            )
        finally:
            await pool.close()
        assert sup_heading == "督查事项"
        assert "司法不公" in sup_html
        assert f"督查事项共 {items_total} 件" in sup_html
        assert warn_heading == "风险预警（防未病）"
        assert "开鲁县 · 融资信贷" in warn_html
        assert "本月共发出预警 1 条" in warn_html
    finally:
        service.stop()
