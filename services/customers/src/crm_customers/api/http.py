"""Public REST adapter for customers, their account hierarchy, custom fields, history and
contacts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import Field

from crm_customers.customer import (
    contact_rules,
    custom_fields,
    rules,
    schema,
    segments,
    service,
    tagging,
    view360,
)
from crm_customers.customer.contact_rules import ConsentFields, ContactFields
from crm_customers.customer.mapping import (
    contact_to_proto,
    customer_tag_to_proto,
    customer_to_proto,
    field_change_to_proto,
    lifecycle_change_to_proto,
    schema_to_proto,
    segment_to_proto,
    segment_version_to_proto,
    tag_to_proto,
)
from crm_customers.lifecycle import service as lifecycle_service
from crm_customers.settings import Settings
from crm_platform.auth import Principal
from crm_platform.http import (
    ApiModel,
    CodeText,
    CurrentPage,
    CurrentPrincipal,
    Text,
    paged,
    proto_json,
)
from crm_platform.ids import parse_id
from crm_platform.pagination import PageRequest, encode_token
from crm_platform.runtime import Runtime

Json = dict[str, Any]
IfMatch = Annotated[str, Header(description="The etag read; a stale one gives 409.")]
UpdateMask = Annotated[
    str,
    Query(description="Comma-separated fields to change; default: the fields in the body."),
]


class ConsentIn(ApiModel):
    purpose: str = Field(max_length=40, description=", ".join(contact_rules.PURPOSES) + ".")
    granted: bool
    consent_time: datetime | None = Field(default=None, description="Default: now.")
    source: str = Field(default="", max_length=200, description="web_form, call, paper ...")


class ContactIn(ApiModel):
    full_name: str = Field(default="", max_length=200)
    title: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=40)
    email: str = Field(default="", max_length=254)
    reports_to_id: str = Field(default="", max_length=40)
    buying_roles: list[CodeText] = Field(
        default_factory=list, max_length=10, description=", ".join(contact_rules.ROLES) + "."
    )
    allowed_channels: list[CodeText] = Field(
        default_factory=list, max_length=10, description=", ".join(contact_rules.CHANNELS) + "."
    )
    preferred_channel: str = Field(default="", max_length=40)
    consents: list[ConsentIn] = Field(default_factory=list, max_length=10)

    def fields(self) -> ContactFields:
        return ContactFields(
            full_name=self.full_name,
            title=self.title,
            phone=self.phone,
            email=self.email,
            buying_roles=self.buying_roles,
            allowed_channels=self.allowed_channels,
            preferred_channel=self.preferred_channel,
            consents=[
                ConsentFields(
                    purpose=c.purpose,
                    granted=c.granted,
                    consent_time=c.consent_time,
                    source=c.source,
                )
                for c in self.consents
            ],
        )


class CustomerIn(ApiModel):
    # Plain strings, not enums: rules report a bad kind with the body's other violations.
    kind: str = Field(default="", max_length=32, description=", ".join(rules.KINDS) + ".")
    display_name: str = Field(default="", max_length=200)
    legal_name: str = Field(default="", max_length=200)
    tax_id: str = Field(default="", max_length=64)
    industry: str = Field(default="", max_length=200)
    organization_size: str = Field(
        default="", max_length=32, description=", ".join(rules.SIZES) + "."
    )
    gender: str = Field(default="", max_length=32, description=", ".join(rules.GENDERS) + ".")
    birthday: str = Field(default="", max_length=10, description="YYYY-MM-DD.")
    phone: str = Field(default="", max_length=40)
    email: str = Field(default="", max_length=254)
    province: str = Field(default="", max_length=100)
    city: str = Field(default="", max_length=100)
    parent_id: str = Field(default="", max_length=40, description="Parent account, if any.")
    custom_fields: dict[str, Any] = Field(default_factory=dict, max_length=100)
    contacts: list[ContactIn] = Field(default_factory=list, max_length=rules.MAX_CONTACTS)


class FieldDefinitionIn(ApiModel):
    name: str = Field(max_length=63)
    type: str = Field(max_length=16, description=", ".join(custom_fields.TYPES) + ".")
    options: list[Text] = Field(default_factory=list, max_length=custom_fields.MAX_OPTIONS)
    required: bool = False


class FieldSchemaIn(ApiModel):
    fields: list[FieldDefinitionIn] = Field(max_length=custom_fields.MAX_FIELDS)


class MoveIn(ApiModel):
    new_parent_id: str = Field(default="", max_length=40, description="Empty: to the root.")


def _paths(update_mask: str, body: ApiModel) -> list[str]:
    """AIP-134: without a mask, the fields present in the body are the ones to change."""
    if update_mask:
        return [p.strip() for p in update_mask.split(",") if p.strip()]
    return sorted(body.model_fields_set)


def _optional_id(raw: str, name: str) -> Any:
    return parse_id(raw, name) if raw else None


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
        """Create a customer, and the contacts given with it, owned by the caller's org unit,
        under `parent_id` or as a root account. `Idempotency-Key` (a UUID) makes retries
        return the first result."""
        parent_id = _optional_id(body.parent_id, "parent_id")
        request_id = _optional_id(idempotency_key or "", "Idempotency-Key")
        async with rt.db.unit_of_work() as conn:
            row, contacts = await service.create(
                conn=conn,
                principal=principal,
                kind=body.kind,
                profile=body.model_dump(include=set(rules.PROFILE_FIELDS)),
                custom_values=body.custom_fields,
                contact_fields=[c.fields() for c in body.contacts],
                parent_id=parent_id,
                request_id=request_id,
                phone_region=region,
                now=datetime.now(UTC),
            )
        return proto_json(customer_to_proto(row, contacts))

    @r.get("")
    async def list_customers(principal: CurrentPrincipal, page: CurrentPage) -> Json:
        """Customers without their contacts; get one customer for those."""
        async with rt.db.read() as conn:
            rows = await service.list_visible(conn=conn, principal=principal, page=page)
        return paged("customers", rows, page, lambda x: proto_json(customer_to_proto(x)))

    @r.get("/{customer_id}:view360")
    async def customer_360(
        customer_id: str,
        principal: CurrentPrincipal,
        authorization: Annotated[str, Header()] = "",
    ) -> Json:
        """Profile and contacts, open opportunities and recent orders (sales), open tickets
        (service-desk), campaign touches and the best score of the leads converted into the
        customer (leads) and a merged timeline, newest first. A dependency that is slow or
        down leaves its section empty and is named in `partial` (with `partial_reasons`):
        still 200."""
        return await view360.assemble(
            rt=rt,
            principal=principal,
            authorization=authorization,
            customer_id=parse_id(customer_id, "customer_id"),
        )

    @r.get("/{customer_id}")
    async def get_customer(customer_id: str, principal: CurrentPrincipal) -> Json:
        async with rt.db.read() as conn:
            row, contacts = await service.get(
                conn=conn, principal=principal, customer_id=parse_id(customer_id, "customer_id")
            )
        return proto_json(customer_to_proto(row, contacts))

    @r.patch("/{customer_id}")
    async def update_customer(
        customer_id: str,
        body: CustomerIn,
        principal: CurrentPrincipal,
        update_mask: UpdateMask = "",
        if_match: IfMatch = "",
    ) -> Json:
        """Change the masked fields (`custom_fields.<name>` for one custom field); every
        change is recorded in the history. `kind` cannot change; `parent_id` changes with
        `:move`."""
        cid = parse_id(customer_id, "customer_id")
        async with rt.db.unit_of_work() as conn:
            row, contacts = await service.update(
                conn=conn,
                principal=principal,
                customer_id=cid,
                patch=body.model_dump(),
                paths=_paths(update_mask, body),
                expected_etag=if_match,
                phone_region=region,
            )
        return proto_json(customer_to_proto(row, contacts))

    @r.post("/{customer_id}:move")
    async def move_customer(
        customer_id: str, body: MoveIn, principal: CurrentPrincipal, if_match: IfMatch = ""
    ) -> Json:
        """Move a customer and its sub-hierarchy under `new_parent_id`, or to the root. Under
        itself or a descendant: 409 CUSTOMER_HIERARCHY_CYCLE."""
        cid = parse_id(customer_id, "customer_id")
        new_parent_id = _optional_id(body.new_parent_id, "new_parent_id")
        async with rt.db.unit_of_work() as conn:
            row, contacts = await service.move(
                conn=conn,
                principal=principal,
                customer_id=cid,
                new_parent_id=new_parent_id,
                expected_etag=if_match,
            )
        return proto_json(customer_to_proto(row, contacts))

    @r.get("/{customer_id}/children")
    async def list_children(
        customer_id: str, principal: CurrentPrincipal, page: CurrentPage
    ) -> Json:
        """Direct child accounts the caller can see, newest first."""
        cid = parse_id(customer_id, "customer_id")
        async with rt.db.read() as conn:
            rows = await service.list_children(
                conn=conn, principal=principal, parent_id=cid, page=page
            )
        return paged("children", rows, page, lambda x: proto_json(customer_to_proto(x)))

    @r.get("/{customer_id}/history")
    async def customer_history(
        customer_id: str, principal: CurrentPrincipal, page: CurrentPage
    ) -> Json:
        """Every change to the customer's fields, newest first."""
        return await _history(rt, principal, page, customer_id, "")

    return r


def contacts_router(rt: Runtime) -> APIRouter:
    assert isinstance(rt.settings, Settings)
    region = rt.settings.default_phone_region
    r = APIRouter(prefix="/v1/customers/{customer_id}/contacts", tags=["contacts"])

    @r.post("", status_code=201)
    async def create_contact(
        customer_id: str,
        body: ContactIn,
        principal: CurrentPrincipal,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Json:
        """Add a contact to a customer the caller can see."""
        cid = parse_id(customer_id, "customer_id")
        reports_to_id = _optional_id(body.reports_to_id, "reports_to_id")
        request_id = _optional_id(idempotency_key or "", "Idempotency-Key")
        async with rt.db.unit_of_work() as conn:
            row = await service.create_contact(
                conn=conn,
                principal=principal,
                customer_id=cid,
                fields=body.fields(),
                reports_to_id=reports_to_id,
                request_id=request_id,
                phone_region=region,
                now=datetime.now(UTC),
            )
        return proto_json(contact_to_proto(row))

    @r.get("")
    async def list_contacts(
        customer_id: str, principal: CurrentPrincipal, page: CurrentPage
    ) -> Json:
        """The customer's contacts in creation order."""
        cid = parse_id(customer_id, "customer_id")
        async with rt.db.read() as conn:
            rows = await service.list_contacts(
                conn=conn, principal=principal, customer_id=cid, page=page
            )
        return paged("contacts", rows, page, lambda x: proto_json(contact_to_proto(x)))

    @r.get("/{contact_id}")
    async def get_contact(customer_id: str, contact_id: str, principal: CurrentPrincipal) -> Json:
        async with rt.db.read() as conn:
            row = await service.get_contact(
                conn=conn,
                principal=principal,
                customer_id=parse_id(customer_id, "customer_id"),
                contact_id=parse_id(contact_id, "contact_id"),
            )
        return proto_json(contact_to_proto(row))

    @r.patch("/{contact_id}")
    async def update_contact(
        customer_id: str,
        contact_id: str,
        body: ContactIn,
        principal: CurrentPrincipal,
        update_mask: UpdateMask = "",
        if_match: IfMatch = "",
    ) -> Json:
        """Change the masked fields of a contact; every change is recorded in the history.
        A `reports_to_id` that would make a reporting cycle: 409 CONTACT_REPORTS_TO_CYCLE."""
        cid = parse_id(customer_id, "customer_id")
        pid = parse_id(contact_id, "contact_id")
        reports_to_id = _optional_id(body.reports_to_id, "reports_to_id")
        async with rt.db.unit_of_work() as conn:
            row = await service.update_contact(
                conn=conn,
                principal=principal,
                customer_id=cid,
                contact_id=pid,
                patch=body.fields(),
                reports_to_id=reports_to_id,
                paths=_paths(update_mask, body),
                expected_etag=if_match,
                phone_region=region,
                now=datetime.now(UTC),
            )
        return proto_json(contact_to_proto(row))

    @r.get("/{contact_id}/history")
    async def contact_history(
        customer_id: str, contact_id: str, principal: CurrentPrincipal, page: CurrentPage
    ) -> Json:
        """Every change to the contact's fields, newest first."""
        return await _history(rt, principal, page, customer_id, contact_id)

    return r


async def _history(
    rt: Runtime, principal: Principal, page: PageRequest, customer_id: str, contact_id: str
) -> Json:
    async with rt.db.read() as conn:
        rows = await service.history_page(
            conn=conn,
            principal=principal,
            customer_id=parse_id(customer_id, "customer_id"),
            contact_id=_optional_id(contact_id, "contact_id"),
            page=page,
        )
    return paged("history", rows, page, lambda x: proto_json(field_change_to_proto(x)))


def fields_router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1/customer-fields", tags=["customers"])

    @r.get("")
    async def get_customer_fields(principal: CurrentPrincipal) -> Json:
        """The tenant's custom field definitions for customers."""
        async with rt.db.read() as conn:
            current = await schema.get(conn=conn, principal=principal)
        return proto_json(schema_to_proto(current))

    @r.put("")
    async def put_customer_fields(
        body: FieldSchemaIn, principal: CurrentPrincipal, if_match: IfMatch = ""
    ) -> Json:
        """Replace the definitions (tenant admins). Values are checked against them when a
        customer's custom fields are next written."""
        definitions = custom_fields.validate_schema([f.model_dump() for f in body.fields])
        async with rt.db.unit_of_work() as conn:
            current = await schema.put(
                conn=conn, principal=principal, definitions=definitions, expected_etag=if_match
            )
        return proto_json(schema_to_proto(current))

    return r


class TagsIn(ApiModel):
    names: list[Annotated[str, Field(max_length=200)]] = Field(
        max_length=tagging.MAX_PER_REQUEST,
        description="Letters, digits (any script, CJK included), '-' and '_'; 1 to 32 each.",
    )


class SegmentIn(ApiModel):
    display_name: str = Field(min_length=1, max_length=200)
    rule: dict[str, Any] = Field(
        description='A boolean tree: {"all": [...]}, {"any": [...]}, {"not": {...}} of '
        '{"field": "province|city|kind|industry|lifecycle_stage|custom_fields.<name>", '
        '"op": "eq|in|neq|contains", "value": ...}, {"tag": "<name>"} and '
        '{"last_activity_older_than_days": N}.'
    )


def _customer_tags(rows: list[Any]) -> Json:
    return {"tags": [proto_json(customer_tag_to_proto(r)) for r in rows]}


def _segment(row: Any, count: int) -> Json:
    body = proto_json(segment_to_proto(row, count))
    body["rule"] = row.rule  # as stored: Struct would turn integers into floats
    body["member_count"] = count  # int64 is a string in proto3 JSON
    return body


def _segment_version(row: Any) -> Json:
    body = proto_json(segment_version_to_proto(row))
    body["rule"] = row.rule  # as stored, like _segment
    return body


def tags_router(rt: Runtime) -> APIRouter:
    r = APIRouter(tags=["tags"])

    @r.get("/v1/customers/{customer_id}/tags")
    async def list_customer_tags(customer_id: str, principal: CurrentPrincipal) -> Json:
        """The customer's tags by name."""
        async with rt.db.read() as conn:
            rows = await segments.tags_of(
                conn=conn, principal=principal, customer_id=parse_id(customer_id, "customer_id")
            )
        return _customer_tags(rows)

    @r.post("/v1/customers/{customer_id}/tags")
    async def add_customer_tags(
        customer_id: str, body: TagsIn, principal: CurrentPrincipal
    ) -> Json:
        """Attach manual tags (created on first use); returns all the customer's tags. A
        system tag's name: 403 SYSTEM_TAG_PROTECTED."""
        cid = parse_id(customer_id, "customer_id")
        async with rt.db.unit_of_work() as conn:
            rows = await segments.add_tags(
                conn=conn, principal=principal, customer_id=cid, names=body.names
            )
        return _customer_tags(rows)

    @r.delete("/v1/customers/{customer_id}/tags/{name}")
    async def remove_customer_tag(customer_id: str, name: str, principal: CurrentPrincipal) -> Json:
        """Detach a manual tag; returns the customer's remaining tags. A system tag: 403
        SYSTEM_TAG_PROTECTED."""
        cid = parse_id(customer_id, "customer_id")
        async with rt.db.unit_of_work() as conn:
            rows = await segments.remove_tag(
                conn=conn, principal=principal, customer_id=cid, name=name
            )
        return _customer_tags(rows)

    @r.get("/v1/customers/{customer_id}/contacts/{contact_id}/tags")
    async def list_contact_tags(
        customer_id: str, contact_id: str, principal: CurrentPrincipal
    ) -> Json:
        """The contact's tags by name; visible with its customer."""
        async with rt.db.read() as conn:
            rows = await segments.contact_tags_of(
                conn=conn,
                principal=principal,
                customer_id=parse_id(customer_id, "customer_id"),
                contact_id=parse_id(contact_id, "contact_id"),
            )
        return _customer_tags(rows)

    @r.post("/v1/customers/{customer_id}/contacts/{contact_id}/tags")
    async def add_contact_tags(
        customer_id: str, contact_id: str, body: TagsIn, principal: CurrentPrincipal
    ) -> Json:
        """Attach manual tags to a contact, as to a customer; returns all the contact's
        tags. A system tag's name: 403 SYSTEM_TAG_PROTECTED."""
        cid = parse_id(customer_id, "customer_id")
        pid = parse_id(contact_id, "contact_id")
        async with rt.db.unit_of_work() as conn:
            rows = await segments.add_contact_tags(
                conn=conn, principal=principal, customer_id=cid, contact_id=pid, names=body.names
            )
        return _customer_tags(rows)

    @r.delete("/v1/customers/{customer_id}/contacts/{contact_id}/tags/{name}")
    async def remove_contact_tag(
        customer_id: str, contact_id: str, name: str, principal: CurrentPrincipal
    ) -> Json:
        """Detach a manual tag from a contact; returns its remaining tags. Not attached: 404
        CONTACT_TAG_NOT_FOUND; a system tag: 403 SYSTEM_TAG_PROTECTED."""
        cid = parse_id(customer_id, "customer_id")
        pid = parse_id(contact_id, "contact_id")
        async with rt.db.unit_of_work() as conn:
            rows = await segments.remove_contact_tag(
                conn=conn, principal=principal, customer_id=cid, contact_id=pid, name=name
            )
        return _customer_tags(rows)

    @r.get("/v1/tags")
    async def list_tags(principal: CurrentPrincipal, page: CurrentPage) -> Json:
        """The tenant's tags in creation order."""
        async with rt.db.read() as conn:
            rows = await segments.list_tags(conn=conn, principal=principal, page=page)
        return paged("tags", rows, page, lambda x: proto_json(tag_to_proto(x)))

    return r


def segments_router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1/segments", tags=["segments"])

    @r.post("", status_code=201)
    async def create_segment(body: SegmentIn, principal: CurrentPrincipal) -> Json:
        """Define a segment; a bad rule: 422 naming each bad path (`rule.all.1.op`)."""
        async with rt.db.unit_of_work() as conn:
            row, count = await segments.create_segment(
                conn=conn, principal=principal, display_name=body.display_name, rule=body.rule
            )
        return _segment(row, count)

    @r.get("/{segment_id}")
    async def get_segment(segment_id: str, principal: CurrentPrincipal) -> Json:
        """The definition and `member_count`: the visible customers matching it now."""
        async with rt.db.read() as conn:
            row, count = await segments.get_segment(
                conn=conn, principal=principal, segment_id=parse_id(segment_id, "segment_id")
            )
        return _segment(row, count)

    @r.put("/{segment_id}")
    async def replace_segment(
        segment_id: str, body: SegmentIn, principal: CurrentPrincipal, if_match: IfMatch = ""
    ) -> Json:
        """Replace the name and rule of an existing segment."""
        sid = parse_id(segment_id, "segment_id")
        async with rt.db.unit_of_work() as conn:
            row, count = await segments.replace_segment(
                conn=conn,
                principal=principal,
                segment_id=sid,
                display_name=body.display_name,
                rule=body.rule,
                expected_etag=if_match,
            )
        return _segment(row, count)

    @r.get("/{segment_id}/versions")
    async def list_segment_versions(
        segment_id: str, principal: CurrentPrincipal, page: CurrentPage
    ) -> Json:
        """Every stored version of the segment's name and rule, newest first: version 1 as
        created, one more for each replace."""
        sid = parse_id(segment_id, "segment_id")
        async with rt.db.read() as conn:
            rows = await segments.segment_versions_page(
                conn=conn, principal=principal, segment_id=sid, page=page
            )
        items = rows[: page.size]
        token = ""
        if len(rows) > page.size:
            token = encode_token(segments.version_token_id(items[-1].version))
        return {"versions": [_segment_version(x) for x in items], "next_page_token": token}

    @r.get("/{segment_id}/members")
    async def list_segment_members(
        segment_id: str, principal: CurrentPrincipal, page: CurrentPage
    ) -> Json:
        """Matching customers the caller can see, in creation order (without contacts)."""
        sid = parse_id(segment_id, "segment_id")
        async with rt.db.read() as conn:
            rows = await segments.segment_members(
                conn=conn, principal=principal, segment_id=sid, page=page
            )
        return paged("customers", rows, page, lambda x: proto_json(customer_to_proto(x)))

    return r


def lifecycle_router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1/customers", tags=["customers"])

    @r.get("/{customer_id}/lifecycle")
    async def customer_lifecycle(
        customer_id: str, principal: CurrentPrincipal, page: CurrentPage
    ) -> Json:
        """The customer's lifecycle stage (PROSPECT, CUSTOMER, REPEAT, AT_RISK, LOST), the
        facts it is derived from and its stage history, newest first (paged)."""
        async with rt.db.read() as conn:
            current = await lifecycle_service.get(
                conn=conn,
                principal=principal,
                customer_id=parse_id(customer_id, "customer_id"),
                page=page,
            )
        customer = proto_json(customer_to_proto(current.customer))
        facts = current.facts
        body = paged(
            "history", current.changes, page, lambda x: proto_json(lifecycle_change_to_proto(x))
        )
        return {
            "customer_id": customer["id"],
            "stage": customer["lifecycle_stage"],
            "stage_time": customer.get("lifecycle_stage_time"),
            "won_orders": facts.won_orders if facts else 0,
            "last_order_time": _iso(facts.last_order_time if facts else None),
            "last_activity_time": _iso(facts.last_activity_time if facts else None),
            **body,
        }

    return r


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
