"""What the local servers (one Kafka broker, a Kafka cluster's nodes, PostgreSQL) do alike with their process:
stop it with a signal and wait, kill it, and run in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def start_or_stop(start: Callable[[], T], stop: Callable[[], None]) -> T:
    """`start()`; whatever stops it (an error, Ctrl-C, SIGTERM turned into KeyboardInterrupt) runs `stop()` first,
    so a server half started leaves no process and no data directory it made."""
    try:
        return start()
    except BaseException:
        stop()
        raise


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int, timeout_s: float) -> None:
    """Send `sig` and wait up to `timeout_s`; past that, SIGKILL. Nothing to do for a process already gone."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def kill_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL and reap, for fault tests: the data stays so a later start resumes it."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(10)


def serve_until_signalled(banner: str, stop: Callable[[], None]) -> int:
    """A command line's foreground run: print `banner`, wait for Ctrl-C or SIGTERM, then `stop()`."""
    print(banner, flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stop()
    return 0
