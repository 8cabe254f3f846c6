"""`complaints bench pipeline` at a tiny size, as a person runs it: it runs every service as its own process on the
session's Kafka and PostgreSQL, prints its table and writes the JSON with the issue's keys. Figures are never
asserted on (this machine is shared); only that they are there and that the run saw every complaint out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
