"""The monthly bulletin served by the reporting service (its own process) on real Kafka and PostgreSQL: a month of
facts in a shuffled order and ledger items imported over HTTP, then the page fetched with a `reports` key, its
figures checked, and the served page opened in headless Chromium (screenshot kept); access by scope."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import defaultdict
from datetime import UTC, datetime

import httpx
import pytest

from services.reporting.projections import TOTAL_DIMENSION, TOTAL_KEY, ZERO, Counts, Fact, figures, fold_case
from shared.domain import LOCAL_TZ, Category, Channel
from shared.events import ComplaintAssigned, ComplaintReceived, LifecycleChanged
from shared.events.received import Contact
from shared.events.sla import Stage
from tests.support.browser import colour_share, distinct_colours, screenshot
from tests.support.infra import Env, ServiceProcess, produce
from tests.support.reporting_scenario import PERIOD, Case, h, scenario

pytestmark = pytest.mark.integration
BAR = (0x1F, 0x5F, 0xA8)  # bulletin.py's bar colour (an on-time rate of 90% or more)
PHONE = "13912345678"


def _facts() -> list[Fact]:
    """The known-answer scenario, plus: a case whose title and contact carry a phone, the most overdue (its accept
    breached 1 h after T0), and two cases of one enterprise and category within 90 days (a repeat)."""
    facts: list[Fact] = list(scenario())
    phoned = Case("hotline:P1", Channel.HOTLINE, Category.GOVERNMENT_SERVICES)
    received = phoned.facts[0]
    assert isinstance(received, ComplaintReceived)
    phoned.facts[0] = received.model_copy(
        update={"title": f"厂区断电，请回电{PHONE}", "contact": Contact(name="王经理", phone=PHONE)}
    )
    phoned.assign(1, "spj", h(0.1)).breach(Stage.ACCEPT, "spj", 1.0)
    facts += phoned.facts
    for cid, day in (("hotline:R1", 3), ("hotline:R2", 20)):
        at = datetime(2026, 11, day, 2, tzinfo=UTC)
        facts += Case(cid, Channel.HOTLINE, Category.FINANCING, at=at, uscc="91150500MA0N8Q5X3K").facts
    return facts


def _expected_total(facts: list[Fact]) -> dict[str, object]:
    """The month's 7.1 total as the pure fold gives it: what the served summary must show once all is read."""
    by_case: dict[str, list[Fact]] = defaultdict(list)
    for fact in facts:
        by_case[fact.complaint_id].append(fact)
    total: Counts = ZERO
    for cid, own in by_case.items():
        c = fold_case(cid, own).contribution
        if c.day is not None and PERIOD[0] <= c.day <= PERIOD[1]:
            row = c.rows.get((TOTAL_DIMENSION, TOTAL_KEY), ZERO)
            total = tuple(a + b for a, b in zip(total, row, strict=True))
    return {"key": "all", "name": "合计", **figures(total)}


def _ledger_items() -> list[dict[str, object]]:
    """8 items, 5 closed (62.5%); L1 recurs (same area and problem in the 2025 ledger)."""
    items: list[dict[str, object]] = []
    for n in range(1, 9):
        status = "closed" if n <= 5 else "in_progress" if n <= 7 else "open"
        item: dict[str, object] = {
            "item_id": f"2026-{n}", "source": "2026 自治区营商环境评估反馈", "area": "政务服务",
            "problem": f"审批事项办理时限过长{n}", "departments": ["spj"], "due_date": "2026-12-31", "status": status,
        }  # fmt: skip
        if status == "closed":
            item |= {"evidence": "整改报告", "approved_by": "yshj"}
        items.append(item)
    items.append(
        {"item_id": "2025-1", "source": "2025 自治区营商环境评估反馈", "area": "政务服务",
         "problem": "审批事项办理时限过长1", "departments": ["spj"], "due_date": "2025-12-31", "status": "closed",
         "evidence": "整改报告", "approved_by": "yshj"}
    )  # fmt: skip
    return items


async def _wait_for_total(
    http: httpx.AsyncClient, headers: dict[str, str], want: dict[str, object], timeout_s: float = 90.0
) -> object:
    """Poll the summary until its total is the expected one (an upper bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    got: object = None
    month = {"from": "2026-11-01", "to": "2026-11-30"}
    while time.monotonic() < deadline:
        got = (await http.get("/v1/reports/summary", params=month, headers=headers)).json()
        if isinstance(got, dict) and got.get("total") == want:
            return got
        await asyncio.sleep(0.3)
    return got


async def test_the_served_bulletin_shows_the_month(env: Env) -> None:
    service = ServiceProcess("reporting", env.environ(), env.tmp / "reporting.log").start()
    try:
        t = env.topics
        facts = _facts()
        order = facts + random.Random(5).sample(facts, len(facts) // 3)  # some replayed
        random.Random(11).shuffle(order)
        by_topic: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        for fact in order:
            topic = (
                t.received if isinstance(fact, ComplaintReceived)
                else t.assigned if isinstance(fact, ComplaintAssigned)
                else t.lifecycle if isinstance(fact, LifecycleChanged)
                else t.sla
            )  # fmt: skip
            by_topic[topic].append((fact.complaint_id.encode(), fact.to_json_bytes()))
        for topic in (t.sla, t.lifecycle, t.assigned, t.received):
            await produce(env.bootstrap, topic, by_topic[topic])

        reports = {"Authorization": f"Bearer {env.keys['reports']}"}
        admin = {"Authorization": f"Bearer {env.keys['admin']}"}
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            imported = await http.post("/v1/ledger/items", json={"items": _ledger_items()}, headers=admin)
            assert imported.status_code == 201, imported.text

            want = _expected_total(facts)
            assert want["received"] == 22
            assert want["overdue_open"] == 4
            summary = await _wait_for_total(http, reports, want)
            assert isinstance(summary, dict)
            assert summary["total"] == want, service.log_tail()

            got = await http.get("/v1/reports/bulletin", params={"month": "2026-11"}, headers=reports)
            assert got.status_code == 200, got.text
            assert got.headers["content-type"] == "text/html; charset=utf-8"
            page = got.text

            # The figures of the month.
            assert "企业诉求办理情况月度通报" in page
            assert "六、督查事项" in page  # supervision items by phenomenon and status (10.3)
            assert "七、风险预警（防未病）" in page  # the month's early warnings (10.4)
            assert "2026年11月" in page
            assert "本月受理企业诉求 <b>22</b> 件" in page
            assert "超期未办结 <b>4</b> 件" in page
            assert "市行政审批和政务服务局" in page
            assert "市市场监督管理局" in page
            # Against October (J5 only: nothing resolved): the resolution rate rose.
            rate = want["resolution_rate"]
            assert isinstance(rate, float)
            assert f"▲ {rate * 100:.1f} 个百分点" in page
            # The ranking by on-time rate: scj (100%), spj (80%), jrb (66.7%); the triage desk and 未派单 not ranked.
            table = page[page.index("二、部门排名") : page.index("三、超期未办结案件")]
            assert table.index("市市场监督管理局") < table.index("市行政审批和政务服务局") < table.index("市地方金融管理局")
            assert "12345 派单席" not in table
            assert "未派单" not in table
            # The overdue cases, most overdue first, the phone masked.
            overdue = page[page.index("三、超期未办结案件") : page.index("四、重复诉求")]
            ids = re.findall(r"<td class='mono'>([^<]+)</td>", overdue)
            assert ids == ["hotline:P1", "hotline:S5", "supervisor:J6", "hotline:S4"]
            assert "厂区断电，请回电139****5678" in overdue
            assert PHONE not in page
            # The repeat of the month.
            repeats = page[page.index("四、重复诉求") : page.index("五、整改台账进展")]
            assert "90日内重复" in repeats
            assert "hotline:R1、hotline:R2" in repeats
            # The ledger: 8 items of 2026 and 1 of 2025 (closed): 6 of 9 closed, 1 recurring.
            ledger = page[page.index("五、整改台账进展") :]
            assert "台账事项共 <b>9</b> 项，已销号 <b>6</b> 项，完成率 <b>66.7%</b>" in ledger
            assert "重复出现 <b>1</b> 项" in ledger
            # Nothing from another host.
            own = page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a namespace name, never fetched
            assert not re.search(r"(?i)https?:|//|@import|<link|src=|url\(", own), "the page names another host"

            # As a person sees it: the served page, opened from a file (it loads nothing from elsewhere).
            html = env.tmp / "bulletin-served.html"
            html.write_text(page, encoding="utf-8")
            png = screenshot(html.as_uri(), "bulletin-served.png")
            assert distinct_colours(png) > 200
            assert colour_share(png, BAR) > 0.002

            # The default month is the current local month (empty here, still a page).
            default = await http.get("/v1/reports/bulletin", headers=reports)
            assert default.status_code == 200
            local_now = datetime.now(LOCAL_TZ)
            assert f"{local_now.year}年{local_now.month}月" in default.text

            # Access and bad input.
            assert (await http.get("/v1/reports/bulletin", params={"month": "2026-11"})).status_code == 401
            for scope in ("department:spj", "channel:hotline"):
                other = {"Authorization": f"Bearer {env.keys[scope]}"}
                refused = await http.get("/v1/reports/bulletin", params={"month": "2026-11"}, headers=other)
                assert refused.status_code == 403
                assert PHONE not in refused.text
            admin_view = await http.get("/v1/reports/bulletin", params={"month": "2026-11"}, headers=admin)
            assert admin_view.status_code == 200
            for bad in ("2026-13", "2026/11", "11-2026", "2026-11-01", "x" * 500):
                refused = await http.get("/v1/reports/bulletin", params={"month": bad}, headers=reports)
                assert refused.status_code == 422, bad
                assert set(refused.json()) == {"error", "reason"}

            spec = (await http.get("/openapi.json")).json()
            operation = spec["paths"]["/v1/reports/bulletin"]["get"]
            assert operation["x-scopes"] == ["reports", "admin"]
            assert "text/html" in operation["responses"]["200"]["content"]
            assert {"401", "403", "422"} <= set(operation["responses"])

            metrics = (await http.get("/metrics")).text
            assert 'reporting_report_seconds_count{report="bulletin"}' in metrics
    finally:
        service.stop()
