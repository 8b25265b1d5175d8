"""Typed settings for every service, read from environment variables only."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BaseServiceSettings(BaseSettings):
    """Settings shared by all services. Each service subclasses it with its own prefix-free
    fields; every field maps to an upper-case environment variable (e.g. ``DB_URL``)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    service_name: str = Field(description="Logical service name, e.g. 'leads'.")
    db_url: SecretStr = Field(
        description="SQLAlchemy async URL of the service's own database "
        "(postgresql+asyncpg://user@host:port/crm_leads)."
    )
    db_pool_size: int = Field(default=20, ge=1, le=200)
    db_pool_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="How long a request waits for a free connection before 503 UNAVAILABLE.",
    )
    nats_url: str = Field(default="nats://127.0.0.1:4222")
    nats_namespace: str = Field(
        default="",
        pattern=r"^[a-z0-9]*$",
        description="Prefix for subjects and stream names; lets tests and several "
        "deployments share one NATS server without colliding.",
    )
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    jwks_url: str = Field(
        default="http://127.0.0.1:8001/.well-known/jwks.json",
        description="Where the directory publishes its JWT signing keys.",
    )
    jwt_issuer: str = "crm-directory"
    jwt_audience: str = "crm"
    directory_grpc_target: str = Field(
        default="127.0.0.1:50051", description="gRPC address of the directory service."
    )
    grpc_client_timeout_seconds: float = Field(default=5.0, gt=0)
    api_key_cache_seconds: float = Field(default=60.0, ge=0)
    outbox_batch_size: int = Field(default=500, ge=1, le=10_000)
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    # Under load the relay starts a batch at most once per linger (bigger batches, fewer
    # statements per event); an event after a quiet spell is published at once.
    outbox_linger_seconds: float = Field(default=0.005, ge=0, le=1)
    consumer_batch_size: int = Field(default=100, ge=1, le=1000)
    consumer_max_deliver: int = Field(default=8, ge=1)
    consumer_ack_wait_seconds: float = Field(default=30.0, gt=0)
    log_level: str = "INFO"
    log_json: bool = True
    otel_exporter_otlp_endpoint: str = Field(
        default="", description="OTLP gRPC endpoint; empty disables trace export."
    )
    deployment_environment: str = "development"
    service_version: str = "0.1.0"
