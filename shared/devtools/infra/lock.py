"""One owner per data directory: an exclusive `flock` on `<dir>/lock`, which holds the owner's pid.

The kernel drops the lock when its owner dies, however it dies (even `kill -9`), so a stale file never blocks
anyone. The file also lists the servers the owner started, so that a new owner can wait for a killed owner's
servers (which get SIGTERM when it dies) to finish with the directory before starting its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


class DirectoryBusyError(RuntimeError):
    """Another live process holds the directory; `pid` is that process (None when the file says nothing)."""

    def __init__(self, directory: Path, pid: int | None) -> None:
        self.directory, self.pid = directory, pid
        super().__init__(f"{directory} is in use by process {pid if pid is not None else '(unknown)'}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (dead, not yet reaped) counts as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _parse(text: str) -> tuple[int | None, list[int]]:
    owner: int | None = None
    children: list[int] = []
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if not value.strip().isdigit():
            continue
        if name.strip() == "pid":
            owner = int(value)
        else:
            children.append(int(value))
    return owner, children


@dataclass
class DirectoryLock:
    directory: Path
    _file: IO[str] | None = field(default=None, init=False)
    _children: dict[str, int] = field(default_factory=dict, init=False)

    @property
    def path(self) -> Path:
        return self.directory / "lock"

    def acquire(self, wait_for_leftovers_s: float = 30.0) -> DirectoryLock:
        """Take the lock or raise DirectoryBusy at once. Then wait (bounded) for servers a dead owner left."""
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")  # not inherited by children (PEP 446)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner, _ = _parse(handle.read())
            handle.close()
            raise DirectoryBusyError(self.directory, owner) from None
        handle.seek(0)
        _, leftovers = _parse(handle.read())
        self._file = handle
        self._write()
        deadline = time.monotonic() + wait_for_leftovers_s
        while any(_alive(pid) for pid in leftovers) and time.monotonic() < deadline:
            time.sleep(0.2)
        return self

    def _write(self) -> None:
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid={os.getpid()}\n" + "".join(f"{k}={v}\n" for k, v in self._children.items()))
        self._file.flush()

    def note_child(self, name: str, pid: int) -> None:
        """Record a server started on this directory (see the module doc)."""
        self._children[name] = pid
        self._write()

    def release(self) -> None:
        if self._file is not None:
            self._children.clear()
            self._write()
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
