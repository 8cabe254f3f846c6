"""The services on a broker that takes clients only over SASL_SSL with SCRAM-SHA-512 (the production setting of
contract 5), certificates made here with openssl: a complaint flows from the raw topic to `complaints.assigned`, the
admin client and the lag monitor connect too, and a wrong password or an unknown CA fails at once with a line that
says why, never a hang."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from shared.devtools.infra.kafka_local import LocalKafka, SaslSsl
from shared.domain import Channel
from shared.kafka import make_producer, security_kwargs
from shared.settings import Settings
from tests.conftest import ALL_TEST_SCOPES
from tests.support.infra import Env, ServiceProcess, create_database, make_keys, unique

pytestmark = pytest.mark.integration

USER, PASSWORD = "complaints-svc", "s3cret-Scram-512"


@dataclass(frozen=True)
class Tls:
    ca: Path
    keystore: Path
    other_ca: Path


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(cwd: Path, name: str) -> None:
    _openssl(
        cwd,
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=complaints test {name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )


def make_tls(cwd: Path) -> Tls:
    """A CA, the broker's key and certificate (for 127.0.0.1 and localhost) signed by it, and an unrelated CA."""
    _make_ca(cwd, "ca")
    _make_ca(cwd, "other-ca")
    _openssl(
        cwd,
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
        "-subj",
        "/CN=localhost",
    )
    (cwd / "broker.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        cwd,
        *("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"),
        *("-out", "broker.pem", "-days", "2", "-extfile", "broker.ext"),
    )
    keystore = cwd / "broker-keystore.pem"  # the broker's PKCS#8 key, then its chain
    keystore.write_text("".join((cwd / f).read_text() for f in ("broker.key", "broker.pem", "ca.pem")))
    return Tls(cwd / "ca.pem", keystore, cwd / "other-ca.pem")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secure_kafka(tls: Tls) -> Iterator[LocalKafka]:
    kafka = LocalKafka(sasl_ssl=SaslSsl(tls.keystore, {USER: PASSWORD}), heap="384m").start()
    try:
        yield kafka
    finally:
        kafka.stop()


def security_env(tls: Tls, password: str = PASSWORD, cafile: Path | None = None) -> dict[str, str]:
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": USER,
        "KAFKA_SASL_PASSWORD": password,
        "KAFKA_SSL_CAFILE": str(cafile or tls.ca),
    }


def client_settings(env: Env, tls: Tls) -> Settings:
    return Settings(
        kafka_bootstrap_servers=env.bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password=PASSWORD,  # type: ignore[arg-type]  # pydantic takes the text for a SecretStr
        kafka_ssl_cafile=tls.ca,
        topic_prefix=env.prefix,
    )


@pytest.fixture
async def secure_env(secure_kafka: LocalKafka, postgres_url: str, tmp_path: Path) -> Env:
    name = unique("sec")
    url = await create_database(postgres_url, name)
    keys_file = tmp_path / "keys.yaml"
    return Env(secure_kafka.bootstrap, url, f"{name}.", keys_file, make_keys(keys_file, ALL_TEST_SCOPES), tmp_path)


async def collect_secure(settings: Settings, topics: list[str], until: Callable[[list[Any]], bool]) -> list[Any]:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        metadata_max_age_ms=1000,
        **security_kwargs(settings),
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not until(records):
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def raw_hotline(source_id: str) -> bytes:
    body = {
        "gdbh": source_id,
        "ldsj": "2026-11-26 09:00:00",
        "ldhm": "13912345678",
        "lxr": "王先生",
        "qymc": "通辽蒙东物流有限公司",
        "sqlx": "投诉",
        "sqfl": "拖欠账款",
        "sqbt": "工程款拖欠",
        "sqnr": "为街道办施工的工程已验收，工程款拖欠至今。",
        "ssqy": "科尔沁区",
    }
    return json.dumps(body, ensure_ascii=False).encode()


async def test_a_complaint_flows_over_sasl_ssl(secure_env: Env, tls: Tls) -> None:
    env = secure_env
    environ = env.environ(**security_env(tls), LAG_INTERVAL_S="0.5")
    intake = ServiceProcess("intake", environ, env.tmp / "intake.log").start()
    routing = ServiceProcess("routing", environ, env.tmp / "routing.log").start()
    settings = client_settings(env, tls)
    try:
        producer = make_producer(settings, "security-test")
        await producer.start()
        try:
            await producer.send_and_wait(env.topics.intake(Channel.HOTLINE), raw_hotline("TL-SEC-1"), key=b"TL-SEC-1")
        finally:
            await producer.stop()
        async with httpx.AsyncClient(base_url=intake.url, timeout=15) as http:
            taken = await http.post(
                "/v1/intake/hotline",
                content=raw_hotline("TL-SEC-2"),
                headers={"Authorization": f"Bearer {env.keys['channel:hotline']}"},
            )
            assert taken.status_code == 202, taken.text
        wanted = {"hotline:TL-SEC-1", "hotline:TL-SEC-2"}

        def assigned(records: list[Any]) -> set[str]:
            return {json.loads(r.value)["complaint_id"] for r in records if r.topic == env.topics.assigned}

        records = await collect_secure(settings, [env.topics.assigned], lambda rs: assigned(rs) >= wanted)
        assert assigned(records) >= wanted, (intake.log_tail(), routing.log_tail())
        for service in (intake, routing):
            async with httpx.AsyncClient(base_url=service.url, timeout=15) as http:
                ready = await _wait(lambda r: r.status_code == 200, http, "/readyz")
                assert ready.status_code == 200, ready.text
                # The lag monitor's admin client and end-offset reader connected too: the gauge has its group.
                metrics = await _wait(lambda r: f'group="{env.prefix}' in _lag_lines(r.text), http, "/metrics")
                assert f'group="{env.prefix}' in _lag_lines(metrics.text), service.log_tail()
    finally:
        routing.stop()
        intake.stop()


def _lag_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith("consumer_lag_messages{"))


async def _wait(ok: Callable[[httpx.Response], bool], http: httpx.AsyncClient, path: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    answer = await http.get(path)
    while not ok(answer) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        answer = await http.get(path)
    return answer


@pytest.mark.parametrize(
    ("case", "needle"),
    [("wrong password", "authentication failed"), ("unknown CA", "certificate verify failed")],
)
async def test_bad_credentials_fail_at_once_and_say_why(secure_env: Env, tls: Tls, case: str, needle: str) -> None:
    env = secure_env
    if case == "wrong password":
        extra = security_env(tls, password="not-the-password")
    else:
        extra = security_env(tls, cafile=tls.other_ca)
    intake = ServiceProcess("intake", env.environ(**extra), env.tmp / "intake.log")
    with pytest.raises(RuntimeError, match="exited with") as refused:
        intake.start(timeout_s=120)  # it exits on its own: "did not become healthy" would be a hang
    log = intake.log_tail(20_000)
    assert needle in log.lower(), log
    assert PASSWORD not in log, "a password in a log"
    assert "not-the-password" not in log, "a password in a log"
    assert "exited with" in str(refused.value)
