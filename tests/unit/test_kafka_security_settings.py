"""The KAFKA_* security settings (contract 5) reach every Kafka client the same way: aiokafka's own clients (producer,
admin, the lag monitor's reader) through `security_kwargs`, FastStream's consumers through `_broker_security`; a
setting no client can honour is refused with a sentence naming it, never quietly replaced by another mechanism."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from faststream.kafka.security import parse_security
from pydantic import SecretStr

from shared.kafka import KafkaSecurityError, security_kwargs
from shared.service import _broker_security
from shared.settings import Settings


def settings(
    protocol: str, mechanism: str | None = None, user: str | None = "svc", password: str | None = "pw"
) -> Settings:
    return Settings(
        kafka_security_protocol=protocol,  # type: ignore[arg-type]
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=user,
        kafka_sasl_password=SecretStr(password) if password is not None else None,
    )


def _essentials(kwargs: dict[str, Any]) -> dict[str, Any]:
    keys = ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")
    return {k: kwargs.get(k) for k in keys if kwargs.get(k) is not None}


@pytest.mark.parametrize(
    ("protocol", "mechanism", "expected_mechanism"),
    [
        ("PLAINTEXT", None, None),
        ("SSL", None, None),
        ("SASL_PLAINTEXT", "PLAIN", "PLAIN"),
        ("SASL_PLAINTEXT", None, "PLAIN"),
        ("SASL_SSL", "SCRAM-SHA-512", "SCRAM-SHA-512"),
        ("SASL_SSL", "scram-sha-512", "SCRAM-SHA-512"),
        ("SASL_SSL", "SCRAM-SHA-256", "SCRAM-SHA-256"),
        ("SASL_PLAINTEXT", " Scram-Sha-256 ", "SCRAM-SHA-256"),
    ],
)
def test_aiokafka_and_faststream_get_the_same_security(
    protocol: str, mechanism: str | None, expected_mechanism: str | None
) -> None:
    cfg = settings(protocol, mechanism)
    direct = security_kwargs(cfg)
    via_faststream = parse_security(_broker_security(cfg)) or {"security_protocol": "PLAINTEXT"}
    assert _essentials(direct) == _essentials(via_faststream)
    assert direct["security_protocol"] == protocol
    assert direct.get("sasl_mechanism") == expected_mechanism
    if protocol.startswith("SASL"):
        assert direct["sasl_plain_username"] == "svc"
        assert direct["sasl_plain_password"] == "pw"
    if protocol.endswith("SSL"):
        for context in (direct["ssl_context"], via_faststream["ssl_context"]):
            assert isinstance(context, ssl.SSLContext)
            assert context.verify_mode is ssl.CERT_REQUIRED
            assert context.check_hostname
    else:
        assert direct.get("ssl_context") is None
        assert via_faststream.get("ssl_context") is None


@pytest.mark.parametrize("mechanism", ["GSSAPI", "OAUTHBEARER", "SCRAM-SHA-1", "scram"])
def test_a_mechanism_we_cannot_use_is_refused_not_replaced_by_plain(mechanism: str) -> None:
    cfg = settings("SASL_PLAINTEXT", mechanism)
    for build in (security_kwargs, _broker_security):
        with pytest.raises(KafkaSecurityError, match="KAFKA_SASL_MECHANISM"):
            build(cfg)


@pytest.mark.parametrize(("user", "password", "missing"), [(None, "pw", "USERNAME"), ("svc", None, "PASSWORD")])
def test_sasl_without_credentials_is_refused(user: str | None, password: str | None, missing: str) -> None:
    cfg = settings("SASL_SSL", "SCRAM-SHA-512", user, password)
    for build in (security_kwargs, _broker_security):
        with pytest.raises(KafkaSecurityError, match=f"KAFKA_SASL_{missing}"):
            build(cfg)


def test_a_ca_file_that_is_not_there_is_named() -> None:
    cfg = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=Path("/nonexistent/ca.pem"))
    for build in (security_kwargs, _broker_security):
        with pytest.raises(KafkaSecurityError, match="KAFKA_SSL_CAFILE"):
            build(cfg)
