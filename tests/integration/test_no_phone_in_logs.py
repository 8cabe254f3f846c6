"""No phone number in clear in any log of a simulated run (contract 2: the full number is for the handling department
only). Every service runs as its own process at DEBUG, `complaints simulate` drives realistic traffic with phones over
Kafka and HTTP (bad messages too, so the dead-letter and error paths log), plays the departments and callbacks; the
portal takes submissions with phones, a bad one too; then every process's stdout and stderr (uvicorn's lines go through
the same handler) is searched for a mobile or landline number, in any spelling, and for each phone the traffic held."""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from shared.devtools.catalog import available_services
from shared.devtools.traffic import make_uscc
from tests.support.infra import REPO, Env, ServiceProcess, collect, metric_sum

pytestmark = pytest.mark.integration

COUNT = 240
# A mobile number (optionally +86, separated by spaces or hyphens) or a landline (area code, optional hyphen), alone.
MOBILE = re.compile(r"(?<![\d*])(?:\+?86[- ]?)?1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?![\d*])")
LANDLINE = re.compile(r"(?<![\d*])0\d{2,3}-?\d{7,8}(?![\d*])")
PORTAL_PHONES = ("13700001111", "0475-8234567", "+86 158 2222 3333")


def digits(text: str) -> str:
    return re.sub(r"\D", "", text).removeprefix("86") if text.startswith("+") else re.sub(r"\D", "", text)


def phones_in(text: str) -> list[str]:
    return MOBILE.findall(text) + LANDLINE.findall(text)


def portal_submission(n: int, phone: str, **extra: Any) -> dict[str, Any]:
    return {
        "enterprise_name": "开鲁县某食品有限公司",
        "credit_code": make_uscc(random.Random(n), "150523"),
        "region": "150523",
        "category": "utilities",
        "kind": "complaint",
        "title": f"园区停水 {n}",
        "content": f"工业园区第{n}次停水，未提前通知。联系电话 {phone}",
        "contact_name": "刘女士",
        "contact_phone": phone,
        "anonymous": False,
        **extra,
    }


async def test_no_phone_in_clear_in_any_log(env: Env) -> None:
    environ = env.environ(LOG_LEVEL="DEBUG", LAG_INTERVAL_S="1")
    procs = {s: ServiceProcess(s, environ, env.tmp / f"{s}.log").start(timeout_s=240) for s in available_services()}
    sim_log = env.tmp / "simulate.log"
    simulator: subprocess.Popen[bytes] | None = None
    try:
        keys = [f"--channel-key={c}={env.keys[f'channel:{c}']}" for c in ("hotline", "complaint_line", "supervisor")]
        with sim_log.open("ab") as out:
            simulator = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited on
                [
                    *(sys.executable, "-m", "shared.devtools.cli", "simulate"),
                    *("--count", str(COUNT), "--rate", "80", "--bad", "0.2", "--http-share", "0.3"),
                    *("--seed", "9", "--speed", "200", "--intake-url", procs["intake"].url, *keys),
                ],
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        async with httpx.AsyncClient(base_url=procs["intake"].url, timeout=30) as http:
            for n, phone in enumerate(PORTAL_PHONES):
                taken = await http.post("/v1/portal/submissions", json=portal_submission(n, phone))
                assert taken.status_code in (201, 202), taken.text
            refused = await http.post(
                "/v1/portal/submissions", json=portal_submission(9, "13700001111", credit_code="91150523BAD")
            )
            assert refused.status_code == 422, refused.text
            # A raw HTTP order that fails validation after its phone was read: the refusal must not log it.
            bad = {
                "gdbh": "TL-PHONE-BAD",
                "ldsj": "昨天",
                "ldhm": "13811112222",
                "sqlx": "投诉",
                "sqnr": "电话13811112222",
            }
            answer = await http.post(
                "/v1/intake/hotline",
                content=json.dumps(bad, ensure_ascii=False).encode(),
                headers={"Authorization": f"Bearer {env.keys['channel:hotline']}"},
            )
            assert answer.status_code in (202, 422), answer.text

        # Wait on the events: every good complaint assigned, and the departments acting on them.
        deadline = time.monotonic() + 300
        async with httpx.AsyncClient(base_url=procs["routing"].url, timeout=10) as http:
            while time.monotonic() < deadline:
                metrics = (await http.get("/metrics")).text
                if metric_sum(metrics, "complaints_assigned_total") >= COUNT * 0.6 and simulator.poll() is None:
                    break
                assert simulator.poll() is None, sim_log.read_text(errors="replace")[-3000:]
                await asyncio.sleep(0.5)
        assert metric_sum(metrics, "complaints_assigned_total") >= COUNT * 0.6, metrics[-2000:]
        received = await collect(
            env.bootstrap, [env.topics.received, env.topics.dlq], lambda rs: len(rs) >= COUNT * 0.6
        )
    finally:
        if simulator is not None and simulator.poll() is None:
            simulator.send_signal(signal.SIGTERM)
            simulator.wait(60)
        for proc in procs.values():
            proc.stop()

    # The traffic really held phones: those the complaints carry, in clear, on the topics.
    phones = {digits(p) for r in received for p in phones_in(r.value.decode("utf-8", "replace"))}
    assert len(phones) >= COUNT * 0.3, f"only {len(phones)} phones in the traffic"
    assert {digits(p) for p in PORTAL_PHONES} <= phones

    logs = {p.name: p.read_text(errors="replace") for p in [*(env.tmp / f"{s}.log" for s in procs), sim_log]}
    assert all(logs.values()), "a process wrote nothing: the capture is broken"
    leaks: list[str] = []
    for name, text in logs.items():
        for line in text.splitlines():
            found = phones_in(line)
            squeezed = re.sub(r"[\s+-]", "", line)
            known = [p for p in phones if re.search(rf"(?<!\d){p}(?!\d)", squeezed)]
            if found or known:
                leaks.append(f"{name}: {found or known}: {line[:400]}")
    assert not leaks, f"{len(leaks)} log lines with a phone in clear:\n" + "\n".join(leaks[:20])
    print({name: len(text.splitlines()) for name, text in logs.items()}, f"{len(phones)} phones in the traffic")


def test_the_patterns_find_phones_in_every_spelling() -> None:
    for text in (
        "13912345678",
        "+86 139-1234-5678",
        "+86 158 2222 3333",
        "0475-8234567",
        "04758234567",
        "x13912345678y",
    ):
        assert phones_in(text), text
    for text in ("139****5678", "0475****567", "2026-11-29T13:36:25.931Z", "1764412345678", "91150523MA0N8K9X1B"):
        assert not phones_in(text), text
    assert digits("+86 158 2222 3333") == "15822223333"
