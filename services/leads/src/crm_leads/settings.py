from __future__ import annotations

from pydantic import Field

from crm_platform.config import BaseServiceSettings


class Settings(BaseServiceSettings):
    service_name: str = "leads"
    grpc_port: int = 50052
    http_port: int = 8002
    default_phone_region: str = Field(
        default="CN",
        pattern=r"^[A-Z]{2}$",
        description="Region for phones without +country, for tenants without their own "
        "(lead settings).",
    )
    webhook_tolerance_seconds: int = Field(
        default=300,
        ge=1,
        le=3600,
        description="How far a webhook's X-Crm-Timestamp may be from now (either way); "
        "bounds how long a captured delivery could be replayed.",
    )
    stale_lead_days: int = Field(
        default=90,
        ge=1,
        description="A NEW or QUALIFIED lead not updated for this many days is closed as stale "
        "(tenants without their own lead setting).",
    )
    stale_check_seconds: float = Field(
        default=3600.0, gt=0, description="How often each replica runs the stale-lead job."
    )
    distribution_load_refresh_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often the open-lead load of distribution targets (what the "
        "least-loaded strategy balances) is recounted from the leads they hold.",
    )
    sla_timer_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often each replica fires due lead timers (acceptance deadlines, "
        "SLA reminders and breaches, reclaims).",
    )
    conversion_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A conversion step not answered within this time (a service down, a "
        "command dead-lettered) is given up: what earlier steps made is undone and the lead "
        "returns to its previous status.",
    )
    conversion_deadline_poll_seconds: float = Field(
        default=5.0, gt=0, description="How often each replica looks for overdue conversions."
    )
    import_max_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024, description="Largest import file accepted."
    )
    import_slice_rows: int = Field(
        default=20_000,
        ge=1,
        le=200_000,
        description="File rows written per transaction (and per progress step) by an import.",
    )
    import_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long an import runner may go silent before another replica "
        "resumes its job.",
    )
    import_poll_seconds: float = Field(
        default=5.0, gt=0, description="How often each replica looks for import jobs to run."
    )
    import_workers: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Processes preparing an import's slices (parse, validate, score) beside "
        "the writer; one per core left after the service and PostgreSQL.",
    )
