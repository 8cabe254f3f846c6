"""Adversarial review of session 9's changes on the real parts (real Apache Kafka and PostgreSQL, services as
processes): `db_or_503` on the write and report routes test_attack_paused leaves out, with PostgreSQL paused (SIGSTOP)
and stopped (refusing); and `poll_without_sleeping` under consumer-group rebalances, SIGKILL and an idle service."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.devtools.infra.postgres_local import LocalPostgres
from shared.domain import Category
from tests.integration.test_delivery_faults import server_processes, signal_all
from tests.integration.test_portal_flow import submission
from tests.integration.test_routing_flow import _make_env, _start_world, _stop_world, assigned_once, complaint
from tests.support.infra import Env, ServiceProcess, create_database

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _sample(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((SAMPLES / name).read_text(encoding="utf-8").splitlines()[0])["raw"]
    return raw


Call = tuple[str, str, str, str, dict[str, Any]]
"""(service, method, path, scope or '' for none, httpx keyword arguments)"""


def calls(run: str) -> list[Call]:
    visit = _sample("visit.jsonl") | {"visitId": f"ZF-{run}"}
    survey = _sample("survey.jsonl") | {"responseId": f"WJ-{run}"}
    order = {"gdbh": f"G{run}", "ldsj": "2026-11-26 10:00:00", "sqlx": "投诉", "sqfl": "政务服务", "sqnr": "窗口办事难"}
    item = {
        "item_id": f"{run}-1",
        "source": f"2025 评估 {run}",
        "area": "a",
        "problem": "p",
        "departments": ["fgw"],
        "due_date": "2025-12-31",
    }
    act = {
        "action_id": f"a-{run}",
        "complaint_id": f"hotline:N{run}",
        "department": "spj",
        "action": "accept",
        "at": "2026-11-26T10:00:00Z",
    }
    period = "from=2026-01-01&to=2026-01-31"
    return [
        ("intake", "POST", "/v1/intake/hotline", "channel:hotline", {"json": order}),
        ("intake", "POST", "/v1/portal/submissions", "", {"json": submission(1, title=f"停水 {run}")}),
        ("intake", "POST", "/v1/visits", "channel:visit", {"json": visit}),
        ("intake", "POST", "/v1/surveys/responses", "channel:survey", {"json": survey}),
        ("routing", "POST", f"/v1/cases/hotline:N{run}/actions", "department:spj", {"json": act}),
        ("reporting", "GET", f"/v1/reports/summary.csv?{period}", "reports", {}),
        ("reporting", "GET", f"/v1/reports/summary.xlsx?{period}", "reports", {}),
        ("reporting", "GET", f"/v1/reports/repeats?{period}", "reports", {}),
        ("reporting", "GET", "/v1/reports/bulletin?month=2026-11", "reports", {}),
        ("reporting", "GET", f"/v1/reports/warnings?{period}", "reports", {}),
        ("reporting", "POST", "/v1/ledger/items", "admin", {"json": item}),
        (
            "reporting",
            "POST",
            f"/v1/ledger/items/{run}-nope/close",
            "admin",
            {"json": {"evidence": "e", "approved_by": "fgw"}},
        ),
        (
            "reporting",
            "POST",
            "/v1/supervision/items",
            "admin",
            {"json": {"complaint_id": f"hotline:N{run}", "phenomenon": "judicial", "reason": "督查"}},
        ),
        ("reporting", "POST", f"/v1/supervision/items/S-{run}/follow-ups", "admin", {"json": {"note": "电话督办"}}),
    ]


async def _answers(procs: dict[str, ServiceProcess], keys: dict[str, str], todo: list[Call]) -> dict[str, Any]:
    """Every call at once (each may wait out its own bound): the status and Retry-After, or 'no answer'."""

    async def one(service: str, method: str, path: str, scope: str, kw: dict[str, Any]) -> tuple[str, Any]:
        headers = {"Authorization": f"Bearer {keys[scope]}"} if scope else {}
        # The longest bound of a route is 30 s (ledger, supervision); a hang shows as no answer at 45 s.
        async with httpx.AsyncClient(base_url=procs[service].url, timeout=45) as http:
            try:
                r = await http.request(method, path, headers=headers, **kw)
            except httpx.TimeoutException:
                return f"{method} {path}", "no answer within 45 s"
        return f"{method} {path}", (r.status_code, r.headers.get("retry-after"), r.text[:200])

    return dict(await asyncio.gather(*(one(*c) for c in todo)))


def _not_503(answers: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answers.items() if not (isinstance(v, tuple) and v[0] == 503 and v[1])}


async def _recovered(procs: dict[str, ServiceProcess], keys: dict[str, str], todo: list[Call]) -> dict[str, Any]:
    """Poll until every call answers below 500 (a 2xx, or the 4xx of an id that does not exist); what still fails."""
    deadline = time.monotonic() + 60
    left = todo
    last: dict[str, Any] = {}
    while left and time.monotonic() < deadline:
        last = await _answers(procs, keys, left)
        left = [c for c in left if not (isinstance(got := last[f"{c[1]} {c[2]}"], tuple) and got[0] < 500)]
        if left:
            await asyncio.sleep(0.5)
    return {f"{c[1]} {c[2]}": last.get(f"{c[1]} {c[2]}") for c in left}


async def test_write_and_report_routes_answer_503_while_the_database_is_paused_or_stopped(env: Env) -> None:
    pg = LocalPostgres(data_dir=env.tmp / "own-pg").start()  # its own server: pausing it disturbs no other test
    procs: dict[str, ServiceProcess] = {}
    try:
        assert pg.process is not None
        url = await create_database(pg.url, "away")
        own = Env(env.bootstrap, url, env.prefix, env.keys_file, env.keys, env.tmp)
        for name in ("intake", "routing", "reporting"):
            procs[name] = ServiceProcess(name, own.environ(), env.tmp / f"{name}.log").start()
        # Each route works with the database up (the pool holds connections a pause then freezes).
        assert await _recovered(procs, env.keys, calls("U" + uuid.uuid4().hex[:8].upper())) == {}

        server = server_processes(pg.process.pid)
        signal_all(server, signal.SIGSTOP)
        try:
            paused = await _answers(procs, env.keys, calls("P" + uuid.uuid4().hex[:8].upper()))
        finally:
            signal_all(server, signal.SIGCONT)
        assert _not_503(paused) == {}, paused
        assert await _recovered(procs, env.keys, calls("Q" + uuid.uuid4().hex[:8].upper())) == {}

        pg.stop()  # refusing: the port is closed
        try:
            stopped = await _answers(procs, env.keys, calls("R" + uuid.uuid4().hex[:8].upper()))
        finally:
            pg.start()
        assert _not_503(stopped) == {}, stopped
        after = await _recovered(procs, env.keys, calls("A" + uuid.uuid4().hex[:8].upper()))
        assert after == {}, {**after, "logs": {n: p.log_tail(1500) for n, p in procs.items()}}
    finally:
        for p in procs.values():
            p.stop()
        pg.stop()


# --- poll_without_sleeping: rebalances and SIGKILL mid-batch, and an idle service ------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children still running, from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in [str(pid), *(e for e in os.listdir("/proc") if e.isdigit() and e != str(pid))]:
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if entry == str(pid) or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def test_rebalances_and_a_sigkill_mid_backlog_assign_every_complaint_once_and_idle_routing_sleeps(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    """A backlog of 3,000 complaints taken by two routing replicas in batches of 20; one is killed with SIGKILL
    mid-batch (a rebalance: the survivor takes its partitions from their last commit) and started again while the
    survivor works (another rebalance: the survivor's partitions revoked mid-batch, or between a batch's two reads).
    Every complaint gets one assignment: a republished copy carries the same event_id and bytes; two assignments of
    one complaint would be a double effect. Then, the backlog done, each replica idles: its CPU over 10 s is a few
    wake-ups, no busy poll."""
    env = await _make_env(kafka_bootstrap, postgres_url, tmp_path)
    categories = list(Category)
    regions = ["150500", "150502", "150521", "150523", "150525", "150581"]
    complaints = [
        complaint(f"B{i:05d}", categories[i % len(categories)], regions[i % len(regions)], phone=None)
        for i in range(3000)
    ]
    small = {"CONSUMER_MAX_RECORDS": "20", "OUTBOX_BATCH_SIZE": "50"}
    w = await _start_world(env, with_intake=False, **small)
    second = ServiceProcess("routing", env.environ(**small), env.tmp / "routing2.log")
    want = {c.complaint_id for c in complaints}

    def done_ids() -> int:
        return len({r.key.decode() for r in w.tap.on(w.t.assigned)})

    try:
        second.start()  # two replicas share the group's partitions
        await w.receive(*complaints)
        await w.tap.wait(lambda: done_ids() >= 100, what="the first assignments")
        w.routing.kill()  # mid-batch: the second replica takes its partitions from their last commit
        at_kill = done_ids()
        await w.tap.wait(lambda: done_ids() >= min(len(want), at_kill + 100), timeout_s=120, what="after the kill")
        w.routing.start()  # joins again while the second replica works through the backlog: its batch is revoked
        at_restart = done_ids()
        await w.tap.wait(lambda: done_ids() >= len(want), timeout_s=180, what="every assignment")
        print(f"assigned at the kill {at_kill}, at the restart {at_restart} of {len(want)}")
        # Idle: both replicas have nothing to read; measure their CPU over 10 s (after the outbox relays settle).
        await asyncio.sleep(3)
        pids = [p.proc.pid for p in (w.routing, second) if p.proc is not None]
        before = [cpu_seconds(pid) for pid in pids]
        await asyncio.sleep(10)
        idle = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    finally:
        second.stop()
        await _stop_world(w)
    assigned_once(w.tap.on(w.t.assigned), want)
    assert w.tap.on(w.t.dlq) == []
    assert 0 < at_kill < at_restart < len(want), "the kill and the restart landed mid-backlog"
    print(f"idle routing CPU over 10 s: {[round(s, 3) for s in idle]} s")
    # Idle wake-ups (each consumer's poll once a second, its fetcher's 100-ms fetches, heartbeats, the clock) cost a
    # few percent of a core; a busy poll would take most of one (over 5 s in 10 s).
    assert all(s < 1.0 for s in idle), idle
