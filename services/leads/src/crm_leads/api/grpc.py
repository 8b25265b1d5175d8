"""gRPC adapter: parse -> unit of work -> service -> proto."""

from __future__ import annotations

from crm.common.v1 import problem_pb2
from crm.leads.v1 import lead_pb2, lead_service_pb2_grpc
from crm.leads.v1 import lead_service_pb2 as pb
from crm_leads.lead import flows, rules, service
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.settings import Settings
from crm_leads.tenantsettings import service as tenant_settings
from crm_platform.auth import Principal, require_principal
from crm_platform.errors import InvalidArgument
from crm_platform.grpc_server import GrpcBinding, GrpcContext
from crm_platform.ids import parse_id
from crm_platform.pagination import page_of, page_request
from crm_platform.runtime import Runtime


class LeadServicer(lead_service_pb2_grpc.LeadServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        assert isinstance(rt.settings, Settings)
        self.rt = rt
        self.default_region = rt.settings.default_phone_region

    async def _region(self, principal: Principal) -> str:
        return await tenant_settings.phone_region(
            self.rt.db, principal.tenant_id, self.default_region
        )

    def _validated(self, request: pb.CreateLeadRequest, region: str) -> flows.CaptureRequest:
        lead = request.lead
        new = rules.validate_new_lead(
            full_name=lead.full_name,
            phone=lead.phone,
            email=lead.email,
            company=lead.company,
            province=lead.province,
            city=lead.city,
            source=lead.source,
            open_id=lead.open_id,
            union_id=lead.union_id,
            phone_region=region,
        )
        intent = rules.validate_intent(
            source=new.source,
            campaign=request.intent.campaign,
            product_interest=request.intent.product_interest,
        )
        request_id = parse_id(request.request_id, "request_id") if request.request_id else None
        return flows.CaptureRequest(new, intent, request_id)

    async def CreateLead(
        self, request: pb.CreateLeadRequest, context: GrpcContext
    ) -> lead_pb2.Lead:
        """Outcome in the `crm-capture-outcome` trailing metadata; a merge into a lead the
        caller cannot see returns an empty Lead."""
        principal = require_principal()
        item = self._validated(request, await self._region(principal))
        assert item.lead is not None and item.intent is not None
        captured, intents = await flows.capture_one(
            self.rt.db, principal, item.lead, item.intent, item.request_id
        )
        context.set_trailing_metadata((("crm-capture-outcome", captured.outcome.name.lower()),))
        return lead_to_proto(captured.lead, intents) if captured.visible else lead_pb2.Lead()

    async def BatchCreateLeads(
        self, request: pb.BatchCreateLeadsRequest, context: GrpcContext
    ) -> pb.BatchCreateLeadsResponse:
        principal = require_principal()
        region = await self._region(principal)
        items = []
        for one in request.requests:
            try:
                items.append(self._validated(one, region))
            except InvalidArgument as exc:
                items.append(flows.CaptureRequest(None, None, None, exc.violations))
        results = await flows.capture_batch(self.rt.db, principal, items)
        return pb.BatchCreateLeadsResponse(results=[_result(r) for r in results])

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


def _result(result: flows.ItemResult) -> pb.BatchCreateLeadsResult:
    if result.captured is None:
        return pb.BatchCreateLeadsResult(
            index=result.index,
            outcome=pb.CAPTURE_OUTCOME_REJECTED,
            violations=[
                problem_pb2.FieldViolation(field=v.field, description=v.description)
                for v in result.violations
            ],
        )
    captured = result.captured
    return pb.BatchCreateLeadsResult(
        index=result.index,
        outcome=captured.outcome.value,
        lead=lead_to_proto(captured.lead) if captured.visible else None,
    )


def bindings(rt: Runtime) -> list[GrpcBinding]:
    return [
        GrpcBinding(
            servicer=LeadServicer(rt),
            add=lead_service_pb2_grpc.add_LeadServiceServicer_to_server,
            full_name="crm.leads.v1.LeadService",
        )
    ]
