"""docs/contract.md and the code cannot drift apart: every topic and endpoint the contract page names exists in the
code, every topic and endpoint the code serves is on the page, and what the page lists as not served yet is indeed
absent (so the list is shortened when a part lands)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shared.devtools.catalog import available_services
from shared.domain import RAW_CHANNELS
from shared.settings import Settings
from shared.topics import BASE_NAMES

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"
_TOPIC = re.compile(r"`((?:intake|complaints|departments|hotline|surveys)\.[a-z_]+)`")
_ENDPOINT = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`?\s]*)")
_ALWAYS = {("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/readyz")}
# Served by every service but documents, not endpoints of the contract's table.
_DOCUMENTS = {"/docs", "/docs/oauth2-redirect", "/openapi.json", "/asyncapi", "/redoc"}


def _text() -> str:
    return CONTRACT.read_text(encoding="utf-8")


def _split() -> tuple[str, str]:
    body, _, not_yet = _text().partition("\n## Not served yet")
    assert not_yet, "docs/contract.md has lost its 'Not served yet' section"
    return body, not_yet


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def _endpoints(text: str) -> set[tuple[str, str]]:
    return {(method, _shape(path)) for method, path in _ENDPOINT.findall(text)}


def _code_topics() -> set[str]:
    return set(BASE_NAMES.values()) | {f"intake.{c.value}" for c in RAW_CHANNELS}


def _served() -> dict[str, set[tuple[str, str]]]:
    import importlib

    served: dict[str, set[tuple[str, str]]] = {}
    settings = Settings(database_url="postgresql://docs-check@127.0.0.1:1/none")
    for name in available_services():
        app: Any = importlib.import_module(f"services.{name}.app").create_app(settings)
        # The OpenAPI document lists what routers bring (every endpoint must be in it); app.routes adds the rest.
        routes = {
            (method.upper(), _shape(path))
            for path, operations in app.openapi()["paths"].items()
            for method in operations
            if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}
        }
        for route in app.routes:
            path = getattr(route, "path", None)
            if path is None or path in _DOCUMENTS:
                continue
            for method in getattr(route, "methods", None) or ():
                if method not in {"HEAD", "OPTIONS"}:
                    routes.add((method, _shape(path)))
        served[name] = routes
    return served


def test_the_contract_names_topics_and_endpoints() -> None:
    body, not_yet = _split()
    assert len(set(_TOPIC.findall(body))) >= 10
    assert len(_endpoints(body)) >= 10
    assert _endpoints(not_yet) or _TOPIC.findall(not_yet) or "Nothing at present" in not_yet


def test_every_topic_of_the_page_exists_in_the_code_and_back() -> None:
    body, not_yet = _split()
    pending = set(_TOPIC.findall(not_yet))
    documented = set(_TOPIC.findall(body))
    code = _code_topics()
    assert documented - pending - code == set(), "topics on the page the code does not know"
    assert code - documented == set(), "topics in the code the page does not name"
    assert pending & code == set(), "topics listed as not served yet are in the code: shorten the list"


@pytest.fixture(scope="module")
def served() -> dict[str, set[tuple[str, str]]]:
    return _served()


def test_every_endpoint_of_the_page_is_served(served: dict[str, set[tuple[str, str]]]) -> None:
    body, not_yet = _split()
    pending = _endpoints(not_yet)
    everywhere = set.union(*served.values())
    missing = _endpoints(body) - pending - everywhere
    assert missing == set(), f"endpoints on the page that no service serves: {sorted(missing)}"
    for name, routes in served.items():
        assert routes >= _ALWAYS, f"{name} lacks health, readiness or metrics"


def test_what_is_not_served_yet_is_really_absent(served: dict[str, set[tuple[str, str]]]) -> None:
    _, not_yet = _split()
    landed = _endpoints(not_yet) & set.union(*served.values())
    assert landed == set(), f"served now, remove from 'Not served yet': {sorted(landed)}"


def test_every_served_contract_endpoint_is_on_the_page(served: dict[str, set[tuple[str, str]]]) -> None:
    body, _ = _split()
    documented = _endpoints(body)
    # Endpoints beyond the contract (routing's rule sets, for one) are documented in their service's page.
    contract_space = (
        "/v1/intake",
        "/v1/departments",
        "/v1/cases",
        "/v1/reports",
        "/v1/ledger",
        "/v1/supervision",
        "/v1/portal",
        "/v1/visits",
        "/v1/surveys",
        "/portal",
    )
    undocumented = {
        (m, p) for routes in served.values() for m, p in routes if p.startswith(contract_space)
    } - documented
    assert undocumented == set(), f"served but not on docs/contract.md: {sorted(undocumented)}"
