"""The sla service's edges without I/O: its settings, the policy file, the calendar it builds, how it reads records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka.structs import TopicPartition
from prometheus_client import generate_latest

from services.sla.app import ClockConsumer, SlaSettings, build_calendar, dead_letter_of, load_policy
from services.sla.clockwork import FactKind
from services.sla.policy import SlaPolicy, Window, WindowUnit
from services.sla.scheduler import BreachHorizon, FireReport, Scheduler
from services.sla.store import policy_id_of
from shared.calendar import END_OF_DAY, LOCAL_TZ
from shared.domain import Category, Channel, Kind, Urgency
from shared.events import CaseState, ComplaintReceived, DeadLetter, LifecycleChanged
from shared.events.sla import Stage
from shared.kafka import RawRecord
from shared.observability import Metrics
from shared.settings import Settings
from shared.topics import Topics

MON = datetime(2026, 3, 2, 9, tzinfo=LOCAL_TZ)


def test_settings_come_from_sla_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("SLA_POLICY", "/etc/sla.yaml")
    monkeypatch.setenv("SLA_WORKING_HOURS", "00:00-24:00")
    monkeypatch.setenv("SLA_POLL_INTERVAL_S", "0.5")
    monkeypatch.setenv("SLA_BATCH_SIZE", "250")
    monkeypatch.setenv("SLA_LATE_AFTER_S", "5")
    cfg = SlaSettings()
    assert (cfg.policy, cfg.poll_interval_s, cfg.batch_size, cfg.late_after_s) == (Path("/etc/sla.yaml"), 0.5, 250, 5.0)
    assert Settings().sla_working_hours == "00:00-24:00", "one setting, read by the clock and by reporting alike"


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SLA_POLICY", "SLA_WORKING_HOURS", "SLA_BATCH_SIZE", "SLA_POLL_INTERVAL_S", "SLA_LATE_AFTER_S"):
        monkeypatch.delenv(name, raising=False)
    cfg = SlaSettings()
    assert cfg.policy is None
    assert Settings().sla_working_hours == "08:30-12:00,13:30-17:30"
    assert cfg.batch_size == 1000
    assert cfg.parallel_rounds == 2


def test_policy_file_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "policy.yaml"
    yaml_file.write_text(
        "accept: {unit: hours, amount: 3}\n"
        "by_category:\n  financing:\n    resolve: {unit: days, amount: 3}\n"
        "by_urgency:\n  urgent:\n    resolve: {unit: days, amount: 1}\n",
        encoding="utf-8",
    )
    policy = load_policy(yaml_file)
    assert policy.window_for(Stage.ACCEPT, Category.OTHER, Urgency.NORMAL) == Window.working_hours(3)
    assert policy.window_for(Stage.RESOLVE, Category.FINANCING, Urgency.NORMAL) == Window.working_days(3)
    json_file = tmp_path / "policy.json"
    json_file.write_text(json.dumps({"callback": {"unit": "seconds", "amount": 10}}), encoding="utf-8")
    assert load_policy(json_file).callback == Window(unit=WindowUnit.SECONDS, amount=10)
    assert load_policy(None) == SlaPolicy()
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert load_policy(empty) == SlaPolicy()


@pytest.mark.parametrize(
    ("text", "message"),
    [("accept: {unit: weeks, amount: 1}", "not a valid policy"), ("accept: [", "cannot read"), (None, "cannot read")],
)
def test_bad_policy_file_is_refused_at_start(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "policy.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_policy(path)


def test_policy_identity_is_its_content() -> None:
    assert policy_id_of(SlaPolicy()) == policy_id_of(SlaPolicy())
    assert policy_id_of(SlaPolicy()) != policy_id_of(SlaPolicy(accept=Window.working_hours(3)))


def test_calendar_from_settings_with_overrides_and_all_day_hours(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text('holidays: ["2027-01-01"]\nworkdays: ["2027-02-20"]\n', encoding="utf-8")
    metrics = Metrics("sla")
    calendar = build_calendar(Settings(sla_calendar_overrides=overrides, sla_working_hours="00:00-24:00"), metrics)
    assert calendar.hours.periods == ((time(0), END_OF_DAY),)
    assert calendar.is_working_day(datetime(2027, 2, 20).date())
    assert not calendar.is_working_day(datetime(2027, 1, 1).date())
    assert calendar.is_working_day(datetime(2031, 3, 3).date())  # unknown year: weekdays work
    text = generate_latest(metrics.registry).decode()
    assert 'sla_calendar_year_missing{year="2031"} 1.0' in text
    assert 'year="2027"' not in text


def test_unreadable_overrides_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SLA_CALENDAR_OVERRIDES"):
        build_calendar(Settings(sla_calendar_overrides=tmp_path / "missing.yaml"), Metrics("sla"))


def consumer() -> ClockConsumer:
    ctx = SimpleNamespace(topics=Topics("t."))
    return ClockConsumer(
        cast(Any, ctx),
        rules=cast(Any, None),
        policy=SlaPolicy(),
        policy_id="p",
        scheduler=cast(Any, None),
        facts_counter=cast(Any, None),
    )


def record(topic: str, value: bytes, offset: int = 7) -> RawRecord:
    return RawRecord(topic=topic, partition=1, offset=offset, key=b"hotline:X", value=value)


def test_records_become_facts_dead_letters_or_nothing() -> None:
    reader, topics = consumer(), Topics("t.")
    received = ComplaintReceived(
        occurred_at=MON, complaint_id="hotline:X", channel=Channel.HOTLINE, source_id="X", received_at=MON,
        kind=Kind.COMPLAINT, category=Category.OTHER, title="t", content="c", urgency=Urgency.NORMAL,
        region_code="150500",
    )  # fmt: skip
    fact = reader.decode(record(topics.received, received.to_json_bytes()), MON)
    assert not isinstance(fact, DeadLetter)
    assert fact is not None
    assert fact.kind is FactKind.RECEIVED
    progress = LifecycleChanged(
        occurred_at=MON, complaint_id="hotline:X", from_state=CaseState.IN_PROGRESS,
        to_state=CaseState.IN_PROGRESS, cause="progress",
    )  # fmt: skip
    assert reader.decode(record(topics.lifecycle, progress.to_json_bytes()), MON) is None
    letter = reader.decode(record(topics.assigned, b'{"complaint_id": "hotline:X"}'), MON)
    assert isinstance(letter, DeadLetter)
    assert (letter.error_type, letter.service, letter.source_offset) == ("invalid_event", "sla", 7)
    assert letter.payload() == b'{"complaint_id": "hotline:X"}'
    not_json = reader.decode(record(topics.lifecycle, b"\xff\xfe"), MON)
    assert isinstance(not_json, DeadLetter)
    stranger = reader.decode(record("t.somewhere.else", b"{}"), MON)
    assert isinstance(stranger, DeadLetter)
    assert stranger.error_type == "unknown_topic"


def test_dead_letter_ids_follow_the_record_and_mask_phones() -> None:
    first = dead_letter_of(record("t.x", b"1"), "invalid_event", "call 13912345678", MON)
    again = dead_letter_of(record("t.x", b"1"), "invalid_event", "call 13912345678", MON)
    other = dead_letter_of(record("t.x", b"1", offset=8), "invalid_event", "x", MON)
    assert first.dead_letter_id == again.dead_letter_id != other.dead_letter_id
    assert "13912345678" not in first.reason


def test_fire_report_counts() -> None:
    report = FireReport(claimed=3, warnings=1, breaches=2, lateness_s=[0.1, 0.2, 0.3])
    assert report.fired == 3
    assert FireReport().fired == 0


async def test_scheduler_wake_only_for_earlier_deadlines() -> None:
    scheduler = Scheduler(
        cast(Any, None), sla_topic="t", metrics=Metrics("sla"), health=cast(Any, None), clock=lambda: MON,
        late_after=MON - MON,
    )  # fmt: skip
    scheduler._sleeping_until = datetime(2026, 3, 2, 2, tzinfo=UTC)
    scheduler.wake(datetime(2026, 3, 2, 3, tzinfo=UTC))
    assert not scheduler._wakeup.is_set()
    scheduler.wake(datetime(2026, 3, 2, 1, tzinfo=UTC))
    assert scheduler._wakeup.is_set()
    scheduler._wakeup.clear()
    scheduler._sleeping_until = None  # in a round: any wake-up is kept for after it
    scheduler.wake(datetime(2030, 1, 1, tzinfo=UTC))
    assert scheduler._wakeup.is_set()


def test_breach_horizon_moves_only_when_the_group_has_read_what_was_published_by_then() -> None:
    a, b = TopicPartition("t.complaints.lifecycle", 0), TopicPartition("t.complaints.assigned", 3)
    grace = timedelta(seconds=5)
    horizon = BreachHorizon(grace)
    assert horizon() is None  # nothing known yet: every breach waits (a restart, before the consumers caught up)
    t = datetime(2026, 3, 2, 2, tzinfo=UTC)
    horizon.observe(t, {a: 10, b: 4})
    assert not horizon.reached({a: 10, b: 3})  # one partition behind
    assert not horizon.reached({a: 10})  # a partition never committed counts from 0
    assert horizon() is None
    horizon.observe(t + timedelta(seconds=1), {a: 12, b: 4})
    assert horizon.reached({a: 11, b: 4})  # the first observation is reached, not the second
    assert horizon() == t - grace
    assert not horizon.reached({a: 11, b: 4})
    assert horizon.reached({a: 12, b: 9})
    assert horizon() == t + timedelta(seconds=1) - grace
    horizon.observe(t + timedelta(seconds=2), {})  # no input partition at all: nothing to wait for
    assert horizon.reached({})
    assert horizon() == t + timedelta(seconds=2) - grace


def test_breach_horizon_keeps_moving_when_the_group_lags_far_behind() -> None:
    tp = TopicPartition("t.complaints.lifecycle", 0)
    horizon = BreachHorizon(timedelta(0), max_pending=3)
    t = datetime(2026, 3, 2, 2, tzinfo=UTC)
    for i in range(10):  # the group never reaches the end while records keep coming
        horizon.observe(t + timedelta(seconds=i), {tp: 100 * (i + 1)})
    assert horizon.reached({tp: 100})
    assert horizon() == t
    horizon.observe(t + timedelta(seconds=20), {tp: 5000})
    assert horizon.reached({tp: 300})
    assert horizon() == t + timedelta(seconds=2)
    assert horizon.reached({tp: 5000})
    assert horizon() == t + timedelta(seconds=20)
