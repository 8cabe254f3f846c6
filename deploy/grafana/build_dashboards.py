"""The three Grafana dashboards of complaints-loop, written as provisioned JSON (deploy/grafana/dashboards/*.json).

Run `python deploy/grafana/build_dashboards.py` after editing this file and commit the JSON it writes;
tests/unit/test_dashboards.py checks the JSON is what this file makes, and that every query names only metrics the
services serve. Standard library only: the JSON is Grafana's dashboard model (schemaVersion 39).

Aggregation: the gauges recomputed from the database (complaints_open, sla_overdue_open, outbox_pending_messages,
supervision_items_open)
and the lag read from the broker show the whole figure on every replica, so they are combined with max(); the
counters are per process, so they are summed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "complaints-prometheus"}


class Board:
    """Panels placed left to right on a 24-column grid, rows of a fixed height."""

    def __init__(self, uid: str, title: str, description: str, tags: list[str]) -> None:
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.panels: list[dict[str, Any]] = []
        self._x = self._y = 0

    def panel(
        self,
        title: str,
        targets: list[tuple[str, str]],
        *,
        kind: str = "timeseries",
        width: int = 12,
        height: int = 8,
        unit: str = "short",
        description: str = "",
        instant: bool = False,
    ) -> None:
        if self._x + width > 24:
            self._x, self._y = 0, self._y + height
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": kind,
                "title": title,
                "description": description,
                "datasource": DATASOURCE,
                "gridPos": {"x": self._x, "y": self._y, "w": width, "h": height},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": _options(kind),
                "targets": [
                    {
                        "refId": chr(ord("A") + i),
                        "datasource": DATASOURCE,
                        "expr": expr,
                        "legendFormat": legend,
                        "instant": instant,
                        "range": not instant,
                        **({"format": "table"} if kind == "table" else {}),
                    }
                    for i, (expr, legend) in enumerate(targets)
                ],
            }
        )
        self._x += width

    def model(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["complaints-loop", *self.tags],
            "timezone": "Asia/Shanghai",
            "schemaVersion": 39,
            "version": 1,
            "editable": True,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": []},
            "annotations": {"list": []},
            "links": [],
            "panels": self.panels,
        }


def _options(kind: str) -> dict[str, Any]:
    if kind == "timeseries":
        return {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]}}
    if kind == "bargauge":
        return {"orientation": "horizontal", "displayMode": "gradient", "reduceOptions": {"calcs": ["lastNotNull"]}}
    if kind in ("stat", "gauge"):
        return {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
    if kind == "piechart":
        return {"reduceOptions": {"calcs": ["lastNotNull"]}, "legend": {"displayMode": "table", "placement": "right"}}
    return {}


def quantile(q: float, bucket: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({bucket}[$__rate_interval])))"


def operations() -> Board:
    b = Board(
        "complaints-operations",
        "Complaints · Operations",
        "Traffic per channel, refusals, consumer lag, dead letters, outbox and latency percentiles.",
        ["operations"],
    )
    b.panel("Services up", [('up{job="complaints"}', "{{service}}")], kind="stat", width=24, height=4, instant=True)
    b.panel(
        "Complaints received per channel",
        [("sum by (channel) (rate(complaints_received_total[$__rate_interval]))", "{{channel}}")],
        unit="reqps",
        description="Complaints accepted by intake per second (hotline, complaint_line, supervisor, …).",
    )
    b.panel(
        "Raw messages refused per channel and reason",
        [("sum by (channel, reason) (rate(complaints_rejected_total[$__rate_interval]))", "{{channel}} {{reason}}")],
        unit="reqps",
    )
    b.panel(
        "Consumer lag",
        [("max by (group, topic) (consumer_lag_messages)", "{{group}} ← {{topic}}")],
        description="Messages behind the log end, per consumer group and topic (read from the broker).",
    )
    b.panel(
        "Dead letters",
        [
            (
                "sum by (service, source_topic) (increase(dead_letters_total[$__rate_interval]))",
                "{{service}} {{source_topic}}",
            )
        ],
        description="Messages refused with a reason, by the topic they came from (`complaints dlq list`).",
    )
    b.panel(
        "Intake to assignment (p50, p90, p99)",
        [
            (quantile(0.5, "intake_to_assignment_seconds_bucket"), "p50"),
            (quantile(0.9, "intake_to_assignment_seconds_bucket"), "p90"),
            (quantile(0.99, "intake_to_assignment_seconds_bucket"), "p99"),
        ],
        unit="s",
        description="From the source's receipt of a complaint to its first assignment.",
    )
    b.panel(
        "Intake to assignment p90 per channel",
        [(quantile(0.9, "intake_to_assignment_seconds_bucket", "channel"), "{{channel}}")],
        unit="s",
    )
    b.panel(
        "Batch processing time p99 per consumer group",
        [(quantile(0.99, "consumer_batch_seconds_bucket", "group"), "{{group}}")],
        unit="s",
        description="One consumed batch, its transaction and the offset commit.",
    )
    b.panel(
        "Outbox: waiting and published",
        [
            ("max by (service) (outbox_pending_messages)", "waiting {{service}}"),
            ("sum by (topic) (rate(outbox_published_messages_total[$__rate_interval]))", "published/s {{topic}}"),
        ],
    )
    b.panel(
        "Duplicates per channel",
        [("sum by (channel) (rate(complaints_duplicates_total[$__rate_interval]))", "{{channel}}")],
        width=24,
        unit="reqps",
        description="Raw messages that repeated a complaint already taken (the same source id): not a new case.",
    )
    return b


def sla() -> Board:
    b = Board(
        "complaints-sla",
        "Complaints · SLA",
        "Warnings and breaches by department and stage, open overdue deadlines, the on-time figure.",
        ["sla"],
    )
    met = "sum(increase(sla_deadlines_met_total[$__range]))"
    breached = "sum(increase(sla_breaches_total[$__range]))"
    b.panel(
        "On time (deadlines met / met + breached)",
        [(f"{met} / ({met} + ({breached} or vector(0)))", "on time")],
        kind="stat",
        width=6,
        unit="percentunit",
        instant=True,
        description="Over the dashboard's time range: each stage's deadline met in time, against those breached.",
    )
    met_by = "sum by (stage) (increase(sla_deadlines_met_total[$__range]))"
    breached_by = "sum by (stage) (increase(sla_breaches_total[$__range]))"
    b.panel(
        "On time per stage",
        [(f"{met_by} / ({met_by} + ({breached_by} or {met_by} * 0))", "{{stage}}")],
        kind="bargauge",
        width=6,
        unit="percentunit",
        instant=True,
    )
    b.panel(
        "Open overdue deadlines",
        [("sum(max by (department, stage) (sla_overdue_open))", "overdue")],
        kind="stat",
        width=6,
        instant=True,
        description="Deadlines past due whose stage is still not done (computed from the sla database).",
    )
    b.panel(
        "Calendar years without a holiday schedule",
        [("max by (year) (sla_calendar_year_missing)", "{{year}}")],
        kind="stat",
        width=6,
        instant=True,
        description="1: the year is missing from SLA_CALENDAR_OVERRIDES and the package (only weekends rest).",
    )
    b.panel(
        "Warnings by department and stage",
        [
            (
                "sort_desc(sum by (department, stage) (increase(sla_warnings_total[$__range])))",
                "{{department}} {{stage}}",
            )
        ],
        kind="bargauge",
        instant=True,
        description="Warnings at 80% of a deadline, over the time range.",
    )
    b.panel(
        "Breaches by department and stage",
        [
            (
                "sort_desc(sum by (department, stage) (increase(sla_breaches_total[$__range])))",
                "{{department}} {{stage}}",
            )
        ],
        kind="bargauge",
        instant=True,
        description="Breaches (escalated to yshj), over the time range.",
    )
    b.panel(
        "Warnings and breaches per stage",
        [
            ("sum by (stage) (rate(sla_warnings_total[$__rate_interval]))", "warning {{stage}}"),
            ("sum by (stage) (rate(sla_breaches_total[$__rate_interval]))", "breach {{stage}}"),
        ],
        unit="ops",
    )
    b.panel(
        "Open overdue deadlines by department and stage",
        [("max by (department, stage) (sla_overdue_open)", "{{department}} {{stage}}")],
    )
    b.panel(
        "Early warnings raised (防未病)",
        [("sum by (kind) (increase(early_warnings_total[$__range]))", "{{kind}}")],
        kind="bargauge",
        instant=True,
        description="Warnings over the time range: `rising` (a weekly count far above its 8-week baseline) and "
        "`enterprise_repeat` (one enterprise, 3 or more cases in 30 days). GET /v1/reports/warnings lists them.",
    )
    b.panel(
        "Supervision items open by phenomenon and status",
        [("sort_desc(max by (phenomenon, status) (supervision_items_open))", "{{phenomenon}} {{status}}")],
        kind="bargauge",
        instant=True,
        description="Supervision items (督查事项) not concluded, from reporting's database.",
    )
    return b


def departments() -> Board:
    b = Board(
        "complaints-departments",
        "Complaints · Departments",
        "Departments ranked by assignments and returns (退单), returns by reason, open cases.",
        ["departments"],
    )
    b.panel(
        "Assignments per department",
        [("sort_desc(sum by (department) (increase(complaints_assigned_total[$__range])))", "{{department}}")],
        kind="bargauge",
        instant=True,
    )
    b.panel(
        "Returns per department",
        [("sort_desc(sum by (department) (increase(complaints_returned_total[$__range])))", "{{department}}")],
        kind="bargauge",
        instant=True,
        description="Cases a department gave back to the triage desk (退单), whatever the desk then decided.",
    )
    returned = "sum by (department) (increase(complaints_returned_total[$__range]))"
    assigned = "sum by (department) (increase(complaints_assigned_total[$__range]))"
    b.panel(
        "Return share per department (returns / assignments)",
        [(f"sort_desc(({returned} or {assigned} * 0) / {assigned})", "{{department}}")],
        kind="bargauge",
        unit="percentunit",
        instant=True,
    )
    b.panel(
        "Returns by reason",
        [("sum by (reason_code) (increase(complaints_returned_total[$__range]))", "{{reason_code}}")],
        kind="piechart",
        instant=True,
    )
    b.panel(
        "Open cases per department",
        [("sort_desc(sum by (department) (max by (department, state) (complaints_open)))", "{{department}}")],
        kind="bargauge",
        instant=True,
        description="Cases not closed, from routing's database.",
    )
    b.panel(
        "Open cases by state",
        [("sum by (state) (max by (department, state) (complaints_open))", "{{state}}")],
        kind="piechart",
        instant=True,
    )
    b.panel(
        "Breaches per department",
        [("sort_desc(sum by (department) (increase(sla_breaches_total[$__range])))", "{{department}}")],
        kind="bargauge",
        instant=True,
    )
    b.panel(
        "Assignments by level",
        [("sum by (level) (rate(complaints_assigned_total[$__rate_interval]))", "{{level}}")],
        unit="ops",
    )
    return b


BOARDS = {"operations": operations, "sla": sla, "departments": departments}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {
        f"{name}.json": json.dumps(make().model(), ensure_ascii=False, indent=2) + "\n" for name, make in BOARDS.items()
    }


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        sys.stderr.write(f"wrote {OUT / name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
