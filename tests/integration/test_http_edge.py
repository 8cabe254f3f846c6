"""The HTTP and Kafka edges against real services (processes), real Kafka and real PostgreSQL: text PostgreSQL cannot
take never gives a 5xx or a `processing_failed` dead letter (issue 7, defect 5); the docs work offline and declare
the bearer scheme, reads answer 503 with Retry-After while the database is away, uvicorn's own lines go through
the masking formatter (defect 7, issue 11 item 4)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from shared.devtools.dev import dev_scopes
from shared.events import DeadLetter, LifecycleChanged
from tests.support.infra import Env, ServiceProcess, collect, create_database, make_keys, produce, unique

pytestmark = pytest.mark.integration


@dataclass
class Edge:
    env: Env
    server_url: str
    intake: ServiceProcess
    routing: ServiceProcess

    def key(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env.keys[scope]}"}


@pytest.fixture(scope="module")
async def edge(kafka_bootstrap: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge")
    name = unique("e")
    url = await create_database(postgres_url, name)
    keys = make_keys(tmp / "keys.yaml", dev_scopes())
    env = Env(kafka_bootstrap, url, f"{name}.", tmp / "keys.yaml", keys, tmp)
    intake = ServiceProcess("intake", env.environ(), tmp / "intake.log").start()
    routing = ServiceProcess("routing", env.environ(), tmp / "routing.log").start()
    try:
        yield Edge(env, postgres_url, intake, routing)
    finally:
        intake.stop()
        routing.stop()


def _order(gdbh: str) -> dict[str, Any]:
    return {"gdbh": gdbh, "ldsj": "2026-11-26 10:00:00", "sqlx": "投诉", "sqfl": "政务服务", "sqnr": "窗口办事难"}


async def _new_case(edge: Edge) -> str:
    """A hotline order through intake, waited for until routing has it assigned to spj."""
    gdbh = f"E{uuid.uuid4().hex[:10].upper()}"
    async with httpx.AsyncClient(base_url=edge.intake.url, timeout=20) as http:
        resp = await http.post("/v1/intake/hotline", json=_order(gdbh), headers=edge.key("channel:hotline"))
        assert resp.status_code == 202, resp.text
    cid = f"hotline:{gdbh}"
    async with httpx.AsyncClient(base_url=edge.routing.url, timeout=20) as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = await http.get(f"/v1/cases/{cid}", headers=edge.key("admin"))
            if got.status_code == 200 and got.json()["lead_department"] == "spj":
                return cid
            await asyncio.sleep(0.2)
    raise AssertionError(f"{cid} was never assigned")


def _action_bytes(cid: str, kind: str = "accept", **fields: Any) -> bytes:
    body = {
        "action_id": f"a-{uuid.uuid4().hex[:12]}",
        "complaint_id": cid,
        "department": "spj",
        "action": kind,
        "at": datetime.now(UTC).isoformat(),
        **fields,
    }
    # ensure_ascii writes NUL as \u0000 and a lone surrogate as \ud800, as a client's JSON library would.
    return json.dumps(body, ensure_ascii=True).encode()


# --- defect 5: text PostgreSQL refuses ------------------------------------------------------------------------


async def test_nul_and_surrogates_in_an_actions_free_text_are_taken_sanitized_and_flagged(edge: Edge) -> None:
    cid = await _new_case(edge)
    async with httpx.AsyncClient(base_url=edge.routing.url, timeout=20) as http:
        resp = await http.post(
            f"/v1/cases/{cid}/actions",
            content=_action_bytes(cid, note="已签收\u0000，稍后联系\ud800"),
            headers=edge.key("department:spj"),
        )
        assert resp.status_code == 200, resp.text
        case = (await http.get(f"/v1/cases/{cid}", headers=edge.key("department:spj"))).json()
    assert case["state"] == "accepted"
    taken = [h["fact"] for h in case["history"] if h["kind"] == "action"]
    assert taken[-1]["note"] == "已签收，稍后联系\ufffd"
    assert taken[-1]["quality_flags"] == ["text_sanitized"]


@pytest.mark.parametrize("field", ["action_id", "department", "complaint_id"])
@pytest.mark.parametrize("char", ["\u0000", "\u001f", "\ud800"])
async def test_an_identifier_with_a_control_character_is_refused_with_a_reason_on_a_kept_connection(
    edge: Edge, field: str, char: str
) -> None:
    cid = "hotline:NOSUCH"
    body = json.loads(_action_bytes(cid))
    body[field] = body[field] + char
    raw = json.dumps(body, ensure_ascii=True).encode()
    async with httpx.AsyncClient(base_url=edge.routing.url, timeout=20) as http:
        resp = await http.post(f"/v1/cases/{cid}/actions", content=raw, headers=edge.key("department:spj"))
        assert resp.status_code in (403, 422), resp.text
        if resp.status_code == 422:
            assert field in resp.json()["reason"]
        # The same keep-alive connection still serves: nothing crashed under it.
        assert (await http.get("/healthz")).status_code == 200


async def test_control_characters_in_path_identifiers_are_refused_not_500(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.routing.url, timeout=20) as http:
        for path, scope in (
            ("/v1/cases/hotline:A%00", "admin"),
            ("/v1/cases/hotline:A%00/actions", "department:spj"),
            ("/v1/departments/sp%00j/cases", "department:spj"),
            ("/v1/routing/rules/v%00", "admin"),
        ):
            method = "POST" if path.endswith("actions") else "GET"
            resp = await http.request(method, path, headers=edge.key(scope), content=b"{}")
            assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text)
            assert resp.json()["reason"]


async def test_a_source_id_with_nul_is_refused_and_never_merged_with_the_clean_one(edge: Edge) -> None:
    gdbh = f"N{uuid.uuid4().hex[:10].upper()}"
    async with httpx.AsyncClient(base_url=edge.intake.url, timeout=20) as http:
        bad = await http.post(
            "/v1/intake/hotline",
            content=json.dumps(_order(f"{gdbh}\u0000"), ensure_ascii=True).encode(),
            headers={**edge.key("channel:hotline"), "Content-Type": "application/json"},
        )
        assert bad.status_code == 422, bad.text
        assert "gdbh" in bad.json()["reason"]
        good = await http.post("/v1/intake/hotline", json=_order(gdbh), headers=edge.key("channel:hotline"))
    assert good.status_code == 202
    assert good.json() == {"complaint_id": f"hotline:{gdbh}", "duplicate": False}


async def test_over_kafka_nul_in_a_note_is_taken_and_nul_in_an_action_id_is_a_dead_letter_with_its_reason(
    edge: Edge,
) -> None:
    cid = await _new_case(edge)
    t = edge.env.topics
    good = _action_bytes(cid, note="收到\u0000")
    bad_id = json.loads(_action_bytes(cid, kind="contact"))
    bad_id["action_id"] += "\u0000"
    await produce(
        edge.env.bootstrap,
        t.actions,
        [(cid.encode(), good), (cid.encode(), json.dumps(bad_id, ensure_ascii=True).encode())],
    )

    def done(records: list[Any]) -> bool:
        moves = [r for r in records if r.topic == t.lifecycle and r.key == cid.encode()]
        letters = [r for r in records if r.topic == t.dlq and r.key == cid.encode()]
        return any(LifecycleChanged.model_validate_json(r.value).cause == "accept" for r in moves) and bool(letters)

    records = await collect(edge.env.bootstrap, [t.lifecycle, t.dlq], done, timeout_s=60)
    accepted = [
        e
        for e in (LifecycleChanged.model_validate_json(r.value) for r in records if r.topic == t.lifecycle)
        if e.complaint_id == cid and e.cause == "accept"
    ]
    assert accepted, "the action with a NUL in its note was not taken"
    letters = [DeadLetter.model_validate_json(r.value) for r in records if r.topic == t.dlq and r.key == cid.encode()]
    assert len(letters) == 1
    assert letters[0].error_type == "invalid_message"
    assert "action_id" in letters[0].reason
    assert "identifier" in letters[0].reason


# --- defect 7 and issue 11 item 4: docs, 503, uvicorn's log lines ---------------------------------------------


async def test_docs_load_from_the_service_alone_and_declare_the_bearer_scheme(edge: Edge) -> None:
    for service in (edge.intake, edge.routing):
        async with httpx.AsyncClient(base_url=service.url, timeout=20) as http:
            page = await http.get("/docs")
            assert page.status_code == 200
            html = page.text
            hosts = {urlsplit(u).netloc for u in re.findall(r"https?://[^\s\"'<>)]+", html)}
            assert hosts <= {urlsplit(service.url).netloc}, hosts
            assets = re.findall(r"(?:src|href)=[\"']([^\"']+)[\"']", html)
            assert any(a.endswith(".js") for a in assets)
            assert any(a.endswith(".css") for a in assets)
            for asset in assets:
                got = await http.get(asset)
                assert got.status_code == 200, asset
                assert got.content
            spec = (await http.get("/openapi.json")).json()
            schemes = spec["components"]["securitySchemes"]
            assert {"type": "http", "scheme": "bearer"}.items() <= next(iter(schemes.values())).items()
            asyncapi = (await http.get("/asyncapi")).json()
            assert any(s.get("scheme") == "bearer" for s in asyncapi["components"]["securitySchemes"].values())


async def test_reads_answer_503_with_retry_after_while_the_database_is_away(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    name = unique("d")
    url = await create_database(postgres_url, name)
    keys = make_keys(tmp_path / "keys.yaml", ["admin", "department:spj"])
    env = Env(kafka_bootstrap, url, f"{name}.", tmp_path / "keys.yaml", keys, tmp_path)
    routing = ServiceProcess("routing", env.environ(), tmp_path / "routing.log").start()
    admin = await asyncpg.connect(postgres_url)
    headers = {"Authorization": f"Bearer {keys['department:spj']}"}
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        async with httpx.AsyncClient(base_url=routing.url, timeout=30) as http:
            for path in ("/v1/departments/spj/cases", "/v1/cases/hotline:X"):
                resp = await http.get(path, headers=headers)
                assert resp.status_code == 503, (path, resp.status_code, resp.text)
                assert resp.headers["Retry-After"].isdigit()
                assert resp.json()["error"] == "unavailable"
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        async with httpx.AsyncClient(base_url=routing.url, timeout=30) as http:
            deadline = time.monotonic() + 30
            status = 0
            while time.monotonic() < deadline and status != 200:
                status = (await http.get("/v1/departments/spj/cases", headers=headers)).status_code
                await asyncio.sleep(0.2)
            assert status == 200
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        routing.stop()


async def test_uvicorns_own_lines_go_through_the_project_formatter(edge: Edge) -> None:
    host, port = "127.0.0.1", edge.routing.port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL 13912345678\r\n\r\n")
        sock.recv(1024)
    deadline = time.monotonic() + 10
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in edge.routing.log_tail(200000).splitlines() if x.startswith("{")]
        if any(x.get("logger", "").startswith("uvicorn") for x in lines):
            break
        await asyncio.sleep(0.2)
    uvicorn_lines = [x for x in lines if x.get("logger", "").startswith("uvicorn")]
    assert uvicorn_lines, edge.routing.log_tail()
    assert "Invalid HTTP request" in " ".join(x["msg"] for x in uvicorn_lines)
    # Every line of the process is the project's JSON (no plain uvicorn line beside them).
    plain = [x for x in edge.routing.log_tail(200000).splitlines() if x.strip() and not x.startswith("{")]
    assert not [x for x in plain if "uvicorn" in x or "HTTP" in x], plain
