"""crm-analytics: read models built from every service's events."""

from __future__ import annotations

from pathlib import Path

from crm_analytics.api import grpc as grpc_api
from crm_analytics.api import http as http_api
from crm_analytics.consumers import consumers
from crm_analytics.dealerperf.models import metadata as dealerperf_metadata
from crm_analytics.leadcounts.models import metadata
from crm_analytics.settings import Settings
from crm_platform.db import platform_metadata
from crm_platform.runtime import ServiceDefinition
from crm_platform.runtime import main as run_main

DEFINITION = ServiceDefinition(
    name="analytics",
    title="CRM Analytics",
    settings_cls=Settings,
    migrations=Path(__file__).parent / "migrations",
    metadata=(metadata, dealerperf_metadata, platform_metadata),
    grpc=grpc_api.bindings,
    http=lambda rt: [http_api.router(rt)],
    consumers=consumers,
)


def main() -> None:
    run_main(DEFINITION)


if __name__ == "__main__":
    main()
