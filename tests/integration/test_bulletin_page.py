"""The monthly bulletin as a person sees it: rendered, opened in headless Chromium, screenshot kept."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.reporting.bulletin import BulletinData, LedgerProgress, OverdueCase, rank_departments, render_bulletin
from shared.domain import DEPARTMENTS
from tests.support.browser import colour_share, distinct_colours, print_to_pdf, screenshot

AS_OF = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)


def _row(key: str, received: int, resolved: int, on_time: float | None, **more: object) -> dict[str, object]:
    return {
        "key": key,
        "name": DEPARTMENTS.get(key, key),
        "received": received,
        "resolved": resolved,
        "open": received - resolved,
        "resolution_rate": round(resolved / received, 4) if received else None,
        "on_time_rate": on_time,
        "response_rate": 0.95,
        "contact_rate": 0.9,
        "satisfaction_rate": 0.8,
        "solved_rate": 0.75,
        "returns": 1,
        "returns_overturned": 0,
        "overdue_open": 0,
        "callbacks": resolved,
        **more,
    }


def sample() -> BulletinData:
    departments = [
        _row("spj", 40, 38, 0.9737),
        _row("gov-150523", 25, 20, 0.85, overdue_open=2),
        _row("sw", 12, 12, 1.0),
        _row("jrb", 8, 5, 0.6),
        _row("triage", 3, 0, None),
        _row("zjj", 2, 0, None),
    ]
    total = _row("all", 90, 75, 0.88, overdue_open=2, returns=4, returns_overturned=1) | {"name": "合计"}
    previous = total | {"resolution_rate": 0.8, "on_time_rate": 0.91, "satisfaction_rate": None}
    overdue = [
        OverdueCase("hotline:TL2026111800031", "gov-150523", "开鲁县人民政府", "resolve", AS_OF - timedelta(days=3),
                    "工程款拖欠至今未付"),
        OverdueCase("complaint_line:YS-2026-004700", "gov-150523", "开鲁县人民政府", "accept",
                    AS_OF - timedelta(hours=5), "园区供电不稳"),
    ]
    repeats = [{"kind": "same_enterprise_90d", "enterprise": {"name": "开鲁县红干椒加工厂", "uscc": None},
                "category": "government_integrity", "complaint_ids": ["hotline:A1", "hotline:A2", "hotline:A3"]}]
    ledger = LedgerProgress(48, 33, 0.6875, {"open": 5, "in_progress": 10, "closed": 33}, recurring=2)
    return BulletinData("2026-11", AS_OF, total, previous, departments, overdue, repeats, ledger)


def test_the_ranking_puts_assessed_departments_by_on_time_rate() -> None:
    ranked = [r["key"] for r in rank_departments(sample().departments)]
    assert ranked == ["sw", "spj", "gov-150523", "jrb", "zjj"]  # triage is a desk, not assessed


def test_the_page_names_no_other_host_and_escapes_text() -> None:
    data = sample()
    hostile = OverdueCase("hotline:X", "spj", "市行政审批和政务服务局", "resolve", AS_OF, "<script>alert(1)</script>")
    page = render_bulletin(BulletinData(**{**data.__dict__, "overdue": [hostile]}))
    assert "<script>alert" not in page
    assert "&lt;script&gt;" in page
    for marker in ("http://", "https://", "//cdn", "@import", "<link"):
        assert marker not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "企业诉求办理情况月度通报" in page
    assert "68.8%" in page  # the ledger's completion rate, 33 of 48


@pytest.mark.integration
def test_the_bulletin_renders_in_chromium_with_its_charts_and_chinese(tmp_path: Path) -> None:
    page = tmp_path / "bulletin.html"
    page.write_text(render_bulletin(sample(), {"government_integrity": "政务诚信"}), encoding="utf-8")
    png = screenshot(page.as_uri(), "bulletin-sample.png")
    # Not blank: text, charts and the red title make hundreds of colours; the bars are there in their colour.
    assert distinct_colours(png) > 200
    assert colour_share(png, (0x1F, 0x5F, 0xA8)) > 0.002
    pdf = print_to_pdf(page.as_uri(), "bulletin-sample.pdf")
    body = pdf.read_bytes()
    assert body.startswith(b"%PDF")
    boxes = {(round(float(w)), round(float(h))) for w, h in re.findall(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", body)}
    assert boxes == {(595, 842)}  # every page printed on A4 (595 x 842 points)
