"""Every service running as its own process on one database and topic prefix, with a key of every dev scope and one
real case routing holds: what the HTTP-wide tests (schemathesis, the scopes table) run against."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.devtools.catalog import available_services
from shared.devtools.dev import dev_scopes
from tests.support.infra import Env, ServiceProcess, create_database, make_keys, unique

LEAD = "spj"
"""The department routing makes lead of the real case (a 政务服务 complaint)."""


@dataclass
class Stack:
    env: Env
    procs: dict[str, ServiceProcess]
    case_id: str = ""

    def key(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env.keys[scope]}"}


@asynccontextmanager
async def running_stack(
    kafka_bootstrap: str,
    postgres_url: str,
    tmp: Path,
    *,
    tag: str,
    scopes: Sequence[str] | None = None,
    start_timeout_s: float = 240.0,
) -> AsyncIterator[Stack]:
    """Start every service; yield once a real case is assigned to LEAD (`case_id`); stop them all."""
    name = unique(tag)
    url = await create_database(postgres_url, name)
    keys = make_keys(tmp / "keys.yaml", list(scopes or dev_scopes()))
    env = Env(kafka_bootstrap, url, f"{name}.", tmp / "keys.yaml", keys, tmp)
    procs: dict[str, ServiceProcess] = {}
    try:
        for service in available_services():
            procs[service] = ServiceProcess(service, env.environ(), tmp / f"{service}.log").start(
                timeout_s=start_timeout_s
            )
        stack = Stack(env, procs)
        stack.case_id = await routed_case(stack, tag.upper())
        yield stack
    finally:
        for proc in procs.values():
            proc.stop()


async def routed_case(stack: Stack, letter: str) -> str:
    """A hotline complaint posted to intake, returned once routing holds it with LEAD as its lead department."""
    gdbh = f"{letter}{uuid.uuid4().hex[:10].upper()}"
    order = {"gdbh": gdbh, "ldsj": "2026-11-26 10:00:00", "sqlx": "投诉", "sqfl": "政务服务", "sqnr": "窗口办事难"}
    cid = f"hotline:{gdbh}"
    async with httpx.AsyncClient(timeout=20) as http:
        taken = await http.post(
            f"{stack.procs['intake'].url}/v1/intake/hotline", json=order, headers=stack.key("channel:hotline")
        )
        assert taken.status_code == 202, taken.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            case = await http.get(f"{stack.procs['routing'].url}/v1/cases/{cid}", headers=stack.key("admin"))
            if case.status_code == 200:
                assert case.json()["lead_department"] == LEAD, case.json()
                return cid
            await asyncio.sleep(0.2)
    raise AssertionError(f"{cid} was never assigned")
