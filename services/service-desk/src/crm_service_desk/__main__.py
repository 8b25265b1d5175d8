"""crm-service-desk: service requests and complaints (tickets)."""

from __future__ import annotations

from pathlib import Path

from crm_platform.db import platform_metadata
from crm_platform.org_moves import path_consumer
from crm_platform.runtime import ServiceDefinition
from crm_platform.runtime import main as run_main
from crm_service_desk.api import grpc as grpc_api
from crm_service_desk.api import http as http_api
from crm_service_desk.settings import Settings
from crm_service_desk.ticket.models import metadata, tickets

DEFINITION = ServiceDefinition(
    name="service-desk",
    title="CRM Service Desk",
    settings_cls=Settings,
    migrations=Path(__file__).parent / "migrations",
    metadata=(metadata, platform_metadata),
    grpc=grpc_api.bindings,
    http=lambda rt: [http_api.router(rt)],
    consumers=lambda rt: [path_consumer("service-desk", tickets.c.owner_org_path)],
)


def main() -> None:
    run_main(DEFINITION)


if __name__ == "__main__":
    main()
