"""Typed settings from the environment and `.env` (contract section 5), built once by the caller."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORTS = {"intake": 8081, "routing": 8082, "sla": 8083, "reporting": 8084}


class Settings(BaseSettings):
    """Contract settings plus a few tunables. Never built at import time: `Settings()` in a lifespan or the CLI."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/complaints"
    topic_prefix: str = ""
    sla_calendar_overrides: Path | None = None
    routing_rules: Path | None = None
    api_keys_file: Path | None = None
    http_port: int | None = None
    http_host: str = "127.0.0.1"

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    topic_partitions: int = Field(default=6, ge=1, description="Partitions of topics the project creates.")
    consumer_max_records: int = Field(default=500, ge=1, le=10_000)
    outbox_batch_size: int = Field(default=500, ge=1, le=10_000)
    kafka_send_timeout_s: float = Field(default=10.0, gt=0)
    db_pool_max: int = Field(default=10, ge=1)
    lag_interval_s: float = Field(default=10.0, gt=0, description="How often consumer lag is read from the broker.")
    stall_after_s: float = Field(default=120.0, gt=0, description="Lag with no commit this long: not ready.")
    portal_rate_limit: int = Field(
        default=10, ge=1, description="Portal submissions one client address may make in any minute (then 429)."
    )
    portal_trusted_proxies: str = Field(
        default="", description="Addresses or networks (commas) whose X-Forwarded-For the portal believes."
    )

    def port_for(self, service: str) -> int:
        return self.http_port if self.http_port is not None else DEFAULT_PORTS[service]
