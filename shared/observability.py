"""Metrics (contract section 9), structured logs with phone numbers masked, and the health checks' shape.

One registry per process, made by the service's lifespan; labels are bounded, never a complaint id.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_MOBILE = re.compile(r"(?<![\d])(?:\+?86[- ]?)?(1[3-9]\d)[- ]?(\d{4})[- ]?(\d{4})(?![\d])")
_LANDLINE = re.compile(r"(?<![\d])(0\d{2,3})-?(\d{3,4})(\d{4})(?![\d])")


def mask_phone(phone: str | None) -> str | None:
    """`13912345678` → `139****5678`; `04758234567` → `0475****567`: for logs, reports and dead letters."""
    if phone is None:
        return None
    digits = re.sub(r"\D", "", phone)
    if len(digits) == 11 and digits.startswith("1"):
        return f"{digits[:3]}****{digits[-4:]}"
    if len(digits) >= 8:
        return f"{digits[:4]}****{digits[-3:]}"
    return "****"


def mask_phones_in_text(text: str) -> str:
    """Every phone number inside free text, masked (mobile numbers in any common spelling, landlines)."""
    text = _MOBILE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)
    return _LANDLINE.sub(lambda m: f"{m.group(1)}****{m.group(3)[-3:]}", text)


class JsonFormatter(logging.Formatter):
    """One JSON object a line; every phone number in the message and extras masked."""

    _SKIP = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._SKIP and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return mask_phones_in_text(json.dumps(entry, ensure_ascii=False, default=str))


_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if text == "" or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class MaskingTextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value …`: the extra fields shown after the message (quoted when they hold
    spaces), every phone number in the line masked."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{key}={_text_value(value)}"
            for key, value in record.__dict__.items()
            if key not in _RECORD_FIELDS and not key.startswith("_")
        ]
        if extras:
            head, sep, tail = line.partition("\n")  # a traceback stays below the fields
            line = f"{head} {' '.join(extras)}{sep}{tail}"
        return mask_phones_in_text(line)


class RepeatFilter(logging.Filter):
    """At most one record per `interval_s` for each (logger, message template) that reports a fault: a record
    with an `error` field, or any warning or error of the Kafka client (which logs once per connection
    attempt). The next one shown after a quiet spell says how many were held back (`repeated=N`). Records
    about data (a dead letter, a fact not applied) are each about another message and always pass."""

    CLIENT_LOGGERS = ("aiokafka", "kafka")

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def _limited(self, record: logging.LogRecord) -> bool:
        if "error" in record.__dict__:
            return True
        return record.levelno >= logging.WARNING and record.name.split(".")[0] in self.CLIENT_LOGGERS

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._limited(record):
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.repeated = held
        if len(self._last) > 1000:  # bounded: templates are few, but never grow without end
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval_s}
        return True


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Configure the root logger once per process (idempotent). Faults that repeat are shown once per 10 s."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else MaskingTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "faststream", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # uvicorn installs handlers of its own (plain text, unmasked) on its loggers: their lines go through ours instead.
    for own in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(own)
        logger.handlers[:] = []
        logger.propagate = True


# Contract section 9: each metric's name as served (counters with `_total`) → the services that serve it.
# "*" is every service. The gauges marked (db) are recomputed from the database, so every replica shows the
# whole figure: aggregate them with max(), never sum().
CONTRACT_METRICS: dict[str, tuple[str, ...]] = {
    "complaints_received_total": ("intake",),
    "complaints_rejected_total": ("intake",),
    "complaints_assigned_total": ("routing",),
    "complaints_returned_total": ("routing",),
    "sla_warnings_total": ("sla",),
    "sla_breaches_total": ("sla",),
    "complaints_open": ("routing",),  # (db)
    "sla_overdue_open": ("sla",),  # (db)
    "intake_to_assignment_seconds": ("routing",),
    "consumer_lag_messages": ("*",),
    "outbox_pending_messages": ("*",),  # (db)
    "dead_letters_total": ("*",),
    "sla_calendar_year_missing": ("sla",),
    "early_warnings_total": ("reporting",),
    "supervision_items_open": ("reporting",),  # (db)
}
# Named by the contract but not served yet (none left since supervision items and early warnings landed).
NOT_YET_SERVED: tuple[str, ...] = ()


class Metrics:
    """The contract's metrics in one registry per process. A service updates the ones that are its own."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter("complaints_received", "Complaints accepted by intake.", ["channel"], registry=r)
        self.rejected = Counter(
            "complaints_rejected", "Raw messages refused by intake.", ["channel", "reason"], registry=r
        )
        self.duplicates = Counter(
            "complaints_duplicates", "Raw messages that repeated a known complaint.", ["channel"], registry=r
        )
        self.assigned = Counter("complaints_assigned", "Assignments made.", ["department", "level"], registry=r)
        self.returned = Counter("complaints_returned", "Returns (退单).", ["department", "reason_code"], registry=r)
        self.sla_warnings = Counter("sla_warnings", "SLA warnings fired.", ["stage", "department"], registry=r)
        self.sla_breaches = Counter("sla_breaches", "SLA breaches fired.", ["stage", "department"], registry=r)
        self.sla_met = Counter(
            "sla_deadlines_met",
            "Deadlines met in time (the on-time figure's numerator).",
            ["stage", "department"],
            registry=r,
        )
        self.complaints_open = Gauge("complaints_open", "Open cases.", ["department", "state"], registry=r)
        self.sla_overdue_open = Gauge(
            "sla_overdue_open", "Open overdue deadlines.", ["department", "stage"], registry=r
        )
        self.intake_to_assignment = Histogram(
            "intake_to_assignment_seconds",
            "From the source's receipt to the assignment.",
            ["channel"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "consumer_lag_messages", "Messages behind the log end.", ["group", "topic"], registry=r
        )
        self.outbox_pending = Gauge("outbox_pending_messages", "Rows waiting in the outbox.", ["service"], registry=r)
        self.dead_letters = Counter("dead_letters", "Dead letters written.", ["source_topic"], registry=r)
        self.calendar_year_missing = Gauge(
            "sla_calendar_year_missing", "1 when a year's holiday schedule is unknown.", ["year"], registry=r
        )
        self.early_warnings = Counter(
            "early_warnings", "Early warnings raised (contract 10.4), once per key and week.", ["kind"], registry=r
        )
        self.supervision_items_open = Gauge(
            "supervision_items_open",
            "Supervision items not concluded (contract 10.3), from the database.",
            ["phenomenon", "status"],
            registry=r,
        )
        self.published = Counter("outbox_published_messages", "Messages published by the relay.", ["topic"], registry=r)
        self.batch_seconds = Histogram(
            "consumer_batch_seconds",
            "Time to process one consumed batch, commit included.",
            ["group"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.batch_records = Histogram(
            "consumer_batch_records",
            "Records in one consumed batch.",
            ["group"],
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
            registry=r,
        )
        self.transient_retries = Counter(
            "transient_retries", "Retries after a passing fault (database or broker).", ["where"], registry=r
        )
