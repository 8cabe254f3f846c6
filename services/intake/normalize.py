"""Pure normalization of raw channel messages (contract sections 2, 3.1 and 6) into `complaint.received`.

`normalize(channel, raw_bytes, now)` never raises: it returns the canonical event, or a `Rejection` whose
`reason` a person can read and whose `error_type` is a short bounded code (metrics label, dead letter field).
Hard faults (not UTF-8, not JSON, a required field missing or unparseable, a body over 64 KiB, a required
value outside its list) reject; soft faults (a credit code failing its check character, an unknown region
or category label, an unknown optional value) are accepted with `quality_flags`.

Text rules (shared/text.py, documented in docs/intake.md): free text is kept exactly as given, except NUL and
other C0 control characters (but tab and newlines), which PostgreSQL or consumers cannot take, are removed, and
lone UTF-16 surrogates (possible through JSON `\\ud800` escapes) become U+FFFD; either adds the flag
`text_sanitized`. A source id is never changed: one holding a control character or a lone surrogate is refused
(`"A\\u0000"` must not become the work order `A`). HTML or script in content is kept as text: consumers must
escape it when they render it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar
from uuid import NAMESPACE_URL, uuid5

from shared.domain import (
    CITY_CODE,
    LOCAL_TZ,
    Category,
    Channel,
    Kind,
    Urgency,
    category_from_label,
    category_from_text,
    region_code_of,
)
from shared.events import ComplaintReceived, Contact, Enterprise
from shared.observability import mask_phones_in_text
from shared.text import TEXT_SANITIZED, identifier_problem, sanitize_text

MAX_BODY_BYTES = 64 * 1024
FUTURE_TOLERANCE = timedelta(minutes=10)  # clocks of source systems drift; beyond this a time is flagged
MIN_YEAR, MAX_YEAR = 2000, 2100
TITLE_MAX = 30

T = TypeVar("T")
_SOURCE_ID = re.compile(r"^[^\s\x00-\x1f\x7f]{1,64}$")
_SENTENCE_END = re.compile(r"[。！？!?；;\n]")

USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

HOTLINE_KINDS = {
    "咨询": Kind.CONSULTATION,
    "求助": Kind.REQUEST,
    "投诉": Kind.COMPLAINT,
    "举报": Kind.REPORT,
    "建议": Kind.SUGGESTION,
} | {k.value: k for k in Kind}
HOTLINE_URGENCY = {"一般": Urgency.NORMAL, "紧急": Urgency.URGENT, "normal": Urgency.NORMAL, "urgent": Urgency.URGENT}
ANONYMOUS = {"是": True, "否": False, "true": True, "false": False, "1": True, "0": False}
PRIORITY_URGENCY = {1: Urgency.URGENT, 2: Urgency.NORMAL, 3: Urgency.NORMAL}  # low counts as normal for the clock
SUPERVISOR_SOURCES = ("supervisor", "monitoring_point")


@dataclass(frozen=True)
class Rejection:
    """Why a raw message cannot become a complaint."""

    error_type: str
    reason: str
    source_id: str | None = None


class _Invalid(Exception):  # noqa: N818 - internal control flow, turned into a Rejection
    def __init__(self, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.error_type, self.reason = error_type, reason


@dataclass
class _Flags:
    items: list[str] = field(default_factory=list)

    def add(self, flag: str) -> None:
        if flag not in self.items:
            self.items.append(flag)


def complaint_id_of(channel: Channel, source_id: str) -> str:
    return f"{channel.value}:{source_id}"


def uscc_is_valid(code: str) -> bool:
    """GB 32100-2015: 18 characters from its alphabet; the last is the check character over the first 17."""
    if len(code) != 18 or any(c not in USCC_CHARS for c in code):
        return False
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(code[:17], USCC_WEIGHTS, strict=True))
    return USCC_CHARS[(31 - total % 31) % 31] == code[17]


def normalize_phone(value: str) -> str | None:
    """Digits only: `+86 139-1234-5678` → `13912345678`, `0475-8234567` → `04758234567`; None if not a phone."""
    digits = re.sub(r"\D", "", value)
    if digits.startswith("0086"):
        digits = digits[4:]
    if len(digits) == 13 and digits.startswith("86") and digits[2] == "1":
        digits = digits[2:]
    if len(digits) == 11 and digits.startswith("1"):
        return digits
    if digits.startswith("0") and 10 <= len(digits) <= 12:
        return digits
    if len(digits) == 12 and digits.startswith("86") and digits[2] != "1":  # +86 475 8234567: add the trunk 0
        return "0" + digits[2:]
    return None


def derive_title(content: str) -> str:
    """The first sentence of the content, at most 30 characters."""
    first = _SENTENCE_END.split(content.strip(), maxsplit=1)[0].strip()
    return first[:TITLE_MAX] if first else content.strip()[:TITLE_MAX]


def normalize(channel: Channel, raw: bytes, now: datetime) -> ComplaintReceived | Rejection:
    """The canonical event of a raw message, or why not. Never raises."""
    body = decode_body(raw)
    if isinstance(body, Rejection):
        return body
    parse = _PARSERS.get(channel)
    if parse is None:
        return Rejection("unknown_channel", f"channel {channel.value} has no single-message raw format")
    try:
        return parse(body, now)
    except _Invalid as exc:
        # A reason may quote part of a field; a phone number in it is masked like everywhere people read.
        return Rejection(exc.error_type, mask_phones_in_text(exc.reason), _peek_source_id(channel, body))
    except Exception as exc:  # noqa: BLE001 - a bug must not crash-loop the consumer; it becomes a dead letter
        return Rejection("normalize_failed", f"unexpected error while normalizing: {type(exc).__name__}: {exc}")


def decode_body(raw: bytes) -> dict[str, Any] | Rejection:
    """A raw body as a JSON object, or why not (too large, not UTF-8, not JSON, not an object)."""
    if len(raw) > MAX_BODY_BYTES:
        return Rejection("too_large", f"body is {len(raw)} bytes, over the limit of {MAX_BODY_BYTES} (64 KiB)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("invalid_utf8", f"body is not UTF-8: invalid byte at position {exc.start}")
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        return Rejection("invalid_json", f"body is not JSON: {exc}")
    except RecursionError:
        return Rejection("invalid_json", "body is not usable JSON: nested too deeply")
    if not isinstance(body, dict):
        return Rejection("not_an_object", f"body must be a JSON object, got {_json_type(body)}")
    return body


def read_guarded(
    raw: bytes, now: datetime, read: Callable[[dict[str, Any], datetime], T], id_field: str, what: str
) -> T | Rejection:
    """An HTTP input (a visit, a survey response) read by `read`, or why not; never raises. A refusal names the
    input by its `id_field` when it has a usable one."""
    body = decode_body(raw)
    if isinstance(body, Rejection):
        return body
    try:
        return read(body, now)
    except _Invalid as exc:
        named = body.get(id_field)
        return Rejection(exc.error_type, mask_phones_in_text(exc.reason), named if isinstance(named, str) else None)
    except Exception as exc:  # noqa: BLE001 - a bug answers a clear refusal, never a crash
        return Rejection("normalize_failed", f"unexpected error while reading {what}: {type(exc).__name__}: {exc}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), "null"
    )


def _peek_source_id(channel: Channel, body: Mapping[str, Any]) -> str | None:
    value: Any = None
    if channel is Channel.HOTLINE:
        value = body.get("gdbh")
    elif channel is Channel.COMPLAINT_LINE:
        value = body.get("ticketId")
    elif channel is Channel.PORTAL:
        value = body.get("submissionId")
    else:
        report = body.get("report")
        value = report.get("id") if isinstance(report, dict) else None
    return value if isinstance(value, str) and _SOURCE_ID.match(value) else None


# --- field readers -------------------------------------------------------------------------------------------


def _clean(value: str, flags: _Flags) -> str:
    cleaned, changed = sanitize_text(value)
    if changed:
        flags.add(TEXT_SANITIZED)
    return cleaned


def _text(obj: Mapping[str, Any], key: str, flags: _Flags, *, path: str = "") -> str | None:
    """An optional text field; empty or blank counts as absent. A number is taken as its digits."""
    value = obj.get(key)
    name = f"{path}{key}"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Invalid("invalid_field", f"field {name} must be a string, got {_json_type(value)}")
    text = _clean(str(value), flags).strip()
    return text or None


def _required_text(obj: Mapping[str, Any], key: str, flags: _Flags, *, path: str = "") -> str:
    text = _text(obj, key, flags, path=path)
    if text is None:
        raise _Invalid("missing_field", f"required field {path}{key} is missing or empty")
    return text


def _source_id(obj: Mapping[str, Any], key: str, flags: _Flags, *, path: str = "") -> str:
    """An id is never cleaned: `A\\u0000` cleaned to `A` would merge two work orders into one complaint; and an id is
    text: 123 and "123" must not be two spellings of one work order."""
    raw = obj.get(key)
    if isinstance(raw, int | float | bool):
        raise _Invalid("invalid_field", f"field {path}{key} must be a string, got {_json_type(raw)}")
    if isinstance(raw, str) and (problem := identifier_problem(raw)) is not None:
        raise _Invalid("invalid_field", f"field {path}{key} {problem}: an id must not contain control characters")
    value = _required_text(obj, key, flags, path=path)
    if not _SOURCE_ID.match(value):
        raise _Invalid(
            "invalid_field", f"field {path}{key} must be 1-64 characters without spaces or control characters"
        )
    return value


def _object(obj: Mapping[str, Any], key: str, *, path: str = "") -> Mapping[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Invalid("invalid_field", f"field {path}{key} must be an object, got {_json_type(value)}")
    return value


def _in_range(moment: datetime, field_name: str) -> datetime:
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise _Invalid(
            "invalid_field", f"field {field_name} is out of range ({moment.year} is not {MIN_YEAR}-{MAX_YEAR})"
        )
    return moment.astimezone(UTC)


def _local_time(value: str, field_name: str) -> datetime:
    """`YYYY-MM-DD HH:MM:SS` in the city's local time (a `T` separator or an explicit offset also taken)."""
    try:
        moment = datetime.fromisoformat(value.replace(" ", "T", 1) if " " in value else value)
    except ValueError:
        raise _Invalid(
            "invalid_field", f"field {field_name} {value[:40]!r} is not a time of the form YYYY-MM-DD HH:MM:SS"
        ) from None
    if len(value) < 16:
        raise _Invalid("invalid_field", f"field {field_name} {value[:40]!r} has no time of day")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=LOCAL_TZ)
    return _in_range(moment, field_name)


def _offset_time(value: str, field_name: str) -> datetime:
    """RFC 3339 with an offset; a time without one is refused (whose clock would it be?)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid("invalid_field", f"field {field_name} {value[:40]!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise _Invalid("invalid_field", f"field {field_name} {value[:40]!r} has no UTC offset")
    return _in_range(moment, field_name)


def _received_at(moment: datetime, now: datetime, flags: _Flags) -> datetime:
    if moment > now + FUTURE_TOLERANCE:
        flags.add("received_at_future")
    return moment


def _region(value: str | None, flags: _Flags) -> str:
    if value is None:
        return CITY_CODE
    code = region_code_of(value)
    if code is None:
        flags.add("region_unknown")
        return CITY_CODE
    return code


def _category(labels: list[str], title: str | None, content: str, flags: _Flags) -> Category:
    """A label the input carries wins; else keywords in title and content (contract 6.1)."""
    for label in labels:
        found = category_from_label(label)
        if found is not None:
            return found
    if labels:
        flags.add("category_unmapped")
    return category_from_text(f"{title or ''}\n{content}")


def _enterprise(name: str | None, uscc: str | None, flags: _Flags) -> Enterprise | None:
    if name is None and uscc is None:
        return None
    valid: bool | None = None
    if uscc is not None:
        uscc = uscc.replace(" ", "").upper()
        valid = uscc_is_valid(uscc)
        if not valid:
            flags.add("uscc_invalid")
    return Enterprise(name=name, uscc=uscc, uscc_valid=valid)


def _contact(name: str | None, phone_raw: str | None, flags: _Flags) -> Contact | None:
    phone = None
    if phone_raw is not None:
        phone = normalize_phone(phone_raw)
        if phone is None:
            flags.add("phone_invalid")
    if name is None and phone is None:
        return None
    return Contact(name=name, phone=phone)


def _build(
    channel: Channel,
    source_id: str,
    received_at: datetime,
    now: datetime,
    *,
    kind: Kind,
    category: Category,
    title: str | None,
    content: str,
    urgency: Urgency,
    region_code: str,
    enterprise: Enterprise | None,
    contact: Contact | None,
    anonymous: bool,
    flags: _Flags,
) -> ComplaintReceived:
    complaint_id = complaint_id_of(channel, source_id)
    return ComplaintReceived(
        # Deterministic: the same work order always gets the same event id, wherever and whenever it arrives.
        event_id=uuid5(NAMESPACE_URL, f"complaints:received:{complaint_id}"),
        occurred_at=now,
        complaint_id=complaint_id,
        causation_id=None,
        channel=channel,
        source_id=source_id,
        received_at=received_at,
        kind=kind,
        category=category,
        title=title or derive_title(content),
        content=content,
        urgency=urgency,
        region_code=region_code,
        enterprise=enterprise,
        contact=None if anonymous else contact,
        anonymous=anonymous,
        quality_flags=tuple(flags.items),
    )


# --- channels ------------------------------------------------------------------------------------------------


def normalize_hotline_order(body: Mapping[str, Any], now: datetime) -> ComplaintReceived:
    """12345 hotline work order (工单), pinyin-initial field names (contract 2.1)."""
    flags = _Flags()
    source_id = _source_id(body, "gdbh", flags)
    received_at = _received_at(_local_time(_required_text(body, "ldsj", flags), "ldsj"), now, flags)
    kind_text = _required_text(body, "sqlx", flags)
    kind = HOTLINE_KINDS.get(kind_text)
    if kind is None:
        raise _Invalid("invalid_field", f"field sqlx {kind_text[:20]!r} is not one of 咨询, 求助, 投诉, 举报, 建议")
    content = _required_text(body, "sqnr", flags)
    title = _text(body, "sqbt", flags)
    label = _text(body, "sqfl", flags)
    urgency = Urgency.NORMAL
    if (jjcd := _text(body, "jjcd", flags)) is not None:
        if jjcd in HOTLINE_URGENCY:
            urgency = HOTLINE_URGENCY[jjcd]
        else:
            flags.add("urgency_unknown")
    anonymous = _anonymous(body.get("nm"), flags)
    return _build(
        Channel.HOTLINE,
        source_id,
        received_at,
        now,
        kind=kind,
        category=_category([label] if label else [], title, content, flags),
        title=title,
        content=content,
        urgency=urgency,
        region_code=_region(_text(body, "ssqy", flags), flags),
        enterprise=_enterprise(_text(body, "qymc", flags), _text(body, "tyshxydm", flags), flags),
        contact=_contact(_text(body, "lxr", flags), _text(body, "ldhm", flags), flags),
        anonymous=anonymous,
        flags=flags,
    )


def _anonymous(value: Any, flags: _Flags) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ANONYMOUS:
        return ANONYMOUS[value.strip().lower()]
    # Unknown: err towards protecting the caller's identity.
    flags.add("anonymous_unknown")
    return True


def normalize_complaint_line_ticket(body: Mapping[str, Any], now: datetime) -> ComplaintReceived:
    """Business-environment complaint line ticket, camelCase, epoch milliseconds (contract 2.2)."""
    flags = _Flags()
    source_id = _source_id(body, "ticketId", flags)
    created = body.get("createdAt")
    if created is None:
        raise _Invalid("missing_field", "required field createdAt is missing")
    if isinstance(created, bool) or not isinstance(created, int):
        raise _Invalid(
            "invalid_field", f"field createdAt must be epoch milliseconds (an integer), got {_json_type(created)}"
        )
    try:
        moment = datetime.fromtimestamp(created / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise _Invalid("invalid_field", f"field createdAt {created} is not a usable epoch-milliseconds time") from None
    received_at = _received_at(_in_range(moment, "createdAt"), now, flags)
    content = _required_text(body, "description", flags)
    title = _text(body, "subject", flags)
    reporter = _object(body, "reporter")
    tags = body.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise _Invalid("invalid_field", "field tags must be an array of strings")
    labels = [_clean(t, flags).strip() for t in tags or [] if t.strip()]
    category = _tag_category(labels, title, content, flags)
    urgency = Urgency.NORMAL
    priority = body.get("priority")
    if priority is not None:
        if isinstance(priority, int) and not isinstance(priority, bool) and priority in PRIORITY_URGENCY:
            urgency = PRIORITY_URGENCY[priority]
        else:
            flags.add("priority_unknown")
    kind = _optional_kind(body, flags)
    enterprise = contact = None
    if reporter is not None:
        enterprise = _enterprise(
            _text(reporter, "company", flags, path="reporter."),
            _text(reporter, "creditCode", flags, path="reporter."),
            flags,
        )
        contact = _contact(
            _text(reporter, "name", flags, path="reporter."), _text(reporter, "mobile", flags, path="reporter."), flags
        )
    return _build(
        Channel.COMPLAINT_LINE,
        source_id,
        received_at,
        now,
        kind=kind,
        category=category,
        title=title,
        content=content,
        urgency=urgency,
        region_code=_region(_text(body, "district", flags), flags),
        enterprise=enterprise,
        contact=contact,
        anonymous=reporter is None,
        flags=flags,
    )


def _tag_category(labels: list[str], title: str | None, content: str, flags: _Flags) -> Category:
    """Tags are free words: the first that names a category wins; tags naming none are no fault."""
    for label in labels:
        found = category_from_label(label)
        if found is not None:
            return found
    return category_from_text(f"{title or ''}\n{content}")


def _optional_kind(body: Mapping[str, Any], flags: _Flags) -> Kind:
    """Complaint-line and supervisor inputs are complaints unless a `kind` field says otherwise."""
    value = _text(body, "kind", flags)
    if value is None:
        return Kind.COMPLAINT
    kind = HOTLINE_KINDS.get(value)
    if kind is None:
        flags.add("kind_unknown")
        return Kind.COMPLAINT
    return kind


def normalize_supervisor_report(body: Mapping[str, Any], now: datetime) -> ComplaintReceived:
    """Report of a special supervisor (特邀监督员) or enterprise monitoring point (企业监测点) (contract 2.3)."""
    flags = _Flags()
    report = _object(body, "report")
    if report is None:
        raise _Invalid("missing_field", "required field report is missing")
    source_id = _source_id(report, "id", flags, path="report.")
    received_at = _received_at(
        _offset_time(_required_text(report, "observedAt", flags, path="report."), "report.observedAt"), now, flags
    )
    source = _text(report, "source", flags, path="report.")
    if source is not None and source not in SUPERVISOR_SOURCES:
        flags.add("source_unknown")
    issue = _object(body, "issue") or {}
    summary = _text(issue, "summary", flags, path="issue.")
    detail = _text(issue, "detail", flags, path="issue.")
    if summary is None and detail is None:
        raise _Invalid("missing_field", "required field issue.summary or issue.detail is missing or empty")
    content = detail or summary or ""
    code = _text(issue, "categoryCode", flags, path="issue.")
    company = _object(issue, "enterprise", path="issue.")
    reporter = _object(body, "reporter")
    location = _object(body, "location")
    enterprise = None
    if company is not None:
        enterprise = _enterprise(
            _text(company, "name", flags, path="issue.enterprise."),
            _text(company, "creditCode", flags, path="issue.enterprise."),
            flags,
        )
    contact = None
    if reporter is not None:
        contact = _contact(
            _text(reporter, "name", flags, path="reporter."),
            _text(reporter, "phone", flags, path="reporter.") or _text(reporter, "mobile", flags, path="reporter."),
            flags,
        )
    return _build(
        Channel.SUPERVISOR,
        source_id,
        received_at,
        now,
        kind=_optional_kind(issue, flags),
        category=_category([code] if code else [], summary, detail or "", flags),
        title=summary,
        content=content,
        urgency=Urgency.URGENT if _text(issue, "urgency", flags) in ("urgent", "紧急") else Urgency.NORMAL,
        region_code=_region(_text(location, "division", flags, path="location.") if location else None, flags),
        enterprise=enterprise,
        contact=contact,
        anonymous=False,
        flags=flags,
    )


PORTAL_KINDS: Final = {
    "complaint": Kind.COMPLAINT,
    "suggestion": Kind.SUGGESTION,
    "问题线索": Kind.COMPLAINT,
    "意见建议": Kind.SUGGESTION,
}


def normalize_portal_submission(body: Mapping[str, Any], now: datetime) -> ComplaintReceived:
    """A submission of the online portal's own back end on `intake.portal` (问题线索和意见建议, contract 10.1)."""
    flags = _Flags()
    source_id = _source_id(body, "submissionId", flags)
    received_at = _received_at(_offset_time(_required_text(body, "submittedAt", flags), "submittedAt"), now, flags)
    content = _required_text(body, "content", flags)
    title = _text(body, "title", flags)
    kind = Kind.COMPLAINT
    if (kind_text := _text(body, "kind", flags)) is not None:
        if kind_text not in PORTAL_KINDS:
            raise _Invalid("invalid_field", f"field kind {kind_text[:20]!r} is not complaint or suggestion")
        kind = PORTAL_KINDS[kind_text]
    label = _text(body, "category", flags)
    category = _category([], title, content, flags)
    if label is not None:
        category = _category_code(label) or _category([label], title, content, flags)
    company = _object(body, "enterprise")
    person = _object(body, "contact")
    enterprise = contact = None
    if company is not None:
        enterprise = _enterprise(
            _text(company, "name", flags, path="enterprise."),
            _text(company, "creditCode", flags, path="enterprise."),
            flags,
        )
    if person is not None:
        contact = _contact(
            _text(person, "name", flags, path="contact."), _text(person, "phone", flags, path="contact."), flags
        )
    return _build(
        Channel.PORTAL,
        source_id,
        received_at,
        now,
        kind=kind,
        category=category,
        title=title,
        content=content,
        urgency=Urgency.NORMAL,
        region_code=_region(_text(body, "region", flags), flags),
        enterprise=enterprise,
        contact=contact,
        anonymous=_anonymous(body.get("anonymous"), flags),
        flags=flags,
    )


def _category_code(value: str) -> Category | None:
    """A category code of 3.1 (`financing`), as the portal and visit records send them."""
    try:
        return Category(value.strip())
    except ValueError:
        return None


_PARSERS = {
    Channel.HOTLINE: normalize_hotline_order,
    Channel.COMPLAINT_LINE: normalize_complaint_line_ticket,
    Channel.SUPERVISOR: normalize_supervisor_report,
    Channel.PORTAL: normalize_portal_submission,
}
