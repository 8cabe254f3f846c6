"""Adversarial bounded waits (issue 7, defect 8 attacked): every GET endpoint of routing and reporting, and /readyz,
answers within its bound while PostgreSQL (the postmaster and every backend) is paused with SIGSTOP."""

from __future__ import annotations

import signal

import httpx
import pytest

from shared.devtools.infra.postgres_local import LocalPostgres
from tests.integration.test_delivery_faults import server_processes, signal_all
from tests.support.infra import Env, ServiceProcess, create_database

pytestmark = pytest.mark.integration

GETS = {
    "routing": [
        ("department:scj", "/v1/departments/scj/cases"),
        ("admin", "/v1/cases/hotline:nope"),
        ("admin", "/v1/routing/rules"),
        ("admin", "/v1/routing/rules/1"),
    ],
    "reporting": [
        ("reports", "/v1/reports/summary?from=2026-01-01&to=2026-01-31"),
        ("reports", "/v1/reports/summary.csv?from=2026-01-01&to=2026-01-31"),
        ("reports", "/v1/reports/summary.xlsx?from=2026-01-01&to=2026-01-31"),
        ("reports", "/v1/reports/repeats?from=2026-01-01&to=2026-01-31"),
    ],
}


async def test_get_endpoints_and_readyz_answer_while_the_database_is_paused(env: Env) -> None:
    pg = LocalPostgres(data_dir=env.tmp / "own-pg").start()
    procs: dict[str, ServiceProcess] = {}
    try:
        assert pg.process is not None
        url = await create_database(pg.url, "paused")
        own = Env(env.bootstrap, url, env.prefix, env.keys_file, env.keys, env.tmp)
        for name in GETS:
            procs[name] = ServiceProcess(name, own.environ(), env.tmp / f"{name}.log").start()
        server = server_processes(pg.process.pid)
        signal_all(server, signal.SIGSTOP)
        answers: dict[str, int | str] = {}
        try:
            for name, gets in GETS.items():
                # The bound: the database waits (10 s by default) plus a margin; a hang fails the test at 30 s.
                async with httpx.AsyncClient(base_url=procs[name].url, timeout=30) as http:
                    for scope, path in [("", "/readyz"), *gets]:
                        headers = {"Authorization": f"Bearer {env.keys[scope]}"} if scope else {}
                        try:
                            answers[f"{name} {path}"] = (await http.get(path, headers=headers)).status_code
                        except httpx.TimeoutException:
                            answers[f"{name} {path}"] = "no answer within 30 s"
        finally:
            signal_all(server, signal.SIGCONT)
        assert all(code == 503 for code in answers.values()), answers
    finally:
        for p in procs.values():
            p.stop()
        pg.stop()
