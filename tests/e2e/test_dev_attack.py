"""Attacks on `complaints dev`'s promise (issue #11), with the real command as a process: Ctrl-C or SIGTERM stops
everything within 15 s in every state, a second Ctrl-C at once, no process is left, and the data directory's lock
is free for the next stack.

States attacked: a signal at each printed step of start-up (Kafka starting, PostgreSQL starting, services being
waited for), sent to the process or to its whole process group (a terminal's Ctrl-C); a running stack with one
service and PostgreSQL SIGSTOPped; two signals in quick succession. Every wait is bounded; none asserts on a
duration except the contract's 15 s to stop.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.devtools.infra.lock import DirectoryBusyError, DirectoryLock
from shared.devtools.infra.ports import free_port
from tests.e2e import test_dev_stack as stack
from tests.e2e.test_dev_stack import _free_base, _stat, alive, comm, descendants, wait_all_gone

pytestmark = [pytest.mark.devstack, pytest.mark.attack]  # `make devstack`, not `make test`: see the Makefile

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 300.0  # a cold broker on a busy 2-core machine
STOP_WITHIN_S = 15.0  # the promise
SERVICE_LINE = re.compile(r"^(intake|routing|sla|reporting)\s*\| ")


class Dev(stack.Dev):
    """tests/e2e/test_dev_stack.py's `Dev`, waiting only for the last line of the banner, and saying all it read."""

    def wait_running(self) -> None:
        self.wait_for(lambda line: line.startswith("Ctrl-C stops everything"), START_TIMEOUT_S)

    def said(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


def start_dev(data_dir: Path) -> Dev:
    """In its own process group, as in a terminal: killpg reaches what a Ctrl-C reaches."""
    dev = stack.start_dev(data_dir, own_session=True, cls=Dev)
    assert isinstance(dev, Dev)
    return dev


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def lock_is_free(data_dir: Path) -> bool:
    try:
        DirectoryLock(data_dir).acquire(wait_for_leftovers_s=10).release()
    except DirectoryBusyError:
        return False
    return True


@pytest.fixture
def data() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dev-attack-"))
    yield path / "run"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def stacks() -> Iterator[list[Dev]]:
    started: list[Dev] = []
    yield started
    for dev in started:
        for pid in reversed(dev.family()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            dev.proc.wait(10)


def _stop_within_the_promise(dev: Dev, family: Callable[[], list[int]], send: Callable[[], None]) -> int:
    """Sends the signal, keeps collecting the family while it stops (a child may have been starting), and returns
    the exit code; fails when the command or any of its processes outlives the promise."""
    seen = set(family())
    deadline = time.monotonic() + STOP_WITHIN_S  # from the first signal
    send()
    while dev.proc.poll() is None and time.monotonic() < deadline:
        seen |= set(descendants(dev.proc.pid))
        time.sleep(0.1)
    code = dev.proc.poll()
    left = alive(sorted(seen))
    assert code is not None, f"still running {STOP_WITHIN_S} s after the signal:\n" + dev.said()[-3000:]
    left = wait_all_gone(left, max(0.0, deadline - time.monotonic()) + 1.0)  # reaped by now, or orphans
    assert left == [], f"left behind: {[(p, comm(p), cmdline(p)[:100]) for p in left]}\n" + dev.said()[-3000:]
    return code


def _is_kafka_start(line: str) -> bool:
    return line.startswith("starting Apache Kafka")


def _is_postgres_start(line: str) -> bool:
    return line.startswith("starting PostgreSQL")


def _is_service_line(line: str) -> bool:
    return bool(SERVICE_LINE.match(line))


@pytest.mark.parametrize(
    ("step", "to_group"),
    [
        (_is_kafka_start, True),  # a first run formats Kafka's storage in the foreground: Ctrl-C reaches it too
        (_is_postgres_start, False),
        (_is_service_line, True),  # services being waited for
    ],
    ids=["kafka-starting-ctrl-c", "postgres-starting-sigterm", "services-starting-ctrl-c"],
)
def test_a_signal_at_each_step_of_start_up_stops_everything_and_frees_the_directory(
    data: Path, stacks: list[Dev], step: Callable[[str], bool], to_group: bool
) -> None:
    dev = start_dev(data)
    stacks.append(dev)
    dev.wait_for(step, START_TIMEOUT_S)

    def send() -> None:
        if to_group:
            os.killpg(dev.proc.pid, signal.SIGINT)
        else:
            dev.proc.send_signal(signal.SIGTERM)

    code = _stop_within_the_promise(dev, dev.family, send)
    assert code == 130, dev.said()[-3000:]
    assert "Traceback" not in dev.said(), dev.said()[-3000:]
    assert lock_is_free(data)


def test_a_stuck_service_and_a_stuck_postgres_do_not_hold_the_stop(data: Path, stacks: list[Dev]) -> None:
    """One service and PostgreSQL's postmaster SIGSTOPped (a debugger, a frozen process): SIGTERM still stops all,
    and PostgreSQL's backends end when their postmaster is killed."""
    dev = start_dev(data)
    stacks.append(dev)
    dev.wait_running()
    family = dev.family()
    postmaster = next(p for p in family if comm(p) == "postgres" and (_stat(p) or ("", 0))[1] == dev.proc.pid)
    service = next(p for p in family if "shared.devtools.cli run routing" in cmdline(p))
    for pid in (service, postmaster):
        os.kill(pid, signal.SIGSTOP)
    _stop_within_the_promise(dev, dev.family, lambda: dev.proc.send_signal(signal.SIGTERM))
    assert "Traceback" not in dev.said(), dev.said()[-3000:]
    assert lock_is_free(data)


def test_a_second_ctrl_c_while_stopping_kills_at_once(data: Path, stacks: list[Dev]) -> None:
    """A stuck service makes the orderly stop wait (up to 7 s for it); the second Ctrl-C, sent once the first
    was taken ('stopping …' printed), ends everything at once with 130, and frees the directory."""
    dev = start_dev(data)
    stacks.append(dev)
    dev.wait_running()
    service = next(p for p in dev.family() if "shared.devtools.cli run sla" in cmdline(p))
    os.kill(service, signal.SIGSTOP)

    def twice() -> None:
        os.killpg(dev.proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground group
        dev.wait_for(lambda line: line.startswith("stopping …"), STOP_WITHIN_S / 3)
        os.killpg(dev.proc.pid, signal.SIGINT)

    code = _stop_within_the_promise(dev, dev.family, twice)
    assert code == 130, dev.said()[-3000:]
    assert "Traceback" not in dev.said(), dev.said()[-3000:]
    assert lock_is_free(data)


def test_sigterm_stops_a_stack_whose_output_nobody_reads(data: Path, stacks: list[Dev]) -> None:
    """`complaints dev | less` with the pager suspended, or a terminal stopped with Ctrl-S: every write of the
    stack blocks, the main thread with the status line's lock held. SIGTERM must still stop everything in 15 s
    (the watchdog used to print through that lock first and never reached its deadline: stopped for ever)."""
    import fcntl

    argv = [sys.executable, "-m", "shared.devtools.cli", "dev", "--simulate", "0", "--data-dir", str(data),
            "--port-base", str(_free_base()), "--kafka-port", str(free_port())]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "API_KEYS_FILE")}
    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: one page, so the stack's own output fills it soon
    proc = subprocess.Popen(argv, cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
                            stdout=w, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    os.close(w)
    dev = Dev(proc)
    stacks.append(dev)
    got = b""
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"Ctrl-C stops everything" not in got and time.monotonic() < deadline and proc.poll() is None:
            if select.select([r], [], [], 1.0)[0]:
                got += os.read(r, 65536)  # read until it runs; from here on nobody reads
        assert b"Ctrl-C stops everything" in got, got.decode(errors="replace")[-3000:]
        # Fill the pipe through a write end of our own (its own file description: non-blocking for us only), so
        # the stack's next write blocks, as it would when a terminal or pager stops reading.
        filler = os.open(f"/proc/self/fd/{r}", os.O_WRONLY | os.O_NONBLOCK)
        try:
            for size in (512, 1):  # to the last byte
                with contextlib.suppress(BlockingIOError):
                    while True:
                        os.write(filler, b"x" * size)
        finally:
            os.close(filler)
        _stop_within_the_promise(dev, dev.family, lambda: proc.send_signal(signal.SIGTERM))
        assert lock_is_free(data)
    finally:
        os.close(r)
