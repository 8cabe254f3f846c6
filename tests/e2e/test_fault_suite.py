"""The fault suite (RELIABILITY.md scenarios 10-18): intake, routing, sla and reporting each as its own process on
real Apache Kafka and PostgreSQL, raw traffic from the seeded generator and department actions and callbacks from
the department simulator, a fault landing mid-stream, and the same checks at the end of every scenario
(tests/support/faults.py): every input accounted for exactly once, every assignment once, every deadline once, no
breach for a case resolved in time, and the reporting service's figures equal to what the facts give.

Each scenario has its own database and topic prefix (and its own broker or PostgreSQL server when the fault is
done to the server). `make faults` runs every scenario; `make test` one of each kind (marker `faults_quick`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from shared.devtools.departments import DepartmentSimulator
from shared.devtools.infra.kafka_cluster import KafkaCluster
from shared.devtools.infra.kafka_local import LocalKafka
from shared.devtools.infra.postgres_local import LocalPostgres
from shared.devtools.traffic import TrafficGenerator
from shared.events.sla import SlaEventType, Stage
from tests.integration.test_delivery_faults import server_processes, signal_all
from tests.support.faults import (
    RESULTS,
    Feed,
    Outcome,
    World,
    check_assignments,
    check_deadlines,
    check_inputs,
    check_reports,
    check_republished_identical,
    processed,
    snapshot,
    wait_settled,
    world_environ,
)
from tests.support.infra import Env, create_database, metric_sum

pytestmark = [pytest.mark.integration, pytest.mark.faults]
quick = pytest.mark.faults_quick

TOTAL = 600  # raw messages a scenario sends: 10 every half second, so a 30-s fault lands mid-stream
OUTAGE_S = 30.0


@dataclass
class Run:
    """One scenario under way: its world, its feed, the department simulator, what HTTP intake acknowledged."""

    name: str
    env: Env
    world: World
    feed: Feed
    acknowledged: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return self.world.procs[name].url


Fault = Callable[[Run], Awaitable[None]]


async def scenario(
    name: str,
    env: Env,
    fault: Fault,
    *,
    seed: int,
    departments: bool = True,
    sla_replicas: int = 1,
    extra_env: dict[str, str] | None = None,
    after: Callable[[Run], list[str]] | None = None,
) -> None:
    """Start the four services, stream traffic, do the fault once the stream is going, and check everything."""
    outcome = Outcome(name)
    RESULTS.append(outcome)
    world = World(env, world_environ(env, **{"TOPIC_REPLICATION_FACTOR": "1", **(extra_env or {})}))
    names = ["intake", "routing", "sla", *(f"sla-{i}" for i in range(2, sla_replicas + 1)), "reporting"]
    for n in names:
        world.add(n, "sla" if n.startswith("sla") else n)
    run = Run(name, env, world, Feed(env, seed=seed, tag=f"F{seed:02d}"))
    stop_departments = asyncio.Event()
    sim_task: asyncio.Task[None] | None = None
    feeder: asyncio.Task[None] | None = None
    problems: list[str] = []
    try:
        await world.start(*names)
        if departments:
            sim = DepartmentSimulator(env.settings(), speed=20.0, seed=seed)
            sim.player.extension_share = 0.0
            sim_task = asyncio.create_task(sim.run(stop_departments))
        feeder = asyncio.create_task(run.feed.run(TOTAL, chunk=10, pause_s=0.5))
        got = await processed(run.url("intake"), "complaints_received_total", 60)
        assert got >= 60, f"the stream did not start:\n{world.logs()}"
        assert not feeder.done(), "the fault must land mid-stream"
        await fault(run)
        await asyncio.wait_for(feeder, 600)
        outcome.sent = len(run.feed.messages) + len(run.acknowledged)
        await wait_settled(env, run.feed.messages, run.acknowledged, timeout_s=240)
        if sim_task is not None:
            await asyncio.sleep(5)  # the last actions and callbacks the simulator has planned (speed 20: seconds)
            stop_departments.set()
            await asyncio.wait_for(sim_task, 60)
        problems += await check_reports(env, world.procs["reporting"])
        snap = await snapshot(env)
        problems += check_inputs(snap, run.feed.messages, run.acknowledged)
        problems += check_republished_identical(snap)
        problems += check_assignments(snap)
        problems += check_deadlines(snap)
        if after is not None:
            problems += after(run)
        outcome.outcome = "passed" if not problems else "FAILED: " + "; ".join(problems)[:200]
    except BaseException as exc:
        outcome.sent = outcome.sent or len(run.feed.messages) + len(run.acknowledged)
        outcome.outcome = f"ERROR: {type(exc).__name__}: {str(exc)[:150]}"
        raise
    finally:
        stop_departments.set()
        for task in (feeder, sim_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        world.stop_all()
    assert not problems, f"{problems}\n{world.logs()}"


# --- SIGKILL of each service (scenarios 10-12) -------------------------------------------------------------------


def _kill_and_restart(service: str) -> Fault:
    async def fault(run: Run) -> None:
        proc = run.world.procs[service]
        if service != "intake":  # its input is what intake has made: let some of it arrive first
            await processed(run.url("intake"), "complaints_received_total", 150)
        proc.kill()
        await asyncio.sleep(2)  # down a moment while the stream goes on
        await asyncio.to_thread(proc.start, 120.0)

    return fault


@pytest.mark.parametrize(
    "service",
    [pytest.param("intake", marks=quick), "routing", "sla", "reporting"],
)
async def test_sigkill_each_service_mid_stream_and_restart(env: Env, service: str) -> None:
    seed = {"intake": 11, "routing": 12, "sla": 13, "reporting": 14}[service]
    await scenario(f"sigkill {service}", env, _kill_and_restart(service), seed=seed)


# --- brokers (scenario 15) -----------------------------------------------------------------------------------------


@quick
async def test_one_broker_of_three_killed_mid_stream_and_restarted(env: Env, kafka_cluster: KafkaCluster) -> None:
    on_cluster = Env(kafka_cluster.bootstrap, env.database_url, env.prefix, env.keys_file, env.keys, env.tmp)

    async def fault(run: Run) -> None:
        node = kafka_cluster.nodes[0]  # the first controller and the leader of about a third of the partitions
        node.kill()
        now = await processed(run.url("intake"), "complaints_received_total", 0)
        await processed(run.url("intake"), "complaints_received_total", now + 100, timeout_s=120)  # on two nodes
        await asyncio.to_thread(node.start, 180.0)

    await scenario("kill 1 of 3 brokers", on_cluster, fault, seed=21, extra_env={"TOPIC_REPLICATION_FACTOR": "3"})


@pytest.fixture
async def own_kafka(env: Env) -> AsyncIterator[tuple[LocalKafka, Env]]:
    kafka = await asyncio.to_thread(LocalKafka(data_dir=env.tmp / "own-kafka", keep_data=True).start)
    try:
        yield kafka, Env(kafka.bootstrap, env.database_url, env.prefix, env.keys_file, env.keys, env.tmp)
    finally:
        kafka.stop()


async def test_the_single_broker_restarted_mid_stream(own_kafka: tuple[LocalKafka, Env]) -> None:
    kafka, env = own_kafka

    async def fault(run: Run) -> None:
        await asyncio.to_thread(kafka.stop)
        await asyncio.to_thread(kafka.start)  # same port, same data

    await scenario("single broker restarted", env, fault, seed=22)


async def test_the_broker_away_30s_while_http_intake_takes_complaints(own_kafka: tuple[LocalKafka, Env]) -> None:
    kafka, env = own_kafka
    gen = TrafficGenerator(seed=23, duplicates=0.0, bad=0.0, run_tag="HTTP")

    async def fault(run: Run) -> None:
        refused = []
        async with httpx.AsyncClient(base_url=run.url("intake"), timeout=20) as http:

            async def post(body: bytes, channel: str) -> int:
                headers = {"Authorization": f"Bearer {env.keys['channel:' + channel]}"}
                resp = await http.post(f"/v1/intake/{channel}", content=body, headers=headers)
                assert resp.status_code in (202, 503), resp.text  # kept (outbox) or "not taken, retry"
                if resp.status_code == 202:
                    run.acknowledged.add(resp.json()["complaint_id"])
                return resp.status_code

            await asyncio.to_thread(kafka.stop)
            ends = time.monotonic() + OUTAGE_S
            while time.monotonic() < ends:
                msg = gen.next()
                if await post(msg.body, msg.channel.value) != 202:
                    refused.append(msg)
                assert (await http.get("/healthz")).status_code == 200  # alive; no coroutine hangs
                await asyncio.sleep(0.5)
            await asyncio.to_thread(kafka.start)
            for msg in refused:  # the caller retries what was not taken
                deadline = time.monotonic() + 60
                while await post(msg.body, msg.channel.value) != 202:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(1)
        run.notes.append(f"{len(run.acknowledged)} taken over HTTP, {len(refused)} answered 503 first")

    await scenario("broker away 30 s, HTTP intake", env, fault, seed=24)


# --- PostgreSQL (scenario 13) --------------------------------------------------------------------------------------


@pytest.fixture
async def own_postgres(env: Env) -> AsyncIterator[tuple[LocalPostgres, Env]]:
    pg = await asyncio.to_thread(LocalPostgres(data_dir=env.tmp / "own-pg", keep_data=True).start)
    try:
        url = await create_database(pg.url, "faults")
        yield pg, Env(env.bootstrap, url, env.prefix, env.keys_file, env.keys, env.tmp)
    finally:
        pg.stop()


async def test_postgres_refusing_connections_for_30s(own_postgres: tuple[LocalPostgres, Env]) -> None:
    pg, env = own_postgres

    async def fault(run: Run) -> None:
        await asyncio.to_thread(pg.stop)  # the port closed: every connection refused
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(pg.start)  # same port, same data

    await scenario("PostgreSQL refusing 30 s", env, fault, seed=31)


@quick
async def test_postgres_hung_for_30s(own_postgres: tuple[LocalPostgres, Env]) -> None:
    pg, env = own_postgres

    async def fault(run: Run) -> None:
        assert pg.process is not None
        server = server_processes(pg.process.pid)
        signal_all(server, signal.SIGSTOP)  # the postmaster and every backend: a hung server
        try:
            await asyncio.sleep(OUTAGE_S)
        finally:
            signal_all(server, signal.SIGCONT)

    await scenario("PostgreSQL hung 30 s", env, fault, seed=32)


# --- SIGTERM (scenario 16) -----------------------------------------------------------------------------------------


@quick
async def test_sigterm_everything_mid_stream_and_start_again(env: Env) -> None:
    codes: dict[str, int | None] = {}

    async def fault(run: Run) -> None:
        procs = run.world.procs
        codes.update(
            zip(procs, await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs.values())), strict=True)
        )
        await run.world.start(*procs)

    def exited_cleanly(run: Run) -> list[str]:
        # 0, or the SIGTERM uvicorn raises again after its graceful shutdown; -9 would be the 30-s grace running out.
        clean = (0, -signal.SIGTERM)
        return [f"{name} exited with {code} on SIGTERM" for name, code in codes.items() if code not in clean]

    await scenario("SIGTERM all, start again", env, fault, seed=41, after=exited_cleanly)


# --- the clock (scenarios 17 and 18) -------------------------------------------------------------------------------


async def test_sla_down_for_an_hour_of_deadlines(env: Env) -> None:
    """No department acts: every accept (20 s) and first-contact (40 s) deadline falls due while sla is away for a
    minute, which is an hour of deadlines at a policy in minutes; on restart each fires once, marked late."""

    late: list[int] = []

    async def fault(run: Run) -> None:
        sla = run.world.procs["sla"]
        await processed(run.url("intake"), "complaints_received_total", 100)
        sla.kill()
        await asyncio.sleep(60)
        await asyncio.to_thread(sla.start, 120.0)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the missed deadlines fire after the restart
            snap = await snapshot(env)
            late[:] = [sum(e.late for e in snap.sla() if e.type is SlaEventType.BREACHED and e.stage is Stage.ACCEPT)]
            if late[0]:
                return
            await asyncio.sleep(1)

    def every_missed_deadline_fired_late(run: Run) -> list[str]:
        return [] if late and late[0] > 0 else ["no late breach fired after the restart"]

    await scenario(
        "sla down an hour (simulated)", env, fault, seed=51, departments=False, after=every_missed_deadline_fired_late,
    )  # fmt: skip


async def test_two_sla_replicas_one_killed_holding_claimed_rows(env: Env) -> None:
    """No department acts, so accept deadlines fall due in a burst; the replica that is firing them is killed (its
    claimed, uncommitted rows go back); the other fires each deadline once."""
    killed: list[str] = []

    async def fault(run: Run) -> None:
        procs = run.world.procs
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for name in ("sla", "sla-2"):
                with contextlib.suppress(httpx.HTTPError):
                    text = (await asyncio.to_thread(httpx.get, f"{procs[name].url}/metrics", timeout=5)).text
                    if metric_sum(text, "sla_warnings_total") + metric_sum(text, "sla_breaches_total") > 0:
                        procs[name].kill()
                        killed.append(name)
                        break
            await asyncio.sleep(0.1)
        assert killed, "no replica fired anything"

    await scenario(
        "2 sla replicas, one killed", env, fault, seed=52, departments=False, sla_replicas=2,
        extra_env={"SLA_BATCH_SIZE": "10"},
    )  # fmt: skip
