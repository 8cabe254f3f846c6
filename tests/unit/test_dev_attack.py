"""Attacks on `complaints dev`'s stop path and on free-port picking, without processes.

The promise (issue #11): Ctrl-C or SIGTERM stops everything within 15 s in every state, a second Ctrl-C at once.
"States" include an output nobody reads (a terminal stopped with Ctrl-S, a pipe into a pager that is suspended):
every write then blocks, and the stop must not wait on one. Every wait here is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.devtools import dev
from shared.devtools.dev import DevStack
from shared.devtools.infra import ports
from shared.devtools.infra.kafka_local import InfraError
from shared.devtools.infra.lock import DirectoryLock
from shared.devtools.status import StatusLine


class _Recorder:
    """Stands in for os._exit and _kill_all: records, never ends the test process."""

    def __init__(self) -> None:
        self.killed = threading.Event()
        self.exited = threading.Event()
        self.exit_code: int | None = None
        self.killed_before_exit = False

    def kill_all(self) -> None:
        self.killed.set()

    def exit(self, code: int) -> None:
        self.exit_code = code
        self.killed_before_exit = self.killed.is_set()
        self.exited.set()  # and returns: the caller's thread goes on to its end


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    rec = _Recorder()
    monkeypatch.setattr(os, "_exit", rec.exit)
    return rec


def _stack(tmp_path: Path, out: StatusLine, rec: _Recorder) -> DevStack:
    stack = DevStack(argparse.Namespace(), tmp_path, DirectoryLock(tmp_path), out)
    stack._kill_all = rec.kill_all  # type: ignore[method-assign]
    return stack


@contextlib.contextmanager
def _full_pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose write end blocks (nobody reads and it is full), like a stopped terminal."""
    r, w = os.pipe()
    flags = fcntl.fcntl(w, fcntl.F_GETFL)
    fcntl.fcntl(w, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(w, b"x" * 4096)
    fcntl.fcntl(w, fcntl.F_SETFL, flags)  # blocking again
    try:
        yield r, w
    finally:
        fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_NONBLOCK)
        for _ in range(1000):  # drain until no blocked writer is left, then close
            with contextlib.suppress(BlockingIOError):
                os.read(r, 65536)
            if not _writers_blocked():
                break
            threading.Event().wait(0.01)
        os.close(w)
        os.close(r)


def _writers_blocked() -> bool:
    return any(t.name.startswith("attack-") and t.is_alive() for t in threading.enumerate())


def test_the_watchdog_kills_at_the_deadline_even_when_the_output_blocks(
    tmp_path: Path, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main thread is stuck in a write with the status line's lock held (nobody reads the terminal). The
    watchdog printed 'stopping …' through that lock before anything else, so it never reached its deadline: the
    stack ignored SIGTERM for ever."""
    monkeypatch.setattr(dev, "STOP_WITHIN_S", 1.5)  # deadline 0.5 s after the signal
    status = StatusLine(io.StringIO(), tty=True)
    stack = _stack(tmp_path, status, recorder)
    stack.phase = "running"
    status._lock.acquire()  # the main thread, blocked mid-write
    try:
        stack._on_signal(signal.SIGTERM, None)
        watchdog = threading.Thread(target=stack._watchdog, name="attack-watchdog", daemon=True)
        watchdog.start()
        assert recorder.exited.wait(10), "the watchdog never killed: it waited on the status line's lock"
        assert recorder.killed_before_exit
        assert recorder.exit_code == 1
    finally:
        status._lock.release()
    watchdog.join(10)


def test_a_second_signal_kills_at_once_even_when_the_output_blocks(
    tmp_path: Path, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second Ctrl-C wrote its notice with os.write before killing: with a stopped terminal the write blocked
    and nothing was killed ('at once' became 'never', and the first signal's watchdog is the only way out)."""
    stack = _stack(tmp_path, StatusLine(io.StringIO(), tty=True), recorder)
    stack.phase = "running"
    stack._on_signal(signal.SIGINT, None)  # the first one: noted
    with _full_pipe() as (_r, w):

        class _Out:
            def fileno(self) -> int:
                return w

        monkeypatch.setattr(sys, "stdout", _Out())
        second = threading.Thread(target=stack._on_signal, args=(signal.SIGINT, None), name="attack-2nd", daemon=True)
        second.start()
        killed = recorder.killed.wait(5)
        second.join(0.5 if killed else 0)
        assert killed, "the second Ctrl-C blocked writing its notice and killed nothing"
    second.join(10)
    assert recorder.exit_code == 130


def test_a_signal_while_a_failed_start_is_reported_ends_with_an_exit_code_not_a_traceback(
    tmp_path: Path, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM arriving while `complaints dev` says why it could not start (phase still 'starting'): the handler's
    _Interrupted was raised inside the `except InfraError` block, escaped `run()` and the command died with a
    traceback and exit code 1 instead of stopping with its own code."""
    monkeypatch.setattr(dev, "STOP_WITHIN_S", 1.5)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    class FailingStack(DevStack):
        def _start(self) -> Any:
            raise InfraError("service intake did not start (exit code 1); its lines above say why")

        def say(self, line: str) -> None:
            if line.startswith("error:") and self.stop_requested is None:
                self._on_signal(signal.SIGTERM, None)  # arrives here, between two bytecodes
            super().say(line)

    out = io.StringIO()
    lock = DirectoryLock(tmp_path).acquire()
    stack = FailingStack(argparse.Namespace(), tmp_path, lock, StatusLine(out, tty=False))
    stack._kill_all = recorder.kill_all  # type: ignore[method-assign]
    try:
        code = stack.run()
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        for t in threading.enumerate():
            if t.name == "dev-watchdog":
                t.join(10)
    assert code in (2, 130)
    assert stack.phase == "stopped"
    assert not recorder.exited.is_set(), "the watchdog killed a stack that had stopped"
    DirectoryLock(tmp_path).acquire().release()  # the lock is free for the next stack


@pytest.mark.parametrize(
    ("ephemeral", "outside"),
    [
        ((1024, 65535), None),  # every port is ephemeral: at least spread the picks
        ((1024, 60999), range(61000, 65536)),  # room above the range only
        ((10000, 20000), range(20001, 65536)),  # nothing below _LOWEST
    ],
)
def test_a_low_ephemeral_range_still_gives_spread_ports_outside_it(
    monkeypatch: pytest.MonkeyPatch, ephemeral: tuple[int, int], outside: range | None
) -> None:
    """With the range starting at or below 10 000 (`1024 65535` is a common tuning), every pick was port 10 000:
    two callers got the same port (the random pick meant to keep them apart picked from one value), and it lies
    inside the ephemeral range the change means to avoid, though the ports above the range were free to use."""
    monkeypatch.setattr(ports, "ephemeral_range", lambda: ephemeral)
    picked = {ports.free_port() for _ in range(40)}
    assert len(picked) > 5, sorted(picked)
    if outside is not None:
        assert all(p in outside for p in picked), sorted(picked)
    assert all(ports.port_is_free(p) for p in picked)


def test_every_service_a_bench_starts_dies_with_the_bench() -> None:
    """`complaints bench` promises its services die with it even when it is SIGKILLed (PR_SET_PDEATHSIG): every
    Popen of our own CLI in a bench must pass `preexec_fn=die_with_parent(...)`. `bench reports` started its
    reporting service without it, and a killed `bench reports` left that service running."""
    import ast

    missing = []
    for path in sorted((Path(__file__).resolve().parents[2] / "shared" / "devtools").glob("bench*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "subprocess.Popen"):
                continue
            if "shared.devtools.cli" not in ast.unparse(node):
                continue  # not a service (a profiler attached to one ends with it)
            preexec = [k for k in node.keywords if k.arg == "preexec_fn"]
            if not preexec or "die_with_parent" not in ast.unparse(preexec[0].value):
                missing.append(f"{path.name}:{node.lineno}")
    assert not missing, f"services started without dying with the bench: {missing}"


async def test_the_lag_monitor_stops_at_once_while_connecting_to_a_broker_that_never_answers() -> None:
    """A broker that takes the connection and never answers (SIGSTOPped, or a firewall that swallows): the
    monitor is cancelled mid-connect by the service's shutdown; it must end at once and leave no task behind."""
    import asyncio
    import select
    import socket

    from shared.kafka import Health
    from shared.lag import LagMonitor
    from shared.observability import Metrics
    from shared.settings import Settings

    with socket.create_server(("127.0.0.1", 0), backlog=16) as mute:  # the kernel accepts; nobody answers
        settings = Settings(
            kafka_bootstrap_servers=f"127.0.0.1:{mute.getsockname()[1]}", database_url="postgresql://x@127.0.0.1:1/x"
        )
        before = set(asyncio.all_tasks())
        monitor = LagMonitor(settings, Metrics("intake"), Health(), {"intake": ["intake.hotline"]}, retry_s=0.05)
        monitor.start()
        for _ in range(100):  # until the monitor's connection is there
            if select.select([mute], [], [], 0)[0]:
                break
            await asyncio.sleep(0.05)
        assert select.select([mute], [], [], 0)[0], "the monitor never connected"
        await asyncio.wait_for(monitor.stop(), 10)
        assert monitor._task is not None
        assert monitor._task.done()
        await asyncio.sleep(0.2)
        left = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()]
        assert left == [], left
