"""What every service's OpenAPI document promises about its refusals, checked without a database: a refusal that
the document describes with a model (ErrorBody, ErrorAnswer) is declared as JSON, as it is sent; only a page (the
portal's own HTML answers, a plain string schema) is declared as HTML. Schemathesis (tests/integration) checks the
answers against the document; this finds the drift the moment a route is declared, with no traffic."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from shared.devtools.catalog import available_services
from shared.settings import Settings


def _document(name: str) -> dict[str, Any]:
    settings = Settings(database_url="postgresql://docs-check@127.0.0.1:1/none")
    app: Any = importlib.import_module(f"services.{name}.app").create_app(settings)
    document: dict[str, Any] = app.openapi()
    return document


@pytest.mark.parametrize("name", available_services())
def test_every_refusal_with_a_model_is_declared_as_json(name: str) -> None:
    wrong = []
    for path, operations in _document(name)["paths"].items():
        for method, op in operations.items():
            for status, answer in op.get("responses", {}).items():
                if not str(status).startswith(("4", "5")):
                    continue
                for media, body in answer.get("content", {}).items():
                    if media != "application/json" and "$ref" in str(body):
                        wrong.append(f"{method.upper()} {path} {status}: {media}")
    assert not wrong, wrong


def test_a_page_route_keeps_its_page_and_declares_its_refusals_as_json() -> None:
    bulletin = _document("reporting")["paths"]["/v1/reports/bulletin"]["get"]["responses"]
    assert list(bulletin["200"]["content"]) == ["text/html"]
    for status in ("401", "403", "422", "503"):
        assert list(bulletin[status]["content"]) == ["application/json"], status
