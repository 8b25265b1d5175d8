"""gRPC adapter for lead routing (distribution, acceptance, assignment, pools, activities).

A thin twin of the REST handlers: each method parses the request with the same request
models and parsers, calls the same service/flow function in the same unit of work, and maps
the result to protos. Domain errors become rich gRPC statuses in the shared server."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ValidationError

from crm.common.v1 import problem_pb2
from crm.leads.v1 import lead_pb2, routing_service_pb2_grpc
from crm.leads.v1 import routing_service_pb2 as pb
from crm_leads.acceptance import flows as acceptance_flows
from crm_leads.acceptance import service as acceptance_service
from crm_leads.acceptance.rules import RejectIn
from crm_leads.activities import rules as activity_rules
from crm_leads.activities import service as activities
from crm_leads.activities.http import ActivityIn
from crm_leads.api.http import PoolQuery, pool_query
from crm_leads.assignment import http as assignment_http
from crm_leads.assignment import service as assignment
from crm_leads.distribution import flows as distribution_flows
from crm_leads.distribution import http as distribution_http
from crm_leads.distribution import service as distribution
from crm_leads.distribution import store as distribution_store
from crm_leads.lead import pools
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.sla.rules import Clock
from crm_platform.auth import require_principal
from crm_platform.errors import DomainError, FieldViolation, InvalidArgument, loc_to_field
from crm_platform.grpc_server import GrpcBinding, GrpcContext
from crm_platform.http import ApiModel
from crm_platform.ids import parse_id, parse_ids
from crm_platform.pagination import page_of, page_request
from crm_platform.protos import timestamp
from crm_platform.runtime import Runtime

FULL_NAME = "crm.leads.v1.LeadRoutingService"
# The REST pool query's bounds on ages (FastAPI Query(ge=0, le=36500) there).
MAX_AGE_DAYS = 36500

M = TypeVar("M", bound=ApiModel)


def _model(cls: type[M], data: Mapping[str, Any]) -> M:
    """The REST request model, validated from proto fields: the same limits (reason codes,
    note lengths, list sizes) with violations named as the REST 422 names them (the body's
    paths, as the domain's own violations are)."""
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        violations = [
            FieldViolation(loc_to_field(e["loc"]), str(e.get("msg", "invalid")))
            for e in exc.errors()
        ]
        raise InvalidArgument.from_violations(violations) from None


def _time(value: datetime | None) -> Timestamp | None:
    return None if value is None else timestamp(value)


def _problem(error: DomainError) -> problem_pb2.ProblemDetails:
    # The per-item error of the REST result (code, reason, message), as ProblemDetails.
    return problem_pb2.ProblemDetails(
        title=error.title,
        status=error.http_status,
        detail=error.message,
        reason=error.reason,
        violations=[
            problem_pb2.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ],
    )


def _clock(clock: Clock) -> pb.LeadSlaClock:
    return pb.LeadSlaClock(
        grade=clock.grade,
        start_time=timestamp(clock.start),
        first_contact_due=timestamp(clock.first_contact_due),
        first_contact_time=_time(clock.first_contact_time),
        follow_up_due=_time(clock.follow_up_due),
        last_follow_up_time=_time(clock.last_follow_up_time),
        protect_until=_time(clock.protect_until),
        protect_max=_time(clock.protect_max),
    )


def _activity(row: Any) -> pb.LeadActivity:
    return pb.LeadActivity(
        id=str(row.id),
        lead_id=str(row.lead_id),
        kind=row.kind,
        note=row.note,
        occur_time=timestamp(row.occur_time),
        actor=row.actor,
        create_time=timestamp(row.create_time),
    )


def _move(row: Any) -> pb.LeadOwnerMove:
    return pb.LeadOwnerMove(
        id=str(row.id),
        from_org_id=str(row.from_org_id),
        from_org_path=row.from_org_path,
        to_org_id=str(row.to_org_id),
        to_org_path=row.to_org_path,
        reason=row.reason,
        rule_name=row.rule_name,
        actor=row.actor,
        occur_time=_time(row.occur_time),
    )


def _distributed(result: distribution.ManualResult) -> pb.DistributeLeadsResult:
    if result.lead is not None:
        return pb.DistributeLeadsResult(
            index=result.index,
            lead_id=result.lead_id,
            outcome=pb.DISTRIBUTE_OUTCOME_DISTRIBUTED,
            lead=lead_to_proto(result.lead),
        )
    assert result.error is not None
    return pb.DistributeLeadsResult(
        index=result.index,
        lead_id=result.lead_id,
        outcome=pb.DISTRIBUTE_OUTCOME_FAILED,
        error=_problem(result.error),
    )


def _assigned(result: assignment.AssignResult) -> pb.AssignLeadsResult:
    if result.error is None:
        return pb.AssignLeadsResult(
            index=result.index,
            lead_id=result.lead_id,
            outcome=pb.ASSIGN_OUTCOME_ASSIGNED,
            lead=lead_to_proto(result.lead),
        )
    return pb.AssignLeadsResult(
        index=result.index,
        lead_id=result.lead_id,
        outcome=pb.ASSIGN_OUTCOME_FAILED,
        error=_problem(result.error),
    )


def _age(
    request: pb.ListPoolLeadsRequest, name: str, violations: list[FieldViolation]
) -> int | None:
    if not request.HasField(name):  # type: ignore[arg-type]
        return None
    value: int = getattr(request, name)
    if not 0 <= value <= MAX_AGE_DAYS:
        violations.append(FieldViolation(name, f"must be from 0 to {MAX_AGE_DAYS}"))
    return value


async def _pool(request: pb.ListPoolLeadsRequest) -> PoolQuery:
    """The REST pool query (filter normalised, page token bound to it), so tokens and
    filters mean the same on both transports."""
    violations: list[FieldViolation] = []
    low = _age(request, "min_age_days", violations)
    high = _age(request, "max_age_days", violations)
    if violations:
        raise InvalidArgument.from_violations(violations)
    try:
        return await pool_query(
            grade=list(request.grades),
            source=request.source,
            province=request.province,
            city=request.city,
            min_age_days=low,
            max_age_days=high,
            page_size=request.page_size,
            page_token=request.page_token,
        )
    except InvalidArgument as exc:
        # REST names the repeatable query parameter ``grade``; the proto field is ``grades``.
        fixed = [
            FieldViolation("grades" if v.field == "grade" else v.field, v.description)
            for v in exc.violations
        ]
        raise InvalidArgument.from_violations(fixed, reason=exc.reason) from None


class LeadRoutingServicer(routing_service_pb2_grpc.LeadRoutingServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def DistributeLeads(
        self, request: pb.DistributeLeadsRequest, context: GrpcContext
    ) -> pb.DistributeLeadsResponse:
        principal = require_principal()
        # As the REST dependency: a caller without the role is refused before validation.
        principal.require_any(distribution_store.EDITOR_ROLES)
        body = _model(
            distribution_http.DistributeIn,
            {
                "lead_ids": list(request.lead_ids),
                "target_org_unit_id": request.target_org_unit_id,
            },
        )
        ids = parse_ids(body.lead_ids, "lead_ids")
        target = parse_id(body.target_org_unit_id, "target_org_unit_id")
        results = await distribution_flows.distribute_manually(self.rt.db, principal, ids, target)
        return pb.DistributeLeadsResponse(results=[_distributed(x) for x in results])

    async def PassUpLeads(
        self, request: pb.PassUpLeadsRequest, context: GrpcContext
    ) -> pb.PassUpLeadsResponse:
        principal = require_principal()
        principal.require_any(distribution_store.EDITOR_ROLES)
        body = _model(
            distribution_http.PassUpIn, {"lead_ids": list(request.lead_ids), "note": request.note}
        )
        ids = parse_ids(body.lead_ids, "lead_ids")
        results = await distribution_flows.pass_up(self.rt.db, principal, ids, body.note)
        return pb.PassUpLeadsResponse(results=[_distributed(x) for x in results])

    async def RunDistribution(
        self, request: pb.RunDistributionRequest, context: GrpcContext
    ) -> pb.RunDistributionResponse:
        principal = require_principal()
        principal.require_any(distribution_store.EDITOR_ROLES)
        uid = parse_id(request.org_unit_id, "org_unit_id")
        result = await distribution.run(self.rt.db, principal=principal, unit_id=uid)
        return pb.RunDistributionResponse(
            distributed=result.distributed,
            unmatched=result.unmatched,
            by_target=dict(result.by_target),
        )

    async def AcceptLead(
        self, request: pb.AcceptLeadRequest, context: GrpcContext
    ) -> pb.AcceptLeadResponse:
        principal = require_principal()
        lead_id = parse_id(request.lead_id, "lead_id")
        async with self.rt.db.unit_of_work() as conn:
            lead, clock = await acceptance_service.accept(
                conn=conn, principal=principal, lead_id=lead_id, now=datetime.now(UTC)
            )
        return pb.AcceptLeadResponse(lead=lead_to_proto(lead), sla=_clock(clock))

    async def RejectLead(
        self, request: pb.RejectLeadRequest, context: GrpcContext
    ) -> pb.RejectLeadResponse:
        principal = require_principal()
        lead_id = parse_id(request.lead_id, "lead_id")
        body = _model(RejectIn, {"reason_code": request.reason_code, "note": request.note})
        returned = await acceptance_flows.reject(
            self.rt.db, principal, lead_id, body.reason_code, body.note
        )
        return pb.RejectLeadResponse(
            lead_id=str(returned.lead.id),
            rejected_by_org_id=str(returned.unit.id),
            returned_to_org_id=str(returned.parent.id),
            reason_code=body.reason_code,
        )

    async def AssignLeads(
        self, request: pb.AssignLeadsRequest, context: GrpcContext
    ) -> pb.AssignLeadsResponse:
        principal = require_principal()
        principal.require_any(assignment.EDITOR_ROLES)
        body = _model(
            assignment_http.AssignIn,
            {"lead_ids": list(request.lead_ids), "assignee_id": request.assignee_id},
        )
        ids = parse_ids(body.lead_ids, "lead_ids")
        assignee = parse_id(body.assignee_id, "assignee_id")
        async with self.rt.db.unit_of_work() as conn:
            results = await assignment.assign_manually(
                conn=conn, principal=principal, lead_ids=ids, assignee_id=assignee
            )
        return pb.AssignLeadsResponse(results=[_assigned(x) for x in results])

    async def RunAssignment(
        self, request: pb.RunAssignmentRequest, context: GrpcContext
    ) -> pb.RunAssignmentResponse:
        principal = require_principal()
        principal.require_any(assignment.EDITOR_ROLES)
        uid = parse_id(request.org_unit_id, "org_unit_id")
        result = await assignment.run(self.rt.db, principal=principal, unit_id=uid)
        return pb.RunAssignmentResponse(
            assigned=result.assigned,
            left_in_pool=dict(result.left),
            by_assignee=dict(result.by_assignee),
        )

    async def RunSubtreeAssignment(
        self, request: pb.RunSubtreeAssignmentRequest, context: GrpcContext
    ) -> pb.RunSubtreeAssignmentResponse:
        principal = require_principal()
        principal.require_any(assignment.EDITOR_ROLES)
        uid = parse_id(request.org_unit_id, "org_unit_id")
        result = await assignment.run_subtree(self.rt.db, principal=principal, unit_id=uid)
        total = result.total()
        return pb.RunSubtreeAssignmentResponse(
            assigned=total.assigned,
            left_in_pool=dict(total.left),
            units=[
                pb.UnitAssignmentResult(
                    org_unit_id=str(unit_id), assigned=r.assigned, left_in_pool=dict(r.left)
                )
                for unit_id, r in result.units.items()
            ],
            skipped_units=[
                pb.SkippedAssignmentUnit(org_unit_id=str(s.org_unit_id), reason=s.reason)
                for s in result.skipped
            ],
        )

    async def ClaimLead(self, request: pb.ClaimLeadRequest, context: GrpcContext) -> lead_pb2.Lead:
        principal = require_principal()
        lead_id = parse_id(request.lead_id, "lead_id")
        async with self.rt.db.unit_of_work() as conn:
            row = await pools.claim(conn=conn, principal=principal, lead_id=lead_id)
        return lead_to_proto(row)

    async def ReleaseLead(
        self, request: pb.ReleaseLeadRequest, context: GrpcContext
    ) -> lead_pb2.Lead:
        principal = require_principal()
        lead_id = parse_id(request.lead_id, "lead_id")
        async with self.rt.db.unit_of_work() as conn:
            row = await pools.release(conn=conn, principal=principal, lead_id=lead_id)
        return lead_to_proto(row)

    async def ListPoolLeads(
        self, request: pb.ListPoolLeadsRequest, context: GrpcContext
    ) -> pb.ListPoolLeadsResponse:
        principal = require_principal()
        query = await _pool(request)
        async with self.rt.db.read() as conn:
            rows = await pools.pool_page(
                conn=conn, principal=principal, flt=query.filter, page=query.page
            )
        items, token = page_of(rows, query.page, query.filter.key())
        return pb.ListPoolLeadsResponse(
            leads=[lead_to_proto(x) for x in items], next_page_token=token
        )

    async def ListMyLeads(
        self, request: pb.ListMyLeadsRequest, context: GrpcContext
    ) -> pb.ListMyLeadsResponse:
        principal = require_principal()
        page = page_request(request.page_size, request.page_token)
        async with self.rt.db.read() as conn:
            rows = await pools.mine_page(conn=conn, principal=principal, page=page)
        items, token = page_of(rows, page)
        return pb.ListMyLeadsResponse(
            leads=[lead_to_proto(x) for x in items], next_page_token=token
        )

    async def CreateLeadActivity(
        self, request: pb.CreateLeadActivityRequest, context: GrpcContext
    ) -> pb.LeadActivity:
        """Field violations use the REST body's paths (``kind``, ``occur_time``)."""
        principal = require_principal()
        lead_id = parse_id(request.lead_id, "lead_id")
        given = request.activity
        body = _model(
            ActivityIn,
            {
                # An unknown or unspecified kind is blank here, refused as REST refuses it.
                "kind": activity_rules.KIND_NAMES.get(given.kind, ""),
                "note": given.note,
                "occur_time": (
                    given.occur_time.ToDatetime(tzinfo=UTC)
                    if given.HasField("occur_time")
                    else None
                ),
            },
        )
        async with self.rt.db.unit_of_work() as conn:
            row = await activities.log(
                conn=conn,
                principal=principal,
                lead_id=lead_id,
                kind=body.kind,
                note=body.note,
                occur_time=body.occur_time,
            )
        return _activity(row)

    async def ListLeadActivities(
        self, request: pb.ListLeadActivitiesRequest, context: GrpcContext
    ) -> pb.ListLeadActivitiesResponse:
        principal = require_principal()
        lead_id = parse_id(request.lead_id, "lead_id")
        page = page_request(request.page_size, request.page_token)
        async with self.rt.db.read() as conn:
            rows = await activities.page(conn=conn, principal=principal, lead_id=lead_id, page=page)
        items, token = page_of(rows, page)
        return pb.ListLeadActivitiesResponse(
            activities=[_activity(x) for x in items], next_page_token=token
        )

    async def GetLeadOwnerHistory(
        self, request: pb.GetLeadOwnerHistoryRequest, context: GrpcContext
    ) -> pb.GetLeadOwnerHistoryResponse:
        principal = require_principal()
        lead_id = parse_id(request.lead_id, "lead_id")
        page = page_request(request.page_size, request.page_token)
        async with self.rt.db.read() as conn:
            rows = await distribution.owner_history_page(
                conn=conn, principal=principal, lead_id=lead_id, page=page
            )
        items, token = page_of(rows, page)
        return pb.GetLeadOwnerHistoryResponse(
            moves=[_move(x) for x in items], next_page_token=token
        )


def bindings(rt: Runtime) -> list[GrpcBinding]:
    return [
        GrpcBinding(
            servicer=LeadRoutingServicer(rt),
            add=routing_service_pb2_grpc.add_LeadRoutingServiceServicer_to_server,
            full_name=FULL_NAME,
        )
    ]
