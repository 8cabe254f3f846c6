"""How a failure is classified (shared/db.py): passing faults are retried for ever, the record's own faults are
dead-lettered at once, everything else after a few tries (shared/kafka.py process_with_retries)."""

from __future__ import annotations

import asyncio
import base64

import asyncpg
import pytest

from shared.db import Fault, classify, is_transient, stale_connections
from shared.events import DeadLetter
from shared.kafka import Health, RawRecord, dead_letter_of, key_as_text, process_with_retries, storable_text

E = asyncpg.exceptions
NOW = __import__("datetime").datetime(2026, 11, 26, tzinfo=__import__("datetime").UTC)


def pg_error(sqlstate: str) -> BaseException:
    """The exception asyncpg raises for a server error of this SQLSTATE (its class, or the generic one)."""
    cls = E.PostgresError.get_message_class_for_sqlstate(sqlstate)  # type: ignore[attr-defined]
    return cls(f"server said {sqlstate}")  # type: ignore[no-any-return]


PASSING = {
    "08006": "connection failure",
    "08001": "cannot establish connection",
    "53100": "disk full",
    "53200": "out of memory",
    "53300": "too many connections",
    "57014": "query canceled (statement_timeout)",
    "57P01": "admin shutdown (pg_terminate_backend)",
    "57P03": "cannot connect now",
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "25006": "read-only transaction (failover)",
    "55P03": "lock not available (lock_timeout)",
    "58030": "I/O error",
}
RECORD = {
    "22021": "character not in repertoire (a NUL)",
    "22P02": "invalid text representation",
    "22003": "numeric value out of range",
    "23505": "unique violation",
    "23503": "foreign key violation",
    "23514": "check violation",
}
OTHER = {"42P01": "undefined table", "42703": "undefined column", "XX000": "internal error", "0A000": "not supported"}


@pytest.mark.parametrize("sqlstate", sorted(PASSING), ids=lambda s: f"{s}-{PASSING[s]}")
def test_passing_sqlstates_are_retried(sqlstate: str) -> None:
    exc = pg_error(sqlstate)
    assert exc.sqlstate == sqlstate  # type: ignore[attr-defined]
    assert classify(exc) is Fault.PASSING
    assert is_transient(exc)


@pytest.mark.parametrize("sqlstate", sorted(RECORD), ids=lambda s: f"{s}-{RECORD[s]}")
def test_data_and_integrity_errors_are_the_records_own(sqlstate: str) -> None:
    assert classify(pg_error(sqlstate)) is Fault.RECORD
    assert not is_transient(pg_error(sqlstate))


@pytest.mark.parametrize("sqlstate", sorted(OTHER), ids=lambda s: f"{s}-{OTHER[s]}")
def test_other_server_errors_are_neither(sqlstate: str) -> None:
    assert classify(pg_error(sqlstate)) is Fault.OTHER


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError("reset"),
        OSError("no route"),
        TimeoutError(),
        E.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        E.InterfaceError("connection is closed"),
        E.InvalidCachedStatementError("cached statement plan is invalid"),
    ],
    ids=type,
)
def test_connection_level_failures_are_passing(exc: BaseException) -> None:
    assert classify(exc) is Fault.PASSING


def test_client_side_mistakes_are_not_passing() -> None:
    assert classify(E.DataError("invalid input for query argument $1")) is Fault.RECORD
    assert classify(ValueError("bug")) is Fault.OTHER
    assert classify(KeyError("bug")) is Fault.OTHER


def _raised(make: object) -> BaseException:
    try:
        make()  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the exception is what the test looks at
        return exc
    raise AssertionError("nothing raised")


def test_a_failure_raised_while_handling_a_lost_connection_is_passing() -> None:
    def rollback_after_shutdown() -> None:
        try:
            raise E.AdminShutdownError("terminating connection due to administrator command")
        except E.AdminShutdownError:
            raise E.InterfaceError("cannot call Transaction.rollback(): the connection is closed") from None

    def wrapped_read_only() -> None:
        try:
            raise pg_error("25006")
        except E.PostgresError as inner:
            raise RuntimeError("wrapped") from inner

    # `from None` hides the context from a traceback but keeps it: the rollback failed because the connection went.
    assert classify(_raised(rollback_after_shutdown)) is Fault.PASSING
    wrapped = _raised(wrapped_read_only)
    assert classify(wrapped) is Fault.PASSING
    assert stale_connections(wrapped)
    assert not stale_connections(pg_error("57P01"))


# --- the retry loop ----------------------------------------------------------------------------------------------


def record(offset: int, key: bytes | None = b"k") -> RawRecord:
    return RawRecord("t", 0, offset, key, b"{}")


def run(records: list[RawRecord], failures: list[BaseException]) -> tuple[list[int], list[tuple[int, int]], int]:
    """Run process_with_retries with a handler that raises `failures` in turn, then succeeds."""
    handled: list[int] = []
    given_up: list[tuple[int, int]] = []
    faults: list[BaseException] = []
    left = list(failures)

    async def handle(batch: list[RawRecord]) -> None:
        if left:
            raise left.pop(0)
        handled.extend(r.offset for r in batch)

    async def give_up(r: RawRecord, exc: BaseException, attempts: int) -> None:
        given_up.append((r.offset, attempts))

    async def on_fault(exc: BaseException) -> None:
        faults.append(exc)

    async def main() -> None:
        import shared.kafka as k

        async def no_wait(self: k.Backoff) -> None:
            self.attempt += 1

        original = k.Backoff.wait
        k.Backoff.wait = no_wait  # type: ignore[method-assign]
        try:
            await process_with_retries(records, handle, give_up, where="t", health=Health(), on_fault=on_fault)
        finally:
            k.Backoff.wait = original  # type: ignore[method-assign]

    asyncio.run(main())
    return handled, given_up, len(faults)


def test_passing_faults_of_every_class_are_retried_and_nothing_is_dead_lettered() -> None:
    failures = [pg_error(s) for s in sorted(PASSING)] * 3
    handled, given_up, faults = run([record(1), record(2)], failures)
    assert handled == [1, 2]
    assert given_up == []
    assert faults == len(failures)


def test_a_record_fault_is_dead_lettered_at_once_and_the_rest_go_through() -> None:
    handled, given_up, _ = run([record(1)], [pg_error("22021")])
    assert (handled, given_up) == ([], [(1, 1)])
    handled, given_up, _ = run([record(1)], [ValueError("bug")] * 3)
    assert (handled, given_up) == ([], [(1, 3)])


# --- what a dead letter keeps of a key PostgreSQL text refuses -------------------------------------------------------


def test_a_key_with_nul_or_invalid_utf8_is_escaped_as_text_and_kept_as_bytes() -> None:
    key = b"A\x00\xff\xfe\xe9\x80\x9a"  # NUL, two invalid bytes, then 通
    assert key_as_text(key) == "A\\x00\\xff\\xfe通"
    assert key_as_text("通辽-1".encode()) == "通辽-1"
    letter = dead_letter_of(record(5, key), "invalid_json", "bad \x00 and \ud800", NOW, service="intake")
    assert letter.source_key == "A\\x00\\xff\\xfe通"
    assert letter.source_key_b64 == base64.b64encode(key).decode()
    assert letter.key_bytes() == key
    assert "\x00" not in letter.reason
    assert "\ud800" not in letter.reason
    again = DeadLetter.model_validate_json(letter.to_json_bytes())
    assert again.key_bytes() == key
    assert dead_letter_of(record(6, None), "x", "y", NOW, service="intake").key_bytes() is None


def test_a_dead_letter_written_before_the_bytes_field_replays_its_text_key() -> None:
    old = DeadLetter.model_validate(
        {"source_topic": "t", "source_key": "TL1", "reason": "r", "error_type": "e", "service": "intake",
         "first_seen_at": "2026-11-26T01:00:00Z", "attempts": 1, "payload_b64": "e30="}
    )  # fmt: skip
    assert old.key_bytes() == b"TL1"


def test_storable_text() -> None:
    assert storable_text("a\x00b") == "a\ufffdb"
    assert storable_text("x\udc80y") == "x\ufffdy"
    assert storable_text("通辽 🙂") == "通辽 🙂"
