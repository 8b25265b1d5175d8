"""gRPC adapter: parse -> unit of work -> service -> proto."""

from __future__ import annotations

import grpc

from crm.servicedesk.v1 import service_desk_service_pb2 as pb
from crm.servicedesk.v1 import service_desk_service_pb2_grpc, ticket_pb2
from crm_platform.auth import require_principal
from crm_platform.grpc_server import GrpcBinding
from crm_platform.ids import parse_id
from crm_platform.pagination import page_of, page_request
from crm_platform.runtime import Runtime
from crm_service_desk.ticket import rules, service
from crm_service_desk.ticket.mapping import ticket_to_proto


class TicketServicer(service_desk_service_pb2_grpc.TicketServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def CreateTicket(
        self,
        request: pb.CreateTicketRequest,
        context: grpc.aio.ServicerContext[pb.CreateTicketRequest, ticket_pb2.Ticket],
    ) -> ticket_pb2.Ticket:
        principal = require_principal()
        ticket = request.ticket
        new = rules.validate_new_ticket(
            subject=ticket.subject,
            description=ticket.description,
            customer_id=ticket.customer_id,
            priority=ticket.priority,
            channel=ticket.channel,
        )
        request_id = parse_id(request.request_id, "request_id") if request.request_id else None
        async with self.rt.db.unit_of_work() as conn:
            row = await service.create(
                conn=conn, principal=principal, ticket=new, request_id=request_id
            )
        return ticket_to_proto(row)

    async def GetTicket(
        self,
        request: pb.GetTicketRequest,
        context: grpc.aio.ServicerContext[pb.GetTicketRequest, ticket_pb2.Ticket],
    ) -> ticket_pb2.Ticket:
        async with self.rt.db.read() as conn:
            row = await service.get(
                conn=conn, principal=require_principal(), ticket_id=parse_id(request.id)
            )
        return ticket_to_proto(row)

    async def ListTickets(
        self,
        request: pb.ListTicketsRequest,
        context: grpc.aio.ServicerContext[pb.ListTicketsRequest, pb.ListTicketsResponse],
    ) -> pb.ListTicketsResponse:
        page = page_request(request.page_size, request.page_token)
        async with self.rt.db.read() as conn:
            rows = await service.list_visible(
                conn=conn,
                principal=require_principal(),
                page=page,
                customer_id=parse_id(request.customer_id, "customer_id")
                if request.customer_id
                else None,
            )
        items, token = page_of(rows, page)
        return pb.ListTicketsResponse(
            tickets=[ticket_to_proto(r) for r in items], next_page_token=token
        )


def bindings(rt: Runtime) -> list[GrpcBinding]:
    return [
        GrpcBinding(
            servicer=TicketServicer(rt),
            add=service_desk_service_pb2_grpc.add_TicketServiceServicer_to_server,
            full_name="crm.servicedesk.v1.TicketService",
        )
    ]
