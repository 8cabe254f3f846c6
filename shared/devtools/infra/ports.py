"""Finding free loopback ports, so local servers never collide with one in use."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from pathlib import Path

_LOWEST = 10_000
"""Ports below this are left alone: many well-known servers (Kafka's 9092, PostgreSQL's 5432, 8080 …) live there."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives the source end of this machine's outgoing connections (Linux's setting)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def _candidates() -> list[range]:
    """Where to pick: the ports from _LOWEST up to the ephemeral range; when there are too few of those, also the
    ports above the range (when it ends early). When the range covers nearly all ports from _LOWEST (`1024 65535`
    is a common tuning), all of them: a spread pick then, rather than one port that every caller would get."""
    low, high = ephemeral_range()
    below = range(_LOWEST, min(low, 65536))
    if len(below) >= _ENOUGH:
        return [below]
    outside = [r for r in (below, range(max(high + 1, _LOWEST), 65536)) if len(r)]
    if sum(len(r) for r in outside) < _ENOUGH:
        return [range(_LOWEST, 65536)]
    return outside


_ENOUGH = 1000
"""Fewer ports than this outside the ephemeral range would make two callers' random picks meet."""


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """`preferred` when it is free, else a free port outside the ephemeral range (see `_candidates`).

    A port picked now is bound seconds later (a broker, PostgreSQL, a service starting); one the kernel picked
    from its ephemeral range can meanwhile become the source port of one of this machine's own connections (a
    Kafka client, a pool), and the server then fails with `address already in use`. Outside the range no outgoing
    connection ever takes it; the random pick keeps two callers apart."""
    if preferred and port_is_free(preferred, host):
        return preferred
    ranges = _candidates()
    weights = [len(r) for r in ranges]
    for _ in range(500):
        port = random.choice(random.choices(ranges, weights)[0])
        if port_is_free(port, host):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded machine: the kernel's pick
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, host: str = "127.0.0.1") -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def die_with_parent(sig: int = 15) -> Callable[[], None]:
    """A `preexec_fn`: the child gets `sig` (SIGTERM unless told) when the process that started it dies, even by
    SIGKILL, so a killed test run or `complaints dev` leaves no Kafka, PostgreSQL or service behind (Linux;
    elsewhere it does nothing). libc is looked up here, in the parent: the child must only make the call."""
    import ctypes
    import sys as _sys

    if not _sys.platform.startswith("linux"):
        return lambda: None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def _preexec() -> None:
        prctl(pr_set_pdeathsig, int(sig))

    return _preexec
