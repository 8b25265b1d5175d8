from __future__ import annotations

from crm_platform.config import BaseServiceSettings


class Settings(BaseServiceSettings):
    service_name: str = "analytics"
    grpc_port: int = 50057
    http_port: int = 8007
