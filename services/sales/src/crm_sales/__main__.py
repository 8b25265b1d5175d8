"""crm-sales: the sales pipeline (opportunities)."""

from __future__ import annotations

from pathlib import Path

from crm_platform.db import platform_metadata
from crm_platform.runtime import ServiceDefinition
from crm_platform.runtime import main as run_main
from crm_sales.api import grpc as grpc_api
from crm_sales.api import http as http_api
from crm_sales.consumers import consumers
from crm_sales.opportunity.models import metadata
from crm_sales.settings import Settings

DEFINITION = ServiceDefinition(
    name="sales",
    title="CRM Sales",
    settings_cls=Settings,
    migrations=Path(__file__).parent / "migrations",
    metadata=(metadata, platform_metadata),
    grpc=grpc_api.bindings,
    http=lambda rt: [http_api.router(rt)],
    consumers=consumers,
)


def main() -> None:
    run_main(DEFINITION)


if __name__ == "__main__":
    main()
