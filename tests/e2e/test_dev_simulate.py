"""`complaints dev --simulate 20` as a person runs it, and what it must show (issues 8 and 10): non-empty reports,
portal submissions, visits and surveys among the channels, supervision items and an early warning in the bulletin
(the simulator plants a rising series so that there is one), and every Grafana panel's query returning data from a
real Prometheus (Debian's `prometheus`) scraping the stack, with the counters moving between two evaluations.

One stack (its own Kafka and PostgreSQL, free ports, a temporary data directory), stopped by SIGTERM at the end.
Every wait is bounded and polls its condition; nothing asserts on a duration but the contract's 15 s to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.devtools.traffic import PLANTED_REGION
from tests.e2e.test_dev_stack import START_TIMEOUT_S, STOP_WITHIN_S, Dev, start_dev, wait_all_gone
from tests.support.prometheus import (
    panel_queries,
    panels_without_data,
    query,
    running_prometheus,
    targets_down,
    wait_for,
)

pytestmark = pytest.mark.devstack  # `make devstack`: see the Makefile

REPO = Path(__file__).resolve().parents[2]
SERVICES = {"intake": 1, "routing": 2, "sla": 3, "reporting": 4}
REPORTS_WITHIN_S = 300.0
PANELS_WITHIN_S = 240.0
PLANTED_KEY = {"region_code": PLANTED_REGION, "category": "financing"}
MOVED_COUNTERS = ("complaints_received_total", "complaints_assigned_total")


@pytest.fixture
def data() -> Iterator[Path]:
    """Outside pytest's tmp root (PostgreSQL runs as its own user; see test_dev_stack)."""
    path = Path(tempfile.mkdtemp(prefix="dev-simulate-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def stack(data: Path) -> Iterator[Dev]:
    dev = start_dev(data / "run", simulate=20)
    try:
        yield dev
    finally:
        for pid in reversed(dev.family()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            dev.proc.wait(10)


def kept_keys(data_dir: Path) -> dict[str, str]:
    """The clear keys the stack keeps in its data directory (dev_keys.txt: `scope key` lines)."""
    keys = {}
    for line in (data_dir / "dev_keys.txt").read_text(encoding="utf-8").splitlines():
        scope, _, key = line.strip().partition(" ")
        if scope and not scope.startswith("#"):
            keys[scope] = key.strip()
    return keys


def _count(page: str, pattern: str) -> int:
    found = re.search(pattern, page)
    return int(found.group(1)) if found else 0


def what_is_missing(reporting: str, key: str) -> list[str]:
    """What the reports do not show yet (empty when everything the issues ask for is there)."""
    auth = {"Authorization": f"Bearer {key}"}
    missing: list[str] = []
    try:
        with httpx.Client(base_url=reporting, headers=auth, timeout=20) as http:
            total = http.get("/v1/reports/summary").json()["total"]
            if not (total["received"] > 0 and total["resolved"] > 0):
                missing.append(f"summary: received {total['received']}, resolved {total['resolved']}")
            channels = {
                g["key"] for g in http.get("/v1/reports/summary", params={"group_by": "channel"}).json()["groups"]
            }
            missing += [f"channel {c} in the summary" for c in ("portal", "visit", "survey") if c not in channels]
            if not http.get("/v1/supervision/items").json()["items"]:
                missing.append("supervision items")
            warnings = http.get("/v1/reports/warnings").json()["warnings"]
            # The rising series the simulator plants after a quiet start: 库伦旗 · 融资信贷, and one enterprise's repeat.
            if not any(w["kind"] == "rising" and w["key"] == PLANTED_KEY for w in warnings):
                missing.append(f"the planted rising series among {len(warnings)} warnings")
            if not any(w["kind"] == "enterprise_repeat" for w in warnings):
                missing.append("an enterprise_repeat warning")
            surveys = http.get("/v1/reports/surveys").json()["total"]
            if not surveys["responses"]:
                missing.append("survey responses in the survey report")
            page = http.get("/v1/reports/bulletin").text
            if _count(page, r"督查事项共 (\d+) 件") < 1:
                missing.append("supervision items in the bulletin")
            if _count(page, r"本月共发出预警 (\d+) 条") < 1:
                missing.append("an early warning in the bulletin")
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        missing.append(f"reporting not answering yet: {exc!r}")
    return missing


def test_dev_simulate_fills_the_reports_the_bulletin_and_every_grafana_panel(data: Path, stack: Dev) -> None:
    stack.wait_for(lambda line: "=== complaints dev is running" in line, START_TIMEOUT_S)
    stack.wait_for(lambda line: line.startswith("Ctrl-C stops everything"), 10)
    keys = kept_keys(data / "run")
    assert {"reports", "channel:visit", "channel:survey"} <= set(keys)
    reporting = f"http://127.0.0.1:{stack.port_base + SERVICES['reporting']}"

    deadline = time.monotonic() + REPORTS_WITHIN_S
    missing = what_is_missing(reporting, keys["reports"])
    while missing and time.monotonic() < deadline:
        assert stack.proc.poll() is None, "\n".join(stack.lines[-60:])
        time.sleep(2)
        missing = what_is_missing(reporting, keys["reports"])
    assert not missing, f"after {REPORTS_WITHIN_S:.0f} s still missing: {missing}\n" + "\n".join(stack.lines[-40:])

    ports = {name: stack.port_base + offset for name, offset in SERVICES.items()}
    with running_prometheus(data, ports) as (url, proc):
        asyncio.run(grafana_queries_move(url, proc, data / "prometheus.log", set(ports)))

    family = stack.family()
    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(STOP_WITHIN_S) == 0
    assert wait_all_gone(family, 5) == []
    assert any(line.strip() == "stopped." for line in stack.lines)


async def grafana_queries_move(url: str, proc: subprocess.Popen[bytes], log: Path, services: set[str]) -> None:
    queries = panel_queries()
    assert len(queries) >= 25
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:

        async def down() -> list[str]:
            return await targets_down(http, proc, log, services)

        async def no_data() -> list[str]:
            return await panels_without_data(http, queries)

        await wait_for("targets up", down, timeout_s=60)
        await wait_for("every panel's query returns data", no_data, timeout_s=PANELS_WITHIN_S, every_s=2)
        first = await counters(http)

        async def not_moved() -> list[str]:
            now = await counters(http)
            return [f"{name}: {first[name]} -> {now[name]}" for name in MOVED_COUNTERS if now[name] <= first[name]]

        await wait_for("the counters moved", not_moved, timeout_s=60, every_s=2)
        assert await panels_without_data(http, queries) == []


async def counters(http: httpx.AsyncClient) -> dict[str, float]:
    out: dict[str, Any] = {}
    for name in MOVED_COUNTERS:
        result = await query(http, f"sum({name})")
        out[name] = float(result[0]["value"][1]) if result else 0.0
    return out
