"""The ledger (contract 8) over HTTP and the command line, on real PostgreSQL (and the real Kafka the service app
starts its producer and broker on)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openpyxl
import pytest

from services.reporting.ledger import XLSX_TYPE
from services.reporting.ledger_http import api
from shared.devtools.dev import dev_scopes
from shared.service import ServiceContext, create_service_app
from tests.support.infra import REPO, Env, create_database, make_keys, unique

pytestmark = pytest.mark.integration
HEADER = [
    "item_id",
    "source",
    "area",
    "problem",
    "measures",
    "departments",
    "due_date",
    "status",
    "evidence",
    "approved_by",
]


@dataclass
class Ledger:
    env: Env
    http: httpx.AsyncClient

    def key(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env.keys[scope]}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.key("admin")

    async def count_rows(self, source: str) -> int:
        conn = await asyncpg.connect(self.env.database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM reporting.ledger_items WHERE source = $1", source))
        finally:
            await conn.close()


async def _nothing(_: ServiceContext) -> None:
    return None


@pytest.fixture(scope="module")
async def ledger(
    kafka_bootstrap: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Ledger]:
    tmp = tmp_path_factory.mktemp("ledger")
    name = unique("l")
    url = await create_database(postgres_url, name)
    keys_file = tmp / "keys.yaml"
    env = Env(kafka_bootstrap, url, f"{name}.", keys_file, make_keys(keys_file, dev_scopes()), tmp)
    app = create_service_app("reporting", routers=[api], setup=_nothing, settings=env.settings())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reporting") as http,
    ):
        yield Ledger(env, http)


def rows_of(tag: str, n: int, closed: int, year: int = 2025, area: str = "政务服务") -> list[list[str]]:
    rows = []
    for i in range(1, n + 1):
        done = i <= closed
        rows.append(
            [
                f"{tag}-{year}-{i:03d}",
                f"{year} 自治区营商环境评估反馈 {tag}",
                area,
                f"{tag} 问题{i}",
                f"措施{i}",
                "fgw;zwfw" if i % 2 else "sw、scjg",
                f"{year}-12-31",
                "closed" if done else "open",
                "已完成整改，见附件" if done else "",
                "fgw" if done else "",
            ]
        )
    return rows


def csv_body(rows: list[list[str]], header: list[str] = HEADER) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return b"\xef\xbb\xbf" + out.getvalue().encode("utf-8")


def xlsx_body(rows: list[list[Any]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def tag() -> str:
    return f"T{uuid.uuid4().hex[:8].upper()}"


async def post_csv(ledger: Ledger, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return await ledger.http.post(
        "/v1/ledger/items",
        content=body,
        headers={"Content-Type": "text/csv", **(ledger.admin if headers is None else headers)},
    )


async def items(ledger: Ledger, **params: str) -> dict[str, Any]:
    response = await ledger.http.get("/v1/ledger/items", params=params, headers=ledger.key("reports"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- import and completion ----------------------------------------------------------------------------------


async def test_48_items_with_33_closed_complete_0_6875(ledger: Ledger) -> None:
    t = tag()
    response = await post_csv(ledger, csv_body(rows_of(t, 48, 33)))
    assert response.status_code == 201, response.text
    assert response.json() == {"imported": 48}
    source = f"2025 自治区营商环境评估反馈 {t}"
    page = await items(ledger, source=source)
    assert (page["total"], page["closed"], page["completion_rate"]) == (48, 33, 0.6875)
    first = page["items"][0]
    assert first["item_id"] == f"{t}-2025-001"
    assert first["departments"] == ["fgw", "zwfw"]
    assert first["status"] == "closed"
    assert first["evidence"] == "已完成整改，见附件"
    assert first["approved_by"] == "fgw"
    assert first["closed_at"].endswith("Z")
    assert first["recurring"] is False
    assert page["items"][-1]["closed_at"] is None
    assert [i["item_id"] for i in page["items"]] == [f"{t}-2025-{i:03d}" for i in range(1, 49)]

    by_status = await items(ledger, source=source, status="open")
    assert (by_status["total"], by_status["closed"], by_status["completion_rate"]) == (15, 0, 0.0)
    by_department = await items(ledger, source=source, department="sw")
    assert by_department["total"] == 24
    assert all("sw" in i["departments"] for i in by_department["items"])
    nothing = await items(ledger, source=f"no such source {t}")
    assert nothing == {"items": [], "total": 0, "closed": 0, "completion_rate": None}
    bad = await ledger.http.get("/v1/ledger/items", params={"status": "done"}, headers=ledger.admin)
    assert bad.status_code == 422
    assert "status" in bad.json()["reason"]


async def test_a_recurring_item_is_flagged(ledger: Ledger) -> None:
    t = tag()
    area = f"{t}政务服务"
    last_year = [
        [
            f"{t}-24",
            "2024 自治区营商环境评估反馈",
            area,
            "企业开办 “一网通办” 不畅。",
            "",
            "zwfw",
            "2024-12-31",
            "open",
            "",
            "",
        ]
    ]
    this_year = [
        [
            f"{t}-25a",
            "2025 自治区营商环境评估反馈",
            area,
            "企业开办一网通办不畅",
            "",
            "zwfw",
            "2025-12-31",
            "open",
            "",
            "",
        ],
        [f"{t}-25b", "2025 自治区营商环境评估反馈", area, "水电气报装慢", "", "zwfw", "2025-12-31", "open", "", ""],
    ]
    assert (await post_csv(ledger, csv_body(last_year))).status_code == 201
    assert (await post_csv(ledger, csv_body(this_year))).status_code == 201
    flags = {
        i["item_id"]: i["recurring"]
        for i in (await items(ledger, source="2025 自治区营商环境评估反馈"))["items"]
        if i["item_id"].startswith(t)
    }
    assert flags == {f"{t}-25a": True, f"{t}-25b": False}
    exported = await ledger.http.get(
        "/v1/ledger/items.csv", params={"source": "2025 自治区营商环境评估反馈"}, headers=ledger.key("reports")
    )
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.content.startswith(b"\xef\xbb\xbf")
    records = list(csv.DictReader(io.StringIO(exported.content[3:].decode("utf-8"), newline="")))
    assert {r["item_id"]: r["recurring"] for r in records if r["item_id"].startswith(t)} == {
        f"{t}-25a": "true",
        f"{t}-25b": "false",
    }
    assert b"\r\n" in exported.content


async def test_a_bad_row_refuses_the_whole_import_with_its_line(ledger: Ledger) -> None:
    t = tag()
    rows = rows_of(t, 10, 3)
    rows[6][6] = "2025-02-30"  # the 7th item sits on line 8 (header = line 1)
    response = await post_csv(ledger, csv_body(rows))
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_row"
    assert body["row"] == 8
    assert "due_date" in body["reason"]
    assert await ledger.count_rows(f"2025 自治区营商环境评估反馈 {t}") == 0


async def test_re_import_updates_rather_than_doubles(ledger: Ledger) -> None:
    t = tag()
    source = f"2025 自治区营商环境评估反馈 {t}"
    assert (await post_csv(ledger, csv_body(rows_of(t, 5, 1)))).json() == {"imported": 5}
    first = (await items(ledger, source=source))["items"][0]
    again = rows_of(t, 5, 3)
    again[4][4] = "措施改了"
    assert (await post_csv(ledger, csv_body(again))).json() == {"imported": 5}
    page = await items(ledger, source=source)
    assert (page["total"], page["closed"]) == (5, 3)
    assert page["items"][4]["measures"] == "措施改了"
    assert page["items"][0]["closed_at"] == first["closed_at"]  # a closing stays as it was when imported again
    assert await ledger.count_rows(source) == 5


async def test_json_imports_one_item_or_a_list(ledger: Ledger) -> None:
    t = tag()
    one = {
        "item_id": f"{t}-1",
        "source": f"2025 评估 {t}",
        "area": "a",
        "problem": "p",
        "departments": ["fgw"],
        "due_date": "2025-12-31",
    }
    assert (await ledger.http.post("/v1/ledger/items", json=one, headers=ledger.admin)).json() == {"imported": 1}
    listed = {"items": [{**one, "item_id": f"{t}-2"}, {**one, "item_id": f"{t}-3", "status": "closed"}]}
    refused = await ledger.http.post("/v1/ledger/items", json=listed, headers=ledger.admin)
    assert refused.status_code == 422
    assert refused.json()["row"] == 2
    assert "evidence" in refused.json()["reason"]
    assert await ledger.count_rows(f"2025 评估 {t}") == 1


async def test_an_xlsx_import_round_trips(ledger: Ledger) -> None:
    t = tag()
    rows = rows_of(t, 12, 5)
    response = await ledger.http.post(
        "/v1/ledger/items", content=xlsx_body(rows), headers={"Content-Type": XLSX_TYPE, **ledger.admin}
    )
    assert response.status_code == 201, response.text
    page = await items(ledger, source=f"2025 自治区营商环境评估反馈 {t}")
    got = [
        [
            i["item_id"],
            i["source"],
            i["area"],
            i["problem"],
            i["measures"],
            i["departments"],
            i["due_date"],
            i["status"],
            i["evidence"] or "",
            i["approved_by"] or "",
        ]
        for i in page["items"]
    ]
    expected = [[*r[:5], re.split("[;、]", r[5]), *r[6:]] for r in rows]
    assert got == expected
    bad = rows_of(tag(), 3, 0)
    bad[1][7] = "half"
    refused = await ledger.http.post(
        "/v1/ledger/items", content=xlsx_body(bad), headers={"Content-Type": XLSX_TYPE, **ledger.admin}
    )
    assert refused.status_code == 422
    assert refused.json()["row"] == 3


# --- closing ------------------------------------------------------------------------------------------------


async def test_close_rules(ledger: Ledger) -> None:
    t = tag()
    assert (await post_csv(ledger, csv_body(rows_of(t, 2, 0)))).status_code == 201
    url = f"/v1/ledger/items/{t}-2025-001/close"
    missing = await ledger.http.post(url, json={"evidence": "整改报告"}, headers=ledger.admin)
    assert missing.status_code == 422
    assert "approved_by" in missing.json()["reason"]
    assert (await ledger.http.post(url, json={"approved_by": "fgw"}, headers=ledger.admin)).status_code == 422
    assert (await ledger.http.post(url, headers=ledger.admin)).status_code == 422
    done = await ledger.http.post(url, json={"evidence": "整改报告", "approved_by": "fgw"}, headers=ledger.admin)
    assert done.status_code == 200, done.text
    item = done.json()
    assert (item["status"], item["evidence"], item["approved_by"]) == ("closed", "整改报告", "fgw")
    assert item["closed_at"].endswith("Z")
    assert item["recurring"] is False
    again = await ledger.http.post(url, json={"evidence": "再次", "approved_by": "fgw"}, headers=ledger.admin)
    assert again.status_code == 409
    unknown = await ledger.http.post(
        f"/v1/ledger/items/{t}-nope/close", json={"evidence": "x", "approved_by": "fgw"}, headers=ledger.admin
    )
    assert unknown.status_code == 404
    page = await items(ledger, source=f"2025 自治区营商环境评估反馈 {t}")
    assert (page["total"], page["closed"], page["completion_rate"]) == (2, 1, 0.5)


async def test_two_closings_at_once_give_one_200_and_one_409(ledger: Ledger) -> None:
    t = tag()
    assert (await post_csv(ledger, csv_body(rows_of(t, 1, 0)))).status_code == 201
    url = f"/v1/ledger/items/{t}-2025-001/close"
    answers = await asyncio.gather(
        *(
            ledger.http.post(url, json={"evidence": f"e{i}", "approved_by": "fgw"}, headers=ledger.admin)
            for i in range(2)
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 409]


# --- access and limits --------------------------------------------------------------------------------------


async def test_access(ledger: Ledger) -> None:
    body = csv_body(rows_of(tag(), 1, 0))
    assert (await ledger.http.get("/v1/ledger/items")).status_code == 401
    assert (await ledger.http.get("/v1/ledger/items", headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await post_csv(ledger, body, headers={})).status_code == 401
    for scope in ("department:fgw", "channel:hotline"):
        assert (await ledger.http.get("/v1/ledger/items", headers=ledger.key(scope))).status_code == 403
        assert (await ledger.http.get("/v1/ledger/items.csv", headers=ledger.key(scope))).status_code == 403
        assert (await post_csv(ledger, body, headers=ledger.key(scope))).status_code == 403
    reports = ledger.key("reports")
    assert (await ledger.http.get("/v1/ledger/items", headers=reports)).status_code == 200
    assert (await ledger.http.get("/v1/ledger/items.csv", headers=reports)).status_code == 200
    assert (await post_csv(ledger, body, headers=reports)).status_code == 403
    close = await ledger.http.post(
        "/v1/ledger/items/x/close", json={"evidence": "e", "approved_by": "a"}, headers=reports
    )
    assert close.status_code == 403


async def test_limits_and_media_types(ledger: Ledger) -> None:
    big = b"item_id,source\r\n" + b"x" * (5 * 1024 * 1024 + 1)
    assert (await post_csv(ledger, big)).status_code == 413
    plain = await ledger.http.post(
        "/v1/ledger/items", content=b"hello", headers={"Content-Type": "text/plain", **ledger.admin}
    )
    assert plain.status_code == 415
    broken = await ledger.http.post(
        "/v1/ledger/items", content=b"PK\x03\x04garbage", headers={"Content-Type": XLSX_TYPE, **ledger.admin}
    )
    assert broken.status_code == 422
    assert broken.json()["row"] is None


async def test_openapi_declares_scopes_and_bodies(ledger: Ledger) -> None:
    spec = (await ledger.http.get("/openapi.json")).json()
    paths = spec["paths"]
    assert paths["/v1/ledger/items"]["post"]["x-scopes"] == ["admin"]
    assert paths["/v1/ledger/items"]["get"]["x-scopes"] == ["reports", "admin"]
    assert paths["/v1/ledger/items.csv"]["get"]["x-scopes"] == ["reports", "admin"]
    assert paths["/v1/ledger/items/{item_id}/close"]["post"]["x-scopes"] == ["admin"]
    content = paths["/v1/ledger/items"]["post"]["requestBody"]["content"]
    assert {"application/json", "text/csv", XLSX_TYPE} <= set(content)
    assert (
        "evidence"
        in paths["/v1/ledger/items/{item_id}/close"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "properties"
        ]
    )
    assert {"201", "403", "413", "422"} <= set(paths["/v1/ledger/items"]["post"]["responses"])


# --- the command line ---------------------------------------------------------------------------------------


def run_cli(ledger: Ledger, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.devtools.cli", "ledger", "import", str(path)],
        cwd=REPO,
        env=ledger.env.environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_command_line_imports_a_file_all_or_nothing(ledger: Ledger) -> None:
    t = tag()
    good = ledger.env.tmp / f"{t}.xlsx"
    good.write_bytes(xlsx_body(rows_of(t, 6, 2)))
    done = await asyncio.to_thread(run_cli, ledger, good)
    assert done.returncode == 0, done.stderr
    assert "imported 6 items" in done.stdout
    page = await items(ledger, source=f"2025 自治区营商环境评估反馈 {t}")
    assert (page["total"], page["closed"], page["completion_rate"]) == (6, 2, 0.3333)

    t2 = tag()
    rows = rows_of(t2, 4, 0)
    rows[2][5] = ""  # no department on the 3rd item: line 4
    bad = ledger.env.tmp / f"{t2}.csv"
    bad.write_bytes(csv_body(rows))
    refused = await asyncio.to_thread(run_cli, ledger, bad)
    assert refused.returncode == 2
    assert "line 4" in refused.stderr
    assert "departments" in refused.stderr
    assert await ledger.count_rows(f"2025 自治区营商环境评估反馈 {t2}") == 0
