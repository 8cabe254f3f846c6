"""Normalization rules of contract sections 2, 3.1 and 6, case by case."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from services.intake.normalize import (
    MAX_BODY_BYTES,
    Rejection,
    derive_title,
    normalize,
    normalize_phone,
    uscc_is_valid,
)
from shared.domain import Category, Channel, category_from_text, region_code_of
from shared.events import ComplaintReceived

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def hotline(**fields: Any) -> dict[str, Any]:
    base = {"gdbh": "TL1", "ldsj": "2026-11-26 09:00:00", "sqlx": "投诉", "sqnr": "窗口办事难"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def run(channel: Channel, body: Any) -> ComplaintReceived | Rejection:
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return normalize(channel, raw, NOW)


def ok(channel: Channel, body: Any) -> ComplaintReceived:
    result = run(channel, body)
    assert isinstance(result, ComplaintReceived), result
    return result


def rejected(channel: Channel, body: Any) -> Rejection:
    result = run(channel, body)
    assert isinstance(result, Rejection), result
    return result


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("911505023AGYGLUY3T", True),
        ("91150523W7WKKHDRJ7", True),
        ("91150581HTPQQFQQJ6", False),
        ("91350100M000100Y43", True),
        ("91350100M000100Y44", False),
        ("123", False),
        ("91150523W7WKKHDRJI", False),
    ],
)
def test_uscc_check_character(code: str, valid: bool) -> None:
    assert uscc_is_valid(code) is valid


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("13912345678", "13912345678"),
        ("+86 139-1234-5678", "13912345678"),
        ("0475-8234567", "04758234567"),
        ("86 13804751234", "13804751234"),
        ("(0475) 823 4567", "04758234567"),
        ("0086-139-1234-5678", "13912345678"),
        ("12345", None),
        ("电话", None),
    ],
)
def test_phone_numbers_become_digits(raw: str, digits: str | None) -> None:
    assert normalize_phone(raw) == digits


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("科尔沁区", "150502"),
        ("科左中旗", "150521"),
        ("科尔沁左翼后旗", "150522"),
        ("科左后旗", "150522"),
        ("开鲁县", "150523"),
        ("开鲁", "150523"),
        ("库伦旗", "150524"),
        ("奈曼旗", "150525"),
        ("扎鲁特旗", "150526"),
        ("开发区", "150571"),
        ("通辽经济技术开发区", "150571"),
        ("霍林郭勒", "150581"),
        ("霍林郭勒市", "150581"),
        ("通辽市", "150500"),
        ("通辽市开鲁县", "150523"),
        ("150523", "150523"),
        (" 奈曼旗 ", "150525"),
        ("火星区", None),
        ("110101", None),
    ],
)
def test_region_names_short_forms_and_codes(name: str, code: str | None) -> None:
    assert region_code_of(name) == code


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("想了解贷款贴息", Category.FINANCING),
        ("工程款拖欠两年", Category.GOVERNMENT_INTEGRITY),
        ("营业执照办不下来", Category.MARKET_REGULATION),
        ("窗口要求反复提交材料", Category.GOVERNMENT_SERVICES),
        ("奖补资金未兑现", Category.POLICY_FULFILLMENT),
        ("多头检查、罚款", Category.LAW_ENFORCEMENT),
        ("法院判决不执行", Category.JUDICIAL),
        ("工作人员索要好处", Category.CORRUPTION),
        ("园区停电", Category.UTILITIES),
        ("施工许可迟迟不发", Category.CONSTRUCTION),
        ("发票领用受限", Category.TAXES_FEES),
        ("路灯不亮", Category.OTHER),
        # a tie (one hit each) goes to the category listed first in the contract: financing before government_integrity
        ("贷款被拖欠", Category.FINANCING),
        # the most hits win: two policy words against one financing word
        ("贷款贴息补贴未兑现", Category.POLICY_FULFILLMENT),
    ],
)
def test_category_from_keywords(text: str, category: Category) -> None:
    assert category_from_text(text) is category


def test_label_wins_over_keywords() -> None:
    event = ok(Channel.HOTLINE, hotline(sqfl="税费", sqnr="贷款贷款贷款"))
    assert event.category is Category.TAXES_FEES
    assert event.quality_flags == ()


def test_unknown_label_is_flagged_and_keywords_decide() -> None:
    event = ok(Channel.HOTLINE, hotline(sqfl="营商环境", sqnr="贷款难"))
    assert event.category is Category.FINANCING
    assert "category_unmapped" in event.quality_flags


def test_unknown_supervisor_code_is_flagged() -> None:
    body = {
        "report": {"id": "JD-1", "observedAt": "2026-11-26T10:00:00+08:00"},
        "issue": {"categoryCode": "XXXX", "summary": "园区停电"},
    }
    event = ok(Channel.SUPERVISOR, body)
    assert event.category is Category.UTILITIES
    assert "category_unmapped" in event.quality_flags


def test_title_derived_from_content_when_absent() -> None:
    assert ok(Channel.HOTLINE, hotline(sqnr="窗口三次退回材料。希望一次告知。")).title == "窗口三次退回材料"
    assert derive_title("一" * 50) == "一" * 30


def test_local_time_becomes_utc_and_leap_day_is_fine() -> None:
    event = ok(Channel.HOTLINE, hotline(ldsj="2028-02-29 08:00:00"))
    assert event.received_at == datetime(2028, 2, 29, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "bad",
    ["2027-02-29 08:00:00", "2026-13-01 00:00:00", "1900-01-01 00:00:00", "2026-11-26", "", "9999-12-31 23:59:59"],
)
def test_impossible_times_are_refused(bad: str) -> None:
    assert rejected(Channel.HOTLINE, hotline(ldsj=bad)).error_type in {"invalid_field", "missing_field"}


def test_future_received_at_is_flagged_not_refused() -> None:
    event = ok(Channel.HOTLINE, hotline(ldsj="2026-12-30 09:00:00"))
    assert "received_at_future" in event.quality_flags


def test_unknown_region_goes_to_the_city_with_a_flag() -> None:
    event = ok(Channel.HOTLINE, hotline(ssqy="火星区"))
    assert (event.region_code, event.quality_flags) == ("150500", ("region_unknown",))


def test_missing_region_is_the_city_without_a_flag() -> None:
    assert ok(Channel.HOTLINE, hotline()).region_code == "150500"


def test_anonymous_hides_the_contact() -> None:
    event = ok(Channel.HOTLINE, hotline(nm="是", ldhm="13912345678", lxr="王先生"))
    assert event.anonymous is True
    assert event.contact is None


def test_unknown_optional_values_are_flagged() -> None:
    event = ok(Channel.HOTLINE, hotline(jjcd="特急", nm="也许", ldhm="123"))
    assert set(event.quality_flags) >= {"urgency_unknown", "anonymous_unknown", "phone_invalid"}


@pytest.mark.parametrize(
    ("body", "error_type", "field"),
    [
        (hotline(sqlx="表扬"), "invalid_field", "sqlx"),
        (hotline(sqnr="   "), "missing_field", "sqnr"),
        (hotline(sqnr=123.5), "invalid_field", "sqnr"),
        (hotline(gdbh="has space"), "invalid_field", "gdbh"),
        (hotline(gdbh=123), "invalid_field", "gdbh"),
        (hotline(gdbh="x" * 65), "invalid_field", "gdbh"),
        (hotline(ssqy=["开鲁县"]), "invalid_field", "ssqy"),
        (hotline(ldsj=20261126), "invalid_field", "ldsj"),
    ],
)
def test_hard_faults_are_refused_with_the_field_named(body: dict[str, Any], error_type: str, field: str) -> None:
    result = rejected(Channel.HOTLINE, body)
    assert result.error_type == error_type
    assert field in result.reason


@pytest.mark.parametrize(
    ("raw", "error_type"),
    [
        (b"\xff\xfe", "invalid_utf8"),
        (b"{", "invalid_json"),
        (b"[1,2]", "not_an_object"),
        (b"null", "not_an_object"),
        (b'{"a": NaN}', "invalid_json"),
        (b"", "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json"),
        (b"[" * 60000, "invalid_json"),
    ],
)
def test_not_json_objects_are_refused(raw: bytes, error_type: str) -> None:
    assert rejected(Channel.HOTLINE, raw).error_type == error_type


def test_body_over_64_kib_is_refused() -> None:
    body = json.dumps(hotline(sqnr="长" * (MAX_BODY_BYTES // 3 + 10)), ensure_ascii=False).encode()
    assert len(body) > MAX_BODY_BYTES
    result = rejected(Channel.HOTLINE, body)
    assert result.error_type == "too_large"
    assert "64 KiB" in result.reason


def test_nul_bytes_and_lone_surrogates_are_sanitized_and_flagged() -> None:
    raw = b'{"gdbh":"TL9","ldsj":"2026-11-26 09:00:00","sqlx":"\\u6295\\u8bc9","sqnr":"a\\u0000b\\ud800c"}'
    event = ok(Channel.HOTLINE, raw)
    assert event.content == "ab\ufffdc"
    assert "text_sanitized" in event.quality_flags
    event.to_json_bytes().decode("utf-8")  # always encodable


def test_html_and_emoji_are_kept_as_text() -> None:
    content = "<script>alert(1)</script> 企业😀诉求"
    assert ok(Channel.HOTLINE, hotline(sqnr=content)).content == content


def test_unknown_fields_are_ignored_and_missing_optional_take_defaults() -> None:
    event = ok(Channel.HOTLINE, hotline(extra_field={"x": 1}, 未知字段="值"))
    assert event.urgency.value == "normal"
    assert event.enterprise is None
    assert event.contact is None
    assert event.anonymous is False


def test_complaint_line_reporter_and_priority() -> None:
    body = {
        "ticketId": "YS-1",
        "createdAt": 1795662932000,
        "description": "工程款拖欠",
        "priority": 3,
        "reporter": {"name": "李女士", "mobile": "+86 139-1234-5678", "company": "某公司"},
    }
    event = ok(Channel.COMPLAINT_LINE, body)
    assert event.urgency.value == "normal"
    assert event.contact is not None
    assert event.contact.phone == "13912345678"
    assert event.enterprise is not None
    assert event.enterprise.uscc is None
    assert event.enterprise.uscc_valid is None


@pytest.mark.parametrize("created", [True, 1.5e12, "1795662932000", -(10**20), 10**20])
def test_complaint_line_created_at_must_be_usable_epoch_ms(created: Any) -> None:
    body = {"ticketId": "YS-1", "createdAt": created, "description": "x"}
    assert rejected(Channel.COMPLAINT_LINE, body).error_type == "invalid_field"


def test_supervisor_needs_summary_or_detail() -> None:
    body = {"report": {"id": "JD-1", "observedAt": "2026-11-26T10:00:00+08:00"}, "issue": {}}
    assert "issue.summary" in rejected(Channel.SUPERVISOR, body).reason


def test_reason_masks_nothing_it_should_not_reveal() -> None:
    # A rejected message's reason may quote part of a field value, but never a phone number in clear.
    result = rejected(Channel.HOTLINE, hotline(ldsj="13912345678"))
    assert "13912345678" not in result.reason
    assert "139****5678" in result.reason
