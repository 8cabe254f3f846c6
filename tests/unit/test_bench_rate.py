"""The pipeline bench's drain rate: the run that failed CI had every complaint assigned before the services
answered their health check (a 60-message backlog, a loaded machine) and so no rate at all."""

from __future__ import annotations

import pytest

from shared.devtools.bench_pipeline import drain_rate


def test_first_to_last_output_when_there_is_a_span() -> None:
    assert drain_rate([10.0, 10.5, 12.0], spawned_at=1.0) == pytest.approx(3 / 2.0)


def test_one_poll_is_timed_from_the_services_start_even_when_it_came_before_they_were_healthy() -> None:
    assert drain_rate([7.0, 7.0, 7.0, 7.0], spawned_at=5.0) == pytest.approx(4 / 2.0)


def test_nothing_out_is_no_rate() -> None:
    assert drain_rate([], spawned_at=5.0) is None
