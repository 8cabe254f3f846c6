"""Every service's OpenAPI document, fuzzed by schemathesis against the real service (a process on real Kafka and
PostgreSQL), with real keys and a real case: no 5xx, no status the document does not declare, no answer that
breaks its declared schema or content type (issue 7, defect 9). Also the document's own promises: the bearer
scheme declared, every operation that takes a key requiring it, and its scopes in `x-scopes` (contract 4)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.devtools.catalog import available_services
from tests.support.stack import LEAD, Stack, running_stack

pytestmark = pytest.mark.integration

SERVICES = available_services()
MAX_EXAMPLES = 25  # per operation: bounded, the suite shares two cores
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with running_stack(kafka_bootstrap, postgres_url, tmp_path_factory.mktemp("fuzz"), tag="f") as stack:
        yield stack


FIXED_PATH = {"channel": "hotline", "code": LEAD}


def _scope_for(op: dict[str, Any], path_parameters: dict[str, str]) -> str | None:
    """A key scope the operation accepts, read from its `x-scopes` (`{param}` filled in, `department:*` the lead)."""
    accepted: list[str] = op["x-scopes"]
    if not accepted:
        return None
    first = accepted[0].replace("department:*", f"department:{LEAD}")
    return re.sub(r"\{(\w+)\}", lambda m: path_parameters[m.group(1)], first)


@pytest.mark.parametrize("service", SERVICES)
def test_the_document_declares_the_bearer_scheme_and_every_operations_scopes(stack: Stack, service: str) -> None:
    spec = httpx.get(f"{stack.procs[service].url}/openapi.json", timeout=20).json()
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    public = {"/healthz", "/readyz", "/metrics"}
    portal = ("/portal", "/v1/portal/")  # the public portal (contract 10.1) needs no key
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert isinstance(op.get("x-scopes"), list), (method, path)
            if path in public or path.startswith(portal):
                assert op["security"] == []
                assert op["x-scopes"] == []
                continue
            assert op["security"] == [{"bearer": []}], (method, path)
            assert op["x-scopes"], (method, path)
            for scope in op["x-scopes"]:
                assert re.fullmatch(r"(channel|department):(\{\w+\}|\*|[\w-]+)|reports|admin", scope), scope
            assert {"401", "403", "503"} <= set(op["responses"]), (method, path)
            if op.get("requestBody"):
                assert op["requestBody"]["content"], (method, path)
                assert {"422"} <= set(op["responses"]), (method, path)
            # Without its key, every such operation answers 401, as declared.
            url = stack.procs[service].url + re.sub(r"\{\w+\}", "x", path)
            assert httpx.request(method, url, timeout=20, content=b"{}").status_code == 401, (method, path)


def _fuzz(operation: Any, base: str, headers: dict[str, str], fixed: dict[str, str]) -> None:
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(path_parameters=fixed or None))
    def fuzz(case: Any) -> None:
        case.call_and_validate(base_url=base, headers=headers, checks=CHECKS, timeout=30)

    fuzz()


@pytest.mark.parametrize("service", SERVICES)
def test_schemathesis_finds_no_5xx_no_undeclared_status_and_no_schema_violation(stack: Stack, service: str) -> None:
    base = stack.procs[service].url
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    raw = httpx.get(f"{base}/openapi.json", timeout=20).json()
    path_parameters = {**FIXED_PATH, "complaint_id": stack.case_id}
    tried = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        op = raw["paths"][operation.path][operation.method.lower()]
        names = set(re.findall(r"\{(\w+)\}", operation.path))
        fixed = {k: v for k, v in path_parameters.items() if k in names}
        scope = _scope_for(op, {**fixed, **dict.fromkeys(names - fixed.keys(), "x")})
        _fuzz(operation, base, stack.key(scope) if scope else {}, fixed)
        tried += 1
    assert tried >= 3  # /healthz, /readyz, /metrics at least: the document was really read
