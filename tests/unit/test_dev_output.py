"""What a person reads: the text log format, the repeat filter, and `complaints dev`'s own output."""

from __future__ import annotations

import json
import logging

from shared.observability import JsonFormatter, MaskingTextFormatter, RepeatFilter


def record(
    msg: str, *, name: str = "services.intake.app", level: int = logging.WARNING, **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


TEXT = MaskingTextFormatter("%(levelname)s %(name)s: %(message)s")


def test_the_text_format_shows_the_extra_fields() -> None:
    line = TEXT.format(
        record(
            "dead letter",
            source_topic="intake.hotline",
            offset=7,
            error_type="missing_field",
            reason="required field sqnr is missing or empty",
        )
    )
    assert line == (
        "WARNING services.intake.app: dead letter source_topic=intake.hotline offset=7 error_type=missing_field "
        'reason="required field sqnr is missing or empty"'
    )


def test_the_text_format_masks_phones_in_fields_too() -> None:
    line = TEXT.format(record("fact not applied as is", why="caller 13912345678 said", phone="0475-8234567"))
    assert "13912345678" not in line
    assert "8234567" not in line
    assert "139****5678" in line


def test_json_logs_keep_their_shape() -> None:
    entry = json.loads(JsonFormatter().format(record("dead letter", reason="bad")))
    assert (entry["msg"], entry["reason"], entry["level"]) == ("dead letter", "bad", "warning")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_repeated_fault_is_shown_once_per_interval_with_the_count_held_back() -> None:
    clock = FakeClock()
    limit = RepeatFilter(interval_s=10.0, clock=clock)
    kafka = "aiokafka.conn"
    shown = [limit.filter(record("Unable connect to node with id %s: %s", name=kafka)) for _ in range(500)]
    assert shown.count(True) == 1
    assert shown[0]
    clock.now = 10.5
    again = record("Unable connect to node with id %s: %s", name=kafka)
    assert limit.filter(again)
    assert again.__dict__["repeated"] == 499


def test_faults_of_our_own_are_limited_by_template_and_data_records_never() -> None:
    limit = RepeatFilter(interval_s=10.0, clock=FakeClock())
    retry = [limit.filter(record("passing fault, retrying", error="KafkaConnectionError()")) for _ in range(5)]
    assert retry == [True, False, False, False, False]
    other = record("outbox publish failed, will retry", error="x")
    assert limit.filter(other)
    letters = [limit.filter(record("dead letter", reason=f"r{i}")) for i in range(5)]
    assert all(letters)
    infos = [limit.filter(record("group joined", name="aiokafka.consumer", level=logging.INFO)) for _ in range(3)]
    assert all(infos)
