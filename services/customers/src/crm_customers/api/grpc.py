"""gRPC adapter: parse -> unit of work -> service -> proto."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format

from crm.customers.v1 import customer_pb2, customer_service_pb2_grpc
from crm.customers.v1 import customer_service_pb2 as pb
from crm_customers.customer import custom_fields, rules, schema, segments, service, view360
from crm_customers.customer.contact_rules import ConsentFields, ContactFields
from crm_customers.customer.mapping import (
    contact_to_proto,
    customer_to_proto,
    field_change_to_proto,
    schema_to_proto,
    segment_to_proto,
)
from crm_customers.settings import Settings
from crm_platform.auth import require_principal
from crm_platform.grpc_server import GrpcBinding
from crm_platform.ids import parse_id
from crm_platform.pagination import page_of, page_request
from crm_platform.runtime import Runtime

Context = grpc.aio.ServicerContext[Any, Any]


def _contact_fields(contact: customer_pb2.Contact) -> ContactFields:
    return ContactFields(
        full_name=contact.full_name,
        title=contact.title,
        phone=contact.phone,
        email=contact.email,
        buying_roles=list(contact.buying_roles),
        allowed_channels=list(contact.allowed_channels),
        preferred_channel=contact.preferred_channel,
        consents=[
            ConsentFields(
                purpose=c.purpose,
                granted=c.granted,
                consent_time=c.consent_time.ToDatetime(UTC) if c.HasField("consent_time") else None,
                source=c.source,
            )
            for c in contact.consents
        ],
    )


def _profile(customer: customer_pb2.Customer) -> dict[str, Any]:
    return {name: getattr(customer, name) for name in rules.PROFILE_FIELDS}


def _custom(customer: customer_pb2.Customer) -> dict[str, Any]:
    return json_format.MessageToDict(customer.custom_fields)


def _optional_id(raw: str, name: str) -> uuid.UUID | None:
    return parse_id(raw, name) if raw else None


class CustomerServicer(customer_service_pb2_grpc.CustomerServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        assert isinstance(rt.settings, Settings)
        self.rt = rt
        self.region = rt.settings.default_phone_region

    async def CreateCustomer(
        self, request: pb.CreateCustomerRequest, context: Context
    ) -> customer_pb2.Customer:
        principal = require_principal()
        customer = request.customer
        parent_id = _optional_id(customer.parent_id, "customer.parent_id")
        request_id = _optional_id(request.request_id, "request_id")
        async with self.rt.db.unit_of_work() as conn:
            row, contacts = await service.create(
                conn=conn,
                principal=principal,
                kind=customer.kind,
                profile=_profile(customer),
                custom_values=_custom(customer),
                contact_fields=[_contact_fields(c) for c in customer.contacts],
                parent_id=parent_id,
                request_id=request_id,
                phone_region=self.region,
                now=datetime.now(UTC),
            )
        return customer_to_proto(row, contacts)

    async def GetCustomer(
        self, request: pb.GetCustomerRequest, context: Context
    ) -> customer_pb2.Customer:
        async with self.rt.db.read() as conn:
            row, contacts = await service.get(
                conn=conn, principal=require_principal(), customer_id=parse_id(request.id)
            )
        return customer_to_proto(row, contacts)

    async def ListCustomers(
        self, request: pb.ListCustomersRequest, context: Context
    ) -> pb.ListCustomersResponse:
        parent_id = _optional_id(request.parent_id, "parent_id")
        # Tokens of one parent's children are not valid for the whole list, nor the reverse.
        filter_key = f"children:{parent_id}" if parent_id else ""
        page = page_request(request.page_size, request.page_token, filter_key)
        principal = require_principal()
        async with self.rt.db.read() as conn:
            if parent_id is None:
                rows = await service.list_visible(conn=conn, principal=principal, page=page)
            else:
                rows = await service.list_children(
                    conn=conn, principal=principal, parent_id=parent_id, page=page
                )
        items, token = page_of(rows, page, filter_key)
        return pb.ListCustomersResponse(
            customers=[customer_to_proto(r) for r in items], next_page_token=token
        )

    async def UpdateCustomer(
        self, request: pb.UpdateCustomerRequest, context: Context
    ) -> customer_pb2.Customer:
        principal = require_principal()
        customer = request.customer
        customer_id = parse_id(customer.id, "customer.id")
        async with self.rt.db.unit_of_work() as conn:
            row, contacts = await service.update(
                conn=conn,
                principal=principal,
                customer_id=customer_id,
                patch={**_profile(customer), "custom_fields": _custom(customer)},
                paths=list(request.update_mask.paths),
                expected_etag=customer.etag,
                phone_region=self.region,
            )
        return customer_to_proto(row, contacts)

    async def MoveCustomer(
        self, request: pb.MoveCustomerRequest, context: Context
    ) -> customer_pb2.Customer:
        principal = require_principal()
        customer_id = parse_id(request.id)
        new_parent_id = _optional_id(request.new_parent_id, "new_parent_id")
        async with self.rt.db.unit_of_work() as conn:
            row, contacts = await service.move(
                conn=conn,
                principal=principal,
                customer_id=customer_id,
                new_parent_id=new_parent_id,
                expected_etag=request.etag,
            )
        return customer_to_proto(row, contacts)

    async def GetCustomerFieldSchema(
        self, request: pb.GetCustomerFieldSchemaRequest, context: Context
    ) -> customer_pb2.CustomerFieldSchema:
        async with self.rt.db.read() as conn:
            current = await schema.get(conn=conn, principal=require_principal())
        return schema_to_proto(current)

    async def UpdateCustomerFieldSchema(
        self, request: pb.UpdateCustomerFieldSchemaRequest, context: Context
    ) -> customer_pb2.CustomerFieldSchema:
        principal = require_principal()
        definitions = custom_fields.validate_schema(
            [
                {"name": f.name, "type": f.type, "options": list(f.options), "required": f.required}
                for f in request.schema.fields
            ]
        )
        async with self.rt.db.unit_of_work() as conn:
            current = await schema.put(
                conn=conn,
                principal=principal,
                definitions=definitions,
                expected_etag=request.schema.etag,
            )
        return schema_to_proto(current)

    async def ListFieldChanges(
        self, request: pb.ListFieldChangesRequest, context: Context
    ) -> pb.ListFieldChangesResponse:
        page = page_request(request.page_size, request.page_token)
        async with self.rt.db.read() as conn:
            rows = await service.history_page(
                conn=conn,
                principal=require_principal(),
                customer_id=parse_id(request.customer_id, "customer_id"),
                contact_id=_optional_id(request.contact_id, "contact_id"),
                page=page,
            )
        items, token = page_of(rows, page)
        return pb.ListFieldChangesResponse(
            changes=[field_change_to_proto(r) for r in items], next_page_token=token
        )

    async def CreateContact(
        self, request: pb.CreateContactRequest, context: Context
    ) -> customer_pb2.Contact:
        principal = require_principal()
        customer_id = parse_id(request.customer_id, "customer_id")
        reports_to_id = _optional_id(request.contact.reports_to_id, "contact.reports_to_id")
        request_id = _optional_id(request.request_id, "request_id")
        async with self.rt.db.unit_of_work() as conn:
            row = await service.create_contact(
                conn=conn,
                principal=principal,
                customer_id=customer_id,
                fields=_contact_fields(request.contact),
                reports_to_id=reports_to_id,
                request_id=request_id,
                phone_region=self.region,
                now=datetime.now(UTC),
            )
        return contact_to_proto(row)

    async def GetContact(
        self, request: pb.GetContactRequest, context: Context
    ) -> customer_pb2.Contact:
        async with self.rt.db.read() as conn:
            row = await service.get_contact(
                conn=conn,
                principal=require_principal(),
                customer_id=parse_id(request.customer_id, "customer_id"),
                contact_id=parse_id(request.id),
            )
        return contact_to_proto(row)

    async def ListContacts(
        self, request: pb.ListContactsRequest, context: Context
    ) -> pb.ListContactsResponse:
        page = page_request(request.page_size, request.page_token)
        async with self.rt.db.read() as conn:
            rows = await service.list_contacts(
                conn=conn,
                principal=require_principal(),
                customer_id=parse_id(request.customer_id, "customer_id"),
                page=page,
            )
        items, token = page_of(rows, page)
        return pb.ListContactsResponse(
            contacts=[contact_to_proto(r) for r in items], next_page_token=token
        )

    async def UpdateContact(
        self, request: pb.UpdateContactRequest, context: Context
    ) -> customer_pb2.Contact:
        principal = require_principal()
        contact = request.contact
        customer_id = parse_id(contact.customer_id, "contact.customer_id")
        contact_id = parse_id(contact.id, "contact.id")
        reports_to_id = _optional_id(contact.reports_to_id, "contact.reports_to_id")
        async with self.rt.db.unit_of_work() as conn:
            row = await service.update_contact(
                conn=conn,
                principal=principal,
                customer_id=customer_id,
                contact_id=contact_id,
                patch=_contact_fields(contact),
                reports_to_id=reports_to_id,
                paths=list(request.update_mask.paths),
                expected_etag=contact.etag,
                phone_region=self.region,
                now=datetime.now(UTC),
            )
        return contact_to_proto(row)

    async def GetSegment(
        self, request: pb.GetSegmentRequest, context: Context
    ) -> customer_pb2.Segment:
        async with self.rt.db.read() as conn:
            row, count = await segments.get_segment(
                conn=conn, principal=require_principal(), segment_id=parse_id(request.id)
            )
        return segment_to_proto(row, count)

    async def ListSegmentMembers(
        self, request: pb.ListSegmentMembersRequest, context: Context
    ) -> pb.ListSegmentMembersResponse:
        segment_id = parse_id(request.segment_id, "segment_id")
        filter_key = f"segment:{segment_id}"  # a token is only valid for its segment
        page = page_request(request.page_size, request.page_token, filter_key)
        async with self.rt.db.read() as conn:
            rows = await segments.segment_members(
                conn=conn, principal=require_principal(), segment_id=segment_id, page=page
            )
        items, token = page_of(rows, page, filter_key)
        return pb.ListSegmentMembersResponse(
            customers=[customer_to_proto(r) for r in items], next_page_token=token
        )

    async def GetCustomer360(
        self, request: pb.GetCustomer360Request, context: Context
    ) -> pb.Customer360:
        # The caller's credentials go on to sales, service-desk and leads, as over REST.
        authorization = next(
            (str(v) for k, v in context.invocation_metadata() or () if k == "authorization"), ""
        )
        return await view360.assemble_proto(
            rt=self.rt,
            principal=require_principal(),
            authorization=authorization,
            customer_id=parse_id(request.id),
        )


def bindings(rt: Runtime) -> list[GrpcBinding]:
    return [
        GrpcBinding(
            servicer=CustomerServicer(rt),
            add=customer_service_pb2_grpc.add_CustomerServiceServicer_to_server,
            full_name="crm.customers.v1.CustomerService",
        )
    ]
