"""gRPC adapter: parse -> unit of work -> service -> proto."""

from __future__ import annotations

import grpc

from crm.sales.v1 import opportunity_pb2, sales_service_pb2_grpc
from crm.sales.v1 import sales_service_pb2 as pb
from crm_platform.auth import require_principal
from crm_platform.grpc_server import GrpcBinding
from crm_platform.ids import parse_id
from crm_platform.pagination import page_of, page_request
from crm_platform.runtime import Runtime
from crm_sales.opportunity import rules, service
from crm_sales.opportunity.mapping import opportunity_to_proto


class OpportunityServicer(sales_service_pb2_grpc.OpportunityServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def CreateOpportunity(
        self,
        request: pb.CreateOpportunityRequest,
        context: grpc.aio.ServicerContext[pb.CreateOpportunityRequest, opportunity_pb2.Opportunity],
    ) -> opportunity_pb2.Opportunity:
        principal = require_principal()
        opp = request.opportunity
        # Message fields have presence: an unset amount is "required", not a zero amount.
        amount = opp.amount if opp.HasField("amount") else None
        new = rules.validate_new_opportunity(
            title=opp.title,
            customer_id=opp.customer_id,
            contact_id=opp.contact_id,
            lead_id=opp.lead_id,
            currency_code=opp.amount.currency_code,
            amount=amount,
            stage=opp.stage,
            close_date=opp.close_date,
            product=opp.product,
            campaign=opp.campaign,
        )
        request_id = parse_id(request.request_id, "request_id") if request.request_id else None
        async with self.rt.db.unit_of_work() as conn:
            row = await service.create(
                conn=conn, principal=principal, opportunity=new, request_id=request_id
            )
        return opportunity_to_proto(row)

    async def GetOpportunity(
        self,
        request: pb.GetOpportunityRequest,
        context: grpc.aio.ServicerContext[pb.GetOpportunityRequest, opportunity_pb2.Opportunity],
    ) -> opportunity_pb2.Opportunity:
        async with self.rt.db.read() as conn:
            row = await service.get(
                conn=conn, principal=require_principal(), opportunity_id=parse_id(request.id)
            )
        return opportunity_to_proto(row)

    async def ListOpportunities(
        self,
        request: pb.ListOpportunitiesRequest,
        context: grpc.aio.ServicerContext[
            pb.ListOpportunitiesRequest, pb.ListOpportunitiesResponse
        ],
    ) -> pb.ListOpportunitiesResponse:
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
        return pb.ListOpportunitiesResponse(
            opportunities=[opportunity_to_proto(r) for r in items], next_page_token=token
        )


def bindings(rt: Runtime) -> list[GrpcBinding]:
    return [
        GrpcBinding(
            servicer=OpportunityServicer(rt),
            add=sales_service_pb2_grpc.add_OpportunityServiceServicer_to_server,
            full_name="crm.sales.v1.OpportunityService",
        )
    ]
