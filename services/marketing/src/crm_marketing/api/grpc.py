"""gRPC adapter: parse -> unit of work -> service -> proto."""

from __future__ import annotations

from crm.marketing.v1 import campaign_pb2, marketing_service_pb2_grpc
from crm.marketing.v1 import marketing_service_pb2 as pb
from crm_marketing.campaign import rules, service
from crm_marketing.campaign.mapping import campaign_to_proto
from crm_platform.auth import require_principal
from crm_platform.grpc_server import GrpcBinding, GrpcContext
from crm_platform.ids import parse_id
from crm_platform.money import money_to_decimal
from crm_platform.pagination import page_of, page_request
from crm_platform.runtime import Runtime


class CampaignServicer(marketing_service_pb2_grpc.CampaignServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def CreateCampaign(
        self, request: pb.CreateCampaignRequest, context: GrpcContext
    ) -> campaign_pb2.Campaign:
        principal = require_principal()
        campaign = request.campaign
        # An unset budget reads as zero with no currency: reported as budget.currency_code.
        new = rules.validate_new_campaign(
            name=campaign.name,
            channel=campaign.channel,
            currency_code=campaign.budget.currency_code,
            amount=money_to_decimal(campaign.budget, "budget"),
            start_date=campaign.start_date,
            end_date=campaign.end_date,
        )
        request_id = parse_id(request.request_id, "request_id") if request.request_id else None
        async with self.rt.db.unit_of_work() as conn:
            row = await service.create(
                conn=conn, principal=principal, campaign=new, request_id=request_id
            )
        return campaign_to_proto(row)

    async def GetCampaign(
        self, request: pb.GetCampaignRequest, context: GrpcContext
    ) -> campaign_pb2.Campaign:
        async with self.rt.db.read() as conn:
            row = await service.get(
                conn=conn, principal=require_principal(), campaign_id=parse_id(request.id)
            )
        return campaign_to_proto(row)

    async def ListCampaigns(
        self, request: pb.ListCampaignsRequest, context: GrpcContext
    ) -> pb.ListCampaignsResponse:
        page = page_request(request.page_size, request.page_token)
        async with self.rt.db.read() as conn:
            rows = await service.list_visible(conn=conn, principal=require_principal(), page=page)
        items, token = page_of(rows, page)
        return pb.ListCampaignsResponse(
            campaigns=[campaign_to_proto(r) for r in items], next_page_token=token
        )


def bindings(rt: Runtime) -> list[GrpcBinding]:
    return [
        GrpcBinding(
            servicer=CampaignServicer(rt),
            add=marketing_service_pb2_grpc.add_CampaignServiceServicer_to_server,
            full_name="crm.marketing.v1.CampaignService",
        )
    ]
