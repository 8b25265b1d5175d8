"""gRPC adapter: parse -> unit of work -> service -> proto."""

from __future__ import annotations

import grpc

from crm.customers.v1 import customer_pb2, customer_service_pb2_grpc
from crm.customers.v1 import customer_service_pb2 as pb
from crm_customers.customer import rules, service
from crm_customers.customer.mapping import contact_to_proto, customer_to_proto
from crm_customers.settings import Settings
from crm_platform.auth import require_principal
from crm_platform.grpc_server import GrpcBinding
from crm_platform.ids import parse_id
from crm_platform.pagination import page_of, page_request
from crm_platform.runtime import Runtime


def _contact_fields(contact: customer_pb2.Contact) -> rules.ContactFields:
    return rules.ContactFields(
        full_name=contact.full_name, title=contact.title, phone=contact.phone, email=contact.email
    )


class CustomerServicer(customer_service_pb2_grpc.CustomerServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        assert isinstance(rt.settings, Settings)
        self.rt = rt
        self.region = rt.settings.default_phone_region

    async def CreateCustomer(
        self,
        request: pb.CreateCustomerRequest,
        context: grpc.aio.ServicerContext[pb.CreateCustomerRequest, customer_pb2.Customer],
    ) -> customer_pb2.Customer:
        principal = require_principal()
        customer = request.customer
        new = rules.validate_new_customer(
            kind=customer.kind,
            display_name=customer.display_name,
            tax_id=customer.tax_id,
            phone=customer.phone,
            email=customer.email,
            province=customer.province,
            city=customer.city,
            contacts=[_contact_fields(c) for c in customer.contacts],
            phone_region=self.region,
        )
        request_id = parse_id(request.request_id, "request_id") if request.request_id else None
        async with self.rt.db.unit_of_work() as conn:
            row, contacts = await service.create(
                conn=conn, principal=principal, customer=new, request_id=request_id
            )
        return customer_to_proto(row, contacts)

    async def GetCustomer(
        self,
        request: pb.GetCustomerRequest,
        context: grpc.aio.ServicerContext[pb.GetCustomerRequest, customer_pb2.Customer],
    ) -> customer_pb2.Customer:
        async with self.rt.db.read() as conn:
            row, contacts = await service.get(
                conn=conn, principal=require_principal(), customer_id=parse_id(request.id)
            )
        return customer_to_proto(row, contacts)

    async def ListCustomers(
        self,
        request: pb.ListCustomersRequest,
        context: grpc.aio.ServicerContext[pb.ListCustomersRequest, pb.ListCustomersResponse],
    ) -> pb.ListCustomersResponse:
        page = page_request(request.page_size, request.page_token)
        async with self.rt.db.read() as conn:
            rows = await service.list_visible(conn=conn, principal=require_principal(), page=page)
        items, token = page_of(rows, page)
        return pb.ListCustomersResponse(
            customers=[customer_to_proto(r) for r in items], next_page_token=token
        )

    async def CreateContact(
        self,
        request: pb.CreateContactRequest,
        context: grpc.aio.ServicerContext[pb.CreateContactRequest, customer_pb2.Contact],
    ) -> customer_pb2.Contact:
        principal = require_principal()
        customer_id = parse_id(request.customer_id, "customer_id")
        new = rules.validate_new_contact(
            **_contact_fields(request.contact), phone_region=self.region
        )
        request_id = parse_id(request.request_id, "request_id") if request.request_id else None
        async with self.rt.db.unit_of_work() as conn:
            row = await service.create_contact(
                conn=conn,
                principal=principal,
                customer_id=customer_id,
                contact=new,
                request_id=request_id,
            )
        return contact_to_proto(row)


def bindings(rt: Runtime) -> list[GrpcBinding]:
    return [
        GrpcBinding(
            servicer=CustomerServicer(rt),
            add=customer_service_pb2_grpc.add_CustomerServiceServicer_to_server,
            full_name="crm.customers.v1.CustomerService",
        )
    ]
