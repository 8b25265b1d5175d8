"""Public REST adapter for leads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import Field

from crm_leads.lead import rules, service
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.settings import Settings
from crm_platform.http import ApiModel, CurrentPrincipal, proto_json
from crm_platform.ids import parse_id
from crm_platform.pagination import page_of, page_request
from crm_platform.runtime import Runtime

Json = dict[str, Any]


class LeadIn(ApiModel):
    full_name: str = Field(max_length=200)
    phone: str = Field(default="", max_length=40)
    email: str = Field(default="", max_length=254)
    company: str = Field(default="", max_length=200)
    province: str = Field(default="", max_length=100)
    city: str = Field(default="", max_length=100)
    source: str = Field(default="api", max_length=32)


def router(rt: Runtime) -> APIRouter:
    assert isinstance(rt.settings, Settings)
    region = rt.settings.default_phone_region
    r = APIRouter(prefix="/v1/leads", tags=["leads"])

    @r.post("", status_code=201)
    async def create_lead(
        body: LeadIn,
        principal: CurrentPrincipal,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Json:
        """Create a lead owned by the caller's org unit. `Idempotency-Key` (a UUID) makes
        retries return the first result."""
        new = rules.validate_new_lead(phone_region=region, **body.model_dump())
        request_id = parse_id(idempotency_key, "Idempotency-Key") if idempotency_key else None
        async with rt.db.unit_of_work() as conn:
            row = await service.create(
                conn=conn, principal=principal, lead=new, request_id=request_id
            )
        return proto_json(lead_to_proto(row))

    @r.get("")
    async def list_leads(
        principal: CurrentPrincipal,
        page_size: Annotated[int, Query(ge=1, le=1000)] = 50,
        page_token: str = "",
    ) -> Json:
        page = page_request(page_size, page_token)
        async with rt.db.read() as conn:
            rows = await service.list_visible(conn=conn, principal=principal, page=page)
        items, token = page_of(rows, page)
        return {"leads": [proto_json(lead_to_proto(x)) for x in items], "next_page_token": token}

    @r.get("/{lead_id}")
    async def get_lead(lead_id: str, principal: CurrentPrincipal) -> Json:
        async with rt.db.read() as conn:
            row = await service.get(
                conn=conn, principal=principal, lead_id=parse_id(lead_id, "lead_id")
            )
        return proto_json(lead_to_proto(row))

    return r
