"""The portal's pure rules (contract 10.1): reading a submission, tracking numbers, the sliding-minute limit with a
clock passed in, the client address behind named proxies, the same-submission window, the pages' escaping; and what
intake keeps of complaints.lifecycle for the cases it shows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from services.intake.portal import (
    FieldError,
    PortalForm,
    SlidingWindowLimiter,
    client_address,
    form_fields,
    honeypot_filled,
    portal_complaint,
    read_submission,
    same_submission_since,
    tracking_number,
    trusted_networks,
)
from services.intake.portal_page import TrackView, form_page, track_page
from services.intake.tracking import latest_facts
from shared.domain import Category, Kind
from shared.events import CaseState, LifecycleChanged

NOW = datetime(2026, 11, 26, 2, 30, tzinfo=UTC)
GOOD: dict[str, Any] = {
    "enterprise_name": "开鲁县某食品有限公司",
    "credit_code": "91150523W7WKKHDRJ7",
    "region": "开鲁县",
    "category": "utilities",
    "kind": "complaint",
    "title": "园区停水",
    "content": "工业园区本月已停水四次。",
    "contact_name": "刘女士",
    "contact_phone": "+86 139-1234-5678",
    "anonymous": "false",
}


def test_a_good_submission_reads_to_its_complaint() -> None:
    form = read_submission(GOOD)
    assert isinstance(form, PortalForm)
    assert (form.region_code, form.category, form.kind, form.anonymous) == (
        "150523",
        Category.UTILITIES,
        Kind.COMPLAINT,
        False,
    )
    assert form.contact_phone == "13912345678"
    event = portal_complaint(form, "PT20261126000123", NOW)
    assert event.complaint_id == "portal:PT20261126000123"
    assert event.source_id == "PT20261126000123"
    assert event.received_at == NOW
    assert event.enterprise is not None
    assert event.enterprise.uscc_valid is True
    assert event.contact is not None
    assert event.contact.phone == "13912345678"
    anonymous = read_submission({**GOOD, "anonymous": True})
    assert isinstance(anonymous, PortalForm)
    assert portal_complaint(anonymous, "PT20261126000124", NOW).contact is None


@pytest.mark.parametrize(
    ("change", "field", "error"),
    [
        ({"enterprise_name": ""}, "enterprise_name", "missing_field"),
        ({"credit_code": "91150523W7WKKHDRJ8"}, "credit_code", "invalid_field"),
        ({"credit_code": "123"}, "credit_code", "invalid_field"),
        ({"region": None}, "region", "missing_field"),
        ({"region": "火星"}, "region", "invalid_field"),
        ({"category": "weather"}, "category", "invalid_field"),
        ({"kind": "闲聊"}, "kind", "invalid_field"),
        ({"title": "  "}, "title", "missing_field"),
        ({"content": "x" * 5001}, "content", "invalid_field"),
        ({"contact_phone": "12"}, "contact_phone", "invalid_field"),
        ({"anonymous": "maybe"}, "anonymous", "invalid_field"),
        ({"title": 12}, "title", "invalid_field"),
        ({"content": ["a"]}, "content", "invalid_field"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, Any], field: str, error: str) -> None:
    result = read_submission({**GOOD, **change})
    assert isinstance(result, FieldError)
    assert (result.field, result.error) == (field, error)
    assert field in result.reason
    assert result.message  # the Chinese line shown beside the field


def test_an_empty_credit_code_is_allowed_and_text_is_sanitized() -> None:
    form = read_submission({**GOOD, "credit_code": "", "content": "停水\x00了"})
    assert isinstance(form, PortalForm)
    assert form.credit_code is None
    assert form.content == "停水了"
    assert "text_sanitized" in form.quality_flags


def test_category_may_be_its_chinese_name_and_region_its_code() -> None:
    form = read_submission({**GOOD, "category": "融资信贷", "region": "150502"})
    assert isinstance(form, PortalForm)
    assert (form.category, form.region_code) == (Category.FINANCING, "150502")


def test_honeypot_and_form_fields() -> None:
    assert not honeypot_filled(GOOD)
    assert not honeypot_filled({**GOOD, "website": ""})
    assert honeypot_filled({**GOOD, "website": "http://x"})
    fields = form_fields(b"enterprise_name=%E5%BC%80%E9%B2%81&anonymous=true&website=")
    assert fields == {"enterprise_name": "开鲁", "anonymous": "true", "website": ""}
    with pytest.raises(ValueError, match="fields"):
        form_fields(("&".join(f"a{i}=1" for i in range(101))).encode())


def test_tracking_number_is_pt_local_date_and_daily_sequence() -> None:
    assert tracking_number(date(2026, 11, 26), 123) == "PT20261126000123"
    assert tracking_number(date(2026, 11, 27), 1) == "PT20261127000001"
    assert tracking_number(date(2026, 11, 26), 1_234_567) == "PT202611261234567"


def test_the_same_submission_is_enterprise_title_and_content() -> None:
    a, b = read_submission(GOOD), read_submission({**GOOD, "contact_name": "别人", "region": "150502"})
    c = read_submission({**GOOD, "content": "另一件事"})
    assert isinstance(a, PortalForm)
    assert isinstance(b, PortalForm)
    assert isinstance(c, PortalForm)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    since = same_submission_since(NOW)
    assert NOW - timedelta(minutes=9, seconds=59) > since  # within 10 minutes: the same one
    assert not NOW - timedelta(minutes=10) > since  # 10 minutes ago: a new one


def test_sliding_minute_limit_with_a_clock_passed_in() -> None:
    limiter = SlidingWindowLimiter(10)
    t0 = 1_000_000.0
    assert [limiter.hit("1.2.3.4", t0 + i) for i in range(10)] == [None] * 10
    assert limiter.hit("1.2.3.4", t0 + 10) == 50  # the first hit leaves the window at t0 + 60
    assert limiter.hit("5.6.7.8", t0 + 10) is None  # another address is counted apart
    assert limiter.hit("1.2.3.4", t0 + 59.5) == 1
    assert limiter.hit("1.2.3.4", t0 + 60) is None  # sliding: the first hit has left
    assert limiter.hit("1.2.3.4", t0 + 60.5) is not None


def test_limiter_forgets_idle_addresses_rather_than_grow() -> None:
    limiter = SlidingWindowLimiter(1, max_keys=100)
    for i in range(1000):
        limiter.hit(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(limiter._hits) <= 100


def test_client_address_believes_forwarded_for_only_from_named_proxies() -> None:
    proxies = trusted_networks("10.0.0.5, 10.1.0.0/16")
    assert client_address("198.51.100.9", "203.0.113.7", proxies) == "198.51.100.9"
    assert client_address("10.0.0.5", "203.0.113.7", proxies) == "203.0.113.7"
    assert client_address("10.0.0.5", "1.1.1.1, 203.0.113.7, 10.1.2.3", proxies) == "203.0.113.7"
    assert client_address("10.0.0.5", None, proxies) == "10.0.0.5"
    assert client_address("127.0.0.1", "203.0.113.7", trusted_networks("")) == "127.0.0.1"
    assert client_address(None, None, proxies) == "unknown"


def test_pages_escape_what_they_show() -> None:
    page = form_page({"title": '"><script>alert(1)</script>'}, {"title": "请填写标题"})
    assert "<script>alert(1)" not in page
    assert "请填写标题" in page
    assert "http" not in page.replace('name="viewport"', "")  # nothing loaded from another host
    view = TrackView(
        "PT20261126000001", "<b>x</b>", "utilities", "150523", NOW, "resolved", "gov-150523", "已<修复>", NOW
    )
    shown = track_page(view)
    assert "<b>x</b>" not in shown
    assert "已&lt;修复&gt;" in shown
    assert "开鲁县人民政府" in shown


def _fact(cid: str, to: CaseState, at: datetime, cause: str = "assigned", note: str | None = None) -> LifecycleChanged:
    return LifecycleChanged(
        event_id=uuid4(), occurred_at=at, complaint_id=cid, from_state=None, to_state=to, cause=cause,
        lead_department="gov-150523", at=at, note=note,
    )  # fmt: skip


def test_latest_state_and_note_per_shown_case() -> None:
    cid = "portal:PT20261126000001"
    t = NOW
    events = [
        _fact(cid, CaseState.RESOLVED, t + timedelta(hours=2), "resolve", "已恢复供水"),
        _fact(cid, CaseState.ASSIGNED, t),
        _fact(cid, CaseState.CLOSED, t + timedelta(hours=3), "callback"),
        _fact("hotline:TL1", CaseState.ASSIGNED, t),  # not a case intake shows
        _fact("visit:V#1", CaseState.ACCEPTED, t),
    ]
    states, notes = latest_facts(events)
    assert {(s.complaint_id, s.state) for s in states} == {(cid, "closed"), ("visit:V#1", "accepted")}
    assert [(n.complaint_id, n.note) for n in notes] == [(cid, "已恢复供水")]
