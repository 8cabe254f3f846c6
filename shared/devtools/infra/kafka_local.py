"""Apache Kafka, one KRaft broker+controller on loopback, run from Maven Central jars with the machine's Java.

What the distribution's `kafka-storage.sh format --standalone` and `kafka-server-start.sh` do, without the
tarball: resolve `org.apache.kafka:kafka_2.13` and its runtime dependencies with Maven once into a cache
folder (deploy/kafka/pom.xml), format a log directory with `kafka.tools.StorageTool`, start `kafka.Kafka`.
Used by `complaints dev`, the tests and CI whenever `KAFKA_BOOTSTRAP_SERVERS` is not given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from shared.devtools.infra.ports import die_with_parent, free_port, wait_for_port
from shared.devtools.infra.process import kill_process, serve_until_signalled, start_or_stop, stop_process

KAFKA_VERSION = "4.1.1"
REPO_ROOT = Path(__file__).resolve().parents[3]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J2 = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"


class InfraError(RuntimeError):
    """Local infrastructure could not be provided; the message says what to install or fix."""


def cache_dir() -> Path:
    base = os.environ.get("COMPLAINTS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "complaints")
    return Path(base) / f"kafka-{KAFKA_VERSION}"


def ensure_jars(quiet: bool = True) -> Path:
    """The folder of Kafka's jars, fetched with Maven on first use (about 55 MB)."""
    target = cache_dir()
    marker = target / ".complete"
    if marker.exists():
        return target
    if shutil.which("java") is None:
        raise InfraError(
            "Java 17+ is needed to run the local Kafka: install it (e.g. `apt-get install openjdk-17-jre-headless`)."
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError(
            "Maven is needed once to fetch Kafka's jars from Maven Central: install it (`apt-get install maven`), "
            "or set KAFKA_BOOTSTRAP_SERVERS to a running Kafka."
        )
    tmp = Path(tempfile.mkdtemp(prefix="kafka-jars-", dir=target.parent if target.parent.exists() else None))
    cmd = [
        mvn,
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    if quiet:
        cmd.insert(1, "-q")
    print(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {target} …", file=sys.stderr)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
        raise InfraError(f"fetching Kafka's jars with Maven failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    marker.write_text(KAFKA_VERSION)
    return target


SCRAM_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class SaslSsl:
    """An opt-in SASL_SSL listener for clients (the services' production setting, contract 5): TLS with the broker's
    key and certificate chain from one PEM file (an unencrypted PKCS#8 key), SCRAM-SHA-512 users created when the log
    directory is formatted (`StorageTool format --add-scram`). The controller and the broker's own traffic stay on
    PLAINTEXT loopback listeners."""

    keystore_pem: Path
    users: dict[str, str]

    def __post_init__(self) -> None:
        for name, password in self.users.items():
            for text in (name, password):
                if not text or any(not (c.isascii() and (c.isalnum() or c in "-_.")) for c in text):
                    raise InfraError(f"SCRAM user names and passwords here are [A-Za-z0-9._-]+, not {text!r}")

    def scram_args(self) -> list[str]:
        return [
            a for n, pw in self.users.items() for a in ("--add-scram", f"{SCRAM_MECHANISM}=[name={n},password={pw}]")
        ]


@dataclass
class LocalKafka:
    """One local broker. `start()` blocks until it answers; `stop()` stops it and waits."""

    port: int | None = None
    data_dir: Path | None = None
    partitions: int = 6
    heap: str = "512m"
    keep_data: bool = False
    sasl_ssl: SaslSsl | None = None
    """Clients connect over SASL_SSL on `port` (see SaslSsl); the broker's own listener is then on `internal_port`."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    controller_port: int = field(default=0, init=False)
    internal_port: int = field(default=0, init=False)
    _own_dir: bool = field(default=False, init=False)
    _out_from: int = field(default=0, init=False)
    """Where this run's output starts in `server.out` (kept across runs): readiness reads only this run's."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _classpath(self, jars: Path) -> str:
        return f"{jars}/*"

    def _write_config(self, log_dir: Path) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(log_dir),
            "num.partitions": str(self.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        if self.sasl_ssl is not None:
            props.update(self._sasl_ssl_props(self.sasl_ssl))
        path = log_dir.parent / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _sasl_ssl_props(self, sasl: SaslSsl) -> dict[str, str]:
        internal = f"PLAINTEXT://127.0.0.1:{self.internal_port}"
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{self.port},{internal},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{self.port},{internal}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(sasl.keystore_pem),
            "ssl.client.auth": "none",
        }

    def start(self, timeout_s: float = 90.0) -> LocalKafka:
        """Start the broker and wait until it answers. Whatever stops the start (an error, Ctrl-C, SIGTERM as
        KeyboardInterrupt) stops the broker and removes a data directory this start made."""
        return start_or_stop(lambda: self._start(timeout_s), self.stop)

    def _start(self, timeout_s: float) -> LocalKafka:
        jars = ensure_jars()
        java = shutil.which("java")
        if java is None:
            raise InfraError(
                "Java 17+ is needed to run the local Kafka: install it (`apt-get install openjdk-17-jre-headless`)."
            )
        self.port = free_port(self.port)
        self.controller_port = free_port()
        if self.sasl_ssl is not None:
            self.internal_port = free_port()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="kafka-"))
            self._own_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_dir = self.data_dir / "logs"
        fresh = not (log_dir / "meta.properties").exists()
        config = self._write_config(log_dir)
        base = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            f"-Dlog4j2.configurationFile={LOG4J2}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            self._classpath(jars),
        ]
        if fresh:
            cluster_id = uuid.uuid4().hex[:22]
            scram = self.sasl_ssl.scram_args() if self.sasl_ssl is not None else []
            fmt = subprocess.run(
                [
                    *base,
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    cluster_id,
                    "-c",
                    str(config),
                    *scram,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if fmt.returncode != 0:
                raise InfraError(f"formatting Kafka's log directory failed:\n{fmt.stdout}\n{fmt.stderr}")
        out_path = self.data_dir / "server.out"
        self._out_from = out_path.stat().st_size if out_path.exists() else 0
        out = out_path.open("ab")
        self.process = subprocess.Popen(
            [*base, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "kafka.Kafka", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only a prctl call, safe before exec
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.output()[-4000:]
                raise InfraError(f"Kafka exited with code {self.process.returncode}:\n{tail}")
            if wait_for_port(self.port, 0.5) and self._broker_ready():
                return self
            time.sleep(0.2)
        raise InfraError(f"Kafka did not become ready on {self.bootstrap} within {timeout_s:.0f} s")

    def output(self) -> str:
        """This run's output of the broker (not the earlier runs' in the same file)."""
        log = self.data_dir / "server.out" if self.data_dir else None
        if log is None or not log.exists():
            return ""
        with log.open("rb") as f:
            f.seek(self._out_from)
            return f.read().decode(errors="replace")

    def _broker_ready(self) -> bool:
        return "Kafka Server started" in self.output()

    def stop(self, timeout_s: float = 30.0) -> None:
        proc, self.process = self.process, None
        stop_process(proc, signal.SIGTERM, timeout_s)
        if self._own_dir and not self.keep_data and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, for fault tests; the data directory stays so `start()` can resume it."""
        proc, self.process = self.process, None
        kill_process(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka_local", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="fetch the jars into the cache folder")
    run = sub.add_parser("run", help="run a broker in the foreground until Ctrl-C")
    run.add_argument("--port", type=int, default=9092)
    run.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            print(ensure_jars())
            return 0
        kafka = LocalKafka(port=args.port, data_dir=args.data_dir, keep_data=args.data_dir is not None).start()
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return serve_until_signalled(f"Kafka {KAFKA_VERSION} ready on {kafka.bootstrap}", kafka.stop)


if __name__ == "__main__":
    sys.exit(main())
