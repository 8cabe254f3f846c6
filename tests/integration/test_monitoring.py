"""Prometheus and Grafana for real: promtool on the config, rules and alert tests; then a real Prometheus (Debian's
`prometheus`) scraping the services, run as processes on the test's Kafka and PostgreSQL under simulated traffic,
and every panel's query of every dashboard evaluated through its HTTP API: each must parse and return data.

The traffic: raw messages on the three channels with bad ones and duplicates (refusals, dead letters), the
department simulator playing each case with more returns than usual (returns by reason, the desk's verdicts), and
a policy in seconds on a clock that runs all day, so warnings, breaches and deadlines met come within seconds
(docs/sla.md, "short windows"). Nothing waits on a fixed sleep: each wait is an upper bound on a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator

import httpx
import pytest
import yaml

from shared.devtools.catalog import available_services
from shared.devtools.departments import DepartmentSimulator
from shared.devtools.simulate import simulate
from shared.observability import CONTRACT_METRICS
from tests.support.infra import Env, ServiceProcess, short_clock_environ
from tests.support.prometheus import (
    PROMETHEUS_DIR,
    panel_queries,
    panels_without_data,
    query,
    running_prometheus,
    targets_down,
    wait_for,
)

pytestmark = pytest.mark.integration

# Seconds on an all-day clock: departments accept after 2-10 s and resolve within about a minute, so some
# deadlines warn, some breach and some are met in the first minute.
POLICY = {
    "accept": {"unit": "seconds", "amount": 6},
    "first_contact": {"unit": "seconds", "amount": 10},
    "resolve": {"unit": "seconds", "amount": 30},
    "callback": {"unit": "seconds", "amount": 15},
    "extension_day": {"unit": "seconds", "amount": 4},
}
# Gauges and their samples every service must show (the others: at least their owner, once traffic made them).
IN_EVERY_SERVICE = ("consumer_lag_messages", "outbox_pending_messages")


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: apt-get install prometheus (.ci/run does it)"
    done = subprocess.run([tool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_promtool_checks_the_config_the_rules_and_every_alert() -> None:
    rules = sorted(str(p.relative_to(PROMETHEUS_DIR)) for p in (PROMETHEUS_DIR / "rules").glob("*.yml"))
    tests = sorted(str(p.relative_to(PROMETHEUS_DIR)) for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert rules
    assert tests
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in promtool("check", "rules", *rules)
    assert "SUCCESS" in promtool("test", "rules", *tests)
    alerts = {
        rule["alert"]
        for path in rules
        for group in yaml.safe_load((PROMETHEUS_DIR / path).read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        case["alertname"]
        for path in tests
        for test in yaml.safe_load((PROMETHEUS_DIR / path).read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == tested, f"alerts without a unit test that makes them fire: {sorted(alerts - tested)}"


def service_environ(env: Env) -> dict[str, str]:
    return short_clock_environ(env, POLICY, SLA_GAUGE_INTERVAL_S="1", LAG_INTERVAL_S="1")


@contextlib.asynccontextmanager
async def traffic(env: Env) -> AsyncIterator[None]:
    """Raw traffic at a gentle rate and the departments playing the cases, until the block ends."""
    stop = asyncio.Event()
    settings = env.settings()
    departments = DepartmentSimulator(settings, speed=1.0, seed=8)
    departments.player.return_share = 0.3  # enough returns for the ranking and the reasons in a short run
    departments.player.extension_share = 0.1
    tasks = [
        asyncio.create_task(departments.run(stop)),
        asyncio.create_task(simulate(settings, rate=4.0, duplicates=0.1, bad=0.1, seed=8, stop=stop, progress=False)),
    ]
    try:
        yield
    finally:
        stop.set()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result


async def test_prometheus_scrapes_the_services_and_every_panel_has_data(env: Env) -> None:
    environ = service_environ(env)
    names = available_services()
    assert {"intake", "routing", "sla"} <= set(names)
    services: dict[str, ServiceProcess] = {}
    try:
        for name in names:
            services[name] = ServiceProcess(name, environ, env.tmp / f"{name}.log").start()
        with running_prometheus(env.tmp, {name: p.port for name, p in services.items()}) as (url, proc):
            async with httpx.AsyncClient(base_url=url, timeout=10) as http, traffic(env):

                async def down() -> list[str]:
                    return await targets_down(http, proc, env.tmp / "prometheus.log", set(services))

                await wait_for("targets up", down, timeout_s=60)

                for name, service in services.items():  # each declares, on its own /metrics, every name it owns
                    text = (await http.get(f"{service.url}/metrics")).text
                    for metric, owners in CONTRACT_METRICS.items():
                        if name in owners or "*" in owners:
                            declared = {f"# TYPE {metric} ", f"# TYPE {metric.removesuffix('_total')} counter"}
                            assert any(line in text for line in declared), f"{name} does not serve {metric}"

                async def metrics_not_served() -> list[str]:
                    missing = []
                    for metric, owners in CONTRACT_METRICS.items():
                        serving = {
                            s["metric"].get("service")
                            for s in await query(http, f"count by (service) ({{__name__=~'{metric}(_count)?'}})")
                        }
                        want = (
                            set(services)
                            if metric in IN_EVERY_SERVICE
                            else ({o for o in owners if o in services} if "*" not in owners else {"intake"})
                        )
                        missing += [f"{metric} from {s}" for s in sorted(want - serving)]
                    return missing

                await wait_for("the contract's metrics from their owners", metrics_not_served, timeout_s=180)

                queries = panel_queries()
                assert len(queries) >= 25

                async def no_data() -> list[str]:
                    return await panels_without_data(http, queries)

                await wait_for("every panel's query returns data", no_data, timeout_s=240, every_s=2)

                rules = (await http.get("/api/v1/rules")).json()["data"]["groups"]
                unhealthy = [
                    (r["name"], r.get("lastError")) for g in rules for r in g["rules"] if r["health"] not in ("ok",)
                ]
                assert rules
                assert not unhealthy, f"alert rules failing on real data: {unhealthy}"
    finally:
        for proc in services.values():
            proc.stop()
