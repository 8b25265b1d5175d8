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
    sales_grpc_target: str = Field(
        default="127.0.0.1:50054", description="gRPC address of sales (customer 360)."
    )
    service_desk_grpc_target: str = Field(
        default="127.0.0.1:50055", description="gRPC address of service-desk (customer 360)."
    )
    customer360_deadline_seconds: float = Field(
        default=0.15, gt=0, le=10, description="Deadline of each customer 360 remote call."
    )
