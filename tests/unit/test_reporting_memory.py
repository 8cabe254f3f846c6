"""The reporting service's resident memory (issue #9: each service under 200 MB): what it imports at start.

`scipy.stats` alone is about 90 MB resident; the early-warning rule needs one function of scipy.special, imported
when the first warning is judged. Checked in a fresh interpreter, as `complaints run reporting` starts."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from scipy.stats import poisson

from services.reporting import watch, worker
from services.reporting.surveys_http import subscribe_surveys
from services.reporting.warnings import tail_probability
from shared.settings import Settings
from shared.topics import Topics
from tests.support.infra import REPO

HEAVY = ("scipy.stats", "scipy.special", "numpy", "openpyxl")


def test_the_reporting_app_imports_no_heavy_numeric_module() -> None:
    code = (
        "import json, sys\n"
        "import services.reporting.app\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("count", [-2, -1, 0, 1, 2, 3, 4, 5, 7, 10, 20, 50, 120, 400])
def test_the_tail_probability_is_poisson_sf_to_the_bit(count: int) -> None:
    for lam in [0.0, 0.5, 0.625, 1.0, 1.125, 2.5, 3.875, 8.0, 19.75, 60.0, 125.5, 399.875, math.inf]:
        expected = float(poisson.sf(count - 1, lam))
        assert tail_probability(count, lam) == expected, (count, lam)
    assert math.isnan(tail_probability(count, -1.0))
    assert math.isnan(tail_probability(count, math.nan))


class _RecordingBroker:
    """Takes the subscribers' options as FastStream's broker would, and keeps them."""

    def __init__(self) -> None:
        self.subscribers: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def subscriber(self, *topics: str, **options: Any) -> Callable[[Any], Any]:
        self.subscribers.append((topics, options))
        return lambda handler: handler

    def publisher(self, *topics: str, **options: Any) -> None:
        return None


class _Ctx:
    def __init__(self) -> None:
        self.settings = Settings(topic_prefix="mem.")
        self.topics = Topics("mem.")
        self.broker = _RecordingBroker()

    def group(self, name: str, *topics: str) -> str:
        return f"mem.{name}"


def test_every_reporting_consumer_bounds_what_it_fetches_ahead() -> None:
    """A backlog fills each consumer's fetch buffer up to its per-partition bound, for each of its six consumers."""
    ctx: Any = _Ctx()
    worker.subscribe(ctx, projection=None)  # type: ignore[arg-type]
    watch.subscribe(ctx, watch=None)  # type: ignore[arg-type]
    subscribe_surveys(ctx)
    t = ctx.topics
    subscribed = sorted(topic for topics, _ in ctx.broker.subscribers for topic in topics)
    assert subscribed == sorted([t.received, t.assigned, t.lifecycle, t.sla, t.received, t.survey_responses])
    for topics, options in ctx.broker.subscribers:
        assert options.get("max_partition_fetch_bytes", 1024 * 1024) <= 256 * 1024, topics
        assert options["max_records"] == ctx.settings.consumer_max_records


def test_the_watch_loads_the_tail_probability_at_start_in_a_thread_not_at_the_first_warning() -> None:
    """The import (seconds on a loaded box) runs in a worker thread during setup: the event loop keeps answering."""
    code = (
        "import asyncio, json, sys, threading\n"
        "from services.reporting import warnings\n"
        "seen = []\n"
        "original = warnings.preload\n"
        "def spy():\n"
        "    seen.append(threading.current_thread() is threading.main_thread())\n"
        "    original()\n"
        "import services.reporting.watch as watch\n"
        "watch.preload_tail_probability = spy\n"
        "class Ctx:\n"
        "    settings = None\n"
        "async def main():\n"
        "    try:\n"
        "        await watch.setup_watch(Ctx())\n"
        "    except Exception:\n"
        "        pass\n"
        "asyncio.run(main())\n"
        "print(json.dumps([seen, 'scipy.special' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[False], True]
