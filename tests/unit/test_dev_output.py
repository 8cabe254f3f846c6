"""What a person reads: the text log format, the repeat filter, and `complaints dev`'s own output."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest

from shared.auth import KeyRing
from shared.devtools.dev import NoiseFolder, busy_message, load_or_make_dev_keys
from shared.devtools.infra.lock import DirectoryBusyError, DirectoryLock
from shared.devtools.simulate import SimulationStats
from shared.devtools.status import CLEAR, StatusLine
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


# --- complaints dev ------------------------------------------------------------------------------------------


def test_the_status_line_is_cleared_before_a_log_line_and_drawn_again_after() -> None:
    out = io.StringIO()
    status = StatusLine(out, tty=True)
    status.show("sent 10")
    status.print("intake   | WARNING dead letter")
    status.show("sent 11")
    text = out.getvalue()
    assert text == f"{CLEAR}sent 10{CLEAR}intake   | WARNING dead letter\n{CLEAR}sent 10{CLEAR}sent 11"


def test_without_a_terminal_the_status_is_an_ordinary_line_every_few_seconds() -> None:
    out, clock = io.StringIO(), FakeClock()
    status = StatusLine(out, tty=False, every_s=5.0, clock=clock)
    for i in range(10):
        clock.now = i
        status.show(f"sent {i}")
    status.print("a log line")
    assert out.getvalue() == "sent 0\nsent 5\na log line\n"
    assert "\r" not in out.getvalue()


def test_kafka_start_up_notices_fold_into_one_line_per_service() -> None:
    folder = NoiseFolder(window_closes=30.0)
    noise = [
        "2026-11-29 12:25:12,370 ERROR aiokafka.consumer.group_coordinator: Group Coordinator Request failed: "
        "[Error 15] GroupCoordinatorNotAvailableError",
        "2026-11-29 12:25:13,215 WARNING aiokafka.consumer.group_coordinator: Marking the coordinator dead (node 1)",
        "2026-11-29 12:25:17,635 WARNING aiokafka.consumer.group_coordinator: Heartbeat failed for group routing "
        "because it is rebalancing",
    ]
    assert [folder.take("routing", line, 1.0) for line in noise] == [False, False, False]
    assert folder.take("routing", "2026-11-29 INFO shared.service: service started", 1.0)
    assert not folder.take("sla", noise[2], 2.0)
    assert folder.close() == [
        "routing  | 3 start-up notices of the Kafka client while its consumer groups formed (normal at start, "
        "not shown)",
        "sla      | 1 start-up notice of the Kafka client while its consumer groups formed (normal at start, not shown)",
    ]
    assert folder.take("sla", noise[2], 40.0)  # after start-up a rebalance is news again


def test_a_second_stack_is_told_who_holds_the_directory_and_how_to_start_another(tmp_path: Path) -> None:
    first = DirectoryLock(tmp_path).acquire()
    try:
        with pytest.raises(DirectoryBusyError) as busy:
            DirectoryLock(tmp_path).acquire()
        assert busy.value.pid == os.getpid()
    finally:
        first.release()
    DirectoryLock(tmp_path).acquire().release()  # free again once released
    said = busy_message(tmp_path, 4242)
    assert "process 4242" in said
    assert "kill 4242" in said
    assert 'make run ARGS="--data-dir .run2 --port-base 9080 --kafka-port 9192"' in said


def test_dev_keys_are_kept_and_replaced_on_request(tmp_path: Path) -> None:
    made = load_or_make_dev_keys(tmp_path)
    assert not made.kept
    assert made.clear_file.stat().st_mode & 0o777 == 0o600
    assert made.digests_file.stat().st_mode & 0o777 == 0o600
    kept = load_or_make_dev_keys(tmp_path)
    assert kept.kept
    assert kept.keys == made.keys
    assert "kept from the last run" in "\n".join(kept.banner())
    ring = KeyRing.from_file(kept.digests_file)
    assert all(ring.authenticate(key) for key in kept.keys.values())
    renewed = load_or_make_dev_keys(tmp_path, new=True)
    assert not renewed.kept
    assert not set(renewed.keys.values()) & set(made.keys.values())
    assert KeyRing.from_file(renewed.digests_file).authenticate(made.keys["admin"]) is None


def test_the_simulator_counts_only_kafka_bad_messages_as_dead_letters() -> None:
    stats = SimulationStats(sent_kafka=90, sent_http=10, bad=5, bad_http=2)
    summary = stats.summary(10.0)
    assert "3 sent to Kafka (expect as many dead letters)" in summary
    assert "2 over HTTP (refused there with a 4xx, not dead-lettered)" in summary


def test_a_signal_that_arrives_while_the_status_line_is_being_drawn_does_not_deadlock(tmp_path: Path) -> None:
    """A signal handler runs in the main thread between two bytecodes, possibly inside `StatusLine.show` with its
    lock held; a handler that printed took that lock again and the stack never stopped (SIGTERM ignored for ever).
    Here the 'main thread' holds the lock while the handler runs; the watchdog says it once the lock is free."""
    import argparse
    import signal
    import threading

    from shared.devtools.dev import DevStack

    out = io.StringIO()
    status = StatusLine(out, tty=True)
    stack = DevStack(argparse.Namespace(), tmp_path, DirectoryLock(tmp_path), status)
    stack.phase = "running"
    handled = threading.Event()

    def main_thread_mid_draw() -> None:
        with status._lock:
            stack._on_signal(signal.SIGTERM, None)
            handled.set()

    worker = threading.Thread(target=main_thread_mid_draw, daemon=True)
    worker.start()
    worker.join(10)
    assert handled.is_set(), "the handler blocked on the status line's lock"
    assert stack.stop_requested is not None

    stack.phase = "stopped"  # the watchdog must not kill this test process at the deadline
    watchdog = threading.Thread(target=stack._watchdog, daemon=True)
    watchdog.start()
    for _ in range(100):
        if "stopping … (SIGTERM" in out.getvalue():
            break
        watchdog.join(0.1)
    assert "stopping … (SIGTERM; Ctrl-C again to stop at once)" in out.getvalue()
