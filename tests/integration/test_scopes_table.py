"""Every key scope against every endpoint, the table generated from the OpenAPI documents the running services serve
(contract 4): a new endpoint is in the table the moment it is in a document, so it cannot be forgotten.

For each operation and each caller (no key, an unknown key, the key of every channel, of every department, reports
and admin), the real service (a process on real Kafka and PostgreSQL) answers 401 without a known key and 403 with a
known key exactly when the operation's `x-scopes` does not accept it, and never 401/403 when it does (any other answer
is the operation's own: 404, 409, 422 are fine). The forms (`shared.service.BEARER_DESCRIPTION`): a scope as is,
`channel:{channel}` / `department:{code}` (the key of the channel or department the path names) and `department:*`
(any department's key: the operation then decides by the case or the body, so the case's own department must pass
and another department must get 403)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shared.devtools.dev import dev_scopes
from tests.support.stack import LEAD, Stack, running_stack

pytestmark = pytest.mark.integration

WRONG = "scj"  # a department that neither leads, assists nor supervises that case
NO_KEY, UNKNOWN_KEY = "(no key)", "(unknown key)"
SCOPES = dev_scopes()
CALLERS = [NO_KEY, UNKNOWN_KEY, *SCOPES]
CHANNELS = [s.split(":", 1)[1] for s in SCOPES if s.startswith("channel:")]
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with running_stack(kafka_bootstrap, postgres_url, tmp_path_factory.mktemp("scopes"), tag="s") as stack:
        yield stack


@dataclass(frozen=True)
class Probe:
    """One request of the table: an operation with its path filled in, and the department its case or body names."""

    service: str
    method: str
    template: str
    scopes: tuple[str, ...]
    params: tuple[tuple[str, str], ...]
    subject: str | None  # for `department:*`: the department the case or the body belongs to, None if no such case
    body: bytes | None

    @property
    def path(self) -> str:
        values = dict(self.params)
        return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], self.template)


def _variants(template: str, case_id: str) -> list[tuple[dict[str, str], str | None]]:
    """Path parameter values to try, each with the department its case belongs to (for `department:*`)."""
    names = re.findall(r"\{(\w+)\}", template)
    if "channel" in names:
        return [({"channel": c}, None) for c in CHANNELS]
    if "code" in names:
        return [({"code": LEAD}, None), ({"code": WRONG}, None)]
    if "complaint_id" in names:
        return [({"complaint_id": case_id}, LEAD), ({"complaint_id": "hotline:NO-SUCH-CASE"}, None)]
    return [(dict.fromkeys(names, "nosuch1"), None)]


def _body(method: str, template: str, params: dict[str, str]) -> bytes | None:
    if method == "get":
        return None
    if template.endswith("/actions"):  # a real action of the lead department: only its key may take it
        action = {
            "action_id": f"scope-{uuid.uuid4().hex[:8]}",
            "complaint_id": params["complaint_id"],
            "department": LEAD,
            "action": "accept",
            "at": datetime.now(UTC).isoformat(),
        }
        return json.dumps(action).encode()
    return b"{}"


def probes(stack: Stack, documents: dict[str, dict[str, Any]]) -> list[Probe]:
    table = []
    for service, doc in documents.items():
        for template, item in doc["paths"].items():
            for method, op in item.items():
                if method not in METHODS:
                    continue
                scopes = tuple(op["x-scopes"])
                for params, case_department in _variants(template, stack.case_id):
                    body = _body(method, template, params)
                    # An action's body names the lead department, whatever the case.
                    subject = LEAD if template.endswith("/actions") else case_department
                    table.append(Probe(service, method, template, scopes, tuple(params.items()), subject, body))
    return table


def expected(probe: Probe, caller: str) -> str:
    """`401`, `403`, `pass` (never 401/403), or `decides` (department:*, not the subject's department: never 401)."""
    if not probe.scopes:
        return "pass"
    if caller in (NO_KEY, UNKNOWN_KEY):
        return "401"
    params = dict(probe.params)
    for accepted in probe.scopes:
        if accepted == "department:*" and caller.startswith("department:"):
            return "pass" if caller == f"department:{probe.subject}" else "decides"
        filled = re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], accepted)
        if caller == filled:
            return "pass"
    return "403"


def holds(want: str, status: int) -> bool:
    return {
        "401": status == 401,
        "403": status == 403,
        "pass": status not in (401, 403),
        "decides": status != 401,
    }[want]


def test_every_x_scope_names_a_scope_a_key_can_have(stack: Stack) -> None:
    """A typo (`department:ysjh`) or a template naming no path parameter would silently refuse everyone."""
    for service, doc in _documents(stack).items():
        for template, item in doc["paths"].items():
            for method, op in item.items():
                for scope in op.get("x-scopes", []):
                    names = re.findall(r"\{(\w+)\}", scope)
                    assert all(f"{{{n}}}" in template for n in names), (service, method, template, scope)
                    if not names and scope != "department:*":
                        assert scope in SCOPES, (service, method, template, scope)


def _documents(stack: Stack) -> dict[str, dict[str, Any]]:
    return {s: httpx.get(f"{p.url}/openapi.json", timeout=30).json() for s, p in stack.procs.items()}


async def test_every_scope_against_every_endpoint(stack: Stack) -> None:
    documents = _documents(stack)
    table = probes(stack, documents)
    operations = {(p.service, p.method, p.template) for p in table}
    declared = {(s, m, t) for s, d in documents.items() for t, i in d["paths"].items() for m in i if m in METHODS}
    assert operations == declared  # every operation of every document is in the table
    assert {"intake", "routing", "sla", "reporting"} <= set(documents)

    limit = asyncio.Semaphore(6)
    outcomes: list[tuple[Probe, str, str, int]] = []

    async def call(http: httpx.AsyncClient, probe: Probe, caller: str) -> None:
        headers = {"Content-Type": "application/json"}
        if caller == UNKNOWN_KEY:
            headers["Authorization"] = "Bearer ck_not-a-key-anyone-has"
        elif caller != NO_KEY:
            headers["Authorization"] = f"Bearer {stack.env.keys[caller]}"
        async with limit:
            answer = await http.request(
                probe.method.upper(), stack.procs[probe.service].url + probe.path, headers=headers, content=probe.body
            )
        outcomes.append((probe, caller, expected(probe, caller), answer.status_code))

    async with httpx.AsyncClient(timeout=60) as http:
        await asyncio.gather(*(call(http, probe, caller) for probe in table for caller in CALLERS))

    wrong = [
        f"{p.service} {p.method.upper()} {p.path} x-scopes={list(p.scopes)} caller={c}: wanted {w}, got {s}"
        for p, c, w, s in outcomes
        if not holds(w, s)
    ]
    # department:* — the case's own department passes (above); another department is refused by the operation.
    for probe in {p for p, *_ in outcomes if "department:*" in p.scopes and p.subject is not None}:
        status = next(s for p, c, _, s in outcomes if p == probe and c == f"department:{WRONG}")
        if status != 403:
            wrong.append(f"{probe.method.upper()} {probe.path}: department:{WRONG} (not the case's) got {status}")
    summary = Counter((p.service, p.method.upper(), p.template, w) for p, _, w, _ in outcomes)
    print(f"\n{len(table)} requests shapes x {len(CALLERS)} callers = {len(outcomes)} requests")
    for (service, method, template, want), n in sorted(summary.items()):
        print(f"  {service:9} {method:5} {template:48} {want:8} {n}")
    assert not wrong, "\n".join(sorted(wrong))
    passing = Counter(w for _, _, w, _ in outcomes)
    assert min(passing["pass"], passing["403"], passing["401"]) > 0, passing
