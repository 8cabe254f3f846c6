"""Pure reading of a visit record (政企恳谈会, 企业家服务日, 走访; contract 10.2): each problem brought back becomes its
own `complaint.received` (channel `visit`, source id `<visitId>#<n>`, n from 1), routed and clocked like any other.

`normalize_visit_record(raw, now)` never raises: the record with its complaints, or a `Rejection` naming the field.
The field readers and text rules are normalize.py's, so every channel keeps one rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from services.intake.normalize import (
    Rejection,
    _build,
    _category,
    _category_code,
    _clean,
    _enterprise,
    _Flags,
    _Invalid,
    _json_type,
    _offset_time,
    _received_at,
    _region,
    _required_text,
    _source_id,
    _text,
    read_guarded,
)
from shared.domain import Channel, Kind, Urgency
from shared.events import ComplaintReceived, Enterprise

VISIT_KINDS: Final = ("roundtable", "service_day", "site_visit")
MAX_PROBLEMS: Final = 100
VISIT_ID_MAX: Final = 56  # `#n` is added for each problem's source id, which may be 64 characters at most


@dataclass(frozen=True)
class VisitRecord:
    """A visit as intake keeps it, and the complaints of its problems in order."""

    visit_id: str
    kind: str
    held_at: datetime
    region_code: str
    officials: tuple[str, ...]
    enterprises: tuple[Enterprise, ...]
    complaints: tuple[ComplaintReceived, ...]

    def summary(self) -> dict[str, Any]:
        """What the visits table keeps beside its columns (the problems are the complaints themselves)."""
        return {
            "officials": list(self.officials),
            "enterprises": [e.model_dump(mode="json") for e in self.enterprises],
        }


def problem_source_id(visit_id: str, n: int) -> str:
    return f"{visit_id}#{n}"


def normalize_visit_record(raw: bytes, now: datetime) -> VisitRecord | Rejection:
    """The visit and its problems' complaints, or why not. Never raises."""
    return read_guarded(raw, now, read_visit, "visitId", "a visit")


def read_visit(body: Mapping[str, Any], now: datetime) -> VisitRecord:
    flags = _Flags()
    visit_id = _source_id(body, "visitId", flags)
    if len(visit_id) > VISIT_ID_MAX:
        raise _Invalid("invalid_field", f"field visitId must be at most {VISIT_ID_MAX} characters")
    kind = _required_text(body, "kind", flags)
    if kind not in VISIT_KINDS:
        raise _Invalid("invalid_field", f"field kind {kind[:20]!r} is not one of {', '.join(VISIT_KINDS)}")
    held_at = _received_at(_offset_time(_required_text(body, "heldAt", flags), "heldAt"), now, flags)
    region_code = _region(_text(body, "region", flags), flags)
    officials = _strings(body, "officials", flags)
    enterprises = _enterprises(body, flags)
    problems = body.get("problems")
    if problems is None or problems == []:
        raise _Invalid("missing_field", "required field problems is missing or empty")
    if not isinstance(problems, list):
        raise _Invalid("invalid_field", f"field problems must be an array, got {_json_type(problems)}")
    if len(problems) > MAX_PROBLEMS:
        raise _Invalid("invalid_field", f"field problems has {len(problems)} items, over {MAX_PROBLEMS}")
    complaints = tuple(
        _problem(visit_id, n, item, held_at, now, region_code, enterprises, flags) for n, item in enumerate(problems, 1)
    )
    return VisitRecord(visit_id, kind, held_at, region_code, officials, enterprises, complaints)


def _strings(body: Mapping[str, Any], key: str, flags: _Flags) -> tuple[str, ...]:
    value = body.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid("invalid_field", f"field {key} must be an array of strings")
    return tuple(t for v in value if (t := _clean(v, flags).strip()))


def _enterprises(body: Mapping[str, Any], flags: _Flags) -> tuple[Enterprise, ...]:
    value = body.get("enterprises")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Invalid("invalid_field", f"field enterprises must be an array, got {_json_type(value)}")
    found: list[Enterprise] = []
    for i, item in enumerate(value):
        path = f"enterprises[{i}]."
        if not isinstance(item, dict):
            raise _Invalid("invalid_field", f"field enterprises[{i}] must be an object, got {_json_type(item)}")
        enterprise = _enterprise(
            _text(item, "name", flags, path=path), _text(item, "creditCode", flags, path=path), flags
        )
        found.append(enterprise or Enterprise())
    return tuple(found)


def _problem(
    visit_id: str,
    n: int,
    item: Any,
    held_at: datetime,
    now: datetime,
    region_code: str,
    enterprises: tuple[Enterprise, ...],
    visit_flags: _Flags,
) -> ComplaintReceived:
    path = f"problems[{n - 1}]."
    if not isinstance(item, dict):
        raise _Invalid("invalid_field", f"field problems[{n - 1}] must be an object, got {_json_type(item)}")
    flags = _Flags(list(visit_flags.items))
    content = _required_text(item, "content", flags, path=path)
    title = _text(item, "title", flags, path=path)
    enterprise = None
    index = item.get("enterprise")
    if index is not None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(enterprises):
            raise _Invalid(
                "invalid_field",
                f"field {path}enterprise must be an index into enterprises (0-{len(enterprises) - 1}), "
                f"got {index!r:.20}",
            )
        enterprise = enterprises[index]
    label = _text(item, "category", flags, path=path)
    category = _category([], title, content, flags)
    if label is not None:
        category = _category_code(label) or _category([label], title, content, flags)
    urgency = Urgency.NORMAL
    if (urgency_text := _text(item, "urgency", flags, path=path)) is not None:
        if urgency_text in ("urgent", "紧急"):
            urgency = Urgency.URGENT
        elif urgency_text not in ("normal", "一般"):
            flags.add("urgency_unknown")
    return _build(
        Channel.VISIT,
        problem_source_id(visit_id, n),
        held_at,
        now,
        kind=Kind.COMPLAINT,
        category=category,
        title=title,
        content=content,
        urgency=urgency,
        region_code=region_code,
        enterprise=enterprise,
        contact=None,
        anonymous=False,
        flags=flags,
    )
