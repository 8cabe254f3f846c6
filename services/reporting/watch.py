"""The watch (contract 10.3, 10.4): its own consumer group on complaints.received, which keeps every case's counted
profile, opens the supervision items of the four phenomena and raises early warnings, one transaction per batch;
and the supervision ticker, a periodic task that fires each item's warning and overdue once and recomputes the
`supervision_items_open` gauge. Decisions are in supervision.py and warnings.py (pure)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any, Final

import asyncpg
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from services.reporting import supervision_store, warning_store
from services.reporting.supervision import (
    CLOCK,
    OPEN_STATUSES,
    RULE,
    DueRule,
    SupervisionItem,
    changed_event,
    due_firings,
    open_item,
    phenomenon_of,
)
from services.reporting.supervision import bulletin_section as supervision_section
from services.reporting.warnings import (
    HISTORY_WEEKS,
    EarlyWarning,
    WatchedCase,
    enterprise_key,
    enterprise_warnings,
    raised_event,
    rising_warnings,
    week_label,
    week_start,
)
from services.reporting.warnings import bulletin_section as warnings_section
from services.reporting.warnings import preload as preload_tail_probability
from services.reporting.worker import FETCH_BYTES_PER_PARTITION
from shared.calendar import WorkingCalendar, calendar_from_settings
from shared.deadletters import dead_letter_message, store_dead_letters
from shared.events import (
    ComplaintReceived,
    DeadLetter,
    Phenomenon,
    SupervisionChange,
    SupervisionChanged,
    WarningRaised,
)
from shared.kafka import RawRecord, dead_letter_of
from shared.outbox import OutboxMessage, enqueue
from shared.service import ServiceContext, batch_subscriber, consume_batch, give_up_as_dead_letter
from shared.settings import Settings

log = logging.getLogger(__name__)
SERVICE: Final = "reporting"
GROUP: Final = "reporting-watch"
FIRE_BATCH: Final = 500


def due_rule(settings: Settings) -> DueRule:
    return DueRule(settings.supervision_due_amount, settings.supervision_due_unit, settings.supervision_warn_ratio)


def build_calendar(settings: Settings) -> WorkingCalendar:
    """The SLA clock's calendar from the same settings and code (shared.calendar.calendar_from_settings); an unknown
    year is the clock's to report and count, so it is only logged here."""

    def unknown_year(year: int) -> None:
        log.warning("supervision due times: no published schedule for this year", extra={"year": year})

    return calendar_from_settings(settings, on_unknown_year=unknown_year)


def watched(event: ComplaintReceived) -> WatchedCase:
    enterprise = event.enterprise
    return WatchedCase(
        complaint_id=event.complaint_id,
        received_at=event.received_at,
        region_code=event.region_code,
        category=event.category.value,
        enterprise=enterprise_key(enterprise.uscc, enterprise.name) if enterprise else None,
    )


def _supervision_message(topic: str, event: SupervisionChanged) -> OutboxMessage:
    return OutboxMessage(topic, event.item_id.encode(), event.to_json_bytes())


def _warning_message(topic: str, event: WarningRaised) -> OutboxMessage:
    return OutboxMessage(topic, event.warning_id.encode(), event.to_json_bytes())


async def find_warnings(conn: asyncpg.Connection[Any], new_cases: Sequence[WatchedCase]) -> list[EarlyWarning]:
    """Both rules for the (key, week) pairs the new cases add to, on the counts stored now (the new cases in)."""
    if not new_cases:
        return []
    touched = {(key, case.week) for case in new_cases for key in case.counted_keys()}
    first = min(case.week for case in new_cases) - timedelta(weeks=HISTORY_WEEKS)
    last = max(case.week for case in new_cases)
    counts, cases_of, history = await warning_store.weekly_counts(conn, {k for k, _ in touched}, first, last)
    return rising_warnings(touched, counts, cases_of) + enterprise_warnings(new_cases, history)


class Watch:
    """The consume side: a batch of complaint.received in, one transaction out."""

    def __init__(self, ctx: ServiceContext, calendar: WorkingCalendar, rule: DueRule) -> None:
        self.ctx, self.calendar, self.rule = ctx, calendar, rule

    def decode(self, record: RawRecord, now: datetime) -> ComplaintReceived | DeadLetter:
        try:
            return ComplaintReceived.model_validate_json(record.value)
        except ValidationError as exc:
            reason = f"not a valid ComplaintReceived: {exc.errors(include_url=False, include_input=False)}"
            return dead_letter_of(record, "invalid_event", reason, now, service=SERVICE)

    def open_items(self, events: Sequence[ComplaintReceived]) -> list[SupervisionItem]:
        """立项 by rule: each case of the four categories opens an item, counted from when intake took it."""
        items = []
        for event in events:
            phenomenon = phenomenon_of(event.category)
            if phenomenon is not None:
                item = open_item(
                    event.complaint_id,
                    phenomenon,
                    event.occurred_at,
                    by=RULE,
                    reason=f"{event.title}"[:200] or None,
                    rule=self.rule,
                    calendar=self.calendar,
                )
                items.append(item)
        return items

    async def ingest(self, records: list[RawRecord]) -> None:
        ctx = self.ctx
        now = ctx.clock()
        events: list[ComplaintReceived] = []
        letters: list[DeadLetter] = []
        for record in records:
            decoded = self.decode(record, now)
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
            else:
                events.append(decoded)
        by_id = {e.complaint_id: e for e in events}
        cases = [watched(e) for e in by_id.values()]
        async with ctx.pool.acquire() as conn, conn.transaction():
            new_ids = await warning_store.insert_cases(conn, cases, now)
            new_events = [by_id[cid] for cid in sorted(new_ids)]
            items = self.open_items(new_events)
            opened = await supervision_store.insert_items(conn, items, now)
            outgoing = [
                _supervision_message(
                    ctx.topics.supervision,
                    changed_event(
                        item,
                        SupervisionChange.OPENED,
                        at=now,
                        by=RULE,
                        causation_id=str(by_id[item.complaint_ids[0]].event_id),
                    ),
                )
                for item in items
                if item.item_id in opened
            ]
            found = await find_warnings(conn, [c for c in cases if c.complaint_id in new_ids])
            raised = await warning_store.insert_warnings(conn, found, now)
            fresh = [w for w in found if w.warning_id in raised]
            outgoing += [_warning_message(ctx.topics.alerts, raised_event(w, now)) for w in fresh]
            new_letters = await store_dead_letters(conn, letters)
            outgoing += [dead_letter_message(d, ctx.topics.dlq) for d in new_letters]
            await enqueue(conn, outgoing)
        for warning in fresh:
            ctx.metrics.early_warnings.labels(warning.kind.value).inc()
            log.info(
                "early warning raised",
                extra={"warning_id": warning.warning_id, "kind": warning.kind.value, "count": warning.count},
            )
        for letter in new_letters:
            ctx.metrics.dead_letters.labels(letter.source_topic).inc()
        if outgoing:
            ctx.relay.wake()

    async def give_up(self, record: RawRecord, exc: BaseException, attempts: int) -> None:
        """A record that failed for good for a reason other than its data: a dead letter, counted."""
        await give_up_as_dead_letter(self.ctx, record, exc, attempts, service=SERVICE)

    async def on_batch(self, msg: Any) -> None:
        await consume_batch(
            self.ctx, msg, self.ingest, self.give_up, group=f"{self.ctx.settings.topic_prefix}{GROUP}", where=GROUP
        )


class SupervisionTicker:
    """The periodic task: fires due warnings and overdues (claimed with SKIP LOCKED, so replicas never fire one twice,
    and marked in the same transaction as their outbox rows, so each fires once), then recomputes the gauge."""

    def __init__(self, ctx: ServiceContext, interval_s: float) -> None:
        self.ctx, self.interval_s = ctx, interval_s
        self._task: asyncio.Task[None] | None = None

    async def fire_due(self) -> int:
        """One round: every item due now fired, in batches; returns how many changes went out."""
        ctx = self.ctx
        total = 0
        while True:
            now = ctx.clock()
            async with ctx.pool.acquire() as conn, conn.transaction():
                claimed = await supervision_store.claim_due(conn, now, FIRE_BATCH)
                outgoing = []
                for item in claimed:
                    fired, changes = due_firings(item, now)
                    await supervision_store.save_item(conn, fired, now)
                    outgoing += [
                        _supervision_message(ctx.topics.supervision, changed_event(fired, c, at=now, by=CLOCK))
                        for c in changes
                    ]
                await enqueue(conn, outgoing)
            total += len(outgoing)
            if outgoing:
                ctx.relay.wake()
            if len(claimed) < FIRE_BATCH:
                return total

    async def refresh_gauge(self) -> None:
        counts = await supervision_store.count_items(self.ctx.pool)
        gauge = self.ctx.metrics.supervision_items_open
        for phenomenon in Phenomenon:
            for status in OPEN_STATUSES:
                gauge.labels(phenomenon.value, status.value).set(counts.get((phenomenon.value, status.value), 0))

    async def run(self) -> None:
        while True:
            try:
                fired = await self.fire_due()
                if fired:
                    log.info("supervision due times fired", extra={"changes": fired})
                await self.refresh_gauge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database away: the next round tries again, nothing is lost
                self.ctx.metrics.transient_retries.labels("supervision-ticker").inc()
                log.warning("supervision ticker round failed, will retry", extra={"error": repr(exc)[:300]})
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="supervision-ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def subscribe(ctx: ServiceContext, watch: Watch) -> None:
    """The watch's own subscriber on complaints.received, in the consumer group `reporting-watch`, and the two
    topics it writes (declared for the AsyncAPI document)."""
    t = ctx.topics
    subscriber = batch_subscriber(
        ctx,
        t.received,
        group_id=ctx.group(GROUP, t.received),
        title=f"reporting-watch:{t.received}",
        description="complaint.received (3.1): supervision items of the four phenomena (10.3), weekly counts and "
        "early warnings (10.4).",
        max_partition_fetch_bytes=FETCH_BYTES_PER_PARTITION,
    )

    async def handler(msg: KafkaMessage) -> None:
        await watch.on_batch(msg)

    subscriber(handler)
    ctx.broker.publisher(
        t.supervision,
        schema=SupervisionChanged,
        title="complaints.supervision",
        description="supervision.changed (10.3): every change of a supervision item, keyed by item_id.",
    )
    ctx.broker.publisher(
        t.alerts,
        schema=WarningRaised,
        title="complaints.alerts",
        description="warning.raised (10.4): an early warning, once per key and week, keyed by warning_id.",
    )


async def setup_watch(ctx: ServiceContext) -> SupervisionTicker:
    """Wire the watch into the service (called from app.setup); the ticker is started and returned for teardown."""
    settings = ctx.settings
    await asyncio.to_thread(preload_tail_probability)  # not on the event loop at the first warning
    calendar = build_calendar(settings)
    rule = due_rule(settings)
    watch = Watch(ctx, calendar, rule)
    ctx.extras.update(supervision_calendar=calendar, supervision_rule=rule, watch=watch)
    subscribe(ctx, watch)
    for kind in ("rising", "enterprise_repeat"):
        ctx.metrics.early_warnings.labels(kind)  # both series from the start, at 0
    ticker = SupervisionTicker(ctx, settings.supervision_interval_s)
    ctx.extras["supervision_ticker"] = ticker
    ticker.start()
    return ticker


async def stop_watch(ctx: ServiceContext) -> None:
    ticker = ctx.extras.get("supervision_ticker")
    if isinstance(ticker, SupervisionTicker):
        await ticker.stop()


async def bulletin_sections(
    db: asyncpg.Connection[Any] | asyncpg.Pool[Any], first_day: date, last_day: date, now: datetime
) -> list[tuple[str, str]]:
    """The bulletin's two sections for a month (its first and last local day): supervision items by phenomenon
    and status (as of now), and the warnings of the weeks that touch the month. For BulletinData.extra_sections."""
    counts = await supervision_store.count_items(db)
    overdue = await supervision_store.count_overdue_open(db, now)
    warnings = await warning_store.list_warnings(db, week_start_of(first_day), last_day, None)
    rows = [{**w, "week": week_label(w["week_start"])} for w in warnings]
    return [supervision_section(counts, overdue), warnings_section(rows)]


def week_start_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


__all__ = ["GROUP", "SupervisionTicker", "Watch", "bulletin_sections", "setup_watch", "stop_watch", "week_start"]
