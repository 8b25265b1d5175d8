"""Public REST adapter for webhooks: managing sources (bearer or API key auth) and receiving
deliveries (authenticated by their signature, no Authorization header)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import Field

from crm_leads.lead.service import Outcome
from crm_leads.settings import Settings
from crm_leads.webhook import flows, rules, service
from crm_leads.webhook.mappers import MAPPERS
from crm_platform.http import ApiModel, CurrentPrincipal
from crm_platform.pagination import page_of, page_request
from crm_platform.protos import timestamp
from crm_platform.runtime import Runtime

Json = dict[str, Any]
OUTCOME_HEADER = "Crm-Capture-Outcome"
# The handler reads the raw body (the signature covers its exact bytes), so FastAPI cannot
# describe it; this tells OpenAPI readers what to send.
_DELIVERY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
        "description": f"The platform's JSON payload; platforms: {', '.join(MAPPERS)}.",
    }
}


class SourceIn(ApiModel):
    name: str = Field(max_length=200)
    platform: str = Field(max_length=32, description=f"One of {', '.join(MAPPERS)}.")
    org_unit_id: str = Field(
        default="", max_length=64, description="Defaults to the caller's org unit."
    )


def source_json(row: Any) -> Json:
    """Never the secret: it is shown once, when the source is created."""
    return {
        "id": str(row.id),
        "name": row.name,
        "platform": row.platform,
        "owner_org_id": str(row.owner_org_id),
        "owner_org_path": row.owner_org_path,
        "enabled": row.enabled,
        "create_time": timestamp(row.create_time).ToJsonString(),
        "url": f"/v1/webhooks/{row.id}",
    }


def router(rt: Runtime) -> APIRouter:
    assert isinstance(rt.settings, Settings)
    settings: Settings = rt.settings
    r = APIRouter(tags=["webhooks"])

    @r.post("/v1/webhook-sources", status_code=201)
    async def create_webhook_source(body: SourceIn, principal: CurrentPrincipal) -> Json:
        """Connect a platform (managers and admins). The answer holds the shared HMAC
        secret; it is shown this once."""
        new = rules.validate_source(principal=principal, **body.model_dump())
        async with rt.db.unit_of_work() as conn:
            row = await service.create_source(conn=conn, principal=principal, source=new)
        return {"webhook_source": source_json(row), "secret": row.secret}

    @r.get("/v1/webhook-sources")
    async def list_webhook_sources(
        principal: CurrentPrincipal,
        page_size: Annotated[int, Query(ge=1, le=1000)] = 50,
        page_token: str = "",
    ) -> Json:
        page = page_request(page_size, page_token)
        async with rt.db.read() as conn:
            rows = await service.list_visible(conn=conn, principal=principal, page=page)
        items, token = page_of(rows, page)
        return {"webhook_sources": [source_json(x) for x in items], "next_page_token": token}

    @r.post("/v1/webhooks/{source_id}", status_code=201, openapi_extra=_DELIVERY_BODY)
    async def receive_webhook(
        source_id: str,
        request: Request,
        response: Response,
        x_crm_signature: Annotated[str | None, Header(description="sha256=<hex HMAC>")] = None,
        x_crm_timestamp: Annotated[str | None, Header(description="Unix seconds")] = None,
    ) -> Json:
        """A platform's lead, signed with the source's secret. Answers like `POST /v1/leads`:
        201 created, 200 merged into a lead of the source's subtree, 202 merged into a lead
        outside it (not revealed)."""
        delivery = flows.Delivery(source_id, x_crm_signature, x_crm_timestamp, await request.body())
        captured = await flows.receive(
            rt.db,
            delivery,
            now=time.time(),
            tolerance=settings.webhook_tolerance_seconds,
            default_region=settings.default_phone_region,
        )
        response.headers[OUTCOME_HEADER] = captured.outcome.name.lower()
        if captured.outcome is Outcome.MERGED:
            response.status_code = 200 if captured.visible else 202
        lead_id = str(captured.lead.id) if captured.visible else None
        return {"outcome": captured.outcome.name, "lead_id": lead_id}

    return r
