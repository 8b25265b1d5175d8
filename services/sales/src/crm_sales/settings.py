from __future__ import annotations

from crm_platform.config import BaseServiceSettings


class Settings(BaseServiceSettings):
    service_name: str = "sales"
    grpc_port: int = 50054
    http_port: int = 8004
