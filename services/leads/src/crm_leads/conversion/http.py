"""Public REST adapter for lead conversion."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import Field

from crm_leads.conversion import flows, rules, service
from crm_leads.conversion.waiters import ConversionWaiters
from crm_leads.settings import Settings
from crm_leads.tenantsettings import service as tenant_settings
from crm_platform.http import ApiModel, CurrentPrincipal, MoneyIn, proto_json
from crm_platform.ids import parse_id
from crm_platform.runtime import Runtime

Json = dict[str, Any]
PREFIX = "/v1/lead-conversions"
WAITERS = "conversion_waiters"
TEXT = rules.MAX_TEXT + 50  # generous transport bound; rules give the precise violation


class CustomerIn(ApiModel):
    customer_id: str = Field(default="", max_length=64, description="Attach to this customer.")
    kind: str = Field(default="", max_length=32, description="ORGANIZATION or PERSON.")
    display_name: str = Field(default="", max_length=TEXT)
    tax_id: str = Field(default="", max_length=TEXT)
    phone: str = Field(default="", max_length=64)
    email: str = Field(default="", max_length=TEXT)
    province: str = Field(default="", max_length=TEXT)
    city: str = Field(default="", max_length=TEXT)


class ContactIn(ApiModel):
    full_name: str = Field(default="", max_length=TEXT)
    title: str = Field(default="", max_length=TEXT)
    phone: str = Field(default="", max_length=64)
    email: str = Field(default="", max_length=TEXT)


class OpportunityIn(ApiModel):
    title: str = Field(default="", max_length=TEXT)
    amount: MoneyIn | None = None
    product: str = Field(default="", max_length=TEXT)
    close_date: str = Field(default="", max_length=32, description="YYYY-MM-DD.")


class ConvertLeadIn(ApiModel):
    customer: CustomerIn = Field(default_factory=CustomerIn)
    contact: ContactIn = Field(default_factory=ContactIn)
    opportunity: OpportunityIn = Field(default_factory=OpportunityIn)
    opportunity_per_intent: bool = False
    wait_seconds: float = Field(
        default=0.0, ge=0, le=rules.MAX_WAIT_SECONDS, description="Wait this long for the end."
    )


def options_from(body: ConvertLeadIn, region: str) -> rules.Options:
    c, k, o = body.customer, body.contact, body.opportunity
    return rules.validate_options(
        customer_id=c.customer_id,
        kind=c.kind,
        display_name=c.display_name,
        tax_id=c.tax_id,
        phone=c.phone,
        email=c.email,
        province=c.province,
        city=c.city,
        contact_full_name=k.full_name,
        contact_title=k.title,
        contact_phone=k.phone,
        contact_email=k.email,
        title=o.title,
        amount=o.amount.amount if o.amount else None,
        currency_code=o.amount.currency_code if o.amount else "",
        product=o.product,
        close_date=o.close_date,
        per_intent=body.opportunity_per_intent,
        phone_region=region,
    )


def waiters(rt: Runtime) -> ConversionWaiters:
    found: ConversionWaiters = rt.extras[WAITERS]
    return found


def _answer(response: Response, row: Any) -> Json:
    # 200 once ended; 202 while the saga still runs (poll the Location).
    response.status_code = 200 if row.state in rules.ENDED else 202
    response.headers["Location"] = f"{PREFIX}/{row.id}"
    return proto_json(service.to_proto(row))


def router(rt: Runtime) -> APIRouter:
    assert isinstance(rt.settings, Settings)
    settings = rt.settings
    r = APIRouter(tags=["conversion"])

    @r.post("/v1/leads/{lead_id}:convert", status_code=202)
    async def convert_lead(
        lead_id: str, body: ConvertLeadIn, principal: CurrentPrincipal, response: Response
    ) -> Json:
        """Convert a NEW or QUALIFIED lead into a customer (an existing one given by id,
        matched by the tenant's rules, or created), a contact and one opportunity (or one
        per intent). The saga runs across the customers and sales services; the answer is
        the conversion: 202 while it runs (poll `Location`, or send `wait_seconds`), 200
        once it has ended, COMPLETED with what it made or FAILED with the step and reason
        (the lead is then back in its previous status). A second request for a lead with a
        running or completed conversion returns that conversion
        (`Crm-Conversion-Started: false`). 409 `LEAD_NOT_CONVERTIBLE` for a closed lead."""
        region = await tenant_settings.phone_region(
            rt.db, principal.tenant_id, settings.default_phone_region
        )
        row, started = await flows.convert(
            rt.db,
            waiters(rt),
            principal,
            lead_id=parse_id(lead_id, "lead_id"),
            options=options_from(body, region),
            step_timeout=timedelta(seconds=settings.conversion_timeout_seconds),
            wait_seconds=body.wait_seconds,
        )
        response.headers["Crm-Conversion-Started"] = "true" if started else "false"
        return _answer(response, row)

    @r.get(PREFIX + "/{conversion_id}")
    async def get_conversion(
        conversion_id: str,
        principal: CurrentPrincipal,
        response: Response,
        wait_seconds: Annotated[float, Query(ge=0, le=rules.MAX_WAIT_SECONDS)] = 0.0,
    ) -> Json:
        """A conversion; with `wait_seconds`, answers as soon as it has ended (long-poll)."""
        row = await flows.get(
            rt.db, waiters(rt), principal, parse_id(conversion_id, "conversion_id"), wait_seconds
        )
        return _answer(response, row)

    return r
