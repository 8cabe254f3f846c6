"""The reporting service as its own process on real Kafka and PostgreSQL: the known-answer scenario's facts
produced to the four topics in a shuffled order, with replays, give the hand-worked summary over HTTP; the CSV and
XLSX shapes; access by scope."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import time

import httpx
import pytest
from openpyxl import load_workbook

from services.reporting.projections import FIGURES
from shared.events import ComplaintAssigned, ComplaintReceived, LifecycleChanged
from tests.support.infra import Env, ServiceProcess, produce
from tests.support.reporting_scenario import EXPECTED_GROUPS, EXPECTED_TOTAL, scenario

pytestmark = pytest.mark.integration
QUERY = {"from": "2026-11-01", "to": "2026-11-30", "group_by": "department"}


async def _wait_for_total(url: str, key: str, want: dict[str, object], timeout_s: float = 90.0) -> dict[str, object]:
    """Poll the summary until its total is the expected one (an upper bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, object] = {}
    async with httpx.AsyncClient(base_url=url, timeout=10, headers={"Authorization": f"Bearer {key}"}) as http:
        while time.monotonic() < deadline:
            body = (await http.get("/v1/reports/summary", params=QUERY)).json()
            if body.get("total") == want:
                return body
            await asyncio.sleep(0.3)
    return body


async def test_shuffled_and_replayed_facts_give_the_known_answer(env: Env) -> None:
    service = ServiceProcess("reporting", env.environ(), env.tmp / "reporting.log").start()
    try:
        t = env.topics
        facts = scenario()
        order = facts + random.Random(8).sample(facts, len(facts) // 2)  # half of them replayed
        random.Random(42).shuffle(order)
        by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
        for fact in order:
            topic = (
                t.received
                if isinstance(fact, ComplaintReceived)
                else t.assigned
                if isinstance(fact, ComplaintAssigned)
                else t.lifecycle
                if isinstance(fact, LifecycleChanged)
                else t.sla
            )
            by_topic.setdefault(topic, []).append((fact.complaint_id.encode(), fact.to_json_bytes()))
        # Topics in an order that puts callbacks and SLA words before the assignments they concern.
        for topic in (t.sla, t.lifecycle, t.assigned, t.received):
            await produce(env.bootstrap, topic, by_topic[topic])
        # A record that is not an event: a dead letter, and the rest goes on.
        await produce(env.bootstrap, t.lifecycle, [(b"x", b"{not json")])

        reports = env.keys["reports"]
        body = await _wait_for_total(service.url, reports, EXPECTED_TOTAL)
        assert body["total"] == EXPECTED_TOTAL, service.log_tail()
        assert body["groups"] == EXPECTED_GROUPS
        assert (body["from"], body["to"], body["group_by"]) == ("2026-11-01", "2026-11-30", "department")

        # Replaying everything again changes no figure.
        for topic in (t.received, t.assigned, t.lifecycle, t.sla):
            await produce(env.bootstrap, topic, by_topic[topic])
        await produce(env.bootstrap, t.received, [(b"marker", _marker().to_json_bytes())])
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            auth = {"Authorization": f"Bearer {reports}"}
            # The marker (received on 2026-12-01) shows the replays before it were read.
            december = {"from": "2026-12-01", "to": "2026-12-31"}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                dec = (await http.get("/v1/reports/summary", params=december, headers=auth)).json()
                if dec["total"]["received"] == 1:
                    break
                await asyncio.sleep(0.3)
            again = (await http.get("/v1/reports/summary", params=QUERY, headers=auth)).json()
            assert again["total"] == EXPECTED_TOTAL
            assert again["groups"] == EXPECTED_GROUPS

            # CSV: BOM, CRLF, header key,name + figures, one line per group, total last, null empty.
            got = await http.get("/v1/reports/summary.csv", params=QUERY, headers=auth)
            assert got.status_code == 200
            assert got.headers["content-type"].startswith("text/csv")
            raw = got.content
            assert raw.startswith(b"\xef\xbb\xbf")
            text = raw[3:].decode("utf-8")
            assert text.endswith("\r\n")
            assert "\n" not in text.replace("\r\n", "")
            rows = list(csv.reader(io.StringIO(text, newline="")))
            assert rows[0] == ["key", "name", *FIGURES]
            assert [r[0] for r in rows[1:]] == [g["key"] for g in EXPECTED_GROUPS] + ["all"]
            assert rows[-1][1] == "合计"
            assert rows[3][1] == "市行政审批和政务服务局"
            triage = dict(zip(rows[0], rows[4], strict=True))
            assert triage["resolution_rate"] == ""
            assert triage["assignments"] == "2"
            assert triage["return_rate"] == "0.0"

            # XLSX: the same header in row 1, Chinese intact.
            got = await http.get("/v1/reports/summary.xlsx", params=QUERY, headers=auth)
            assert got.status_code == 200
            sheet = load_workbook(io.BytesIO(got.content)).active
            assert sheet is not None
            values = [list(r) for r in sheet.iter_rows(values_only=True)]
            assert values[0] == ["key", "name", *FIGURES]
            assert values[-1][:3] == ["all", "合计", 19]
            assert values[3][1] == "市行政审批和政务服务局"

            # Bad input: 422 with error and reason.
            for params in ({"from": "2026-11-30", "to": "2026-11-01"}, {"group_by": "planet"}, {"to": "11/30"}):
                bad = await http.get("/v1/reports/summary", params=params, headers=auth)
                assert bad.status_code == 422, bad.text
                assert set(bad.json()) == {"error", "reason"}

            # Access: no key 401; department and channel keys 403; admin may read.
            for path in ("/v1/reports/summary", "/v1/reports/summary.csv", "/v1/reports/summary.xlsx",
                         "/v1/reports/repeats"):  # fmt: skip
                assert (await http.get(path)).status_code == 401
                for scope in ("department:spj", "channel:hotline"):
                    other = {"Authorization": f"Bearer {env.keys[scope]}"}
                    assert (await http.get(path, headers=other)).status_code == 403
                admin = {"Authorization": f"Bearer {env.keys['admin']}"}
                assert (await http.get(path, params=QUERY, headers=admin)).status_code == 200

            spec = (await http.get("/openapi.json")).json()
            for path in ("/v1/reports/summary", "/v1/reports/summary.csv", "/v1/reports/summary.xlsx",
                         "/v1/reports/repeats"):  # fmt: skip
                assert spec["paths"][path]["get"]["x-scopes"] == ["reports", "admin"]

            metrics = (await http.get("/metrics")).text
            assert "reporting_projection_lag_seconds" in metrics
            assert "reporting_report_seconds_bucket" in metrics
            assert 'dead_letters_total{source_topic="' + t.lifecycle + '"} 1.0' in metrics
    finally:
        service.stop()


def _marker() -> ComplaintReceived:
    from datetime import UTC, datetime

    from shared.domain import Category, Channel, Kind, Urgency

    at = datetime(2026, 12, 1, 2, tzinfo=UTC)
    return ComplaintReceived(
        occurred_at=at, complaint_id="hotline:MARKER", channel=Channel.HOTLINE, source_id="MARKER", received_at=at,
        kind=Kind.COMPLAINT, category=Category.OTHER, title="t", content="c", urgency=Urgency.NORMAL,
        region_code="150500",
    )  # fmt: skip
