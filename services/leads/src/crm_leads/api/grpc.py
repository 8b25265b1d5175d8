"""gRPC adapter: parse -> unit of work -> service -> proto."""

from __future__ import annotations

from datetime import timedelta

from crm.common.v1 import problem_pb2
from crm.leads.v1 import conversion_pb2, lead_pb2, lead_service_pb2_grpc
from crm.leads.v1 import lead_service_pb2 as pb
from crm_leads.conversion import flows as conversion_flows
from crm_leads.conversion import rules as conversion_rules
from crm_leads.conversion import service as conversion_service
from crm_leads.conversion.http import waiters
from crm_leads.lead import edit_rules, flows, rules, service
from crm_leads.lead.mapping import lead_to_proto, lead_with_intents
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
        self.conversion_timeout = rt.settings.conversion_timeout_seconds

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
            territory=lead.territory,
            custom_fields=dict(lead.custom_fields),
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
        captured, intents = await flows.captures(self.rt.extras, self.rt.db).capture(
            principal, item.lead, item.intent, item.request_id
        )
        context.set_trailing_metadata((("crm-capture-outcome", captured.outcome.name.lower()),))
        if not captured.visible:
            return lead_pb2.Lead()
        return lead_with_intents(captured.lead, intents, captured.message)

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
        """Each lead with its intents; ``customer_id`` narrows to the leads converted into
        that customer (a page token is only valid for the same customer_id)."""
        customer_id = parse_id(request.customer_id, "customer_id") if request.customer_id else None
        # The filter is part of the token: a token of one customer's list cannot page another.
        filter_key = f"customer_id={customer_id}" if customer_id is not None else ""
        page = page_request(request.page_size, request.page_token, filter_key)
        async with self.rt.db.read() as conn:
            rows = await service.list_visible(
                conn=conn, principal=require_principal(), page=page, customer_id=customer_id
            )
            items, token = page_of(rows, page, filter_key)
            intents = await service.intents_by_lead(conn=conn, lead_ids=[r.id for r in items])
        return pb.ListLeadsResponse(
            leads=[lead_to_proto(r, intents[r.id]) for r in items], next_page_token=token
        )

    async def UpdateLead(
        self, request: pb.UpdateLeadRequest, context: GrpcContext
    ) -> lead_pb2.Lead:
        """lead.etag, when set, must be current."""
        principal = require_principal()
        lead = request.lead
        region = await self._region(principal)
        async with self.rt.db.unit_of_work() as conn:
            row = await service.update(
                conn=conn,
                principal=principal,
                lead_id=parse_id(lead.id, "lead.id"),
                patch={name: getattr(lead, name) for name in edit_rules.EDITABLE},
                paths=list(request.update_mask.paths),
                phone_region=region,
                expected_etag=lead.etag,
            )
        return lead_to_proto(row)

    async def ConvertLead(
        self, request: pb.ConvertLeadRequest, context: GrpcContext
    ) -> pb.ConvertLeadResponse:
        """Field violations use the REST body's paths (customer.phone, opportunity.amount)."""
        principal = require_principal()
        c, k, o = request.customer, request.contact, request.opportunity
        options = conversion_rules.validate_options(
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
            amount=o.amount if o.HasField("amount") else None,
            currency_code=o.amount.currency_code,
            product=o.product,
            close_date=o.close_date,
            per_intent=request.opportunity_per_intent,
            phone_region=await self._region(principal),
        )
        row, started = await conversion_flows.convert(
            self.rt.db,
            waiters(self.rt),
            principal,
            lead_id=parse_id(request.lead_id, "lead_id"),
            options=options,
            step_timeout=timedelta(seconds=self.conversion_timeout),
            wait_seconds=conversion_rules.clamp_wait(request.wait_seconds),
        )
        return pb.ConvertLeadResponse(conversion=conversion_service.to_proto(row), started=started)

    async def GetLeadConversion(
        self, request: pb.GetLeadConversionRequest, context: GrpcContext
    ) -> conversion_pb2.LeadConversion:
        row = await conversion_flows.get(
            self.rt.db,
            waiters(self.rt),
            require_principal(),
            parse_id(request.id),
            conversion_rules.clamp_wait(request.wait_seconds),
        )
        return conversion_service.to_proto(row)


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
