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
    sla_breach_grace_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="SLA_BREACH_GRACE_SECONDS: a breach due at T waits until sla has read everything published up"
        " to T plus this, for facts taken upstream but not yet published (routing's outbox relay). docs/sla.md.",
    )
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
    topic_replication_factor: int = Field(
        default=1, ge=1, description="Replicas of topics the project creates (3 on a cluster)."
    )
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

    db_command_timeout_s: float = Field(
        default=10.0, gt=0, description="Longest wait on one database statement, commit or rollback."
    )
    db_connect_timeout_s: float = Field(default=10.0, gt=0, description="Longest wait to open a database connection.")
    http_db_timeout_s: float = Field(
        default=10.0, gt=0, description="Longest an HTTP request waits on the database (acquire to commit): then 503."
    )
    processed_retention_days: float = Field(
        default=30.0, ge=0, description="Processed-message rows older than this are pruned (docs/operations.md)."
    )
    dead_letter_retention_days: float = Field(
        default=90.0, ge=0, description="Dead-letter rows older than this are pruned (the dlq topic keeps its own)."
    )
    prune_interval_s: float = Field(default=3600.0, gt=0, description="How often each service prunes.")
    prune_batch_size: int = Field(default=1000, ge=1, le=100_000, description="Rows deleted per transaction.")
    # Supervision items (contract 10.3), kept by reporting on the clock's calendar.
    sla_working_hours: str = Field(
        default="08:30-12:00,13:30-17:30",
        description="SLA_WORKING_HOURS, the same setting the clock reads: the working calendar's local periods.",
    )
    supervision_due_amount: int = Field(default=10, gt=0, description="A supervision item is due this many units…")
    supervision_due_unit: Literal["days", "hours", "minutes", "seconds"] = Field(
        default="days", description="…of working time after its opening (days: 17:30 of the Nth working day)."
    )
    supervision_warn_ratio: float = Field(
        default=0.8, gt=0, le=1, description="Share of an item's working time after which its warning fires."
    )
    supervision_interval_s: float = Field(
        default=15.0, gt=0, description="How often reporting looks for due supervision items and recomputes its gauge."
    )

    def port_for(self, service: str) -> int:
        return self.http_port if self.http_port is not None else DEFAULT_PORTS[service]
