"""Generated inputs: whatever arrives on a channel ends as exactly one event or one rejection, never an exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake.normalize import Rejection, normalize
from shared.domain import Channel
from shared.events import ComplaintReceived

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
channels = st.sampled_from(list(Channel))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
maybe_text = (
    st.none() | st.text(max_size=40) | st.integers() | st.sampled_from(["", "  ", "开鲁县", "紧急", "是", "投诉"])
)


def check(channel: Channel, raw: bytes) -> None:
    result = normalize(channel, raw, NOW)
    assert isinstance(result, ComplaintReceived | Rejection)
    if isinstance(result, Rejection):
        assert result.error_type != "normalize_failed", result.reason
        assert result.reason
    else:
        wire = result.to_json_bytes()
        assert ComplaintReceived.model_validate_json(wire) == result


@given(channels, st.binary(max_size=2000))
def test_arbitrary_bytes(channel: Channel, raw: bytes) -> None:
    check(channel, raw)


@given(channels, json_values)
def test_arbitrary_json(channel: Channel, value: Any) -> None:
    check(channel, json.dumps(value).encode())


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {
            "gdbh": maybe_text,
            "ldsj": st.none() | st.text(max_size=25) | st.sampled_from(["2026-11-26 09:00:00"]),
            "sqlx": maybe_text,
            "sqnr": maybe_text,
        },
        optional={
            "ldhm": maybe_text,
            "lxr": maybe_text,
            "qymc": maybe_text,
            "tyshxydm": maybe_text,
            "sqfl": maybe_text,
            "sqbt": maybe_text,
            "ssqy": maybe_text,
            "jjcd": maybe_text,
            "nm": maybe_text | st.booleans(),
        },
    )
)
def test_hotline_shaped_json(body: dict[str, Any]) -> None:
    check(Channel.HOTLINE, json.dumps(body, ensure_ascii=False).encode())


@given(
    st.fixed_dictionaries(
        {
            "ticketId": maybe_text,
            "createdAt": st.none() | st.integers() | st.text(max_size=5),
            "description": maybe_text,
        },
        optional={
            "reporter": st.none()
            | st.dictionaries(st.sampled_from(["name", "mobile", "company", "creditCode"]), maybe_text),
            "tags": json_values,
            "priority": json_values,
            "district": maybe_text,
            "subject": maybe_text,
        },
    )
)
def test_complaint_line_shaped_json(body: dict[str, Any]) -> None:
    check(Channel.COMPLAINT_LINE, json.dumps(body, ensure_ascii=False).encode())


@given(
    st.fixed_dictionaries(
        {
            "report": st.none()
            | json_values
            | st.fixed_dictionaries(
                {"id": maybe_text, "observedAt": st.sampled_from(["2026-11-26T10:00:00+08:00", "x", ""]) | maybe_text}
            )
        },
        optional={
            "issue": json_values
            | st.fixed_dictionaries(
                {"summary": maybe_text},
                optional={"detail": maybe_text, "categoryCode": maybe_text, "enterprise": json_values},
            ),
            "location": json_values,
            "reporter": json_values,
        },
    )
)
def test_supervisor_shaped_json(body: dict[str, Any]) -> None:
    check(Channel.SUPERVISOR, json.dumps(body, ensure_ascii=False).encode())
