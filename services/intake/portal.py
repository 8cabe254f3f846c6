"""The portal's pure rules (问题线索和意见建议征集, contract 10.1): reading a submission (a form or JSON with the same
names), the tracking number, the per-address sliding-minute limit, the client address behind named proxies, and the
fingerprint that makes the same submission from the same address within 10 minutes one. No I/O here; time comes in.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qsl

from services.intake.normalize import _build, _clean, _Flags, normalize_phone, uscc_is_valid
from shared.domain import Category, Channel, Kind, Urgency, category_from_label, region_code_of
from shared.events import ComplaintReceived, Contact, Enterprise

SAME_SUBMISSION_WINDOW: Final = timedelta(minutes=10)
RATE_WINDOW_S: Final = 60.0
TRACKING_PREFIX: Final = "PT"
TRACKING_NUMBER: Final = re.compile(r"^PT\d{8}\d{6,9}$")
FIELDS: Final = (
    "enterprise_name",
    "credit_code",
    "region",
    "category",
    "kind",
    "title",
    "content",
    "contact_name",
    "contact_phone",
    "anonymous",
)
HONEYPOT: Final = "website"
MAX_LENGTH: Final = {
    "enterprise_name": 100,
    "credit_code": 30,
    "region": 30,
    "category": 30,
    "kind": 20,
    "title": 100,
    "content": 5000,
    "contact_name": 50,
    "contact_phone": 30,
}
KINDS: Final = {
    "complaint": Kind.COMPLAINT,
    "suggestion": Kind.SUGGESTION,
    "问题线索": Kind.COMPLAINT,
    "意见建议": Kind.SUGGESTION,
}
TRUE_WORDS: Final = {
    "true": True,
    "on": True,
    "1": True,
    "yes": True,
    "是": True,
    "false": False,
    "0": False,
    "no": False,
    "否": False,
}


@dataclass(frozen=True)
class FieldError:
    """A submission refused for one field: `reason` for machines and logs, `message` (Chinese) beside the field."""

    field: str
    reason: str
    message: str
    error: str = "invalid_field"


@dataclass(frozen=True)
class PortalForm:
    """A submission that passed every check."""

    enterprise_name: str
    credit_code: str | None
    region_code: str
    category: Category
    kind: Kind
    title: str
    content: str
    contact_name: str | None
    contact_phone: str | None
    anonymous: bool
    quality_flags: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """Enterprise, title and content: what makes two submissions the same one."""
        text = "\x1f".join((self.enterprise_name, self.title, self.content))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def form_fields(raw: bytes) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body as its fields (the last value of a repeated name wins)."""
    text = raw.decode("utf-8", errors="replace")
    return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=100))


def honeypot_filled(values: Mapping[str, Any]) -> bool:
    """The hidden `website` field people never see, so never fill; robots filling every field do."""
    value = values.get(HONEYPOT)
    return value not in (None, "", False)


def _missing(field: str, label: str) -> FieldError:
    return FieldError(field, f"required field {field} is missing or empty", f"请填写{label}", "missing_field")


def read_submission(values: Mapping[str, Any]) -> PortalForm | FieldError:
    """Check a submission field by field (in the form's order); the first fault found is the answer."""
    flags = _Flags()
    text: dict[str, str | None] = {}
    for name in FIELDS:
        if name == "anonymous":
            continue
        value = values.get(name)
        if value is None:
            text[name] = None
            continue
        if not isinstance(value, str):
            return FieldError(name, f"field {name} must be a string", "格式不正确")
        cleaned = _clean(value, flags).strip()
        if len(cleaned) > MAX_LENGTH[name]:
            return FieldError(
                name, f"field {name} is longer than {MAX_LENGTH[name]} characters", f"不能超过{MAX_LENGTH[name]}个字"
            )
        text[name] = cleaned or None
    name_ = text["enterprise_name"]
    if name_ is None:
        return _missing("enterprise_name", "企业名称")
    code = text["credit_code"]
    if code is not None:
        code = code.replace(" ", "").upper()
        if not uscc_is_valid(code):
            return FieldError(
                "credit_code",
                "field credit_code is not a valid unified social credit code (18 characters, GB 32100-2015 check)",
                "统一社会信用代码不正确：应为18位，且校验位相符",
            )
    if text["region"] is None:
        return _missing("region", "所属地区")
    region = region_code_of(text["region"])
    if region is None:
        return FieldError("region", "field region is not a division of 通辽市 (contract 6)", "请选择通辽市的地区")
    if text["category"] is None:
        return _missing("category", "问题类别")
    category = _category(text["category"])
    if category is None:
        return FieldError("category", "field category is not a category code of contract 3.1", "请选择问题类别")
    if text["kind"] is None:
        return _missing("kind", "类型")
    kind = KINDS.get(text["kind"])
    if kind is None:
        return FieldError("kind", "field kind must be complaint or suggestion", "请选择问题线索或意见建议")
    if text["title"] is None:
        return _missing("title", "标题")
    if text["content"] is None:
        return _missing("content", "具体内容")
    phone = None
    if text["contact_phone"] is not None:
        phone = normalize_phone(text["contact_phone"])
        if phone is None:
            return FieldError(
                "contact_phone", "field contact_phone is not a phone number", "请填写正确的手机或固定电话"
            )
    anonymous = _flag(values.get("anonymous"))
    if anonymous is None:
        return FieldError("anonymous", "field anonymous must be true or false", "格式不正确")
    return PortalForm(
        enterprise_name=name_,
        credit_code=code,
        region_code=region,
        category=category,
        kind=kind,
        title=text["title"],
        content=text["content"],
        contact_name=text["contact_name"],
        contact_phone=phone,
        anonymous=anonymous,
        quality_flags=tuple(flags.items),
    )


def _category(value: str) -> Category | None:
    try:
        return Category(value)
    except ValueError:
        return category_from_label(value)


def _flag(value: Any) -> bool | None:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return TRUE_WORDS.get(value.strip().lower())
    return None


def same_submission_since(now: datetime) -> datetime:
    """The earliest time a submission counts as the same one now: within 10 minutes, the boundary excluded."""
    return now - SAME_SUBMISSION_WINDOW


def tracking_number(local_day: date, seq: int) -> str:
    """`PT` + the local date + the day's sequence, six digits (more past a million a day): PT20261126000123."""
    return f"{TRACKING_PREFIX}{local_day:%Y%m%d}{seq:06d}"


def portal_complaint(form: PortalForm, number: str, now: datetime) -> ComplaintReceived:
    """The `complaint.received` of a taken submission; its tracking number is its source id."""
    flags = _Flags(list(form.quality_flags))
    enterprise = Enterprise(
        name=form.enterprise_name, uscc=form.credit_code, uscc_valid=True if form.credit_code else None
    )
    contact = None
    if form.contact_name or form.contact_phone:
        contact = Contact(name=form.contact_name, phone=form.contact_phone)
    return _build(
        Channel.PORTAL,
        number,
        now,
        now,
        kind=form.kind,
        category=form.category,
        title=form.title,
        content=form.content,
        urgency=Urgency.NORMAL,
        region_code=form.region_code,
        enterprise=enterprise,
        contact=contact,
        anonymous=form.anonymous,
        flags=flags,
    )


# --- who is asking, and how often ----------------------------------------------------------------------------


def trusted_networks(setting: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`PORTAL_TRUSTED_PROXIES`: addresses or networks, separated by commas (`10.0.0.5, 10.1.0.0/16`)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in setting.split(",") if part.strip())


def _trusted(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: str | None, proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> str:
    """The socket's peer; only when the peer is a named proxy, the nearest X-Forwarded-For hop that is not one."""
    if not peer:
        return "unknown"
    if not forwarded_for or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop[:64]
    return hops[0][:64] if hops else peer


class SlidingWindowLimiter:
    """At most `limit` hits per key in any `window_s` seconds. Time (monotonic seconds) is passed in.

    Kept in the process: with several intake replicas each counts its own share (docs/portal.md)."""

    def __init__(self, limit: int, window_s: float = RATE_WINDOW_S, max_keys: int = 100_000) -> None:
        self.limit, self.window_s, self.max_keys = limit, window_s, max_keys
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, now: float) -> int | None:
        """Count a hit; None when allowed, else the whole seconds to wait (for Retry-After)."""
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._sweep(now)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(1, math.ceil(hits[0] + self.window_s - now))
        hits.append(now)
        return None

    def _sweep(self, now: float) -> None:
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window_s]:
            del self._hits[key]
        if len(self._hits) >= self.max_keys:  # still full of live keys: forget the oldest half rather than grow
            for key in sorted(self._hits, key=lambda k: self._hits[k][-1])[: self.max_keys // 2]:
                del self._hits[key]
