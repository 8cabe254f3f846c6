"""A local server whose start is interrupted (Ctrl-C, or SIGTERM turned into KeyboardInterrupt by the command line)
or fails leaves nothing behind: no process, and no data directory the start made itself. A directory the caller
gave is kept. The servers' binaries are never run: the first step that would run one is interrupted."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from shared.devtools.infra import kafka_cluster, kafka_local, postgres_local
from shared.devtools.infra.kafka_cluster import KafkaCluster
from shared.devtools.infra.kafka_local import InfraError, LocalKafka
from shared.devtools.infra.postgres_local import LocalPostgres


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    monkeypatch.setattr(kafka_local, "ensure_jars", lambda quiet=True: tmp_path)
    monkeypatch.setattr(kafka_cluster, "ensure_jars", lambda quiet=True: tmp_path)
    monkeypatch.setattr(postgres_local, "_bin_dir", lambda: tmp_path)
    monkeypatch.setattr(postgres_local, "_user", lambda: None)
    return root


def _interrupt_the_first_run(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> list[list[str]]:
    ran: list[list[str]] = []

    def run(args: list[str], **_: Any) -> None:
        ran.append(args)
        raise error

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(subprocess, "Popen", run)
    return ran


SERVERS: dict[str, Any] = {
    "kafka": LocalKafka,
    "postgres": LocalPostgres,
    "cluster": KafkaCluster,
}


@pytest.mark.parametrize("error", [KeyboardInterrupt(), InfraError("boom")], ids=["interrupted", "failed"])
@pytest.mark.parametrize("name", list(SERVERS))
def test_an_interrupted_start_removes_the_directory_it_made(
    name: str, error: BaseException, temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = _interrupt_the_first_run(monkeypatch, error)
    server: Any = SERVERS[name]()
    with pytest.raises(type(error)):
        server.start()
    assert ran, "the start got as far as running something"
    assert list(temp_root.iterdir()) == [], "the data directory the start made is gone"
    assert server.process is None if hasattr(server, "process") else all(n.process is None for n in server.nodes)


@pytest.mark.parametrize("name", list(SERVERS))
def test_an_interrupted_start_keeps_a_directory_it_was_given(
    name: str, temp_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt_the_first_run(monkeypatch, KeyboardInterrupt())
    given = tmp_path / "given"
    server: Any = SERVERS[name]()
    server.data_dir = given
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert given.is_dir()
