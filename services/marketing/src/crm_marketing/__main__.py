"""crm-marketing: marketing campaigns."""

from __future__ import annotations

from pathlib import Path

from crm_marketing.api import grpc as grpc_api
from crm_marketing.api import http as http_api
from crm_marketing.campaign.models import campaigns, metadata
from crm_marketing.settings import Settings
from crm_platform.db import platform_metadata
from crm_platform.org_moves import path_consumer
from crm_platform.runtime import ServiceDefinition
from crm_platform.runtime import main as run_main

DEFINITION = ServiceDefinition(
    name="marketing",
    title="CRM Marketing",
    settings_cls=Settings,
    migrations=Path(__file__).parent / "migrations",
    metadata=(metadata, platform_metadata),
    grpc=grpc_api.bindings,
    http=lambda rt: [http_api.router(rt)],
    consumers=lambda rt: [path_consumer("marketing", campaigns.c.owner_org_path)],
)


def main() -> None:
    run_main(DEFINITION)


if __name__ == "__main__":
    main()
