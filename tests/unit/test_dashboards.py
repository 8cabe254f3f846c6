"""The Grafana dashboards and provisioning (deploy/grafana) and the contract's metrics (section 9).

Each dashboard is valid JSON that deploy/grafana/build_dashboards.py makes; every panel has the provisioned
datasource and at least one PromQL target; every metric a query names is one the services serve
(shared/observability.Metrics). tests/integration/test_monitoring.py runs every one of these queries on a real
Prometheus scraping the running services.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from shared.observability import CONTRACT_METRICS, NOT_YET_SERVED, Metrics

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "inf"}
)


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def served_names() -> set[str]:
    """Every series name the Metrics registry can serve (counters with _total, histograms' _bucket/_sum/_count)."""
    names: set[str] = set()
    for family in Metrics("test").registry.collect():
        assert isinstance(family, Metric)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (label matchers, groupings, ranges, functions and numbers removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    found = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text):
        word = match.group(1)
        if word.lower() not in PROMQL_WORDS:
            found.add(word)
    return found


def targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(panel["title"], t) for panel in board["panels"] for t in panel["targets"]]


def test_the_three_dashboards_are_there() -> None:
    assert [p.name for p in DASHBOARDS] == ["departments.json", "operations.json", "sla.json"]


def test_committed_json_is_what_the_builder_makes() -> None:
    rendered = load_builder().render()
    assert sorted(rendered) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text(encoding="utf-8") == rendered[path.name], (
            f"{path.name} is stale: run python deploy/grafana/build_dashboards.py"
        )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_has_the_datasource_and_a_query_of_served_metrics(path: Path) -> None:
    board = json.loads(path.read_text(encoding="utf-8"))
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    served = served_names() | {"up"}
    assert board["uid"]
    assert board["title"]
    assert board["panels"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: {target['expr']} names no metric"
            assert names <= served, f"{panel['title']}: {sorted(names - served)} not served"


def test_dashboard_uids_are_unique() -> None:
    uids = [json.loads(p.read_text(encoding="utf-8"))["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_provisioning_points_at_the_dashboards() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "complaints.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert "path" in entry["options"]


def test_the_metric_name_extractor() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le, channel) (rate(intake_to_assignment_seconds_bucket{job="x"}[5m]))) '
        "/ ignoring(le) (up or vector(0)) and on (department) max(sla_overdue_open offset 1m)"
    )
    assert metric_names(expr) == {"intake_to_assignment_seconds_bucket", "up", "sla_overdue_open"}
    assert metric_names("sort_desc(sum(increase(complaints_open[$__range])))") == {"complaints_open"}


def test_every_metric_of_the_contract_is_served_or_listed_as_not_yet() -> None:
    contract = REPO.parent / "shared" / "CONTRACT.md"
    served = served_names()
    histograms = {name.removesuffix("_bucket") for name in served if name.endswith("_bucket")}
    assert set(CONTRACT_METRICS) <= served | histograms
    assert not set(NOT_YET_SERVED) & served
    if contract.exists():  # the contract lives beside the repository in the workspace
        section = contract.read_text(encoding="utf-8").split("## 9.", 1)[1].split("\n## ", 1)[0]
        named = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))
        assert named == set(CONTRACT_METRICS) | set(NOT_YET_SERVED)
    docs = (REPO / "docs" / "monitoring.md").read_text(encoding="utf-8")
    for name in NOT_YET_SERVED:
        assert name in docs
