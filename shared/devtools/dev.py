"""`complaints dev`: the whole system on one machine.

Takes its data directory for itself (one stack per directory: a second one there is refused at once, saying
how to start another beside it), starts a local Apache Kafka and PostgreSQL unless KAFKA_BOOTSTRAP_SERVERS /
DATABASE_URL are set, applies migrations, keeps one key for every scope in the data directory (unless
API_KEYS_FILE is set), starts every service as its own process, prints addresses and keys, optionally feeds
simulated traffic (`complaints simulate` as a child), and shows the children's logs above one status line.

Ctrl-C or SIGTERM stops everything within 15 s in every state (a second Ctrl-C at once); every child dies
with it even when it is killed with SIGKILL (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import yaml

from shared.auth import digest, new_key
from shared.devtools.catalog import available_services
from shared.devtools.infra.kafka_cluster import KafkaCluster
from shared.devtools.infra.kafka_local import InfraError, LocalKafka
from shared.devtools.infra.lock import DirectoryBusyError, DirectoryLock
from shared.devtools.infra.ports import die_with_parent, port_is_free, wait_for_port
from shared.devtools.infra.postgres_local import LocalPostgres
from shared.devtools.status import StatusLine
from shared.domain import DEPARTMENTS, Channel
from shared.kafka import ensure_topics
from shared.migrate import migrate
from shared.settings import Settings
from shared.topics import Topics

OFFSETS = {"intake": 1, "routing": 2, "sla": 3, "reporting": 4}
STOP_WITHIN_S = 15.0
"""Everything is stopped within this after the first Ctrl-C or SIGTERM, whatever state the stack is in."""
KEYS_FILE = "api_keys.yaml"
CLEAR_KEYS_FILE = "dev_keys.txt"


# --- keys ------------------------------------------------------------------------------------------------------


def dev_scopes() -> list[str]:
    return [f"channel:{c.value}" for c in Channel] + [f"department:{d}" for d in DEPARTMENTS] + ["reports", "admin"]


def _write_private(path: Path, text: str) -> None:
    """Written readable by the owner only (0600) from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)


def make_dev_keys(path: Path) -> dict[str, str]:
    """One key per scope; digests written to `path` (the API_KEYS_FILE), clear keys returned."""
    keys: dict[str, str] = {}
    lines = ["# made by `complaints dev`: SHA-256 digests of its keys (the keys: dev_keys.txt beside this file)\n"]
    for scope in dev_scopes():
        key, line = new_key(scope)
        keys[scope] = key
        lines.append(line)
    _write_private(path, "".join(lines))
    return keys


def _digests_in(path: Path) -> set[str]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(data, list):
        return set()
    return {str(item.get("sha256", "")).lower() for item in data if isinstance(item, dict)}


@dataclass(frozen=True)
class DevKeys:
    keys: dict[str, str]
    """scope → clear key, for the keys this stack made (kept in `clear_file`)."""
    digests_file: Path
    clear_file: Path
    in_file: int
    """How many keys the digests file holds (more when someone added one with `complaints keys new`)."""
    kept: bool
    """True when they are the previous run's."""

    def banner(self) -> list[str]:
        how = "kept from the last run" if self.kept else "made now"
        lines = [
            f"API keys: {self.in_file} in {self.digests_file} (SHA-256 digests only), {how}. The keys themselves",
            f"are kept in {self.clear_file} (readable only by you) so they work again next time:",
        ]
        lines += [f"  {scope:<28} {key}" for scope, key in self.keys.items()]
        lines.append(
            "Another key: `complaints keys new --scope S`, then add its line to the digests file; "
            "all new keys: `complaints dev --new-keys`."
        )
        return lines


def load_or_make_dev_keys(data_dir: Path, *, new: bool = False) -> DevKeys:
    """The previous run's keys when both files are there and agree, else new ones (and `new` forces new ones)."""
    digests_file, clear_file = data_dir / KEYS_FILE, data_dir / CLEAR_KEYS_FILE
    if not new and digests_file.exists() and clear_file.exists():
        keys: dict[str, str] = {}
        for line in clear_file.read_text(encoding="utf-8").splitlines():
            scope, _, key = line.strip().partition(" ")
            if scope and key.strip() and not scope.startswith("#"):
                keys[scope] = key.strip()
        known = _digests_in(digests_file)
        if keys and all(digest(k) in known for k in keys.values()):
            clear_file.chmod(0o600)
            return DevKeys(keys, digests_file, clear_file, len(known), kept=True)
    keys = make_dev_keys(digests_file)
    text = "# scope key: the clear keys of `complaints dev` (their digests are in api_keys.yaml)\n"
    _write_private(clear_file, text + "".join(f"{s} {k}\n" for s, k in keys.items()))
    return DevKeys(keys, digests_file, clear_file, len(keys), kept=False)


# --- what a person reads ---------------------------------------------------------------------------------------


def busy_message(data_dir: Path, pid: int | None) -> str:
    holder = f"process {pid}" if pid is not None else "another process"
    return (
        f"error: {data_dir} is in use by another `complaints dev` ({holder}); one stack per data directory.\n"
        "To start a second stack beside it, give it its own directory and ports, e.g.\n"
        "  complaints dev --data-dir .run2 --port-base 9080 --kafka-port 9192\n"
        '  make run ARGS="--data-dir .run2 --port-base 9080 --kafka-port 9192"\n'
        f"To stop the first one: Ctrl-C in its terminal{f', or `kill {pid}`' if pid is not None else ''}."
    )


# Notices of the Kafka client while consumer groups form at start: normal, and meaningless to a user.
_STARTUP_NOISE = re.compile(
    r"aiokafka\S*[: ].*(GroupCoordinatorNotAvailable|coordinator dead|rebalanc|Heartbeat failed|"
    r"NotCoordinator|not available|OffsetCommit failed)",
    re.IGNORECASE,
)


@dataclass
class NoiseFolder:
    """Folds the Kafka client's start-up notices into one line per service.

    Until `window_closes` (set when the stack is up, plus a grace), matching lines are counted, not shown;
    `close()` then gives one line per service that had any."""

    window_closes: float | None = None
    counts: Counter[str] = field(default_factory=Counter)
    closed: bool = False

    def take(self, service: str, line: str, now: float) -> bool:
        """True when the line is to be shown."""
        if self.closed or (self.window_closes is not None and now >= self.window_closes):
            return True
        if _STARTUP_NOISE.search(line):
            self.counts[service] += 1
            return False
        return True

    def close(self) -> list[str]:
        if self.closed:
            return []
        self.closed = True
        return [
            f"{name:<9}| {n} start-up notice{'s' if n > 1 else ''} of the Kafka client while its consumer groups "
            "formed (normal at start, not shown)"
            for name, n in sorted(self.counts.items())
        ]


_BROKER_TROUBLE = re.compile(
    r"aiokafka|KafkaConnectionError|NodeNotReady|KafkaTimeoutError|outbox publish failed|passing fault", re.IGNORECASE
)


def broker_lost_message(bootstrap: str, code: int | None, log: Path | None) -> str:
    how = f" (exit code {code}; its log: {log})" if log is not None else ""
    return (
        f"Kafka at {bootstrap} is gone{how}. The services keep retrying and go on by themselves when a broker is "
        "back at that address; nothing is lost. Ctrl-C stops everything; `make run` starts it all again."
    )


# --- the stack -------------------------------------------------------------------------------------------------


class _Interrupted(BaseException):
    """Raised by the signal handler to leave a blocking start-up step at once."""


class DevStack:
    def __init__(self, args: argparse.Namespace, data_dir: Path, lock: DirectoryLock, out: StatusLine) -> None:
        self.args, self.data_dir, self.lock, self.out = args, data_dir, lock, out
        self.env = os.environ.copy()
        self.kafka: LocalKafka | None = None
        self.cluster: KafkaCluster | None = None  # --brokers 3
        self.pg: LocalPostgres | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.phase = "starting"
        self.stop_requested: float | None = None
        self.stop_signal = ""
        self.noise = NoiseFolder()
        self.sim_status = ""
        self.said: set[str] = set()
        self.hidden = 0
        self.started = time.monotonic()

    # signals -------------------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Runs in the main thread between two of its bytecodes, maybe while that thread holds the status line's lock
        # or a lock of `threading`: so it takes no lock and starts nothing. It notes the request; the watchdog thread
        # (started with the stack) says so and kills what is left at the deadline. A second one kills at once, and
        # only then says so, if the output takes it now (a stopped terminal would block the write for ever).
        if self.stop_requested is not None:
            self._kill_all()
            _write_if_writable(b"\nsecond Ctrl-C: stopped at once.\n")
            os._exit(130)
        self.stop_signal = signal.Signals(signum).name
        self.stop_requested = time.monotonic()
        if self.phase == "starting":
            raise _Interrupted

    def _watchdog(self) -> None:
        # Never waits on the output (the main thread may be stuck writing with the status line's lock held): each
        # notice is printed by a thread of its own, and the deadline is kept whatever the output does.
        while self.stop_requested is None:
            time.sleep(0.1)
        requested = self.stop_requested
        self._say_aside(f"stopping … ({self.stop_signal}; Ctrl-C again to stop at once)")
        time.sleep(max(0.0, requested + STOP_WITHIN_S - 1.0 - time.monotonic()))
        if self.phase == "stopped":
            return
        self._kill_all()
        self._say_aside("stopping took too long: what was left is killed.").join(0.5)
        os._exit(1)

    def _say_aside(self, line: str) -> threading.Thread:
        thread = threading.Thread(target=self.out.print, args=(line,), name="dev-notice", daemon=True)
        thread.start()
        return thread

    def _kill_all(self) -> None:
        for proc in list(self.children.values()):
            with contextlib.suppress(OSError):
                proc.kill()
        for server in (self.kafka, self.pg):
            running = server.process if server is not None else None
            if running is not None:
                with contextlib.suppress(OSError):
                    running.kill()
        for node in self.cluster.nodes if self.cluster is not None else ():
            with contextlib.suppress(OSError):
                if node.process is not None:
                    node.process.kill()

    # output --------------------------------------------------------------------------------------------------

    def say(self, line: str) -> None:
        self.out.print(line)

    def say_once(self, key: str, line: str) -> None:
        if key not in self.said:
            self.said.add(key)
            self.say(line)

    def _pump(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if not line:
                continue
            if name == "simulate" and line.startswith("status: "):
                self.sim_status = line.removeprefix("status: ")
                continue
            if "kafka" in self.said and _BROKER_TROUBLE.search(line):
                self.hidden += 1  # said once, plainly: the clients' retries add nothing
                continue
            if self.noise.take(name, line, time.monotonic()):
                self.say(f"{name:<9}| {line}")

    def _status(self) -> str:
        up = int(time.monotonic() - self.started)
        parts = [f"up {up // 60:d}:{up % 60:02d}"]
        down = sorted(n for n, p in self.children.items() if p.poll() is not None and n != "simulate")
        parts.append("services: " + (f"{', '.join(down)} stopped" if down else "all running"))
        if "kafka" in self.said:
            parts.append(f"KAFKA GONE ({self.hidden} client errors not shown)")
        if "postgres" in self.said:
            parts.append("POSTGRESQL GONE")
        if self.sim_status:
            parts.append(self.sim_status)
        return " · ".join(parts) + " · Ctrl-C stops"

    # start ---------------------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            argv,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the terminal's Ctrl-C comes to us; we stop the children in order
            preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509 - only a prctl call
        )
        self.children[name] = proc
        self.lock.note_child(name, proc.pid)
        threading.Thread(target=self._pump, args=(name, proc), name=f"out-{name}", daemon=True).start()
        return proc

    def _start(self) -> tuple[list[str], DevKeys | None]:
        env = self.env
        taken = [
            f"{self.args.port_base + OFFSETS[n]} ({n})"
            for n in available_services()
            if not port_is_free(self.args.port_base + OFFSETS[n])
        ]
        if taken:
            raise InfraError(
                f"port {', '.join(taken)} is taken by another program: give the services other ports, e.g. "
                f'`--port-base 9080` (`make run ARGS="--port-base 9080"`)'
            )
        if "KAFKA_BOOTSTRAP_SERVERS" not in env and getattr(self.args, "brokers", 1) > 1:
            self.say(f"starting Apache Kafka (KRaft), a cluster of {self.args.brokers} …")
            self.cluster = KafkaCluster(self.args.brokers, self.data_dir / "kafka-cluster", keep_data=True,
                                        first_port=self.args.kafka_port)  # fmt: skip
            self.cluster.start()
            for node in self.cluster.nodes:
                if node.process is not None:
                    self.lock.note_child(f"kafka-{node.node_id}", node.process.pid)
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.cluster.bootstrap
            env.setdefault("TOPIC_REPLICATION_FACTOR", "3")
        if "KAFKA_BOOTSTRAP_SERVERS" not in env:
            self.say("starting Apache Kafka (KRaft) …")
            self.kafka = LocalKafka(port=self.args.kafka_port, data_dir=self.data_dir / "kafka", keep_data=True)
            self.kafka.start()
            assert self.kafka.process is not None
            self.lock.note_child("kafka", self.kafka.process.pid)
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.kafka.bootstrap
        if "DATABASE_URL" not in env:
            self.say("starting PostgreSQL …")
            self.pg = LocalPostgres(data_dir=self.data_dir / "postgres", keep_data=True)
            self.pg.start()
            assert self.pg.process is not None
            self.lock.note_child("postgres", self.pg.process.pid)
            env["DATABASE_URL"] = self.pg.url
        settings = Settings(
            kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
            database_url=env["DATABASE_URL"],
            topic_replication_factor=int(env.get("TOPIC_REPLICATION_FACTOR", "1")),
        )
        asyncio.run(migrate(settings.database_url))
        topics = Topics(settings.topic_prefix)
        asyncio.run(ensure_topics(settings, topics.all(), log_append_time=topics.stamped_by_broker()))
        keys: DevKeys | None = None
        if "API_KEYS_FILE" not in env:
            keys = load_or_make_dev_keys(self.data_dir, new=self.args.new_keys)
            env["API_KEYS_FILE"] = str(keys.digests_file)
        services = available_services()
        child_env = {**env, "LOG_FORMAT": env.get("LOG_FORMAT", "text")}
        for name in services:
            port = self.args.port_base + OFFSETS[name]
            argv = [sys.executable, "-m", "shared.devtools.cli", "run", name, "--port", str(port)]
            self._spawn(name, argv, {**child_env, "HTTP_PORT": str(port)})
        for name in services:
            port = self.args.port_base + OFFSETS[name]
            if not _wait_healthy(f"http://127.0.0.1:{port}/healthz", self.children[name]):
                code = self.children[name].poll()
                raise InfraError(f"service {name} did not start (exit code {code}); its lines above say why")
        return services, keys

    def _start_simulator(self, keys: DevKeys | None) -> None:
        argv = [
            sys.executable,
            "-m",
            "shared.devtools.cli",
            "simulate",
            "--rate",
            str(self.args.simulate),
            "--intake-url",
            f"http://127.0.0.1:{self.args.port_base + OFFSETS['intake']}",
        ]
        if "routing" not in available_services():
            argv.append("--no-departments")
        for c in Channel:
            key = keys.keys.get(f"channel:{c.value}") if keys else None
            if key:
                argv += ["--channel-key", f"{c.value}={key}"]
        self._spawn("simulate", argv, {**self.env, "COMPLAINTS_STATUS_LINES": "1"})

    # watch ---------------------------------------------------------------------------------------------------

    def _watch(self) -> int:
        self.noise.window_closes = time.monotonic() + 30.0
        last_probe = 0.0
        code = 0
        while self.stop_requested is None:
            now = time.monotonic()
            if not self.noise.closed and now >= (self.noise.window_closes or now):
                for line in self.noise.close():
                    self.say(line)
            for name, proc in self.children.items():
                if proc.poll() is not None and name != "simulate":
                    self.say_once(
                        f"exit:{name}", f"service {name} exited with code {proc.returncode}; stopping everything"
                    )
                    code = 1
            if code:
                return code
            if now - last_probe >= 2.0:
                last_probe = now
                self._probe_infra()
            self.out.show(self._status())
            time.sleep(0.5)
        return code

    def _probe_infra(self) -> None:
        bootstrap = self.env["KAFKA_BOOTSTRAP_SERVERS"]
        if self.kafka is not None and self.kafka.process is not None and self.kafka.process.poll() is not None:
            log = self.kafka.data_dir / "server.out" if self.kafka.data_dir else None
            self.say_once("kafka", broker_lost_message(bootstrap, self.kafka.process.returncode, log))
        elif self.kafka is None:
            host, _, port = bootstrap.split(",")[0].rpartition(":")
            if port.isdigit() and host in ("127.0.0.1", "localhost") and not wait_for_port(int(port), 0.5):
                self.say_once("kafka", broker_lost_message(bootstrap, None, None))
        if self.pg is not None and self.pg.process is not None and self.pg.process.poll() is not None:
            self.say_once(
                "postgres",
                f"PostgreSQL is gone (exit code {self.pg.process.returncode}; its log: "
                f"{self.data_dir / 'postgres' / 'postgres.log'}). The services wait for it; Ctrl-C stops everything.",
            )

    # stop ----------------------------------------------------------------------------------------------------

    def _stop(self) -> None:
        began = self.stop_requested or time.monotonic()
        self.out.finish()
        if self.stop_requested is None:
            self.say("stopping …")
        for proc in self.children.values():
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.children.values():
            try:
                proc.wait(max(0.1, began + 7.0 - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2)
        servers: list[Any] = [s for s in (self.kafka, self.cluster, self.pg) if s is not None]
        threads = [
            threading.Thread(target=s.stop, kwargs={"timeout_s": max(0.5, began + 12.0 - time.monotonic())})
            for s in servers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.say("stopped.")

    def run(self) -> int:
        threading.Thread(target=self._watchdog, name="dev-watchdog", daemon=True).start()
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        code = 0
        try:
            try:
                code = self._run_until_stop()
            finally:
                self.phase = "stopping"  # from here the handler raises nothing
        except _Interrupted:
            # Raised at most once (the handler's second call kills instead), anywhere before the line above, even
            # while a failed start is being reported or in that `finally`: the stop below always runs.
            code = 130
        finally:
            self.phase = "stopping"
            try:
                self._stop()
            finally:
                self.phase = "stopped"
                self.lock.release()
        return code

    def _run_until_stop(self) -> int:
        try:
            services, keys = self._start()
            self.phase = "running"
        except InfraError as exc:
            self.say(f"error: {exc}")
            return 2
        if self.stop_requested is not None:
            return 130
        self._banner(services, keys)
        if self.args.simulate > 0:
            self._start_simulator(keys)
        return self._watch()

    def _banner(self, services: list[str], keys: DevKeys | None) -> None:
        base = self.args.port_base
        lines = [
            "",
            f"=== complaints dev is running (data: {self.data_dir}) ===",
            f"Kafka:       {self.env['KAFKA_BOOTSTRAP_SERVERS']}",
            f"PostgreSQL:  {self.env['DATABASE_URL']}",
        ]
        for name in services:
            port = base + OFFSETS[name]
            lines.append(f"{name:<12} http://127.0.0.1:{port}  (docs /docs, AsyncAPI /asyncapi, metrics /metrics)")
        lines.append("")
        lines += keys.banner() if keys else [f"API keys: from API_KEYS_FILE={self.env['API_KEYS_FILE']}"]
        lines += ["", "Ctrl-C stops everything (twice: at once).", ""]
        for line in lines:
            self.say(line)


def _write_if_writable(data: bytes) -> None:
    """Written to stdout only when that cannot block (a signal handler must not hang on a stopped terminal)."""
    with contextlib.suppress(OSError, ValueError):
        fd = sys.stdout.fileno()
        if select.select([], [fd], [], 0)[1]:
            os.write(fd, data)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def run_dev(args: argparse.Namespace) -> int:
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, harmless and confusing
    data_dir = (args.data_dir or Path(".run")).resolve()
    out = StatusLine(sys.stdout)
    lock = DirectoryLock(data_dir)
    try:
        lock.acquire()
    except DirectoryBusyError as exc:
        print(busy_message(data_dir, exc.pid), file=sys.stderr)
        return 3
    return DevStack(args, data_dir, lock, out).run()
