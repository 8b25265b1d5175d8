from __future__ import annotations

from pydantic import Field

from crm_platform.config import BaseServiceSettings


class Settings(BaseServiceSettings):
    service_name: str = "customers"
    grpc_port: int = 50053
    http_port: int = 8003
    default_phone_region: str = Field(
        default="CN", pattern=r"^[A-Z]{2}$", description="Region for phones without +country."
    )
