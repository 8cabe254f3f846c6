"""`complaints dev` as a person runs it: the real command as a process, with its own Kafka and PostgreSQL.

Each stack starts a broker, so these tests are few and each does several things: a second stack on the same
data directory is refused while the first keeps serving; a stack whose broker was killed stops on SIGTERM
and leaves no process; `kill -9` of a stack leaves no process; keys persist across runs and `--new-keys`
replaces them. Every wait is bounded; none asserts on a duration except the contract's 15 s to stop.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from shared.devtools.infra.ports import free_port
from shared.devtools.traffic import TrafficGenerator
from shared.domain import Channel

pytestmark = pytest.mark.devstack  # `make devstack`: see the Makefile

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 300.0  # a cold broker on a busy 2-core machine
STOP_WITHIN_S = 15.0  # the promise: SIGTERM stops everything within 15 s
KEY_LINE = re.compile(r"^\s+(channel:\S+|department:\S+|reports|admin)\s+(ck_\S+)\s*$")


def _free_base() -> int:
    """A port base whose +1 … +4 are free (services listen there)."""
    for _ in range(50):
        base = free_port() // 10 * 10
        if base + 10 < 65535 and all(free_port(base + i) == base + i for i in range(1, 5)):
            return base
    raise AssertionError("no free port base")


@dataclass
class Dev:
    """One `complaints dev` process and everything it printed."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    port_base: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[str], bool], timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if pred(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and seen == len(self.lines)):
                    raise AssertionError("not printed in time:\n" + "\n".join(self.lines[-60:]))
                self._cond.wait(min(left, 1.0))

    def wait_running(self) -> None:
        self.wait_for(lambda line: "=== complaints dev is running" in line, START_TIMEOUT_S)
        self.wait_for(lambda line: line.startswith("Ctrl-C stops everything"), 10)

    @property
    def keys(self) -> dict[str, str]:
        return {m.group(1): m.group(2) for m in map(KEY_LINE.match, self.lines) if m}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.port_base + {'intake': 1, 'routing': 2, 'sla': 3}[service]}"

    def family(self) -> list[int]:
        """The dev process and every process under it (from /proc)."""
        return [self.proc.pid, *descendants(self.proc.pid)]


def start_dev(
    data_dir: Path,
    *extra: str,
    port_base: int | None = None,
    simulate: int = 0,
    own_session: bool = False,
    cls: type[Dev] = Dev,
) -> Dev:
    """`complaints dev` as a process on free ports, its output read by a thread. `own_session`: its own process
    group, as in a terminal (killpg reaches what a Ctrl-C reaches)."""
    base = port_base or _free_base()
    argv = [
        sys.executable,
        "-m",
        "shared.devtools.cli",
        "dev",
        "--simulate",
        str(simulate),
        "--data-dir",
        str(data_dir),
        "--port-base",
        str(base),
        "--kafka-port",
        str(free_port()),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "API_KEYS_FILE")}
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=own_session,
    )
    dev = cls(proc, port_base=base)
    threading.Thread(target=dev._read, daemon=True).start()
    return dev


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = st[1]
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def alive(pids: list[int]) -> list[int]:
    """Those still running (a zombie counts as gone: it holds nothing)."""
    return [p for p in pids if (st := _stat(p)) is not None and st[0] != "Z"]


def wait_all_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    left = alive(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = alive(pids)
    return left


@pytest.fixture
def data() -> Iterator[Path]:
    """A data directory outside pytest's tmp root: PostgreSQL runs as its own user, and pytest sessions running
    beside this one make that root private (0700) again."""
    path = Path(tempfile.mkdtemp(prefix="dev-stack-"))
    yield path / "run"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def stacks() -> Iterator[list[Dev]]:
    """Every stack a test starts is killed at the end, whatever happened."""
    started: list[Dev] = []
    yield started
    for dev in started:
        for pid in reversed(dev.family()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            dev.proc.wait(10)


def good_hotline_body() -> bytes:
    gen = TrafficGenerator(seed=11, duplicates=0.0, bad=0.0)
    while True:
        msg = gen.next()
        if msg.channel is Channel.HOTLINE:
            return msg.body


def test_a_second_stack_on_the_same_directory_is_refused_and_a_stack_without_broker_stops(
    data: Path, stacks: list[Dev]
) -> None:
    first = start_dev(data)
    stacks.append(first)
    first.wait_running()
    broker = next(p for p in first.family() if comm(p) == "java")

    second = start_dev(data)
    stacks.append(second)
    assert second.proc.wait(60) == 3
    said = "\n".join(second.lines)
    assert f"process {first.proc.pid}" in said
    for hint in ("--data-dir", "--port-base", "--kafka-port", 'make run ARGS="'):
        assert hint in said

    # The first goes on serving: its broker is the same process, and a complaint posted now becomes a case.
    assert alive([broker]) == [broker]
    assert first.proc.poll() is None
    keys = first.keys
    posted = httpx.post(
        f"{first.url('intake')}/v1/intake/hotline",
        content=good_hotline_body(),
        headers={"Authorization": f"Bearer {keys['channel:hotline']}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert posted.status_code == 202, posted.text
    case_id = posted.json()["complaint_id"]
    deadline = time.monotonic() + 120
    status = 0
    while time.monotonic() < deadline and status != 200:
        status = httpx.get(
            f"{first.url('routing')}/v1/cases/{case_id}",
            headers={"Authorization": f"Bearer {keys['admin']}"},
            timeout=10,
        ).status_code
        time.sleep(0.5 if status != 200 else 0)
    assert status == 200

    # Now its broker dies: the stack says so once, and SIGTERM still stops everything, leaving no process.
    family = first.family()
    os.kill(broker, signal.SIGKILL)
    first.wait_for(lambda line: line.startswith("Kafka at") and "is gone" in line, 30)
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(STOP_WITHIN_S) == 0
    assert wait_all_gone(family, 5) == []
    assert sum(1 for line in first.lines if line.startswith("Kafka at") and "is gone" in line) == 1


def test_keys_persist_across_runs_new_keys_replaces_them_and_kill_9_leaves_nothing(
    data: Path, stacks: list[Dev]
) -> None:
    first = start_dev(data)
    stacks.append(first)
    first.wait_running()
    keys = first.keys
    assert len(keys) > 10
    assert "made now" in "\n".join(first.lines)
    assert (data / "dev_keys.txt").stat().st_mode & 0o777 == 0o600

    family = first.family()
    assert len(family) >= 5  # dev, Kafka, PostgreSQL, the services
    first.proc.kill()
    first.proc.wait(10)
    assert wait_all_gone(family, 30) == []

    again = start_dev(data)
    stacks.append(again)
    again.wait_running()
    assert again.keys == keys
    assert "kept from the last run" in "\n".join(again.lines)
    rules = f"{again.url('routing')}/v1/routing/rules"
    assert httpx.get(rules, headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=10).status_code == 200
    again.proc.send_signal(signal.SIGTERM)
    assert again.proc.wait(STOP_WITHIN_S) == 0

    renewed = start_dev(data, "--new-keys")
    stacks.append(renewed)
    renewed.wait_running()
    new = renewed.keys
    assert set(new) == set(keys)
    assert not set(new.values()) & set(keys.values())
    rules = f"{renewed.url('routing')}/v1/routing/rules"
    assert httpx.get(rules, headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=10).status_code == 401
    assert httpx.get(rules, headers={"Authorization": f"Bearer {new['admin']}"}, timeout=10).status_code == 200
    renewed.proc.send_signal(signal.SIGTERM)
    assert renewed.proc.wait(STOP_WITHIN_S) == 0


def simulate(bootstrap: str) -> subprocess.Popen[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "shared.devtools.cli", "simulate", "--rate", "5", "--count", "10"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_simulate_with_no_broker_says_so_in_one_line() -> None:
    nobody = free_port()  # free: nothing listens there
    proc = simulate(f"127.0.0.1:{nobody}")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        f"error: no Kafka broker answers at 127.0.0.1:{nobody}: start the system first (`make run`), "
        "or set KAFKA_BOOTSTRAP_SERVERS to a running broker"
    ]


def test_simulate_stops_on_sigterm_while_the_broker_does_not_answer() -> None:
    # A broker that accepts connections and never answers: the simulator is stuck in its first request.
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        proc = simulate(f"127.0.0.1:{server.getsockname()[1]}")
        held = []
        try:
            held.append(server.accept()[0])  # the probe
            held.append(server.accept()[0])  # the Kafka client, now waiting for an answer
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=STOP_WITHIN_S)
        finally:
            proc.kill()
            for conn in held:
                conn.close()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
