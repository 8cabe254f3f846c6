"""A real Prometheus (Debian's `prometheus`) for tests: a scrape config for the services' ports, the process, and
every panel query of the provisioned Grafana dashboards evaluated through its HTTP API. Used by
tests/integration/test_monitoring.py (services as processes) and tests/e2e/test_dev_simulate.py (`complaints dev`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from shared.devtools.infra.ports import free_port

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
# Grafana's variables, given the values a short run can fill: rate over 30 s (30 scrapes), totals since start.
VARIABLES = {"$__rate_interval": "30s", "$__range": "15m"}


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL with Grafana's variables replaced) for every target of every panel."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for variable, value in VARIABLES.items():
                    expr = expr.replace(variable, value)
                assert "$" not in expr, f"{path.stem} / {panel['title']}: unreplaced variable in {expr}"
                out.append((path.stem, panel["title"], expr))
    return out


def prometheus_config(path: Path, ports: Mapping[str, int]) -> None:
    """Scrape every second each service (name → port on 127.0.0.1), with the project's alert rules loaded."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(p) for p in sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))],
        "scrape_configs": [
            {
                "job_name": "complaints",
                "honor_labels": True,
                "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"], "labels": {"service": name}} for name, port in ports.items()
                ],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))


@contextlib.contextmanager
def running_prometheus(tmp: Path, ports: Mapping[str, int]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Prometheus on a free port scraping `ports`; yields (its URL, its process); stopped at the end."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: apt-get install prometheus (.ci/run does it)"
    config = tmp / "prometheus.yml"
    prometheus_config(config, ports)
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


async def query(http: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    resp = await http.get("/api/v1/query", params={"query": expr})
    body = resp.json()
    assert resp.status_code == 200, f"{expr}: {resp.status_code} {body}"
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def wait_for(what: str, check: Any, timeout_s: float, every_s: float = 1.0) -> Any:
    """Call the async `check` until it returns a falsy 'missing' value; fail with the last one at the deadline."""
    deadline = time.monotonic() + timeout_s
    missing = await check()
    while missing and time.monotonic() < deadline:
        await asyncio.sleep(every_s)
        missing = await check()
    assert not missing, f"{what}: still missing after {timeout_s:.0f} s: {missing}"


async def panels_without_data(http: httpx.AsyncClient, queries: list[tuple[str, str, str]]) -> list[str]:
    """Queries with an empty result, or only NaN (a ratio or quantile of nothing yet)."""
    empty = []
    for board, title, expr in queries:
        values = [float(s["value"][1]) for s in await query(http, expr)]
        if not any(v == v for v in values):
            empty.append(f"{board} / {title}: {expr} -> {values}")
    return empty


async def targets_down(http: httpx.AsyncClient, proc: subprocess.Popen[bytes], log: Path, want: set[str]) -> list[str]:
    """The services Prometheus does not scrape yet (fails the test when Prometheus itself has exited)."""
    if proc.poll() is not None:
        raise AssertionError(f"prometheus exited: {log.read_bytes()[-3000:].decode(errors='replace')}")  # noqa: ASYNC240
    try:
        resp = await http.get("/api/v1/targets")
    except httpx.HTTPError as exc:
        return [f"prometheus not answering: {exc!r}"]
    if resp.status_code != 200:  # still starting: 503 "Service Unavailable" in plain text until its TSDB is open
        return [f"prometheus not ready: {resp.status_code} {resp.text[:80]!r}"]
    active = resp.json()["data"]["activeTargets"]
    up = {t["labels"]["service"] for t in active if t["health"] == "up"}
    return sorted(want - up)
