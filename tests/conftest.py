"""Test tiers: tests/unit and tests/contract need nothing; tests/integration and tests/e2e get a real Apache Kafka
and PostgreSQL, started here once per session (or taken from KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL). If either
cannot start, the session fails: integration tests are never skipped."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from shared.devtools.dev import dev_scopes
from shared.devtools.infra.kafka_local import LocalKafka
from shared.devtools.infra.postgres_local import LocalPostgres
from tests.support.infra import Env, create_database, make_keys, unique

# Tests never assert on wall time: a generated example is not "too slow" on a loaded 2-core machine.
settings.register_profile("complaints", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("complaints")

ALL_TEST_SCOPES = dev_scopes()  # a key for every channel, every department, reports and admin


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    kafka = LocalKafka().start()  # raises (fails the tests) if Kafka cannot start
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    pg = LocalPostgres().start()
    try:
        yield pg.url
    finally:
        pg.stop()


@pytest.fixture
async def env(kafka_bootstrap: str, postgres_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    name = unique("t")
    url = await create_database(postgres_url, name)
    keys_file = tmp_path / "keys.yaml"
    keys = make_keys(keys_file, ALL_TEST_SCOPES)
    return Env(kafka_bootstrap, url, f"{name}.", keys_file, keys, tmp_path)
