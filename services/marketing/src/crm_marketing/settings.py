from __future__ import annotations

from crm_platform.config import BaseServiceSettings


class Settings(BaseServiceSettings):
    service_name: str = "marketing"
    grpc_port: int = 50056
    http_port: int = 8006
