"""The traffic simulator (`complaints simulate`, `make run`) outlives a producer the broker refuses for good (what a
broker restart does to an idempotent aiokafka producer, see shared.kafka.Producers): what was not delivered is
dropped and counted, the producer is replaced, and the traffic goes on through the new one. Before, the first
refused delivery ended the simulation with OutOfOrderSequenceNumber."""

from __future__ import annotations

import asyncio

import pytest

from shared.devtools import simulate as simulation
from shared.kafka import Producers
from shared.settings import Settings
from tests.unit.test_producer_recovery import World


async def test_the_simulator_replaces_a_refused_producer_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(rows=0, spoil_first_after=30)
    monkeypatch.setattr(simulation, "make_producers", lambda settings, name: Producers(world.make, name=name))
    settings = Settings(kafka_bootstrap_servers="fake:9092", topic_prefix="sim.")
    stats = await asyncio.wait_for(
        simulation.simulate(settings, rate=0, count=500, duplicates=0, bad=0, seed=7, progress=False), 30
    )
    assert len(world.made) >= 2, "the refused producer was replaced"
    assert stats.failed_kafka > 0
    assert stats.sent_kafka == 500
    assert len(world.log) > 30, "traffic went on through the new producer"
    assert len(world.log) + stats.failed_kafka == 500
    assert all(topic.startswith("sim.intake.") for topic, _, _ in world.log)
