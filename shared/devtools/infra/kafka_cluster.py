"""Apache Kafka as a cluster of three KRaft nodes on loopback, from the same Maven Central jars as `kafka_local`.

Each node is a combined broker and controller; the controller quorum is the three of them (static voters), topics
default to replication factor 3 with `min.insync.replicas=2`, so one node can go away while producers with
`acks=all` go on. Used by `complaints dev --brokers 3` and by the fault suite (tests/e2e), which kills and restarts
single nodes: a node keeps its ports and its log directory across `kill()` and `start()`.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from shared.devtools.infra.kafka_local import KAFKA_VERSION, LOG4J2, InfraError, ensure_jars
from shared.devtools.infra.ports import die_with_parent, free_port, wait_for_port
from shared.devtools.infra.process import kill_process, serve_until_signalled, start_or_stop, stop_process

REPLICATION = 3
MIN_INSYNC = 2


@dataclass
class ClusterNode:
    """One broker+controller of the cluster; `start()` (again, after a kill) keeps its ports and its data."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    cluster_id: str
    voters: str
    partitions: int = 6
    heap: str = "384m"
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _mark: int = field(default=0, init=False)  # the log's size at the last launch

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "server.out"

    def _config(self) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": str(self.partitions),
            "default.replication.factor": str(REPLICATION),
            "min.insync.replicas": str(MIN_INSYNC),
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": str(REPLICATION),
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": str(REPLICATION),
            "transaction.state.log.min.isr": str(MIN_INSYNC),
            "share.coordinator.state.topic.replication.factor": str(REPLICATION),
            "share.coordinator.state.topic.min.isr": str(MIN_INSYNC),
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _java(self, jars: Path) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise InfraError(
                "Java 17+ is needed to run the local Kafka: install it (`apt-get install openjdk-17-jre-headless`)."
            )
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            f"-Dlog4j2.configurationFile={LOG4J2}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            f"{jars}/*",
        ]

    def launch(self) -> None:
        """Format the log directory on first use, then start the JVM (not waiting for it)."""
        jars = ensure_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._config()
        base = self._java(jars)
        if not (self.data_dir / "logs" / "meta.properties").exists():
            fmt = subprocess.run(
                [*base, "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(config)],
                capture_output=True,
                text=True,
                check=False,
            )
            if fmt.returncode != 0:
                raise InfraError(f"formatting node {self.node_id}'s log directory failed:\n{fmt.stdout}\n{fmt.stderr}")
        self._mark = self.log.stat().st_size if self.log.exists() else 0
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            [*base, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "kafka.Kafka", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only a prctl call, safe before exec
        )

    def ready(self) -> bool:
        """Started since the last launch (the log's tail since then says so)."""
        if self.process is None:
            return False
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise InfraError(f"Kafka node {self.node_id} exited with code {self.process.returncode}:\n{tail}")
        if not wait_for_port(self.port, 0.2):
            return False
        with self.log.open("rb") as f:
            f.seek(self._mark)
            return b"Kafka Server started" in f.read()

    def start(self, timeout_s: float = 120.0) -> None:
        self.launch()
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready():
                return
            time.sleep(0.3)
        raise InfraError(f"Kafka node {self.node_id} did not become ready on {self.address} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 30.0) -> None:
        proc, self.process = self.process, None
        stop_process(proc, signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL, for fault tests; the data stays so `start()` resumes the node."""
        proc, self.process = self.process, None
        kill_process(proc)


@dataclass
class KafkaCluster:
    """Three nodes. `start()` blocks until every one answers; `stop()` stops them all and waits."""

    size: int = 3
    data_dir: Path | None = None
    partitions: int = 6
    heap: str = "384m"
    keep_data: bool = False
    first_port: int | None = None
    nodes: list[ClusterNode] = field(default_factory=list, init=False)
    _own_dir: bool = field(default=False, init=False)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes)

    def _ports(self) -> list[tuple[int, int]]:
        taken: set[int] = set()

        def pick(preferred: int | None) -> int:
            port = free_port(preferred)
            while port in taken:
                port = free_port()
            taken.add(port)
            return port

        return [(pick(self.first_port + i if self.first_port else None), pick(None)) for i in range(self.size)]

    def start(self, timeout_s: float = 180.0) -> KafkaCluster:
        """Start every node and wait until each answers. Whatever stops the start (an error, Ctrl-C, SIGTERM as
        KeyboardInterrupt) stops the nodes and removes a data directory this start made."""
        if self.size < REPLICATION:
            raise InfraError(f"a cluster needs at least {REPLICATION} nodes for replication factor {REPLICATION}")
        return start_or_stop(lambda: self._start(timeout_s), self.stop)

    def _start(self, timeout_s: float) -> KafkaCluster:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="kafka-cluster-"))
            self._own_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        id_file = self.data_dir / "cluster.id"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:22])
        cluster_id = id_file.read_text().strip()
        ports = self._ports()
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        self.nodes = [
            ClusterNode(i + 1, p, c, self.data_dir / f"node-{i + 1}", cluster_id, voters, self.partitions, self.heap)
            for i, (p, c) in enumerate(ports)
        ]
        for node in self.nodes:  # all at once: a controller quorum needs a majority before any broker is ready
            node.launch()
        for node in self.nodes:
            node.wait_ready(timeout_s)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop(timeout_s)
        if self._own_dir and not self.keep_data and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka_cluster", description=__doc__)
    parser.add_argument("--port", type=int, default=9092, help="the first node's port (then +1, +2)")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        cluster = KafkaCluster(data_dir=args.data_dir, keep_data=args.data_dir is not None, first_port=args.port)
        cluster.start()
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return serve_until_signalled(
        f"Kafka {KAFKA_VERSION} cluster of {cluster.size} ready on {cluster.bootstrap}", cluster.stop
    )


if __name__ == "__main__":
    sys.exit(main())
