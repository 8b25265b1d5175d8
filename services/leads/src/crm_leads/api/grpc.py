"""gRPC adapter: parse -> unit of work -> service -> proto."""

from __future__ import annotations

from crm.leads.v1 import lead_pb2, lead_service_pb2_grpc
from crm.leads.v1 import lead_service_pb2 as pb
from crm_leads.lead import rules, service
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.settings import Settings
from crm_platform.auth import require_principal
from crm_platform.grpc_server import GrpcBinding, GrpcContext
from crm_platform.ids import parse_id
from crm_platform.pagination import page_of, page_request
from crm_platform.runtime import Runtime


class LeadServicer(lead_service_pb2_grpc.LeadServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        assert isinstance(rt.settings, Settings)
        self.rt = rt
        self.region = rt.settings.default_phone_region

    async def CreateLead(
        self, request: pb.CreateLeadRequest, context: GrpcContext
    ) -> lead_pb2.Lead:
        principal = require_principal()
        lead = request.lead
        new = rules.validate_new_lead(
            full_name=lead.full_name,
            phone=lead.phone,
            email=lead.email,
            company=lead.company,
            province=lead.province,
            city=lead.city,
            source=lead.source,
            phone_region=self.region,
        )
        request_id = parse_id(request.request_id, "request_id") if request.request_id else None
        async with self.rt.db.unit_of_work() as conn:
            row = await service.create(
                conn=conn, principal=principal, lead=new, request_id=request_id
            )
        return lead_to_proto(row)

    async def GetLead(self, request: pb.GetLeadRequest, context: GrpcContext) -> lead_pb2.Lead:
        async with self.rt.db.read() as conn:
            row = await service.get(
                conn=conn, principal=require_principal(), lead_id=parse_id(request.id)
            )
        return lead_to_proto(row)

    async def ListLeads(
        self, request: pb.ListLeadsRequest, context: GrpcContext
    ) -> pb.ListLeadsResponse:
        page = page_request(request.page_size, request.page_token)
        async with self.rt.db.read() as conn:
            rows = await service.list_visible(conn=conn, principal=require_principal(), page=page)
        items, token = page_of(rows, page)
        return pb.ListLeadsResponse(leads=[lead_to_proto(r) for r in items], next_page_token=token)


def bindings(rt: Runtime) -> list[GrpcBinding]:
    return [
        GrpcBinding(
            servicer=LeadServicer(rt),
            add=lead_service_pb2_grpc.add_LeadServiceServicer_to_server,
            full_name="crm.leads.v1.LeadService",
        )
    ]
