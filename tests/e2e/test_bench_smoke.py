"""`complaints bench pipeline` at a tiny size, as a person runs it: it runs every service as its own process on the
session's Kafka and PostgreSQL, prints its table and writes the JSON with the issue's keys. Figures are never
asserted on (this machine is shared); only that they are there and that the run saw every complaint out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.test_dev_stack import descendants, wait_all_gone

REPO = Path(__file__).resolve().parents[2]
KEYS = ("pipeline_per_s", "baseline_per_s", "ratio", "p50_ms_at_500", "p99_ms_at_500", "rss_mb")


def test_bench_pipeline_runs_prints_its_table_and_writes_the_json(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "pipeline.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_URL", "TOPIC_PREFIX"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=postgres_url, PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, "-m", "shared.devtools.cli", "bench", "pipeline", "--backlog", "60", "--seconds", "1",
         "--rates", "20,500", "--timeout", "240", "--json", str(out)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| figure" in done.stdout, done.stdout[-3000:]
    assert "raw → assigned at 500/s" in done.stdout, done.stdout[-3000:]
    assert "baseline" in done.stderr or "backlog drain" in done.stderr, "no progress line"
    figures = json.loads(out.read_text())
    for key in KEYS:
        assert key in figures, key
    assert set(figures["rss_mb"]) == {"intake", "routing", "sla", "reporting"}
    assert all(mb > 0 for mb in figures["rss_mb"].values())
    # Every distinct complaint of the backlog was assigned and got its resolve deadline (not a figure: a count).
    backlog = figures["backlog"]
    assert backlog["assigned"] == backlog["complaints"]
    assert backlog["deadline_set"] == backlog["complaints"]
    assert figures["pipeline_per_s"] is not None
    assert figures["baseline_per_s"] > 0


def _bench_running(kafka_bootstrap: str, postgres_url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_URL", "TOPIC_PREFIX"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=postgres_url, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "shared.devtools.cli", "bench", "pipeline", "--backlog", "3000", "--seconds", "30"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _services_of(proc: subprocess.Popen[str], timeout_s: float) -> list[int]:
    """The bench and its four services, once all four run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        family = descendants(proc.pid)
        if sum(1 for pid in family if "shared.devtools.cli\0run" in _cmdline(pid)) >= 4:
            return [proc.pid, *family]
        time.sleep(0.3)
    raise AssertionError("the bench's services did not start")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def test_a_bench_stopped_by_sigterm_or_killed_leaves_no_service_behind(kafka_bootstrap: str, postgres_url: str) -> None:
    bench = _bench_running(kafka_bootstrap, postgres_url)
    try:
        family = _services_of(bench, 300)
        bench.send_signal(signal.SIGTERM)
        bench.wait(120)
        assert bench.returncode == 130
        assert wait_all_gone(family, 30) == []
    finally:
        bench.kill()

    killed = _bench_running(kafka_bootstrap, postgres_url)
    try:
        family = _services_of(killed, 300)
        killed.kill()  # SIGKILL: no handler runs; the services die with it (PR_SET_PDEATHSIG)
        killed.wait(30)
        assert wait_all_gone(family, 30) == []
    finally:
        killed.kill()
