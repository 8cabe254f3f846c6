"""Finding free loopback ports, so local servers never collide with one in use."""

from __future__ import annotations

import socket
from collections.abc import Callable


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """`preferred` when it is free, else a port the kernel picks."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
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
