"""crm-leads: lead capture and lead queries."""

from __future__ import annotations

from pathlib import Path

from crm_leads.api import grpc as grpc_api
from crm_leads.api import http as http_api
from crm_leads.lead.models import metadata
from crm_leads.settings import Settings
from crm_leads.webhook import http as webhook_http
from crm_platform.db import platform_metadata
from crm_platform.runtime import ServiceDefinition
from crm_platform.runtime import main as run_main

DEFINITION = ServiceDefinition(
    name="leads",
    title="CRM Leads",
    settings_cls=Settings,
    migrations=Path(__file__).parent / "migrations",
    metadata=(metadata, platform_metadata),
    grpc=grpc_api.bindings,
    http=lambda rt: [http_api.router(rt), http_api.scoring_router(rt), webhook_http.router(rt)],
)


def main() -> None:
    run_main(DEFINITION)


if __name__ == "__main__":
    main()
