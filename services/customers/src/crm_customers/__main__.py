"""crm-customers: customers and their contacts."""

from __future__ import annotations

from pathlib import Path

from crm_customers.api import grpc as grpc_api
from crm_customers.api import http as http_api
from crm_customers.consumers import consumers
from crm_customers.conversion import http as conversion_http
from crm_customers.customer.models import metadata
from crm_customers.lifecycle import service as lifecycle_service
from crm_customers.settings import Settings
from crm_platform.db import platform_metadata
from crm_platform.runtime import PeriodicJob, Runtime, ServiceDefinition
from crm_platform.runtime import main as run_main


def _jobs(rt: Runtime) -> list[PeriodicJob]:
    settings = rt.settings
    assert isinstance(settings, Settings)

    async def lifecycle_inactivity() -> int:
        return await lifecycle_service.run_inactivity_job(
            rt.db,
            thresholds=settings.lifecycle_thresholds,
            batch_size=settings.lifecycle_batch_size,
        )

    return [
        PeriodicJob("lifecycle-inactivity", settings.lifecycle_check_seconds, lifecycle_inactivity)
    ]


DEFINITION = ServiceDefinition(
    name="customers",
    title="CRM Customers",
    settings_cls=Settings,
    migrations=Path(__file__).parent / "migrations",
    metadata=(metadata, platform_metadata),
    grpc=grpc_api.bindings,
    http=lambda rt: [
        http_api.router(rt),
        http_api.contacts_router(rt),
        http_api.fields_router(rt),
        http_api.tags_router(rt),
        http_api.segments_router(rt),
        http_api.lifecycle_router(rt),
        conversion_http.router(rt),
    ],
    consumers=consumers,
    jobs=_jobs,
)


def main() -> None:
    run_main(DEFINITION)


if __name__ == "__main__":
    main()
