"""The e2e tier's own fixtures: a three-broker KRaft cluster for the fault suite (started once, only when a test asks
for it), and the fault suite's summary table at the end of the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.devtools.infra.kafka_cluster import KafkaCluster
from tests.support.faults import RESULTS, table


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    cluster = KafkaCluster().start()  # raises (fails the tests) if the cluster cannot start
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.write_sep("=", "fault suite")
        terminalreporter.write_line(table(RESULTS))
