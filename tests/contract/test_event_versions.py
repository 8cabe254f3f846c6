"""Published event versions still parse: v1 messages as they were written on the wire (fixtures frozen here) must
validate with today's models, and every field they carried must still be there. A breaking change needs a new
schema_version served side by side, not an edit of these fixtures."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from shared.events import (
    CallbackResult,
    ComplaintAssigned,
    ComplaintReceived,
    DeadLetter,
    DepartmentAction,
    LifecycleChanged,
    SlaEvent,
)

ENVELOPE = {
    "event_id": "5f0c9a3e-7d1b-4d3c-9a51-3c2f1e6b8a10",
    "schema_version": 1,
    "occurred_at": "2026-11-26T01:15:33Z",
    "complaint_id": "hotline:TL2026112600123",
}

V1: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (
        ComplaintReceived,
        {
            **ENVELOPE,
            "event_type": "complaint.received",
            "causation_id": None,
            "channel": "hotline",
            "source_id": "TL2026112600123",
            "received_at": "2026-11-26T01:15:32Z",
            "kind": "complaint",
            "category": "government_services",
            "title": "企业开办窗口多次退回材料",
            "content": "窗口三次以不同理由退回材料。",
            "urgency": "normal",
            "region_code": "150502",
            "enterprise": {"name": "通辽市草原牧歌农牧业有限公司", "uscc": "911505023AGYGLUY3T", "uscc_valid": True},
            "contact": {"name": "王先生", "phone": "13912345678"},
            "anonymous": False,
            "quality_flags": [],
        },
    ),
    (
        ComplaintAssigned,
        {
            **ENVELOPE,
            "event_type": "complaint.assigned",
            "causation_id": ENVELOPE["event_id"],
            "assignment_id": "a-1",
            "round": 1,
            "lead_department": "gov-150502",
            "assisting_departments": ["spj"],
            "level": "county",
            "rule_id": "territorial-county",
            "reason": "属地管理",
            "assigned_at": "2026-11-26T01:15:34Z",
        },
    ),
    (
        SlaEvent,
        {
            **ENVELOPE,
            "event_type": "complaint.sla",
            "causation_id": "x",
            "type": "breached",
            "stage": "accept",
            "due_at": "2026-11-26T03:15:34Z",
            "round": 1,
            "department": "gov-150502",
            "escalate_to": "yshj",
        },
    ),
    (
        LifecycleChanged,
        {
            **ENVELOPE,
            "event_type": "complaint.lifecycle",
            "causation_id": "act-1",
            "from_state": "assigned",
            "to_state": "accepted",
            "cause": "accept",
        },
    ),
    (
        DepartmentAction,
        {
            "action_id": "act-1",
            "complaint_id": "hotline:TL1",
            "department": "spj",
            "action": "accept",
            "at": "2026-11-26T10:00:00+08:00",
            "note": None,
        },
    ),
    (
        CallbackResult,
        {
            "complaint_id": "hotline:TL1",
            "callback_at": "2026-11-28T02:00:00Z",
            "satisfaction": "basically_satisfied",
            "resolved": True,
            "comment": "还行",
        },
    ),
    (
        DeadLetter,
        {
            "source_topic": "intake.hotline",
            "source_key": "TL1",
            "reason": "body is not JSON",
            "error_type": "invalid_json",
            "first_seen_at": "2026-11-26T01:00:00Z",
            "attempts": 1,
            "payload_b64": "e29vcHM=",
            "service": "intake",
        },
    ),
]


@pytest.mark.parametrize(("model", "wire"), V1, ids=[m.__name__ for m, _ in V1])
def test_v1_messages_still_parse_and_keep_their_fields(model: type[BaseModel], wire: dict[str, Any]) -> None:
    parsed = model.model_validate_json(json.dumps(wire, ensure_ascii=False))
    again = json.loads(parsed.model_dump_json())
    for field, value in wire.items():
        assert field in again, f"{model.__name__} lost field {field}"
        if field not in {"occurred_at", "received_at", "due_at", "assigned_at", "first_seen_at", "at", "callback_at"}:
            assert again[field] == value, field


@pytest.mark.parametrize(("model", "wire"), V1, ids=[m.__name__ for m, _ in V1])
def test_unknown_fields_are_ignored(model: type[BaseModel], wire: dict[str, Any]) -> None:
    model.model_validate({**wire, "a_field_from_the_future": {"x": 1}})


def test_events_are_frozen() -> None:
    event = ComplaintReceived.model_validate(V1[0][1])
    with pytest.raises(Exception):  # noqa: B017, PT011 - pydantic raises ValidationError for frozen instances
        event.title = "changed"  # type: ignore[misc]
