from __future__ import annotations

from pydantic import Field, SecretStr

from crm_platform.config import BaseServiceSettings


class Settings(BaseServiceSettings):
    service_name: str = "directory"
    grpc_port: int = 50051
    http_port: int = 8001
    token_ttl_seconds: int = Field(default=3600, ge=60, le=86_400)
    bootstrap_token: SecretStr | None = Field(
        default=None,
        description="Operator credential for creating tenants "
        "(Authorization: Bootstrap <token>); unset disables tenant creation over the API.",
    )
