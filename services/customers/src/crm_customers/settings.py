from __future__ import annotations

from pydantic import Field, model_validator

from crm_customers.lifecycle.rules import Thresholds
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
    leads_grpc_target: str = Field(
        default="127.0.0.1:50052",
        description="gRPC address of leads (customer 360: campaign touches and score).",
    )
    customer360_deadline_seconds: float = Field(
        default=0.15, gt=0, le=10, description="Deadline of each customer 360 remote call."
    )
    lifecycle_at_risk_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="A customer who has ordered and shows no activity for this many days is "
        "at risk.",
    )
    lifecycle_lost_days: int = Field(
        default=365,
        ge=2,
        le=3650,
        description="... and for this many days (more than the at-risk days) is lost.",
    )
    lifecycle_check_seconds: float = Field(
        default=3600.0, gt=0, description="How often each replica runs the inactivity job."
    )
    lifecycle_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Customers the inactivity job moves per run."
    )

    @model_validator(mode="after")
    def _lost_after_at_risk(self) -> Settings:
        if self.lifecycle_lost_days <= self.lifecycle_at_risk_days:
            raise ValueError("lifecycle_lost_days must be more than lifecycle_at_risk_days")
        return self

    @property
    def lifecycle_thresholds(self) -> Thresholds:
        return Thresholds(self.lifecycle_at_risk_days, self.lifecycle_lost_days)
