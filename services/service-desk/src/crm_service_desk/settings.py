from __future__ import annotations

from crm_platform.config import BaseServiceSettings


class Settings(BaseServiceSettings):
    service_name: str = "service-desk"
    grpc_port: int = 50055
    http_port: int = 8005
