"""The portal, visits and surveys (contract 10.1, 10.2) against real Apache Kafka and PostgreSQL, intake (and
reporting, routing where the flow needs them) run as their own processes."""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.domain import Category, Channel
from shared.events import ComplaintReceived, SurveyResponded
from tests.support.infra import Env, ServiceProcess, collect, produce

pytestmark = pytest.mark.integration
USCC = "91150523W7WKKHDRJ7"


def submission(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "enterprise_name": "开鲁县某食品有限公司",
        "credit_code": USCC,
        "region": "150523",
        "category": "utilities",
        "kind": "complaint",
        "title": f"园区停水 {n}",
        "content": f"工业园区第{n}次停水，未提前通知。",
        "contact_name": "刘女士",
        "contact_phone": "13912345678",
        "anonymous": False,
        **extra,
    }


def auth(env: Env, scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {env.keys[scope]}"}


async def received(env: Env, count: int, timeout_s: float = 60) -> list[ComplaintReceived]:
    records = await collect(env.bootstrap, [env.topics.received], lambda r: len(r) >= count, timeout_s, settle_s=2)
    return [ComplaintReceived.model_validate_json(r.value) for r in records]


async def test_eleventh_submission_in_a_minute_gets_429(env: Env) -> None:
    intake = ServiceProcess("intake", env.environ(), env.tmp / "intake.log").start()
    try:
        async with httpx.AsyncClient(base_url=intake.url, timeout=15) as http:
            page = await http.get("/portal")
            assert page.status_code == 200
            assert "统一社会信用代码" in page.text
            assert "http://" not in page.text
            assert "https://" not in page.text
            numbers = []
            for n in range(1, 11):
                answer = await http.post("/v1/portal/submissions", json=submission(n))
                assert answer.status_code == 201, answer.text
                numbers.append(answer.json()["tracking_number"])
            assert len(set(numbers)) == 10
            assert all(n.startswith("PT") and len(n) == 16 for n in numbers)
            assert [int(n[-6:]) for n in numbers] == list(range(1, 11))
            eleventh = await http.post("/v1/portal/submissions", json=submission(11))
            assert eleventh.status_code == 429
            assert eleventh.json()["error"] == "too_many_requests"
            assert int(eleventh.headers["Retry-After"]) >= 1
            form_over = await http.post(
                "/v1/portal/submissions",
                content=b"title=x",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert form_over.status_code == 429
            assert "提交过于频繁" in form_over.text
            # X-Forwarded-For from a peer that is no named proxy is not believed: the peer address still counts.
            spoofed = await http.post(
                "/v1/portal/submissions", json=submission(12), headers={"X-Forwarded-For": "203.0.113.7"}
            )
            assert spoofed.status_code == 429
            track = await http.get(f"/portal/track/{numbers[0]}")
            assert track.status_code == 200
            assert numbers[0] in track.text
            assert "13912345678" not in track.text
            assert "5678" not in track.text
            assert (await http.get("/portal/track/PT20990101000001")).status_code == 404
        events = await received(env, 10)
        assert sorted(e.source_id for e in events) == sorted(numbers)
        assert {e.complaint_id for e in events} == {f"portal:{n}" for n in numbers}
        assert all(e.channel.value == "portal" and e.contact and e.contact.phone == "13912345678" for e in events)
    finally:
        intake.stop()


async def test_honeypot_refusals_and_same_submission_within_ten_minutes(env: Env) -> None:
    intake = ServiceProcess("intake", env.environ(), env.tmp / "intake.log").start()
    try:
        async with httpx.AsyncClient(base_url=intake.url, timeout=15) as http:
            trap = await http.post("/v1/portal/submissions", json=submission(0, website="http://spam.example"))
            assert trap.status_code == 400
            form_trap = await http.post(
                "/v1/portal/submissions",
                content=b"enterprise_name=a&title=b&content=c&website=spam",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert form_trap.status_code == 400
            assert "提交未被接受" in form_trap.text
            first = await http.post("/v1/portal/submissions", json=submission(1))
            again = await http.post("/v1/portal/submissions", json=submission(1, contact_name="另一人"))
            other = await http.post("/v1/portal/submissions", json=submission(2))
            assert first.status_code == again.status_code == other.status_code == 201
            assert first.json() == again.json()
            assert other.json()["tracking_number"] != first.json()["tracking_number"]
            missing = await http.post("/v1/portal/submissions", json=submission(3, title=""))
            assert missing.status_code == 422
            assert missing.json()["field"] == "title"
            bad_code = await http.post("/v1/portal/submissions", json=submission(4, credit_code="91150523W7WKKHDRJ8"))
            assert bad_code.status_code == 422
            assert bad_code.json() | {"reason": ""} == {"error": "invalid_field", "field": "credit_code", "reason": ""}
            huge = await http.post("/v1/portal/submissions", content=b"{" + b" " * (70 * 1024) + b"}")
            assert huge.status_code == 413
        events = await received(env, 2)
        # The honeypot and the refusals gave no complaint; the same submission twice gave one.
        assert sorted(e.title for e in events) == ["园区停水 1", "园区停水 2"]
    finally:
        intake.stop()


def bad_bodies(count: int, seed: int = 20261126) -> Iterator[tuple[bytes, str]]:
    """Seeded: broken JSON, wrong types, missing and overlong fields, control characters, forms gone wrong."""
    rng = random.Random(seed)
    good = submission(0)
    junk: list[Any] = [
        None,
        0,
        -1,
        1.5,
        True,
        [],
        {},
        "",
        " ",
        "\x00",
        "\ud800",
        "<script>",
        "9" * 500,
        ["a"],
        {"a": 1},
    ]
    for i in range(count):
        shape = i % 6
        if shape == 0:
            body = {**good, rng.choice(list(good)): rng.choice(junk)}
            body.pop(rng.choice(["title", "content", "region", "category", "kind", "enterprise_name"]), None)
            yield json.dumps(body).encode(), "application/json"
        elif shape == 1:
            body = {**good, **{key: rng.choice(junk) for key in rng.sample(list(good), 3)}, "title": ""}
            yield json.dumps(body).encode(), "application/json"
        elif shape == 2:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
            yield raw, rng.choice(["application/json", "application/x-www-form-urlencoded", "text/plain"])
        elif shape == 3:
            text = json.dumps(good)
            cut = rng.randrange(1, len(text))
            yield text[:cut].encode(), "application/json"
        elif shape == 4:
            pairs = "&".join(
                f"{rng.choice([*list(good), 'website', 'x'])}={''.join(rng.choices(string.printable, k=8))}"
                for _ in range(rng.randrange(0, 12))
            )
            yield pairs.encode(), "application/x-www-form-urlencoded"
        else:
            body = dict(
                good,
                region=rng.choice(["火星", "999999", "", "150500x"]),
                credit_code="".join(rng.choices("0123456789ABX", k=18)),
            )
            yield json.dumps(body, ensure_ascii=False).encode(), "application/json"


async def test_ten_thousand_bad_bodies_give_4xx_never_5xx(env: Env) -> None:
    intake = ServiceProcess("intake", env.environ(PORTAL_RATE_LIMIT="100000"), env.tmp / "intake.log").start()
    statuses: dict[int, int] = {}
    try:
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(base_url=intake.url, timeout=30, limits=limits) as http:
            gate = asyncio.Semaphore(8)

            async def send(body: bytes, content_type: str) -> None:
                async with gate:
                    answer = await http.post(
                        "/v1/portal/submissions", content=body, headers={"Content-Type": content_type}
                    )
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

            await asyncio.gather(*(send(b, t) for b, t in bad_bodies(10_000)))
            assert (await http.get("/readyz")).status_code == 200
    finally:
        intake.stop()
    assert sum(statuses.values()) == 10_000
    assert all(400 <= s < 500 for s in statuses), statuses
    print("bad bodies by status:", dict(sorted(statuses.items())))


def visit_record(visit_id: str) -> dict[str, Any]:
    return {
        "visitId": visit_id,
        "kind": "roundtable",
        "heldAt": "2026-11-26T15:00:00+08:00",
        "region": "科尔沁区",
        "officials": ["张某"],
        "enterprises": [{"name": "通辽市某建材有限公司", "creditCode": "911505023AGYGLUY3T"}, {"name": "某物流公司"}],
        "problems": [
            {
                "enterprise": 0,
                "category": "government_integrity",
                "title": "工程款拖欠",
                "content": "拖欠工程款三百万元。",
            },
            {"enterprise": 1, "content": "办理许可时窗口要求重复提交材料。"},
        ],
    }


async def test_visits_over_http_and_kafka_each_problem_its_complaint(env: Env) -> None:
    intake = ServiceProcess("intake", env.environ(), env.tmp / "intake.log").start()
    try:
        async with httpx.AsyncClient(base_url=intake.url, timeout=15) as http:
            body = visit_record("ZF-2026-1126-01")
            assert (await http.post("/v1/visits", json=body)).status_code == 401
            assert (await http.post("/v1/visits", json=body, headers=auth(env, "channel:survey"))).status_code == 403
            first = await http.post("/v1/visits", json=body, headers=auth(env, "channel:visit"))
            assert first.status_code == 202, first.text
            assert first.json() == {
                "visit_id": "ZF-2026-1126-01",
                "complaint_ids": ["visit:ZF-2026-1126-01#1", "visit:ZF-2026-1126-01#2"],
                "duplicate": False,
            }
            again = await http.post("/v1/visits", json=body, headers=auth(env, "channel:visit"))
            assert again.json()["duplicate"] is True
            bad = await http.post("/v1/visits", json={**body, "problems": []}, headers=auth(env, "channel:visit"))
            assert bad.status_code == 422
            assert "problems" in bad.json()["reason"]
        kafka_visit = json.dumps(visit_record("ZF-2026-1126-02"), ensure_ascii=False).encode()
        await produce(env.bootstrap, env.topics.intake(Channel.VISIT), [(b"ZF-2026-1126-02", kafka_visit)] * 2)
        events = await received(env, 4)
        assert sorted(e.complaint_id for e in events) == [
            "visit:ZF-2026-1126-01#1",
            "visit:ZF-2026-1126-01#2",
            "visit:ZF-2026-1126-02#1",
            "visit:ZF-2026-1126-02#2",
        ]
        async with httpx.AsyncClient(base_url=intake.url, timeout=15) as http:
            listed = await http.get("/v1/visits/ZF-2026-1126-02", headers=auth(env, "channel:visit"))
            assert listed.status_code == 200
            problems = listed.json()["problems"]
            assert [p["state"] for p in problems] == ["received", "received"]
            assert problems[0]["category"] == "government_integrity"
            assert (await http.get("/v1/visits/none", headers=auth(env, "channel:visit"))).status_code == 404
    finally:
        intake.stop()


async def test_survey_response_published_once_and_low_score_opens_a_complaint(env: Env) -> None:
    intake = ServiceProcess("intake", env.environ(), env.tmp / "intake.log").start()
    reporting = ServiceProcess("reporting", env.environ(), env.tmp / "reporting.log").start()
    try:
        body = {
            "responseId": "WJ-2026-000451",
            "answeredAt": "2026-11-26T19:15:00+08:00",
            "enterprise": {"name": "奈曼旗某牧业合作社"},
            "region": "奈曼旗",
            "scores": {"government_services": 5, "financing": 2, "taxes_fees": 4},
            "comment": "贷款审批太慢。",
        }
        quiet = {**body, "responseId": "WJ-2026-000452", "region": "开鲁县", "scores": {"financing": 1}, "comment": ""}
        async with httpx.AsyncClient(base_url=intake.url, timeout=15) as http:
            first = await http.post("/v1/surveys/responses", json=body, headers=auth(env, "channel:survey"))
            assert first.status_code == 202, first.text
            assert first.json() == {
                "response_id": "WJ-2026-000451",
                "complaint_ids": ["survey:WJ-2026-000451#financing"],
                "duplicate": False,
            }
            again = await http.post("/v1/surveys/responses", json=body, headers=auth(env, "channel:survey"))
            assert again.json()["duplicate"] is True
            assert (await http.post("/v1/surveys/responses", json=quiet, headers=auth(env, "channel:survey"))).json()[
                "complaint_ids"
            ] == []
            forbidden = await http.post("/v1/surveys/responses", json=body, headers=auth(env, "channel:visit"))
            assert forbidden.status_code == 403
        records = await collect(env.bootstrap, [env.topics.survey_responses], lambda r: len(r) >= 2, 60, settle_s=3)
        responses = [SurveyResponded.model_validate_json(r.value) for r in records]
        assert sorted(r.response_id for r in responses) == ["WJ-2026-000451", "WJ-2026-000452"]
        assert [r.key for r in records if r.key == b"WJ-2026-000451"] == [b"WJ-2026-000451"]
        events = await received(env, 1)
        assert [(e.complaint_id, e.channel.value, e.category, e.kind.value) for e in events] == [
            ("survey:WJ-2026-000451#financing", "survey", Category.FINANCING, "complaint")
        ]
        async with httpx.AsyncClient(base_url=reporting.url, timeout=15) as http:
            report: dict[str, Any] = {}
            for _ in range(100):
                answer = await http.get(
                    "/v1/reports/surveys",
                    params={"from": "2026-11-01", "to": "2026-11-30", "group_by": "category"},
                    headers=auth(env, "reports"),
                )
                report = answer.json()
                if report.get("total", {}).get("responses") == 2:
                    break
                await asyncio.sleep(0.3)
            assert report["total"] == {
                "key": "all", "name": "合计", "responses": 2, "scores": 4, "mean_score": 3.0, "share_4_5": 0.5
            }  # fmt: skip
            financing = next(g for g in report["groups"] if g["key"] == "financing")
            assert financing["responses"] == 2
            assert financing["mean_score"] == 1.5
            assert financing["share_4_5"] == 0.0
            by_region = await http.get(
                "/v1/reports/surveys", params={"from": "2026-11-01", "to": "2026-11-30"}, headers=auth(env, "reports")
            )
            assert {g["key"]: g["responses"] for g in by_region.json()["groups"]} == {"150523": 1, "150525": 1}
            refused = await http.get(
                "/v1/reports/surveys", params={"group_by": "weather"}, headers=auth(env, "reports")
            )
            assert refused.status_code == 422
    finally:
        intake.stop()
        reporting.stop()
