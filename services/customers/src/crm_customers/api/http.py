"""Public REST adapter for customers and their contacts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import Field

from crm_customers.customer import rules, service
from crm_customers.customer.mapping import contact_to_proto, customer_to_proto
from crm_customers.settings import Settings
from crm_platform.http import ApiModel, CurrentPage, CurrentPrincipal, paged, proto_json
from crm_platform.ids import parse_id
from crm_platform.runtime import Runtime

Json = dict[str, Any]


class ContactIn(ApiModel):
    full_name: str = Field(max_length=200)
    title: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=40)
    email: str = Field(default="", max_length=254)


class CustomerIn(ApiModel):
    # A plain string, not an enum: rules report a bad kind with the body's other violations.
    kind: str = Field(max_length=32, description=", ".join(rules.KINDS) + ".")
    display_name: str = Field(max_length=200)
    tax_id: str = Field(default="", max_length=64)
    phone: str = Field(default="", max_length=40)
    email: str = Field(default="", max_length=254)
    province: str = Field(default="", max_length=100)
    city: str = Field(default="", max_length=100)
    contacts: list[ContactIn] = Field(default_factory=list, max_length=rules.MAX_CONTACTS)


def router(rt: Runtime) -> APIRouter:
    assert isinstance(rt.settings, Settings)
    region = rt.settings.default_phone_region
    r = APIRouter(prefix="/v1/customers", tags=["customers"])

    @r.post("", status_code=201)
    async def create_customer(
        body: CustomerIn,
        principal: CurrentPrincipal,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Json:
        """Create a customer, and the contacts given with it, owned by the caller's org unit.
        `Idempotency-Key` (a UUID) makes retries return the first result."""
        new = rules.validate_new_customer(phone_region=region, **body.model_dump())
        request_id = parse_id(idempotency_key, "Idempotency-Key") if idempotency_key else None
        async with rt.db.unit_of_work() as conn:
            row, contacts = await service.create(
                conn=conn, principal=principal, customer=new, request_id=request_id
            )
        return proto_json(customer_to_proto(row, contacts))

    @r.get("")
    async def list_customers(
        principal: CurrentPrincipal,
        page: CurrentPage,
    ) -> Json:
        """Customers without their contacts; get one customer for those."""
        async with rt.db.read() as conn:
            rows = await service.list_visible(conn=conn, principal=principal, page=page)
        return paged("customers", rows, page, lambda x: proto_json(customer_to_proto(x)))

    @r.get("/{customer_id}")
    async def get_customer(customer_id: str, principal: CurrentPrincipal) -> Json:
        async with rt.db.read() as conn:
            row, contacts = await service.get(
                conn=conn, principal=principal, customer_id=parse_id(customer_id, "customer_id")
            )
        return proto_json(customer_to_proto(row, contacts))

    @r.post("/{customer_id}/contacts", status_code=201)
    async def create_contact(
        customer_id: str,
        body: ContactIn,
        principal: CurrentPrincipal,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Json:
        """Add a contact to a customer the caller can see."""
        cid = parse_id(customer_id, "customer_id")
        new = rules.validate_new_contact(phone_region=region, **body.model_dump())
        request_id = parse_id(idempotency_key, "Idempotency-Key") if idempotency_key else None
        async with rt.db.unit_of_work() as conn:
            row = await service.create_contact(
                conn=conn, principal=principal, customer_id=cid, contact=new, request_id=request_id
            )
        return proto_json(contact_to_proto(row))

    return r
