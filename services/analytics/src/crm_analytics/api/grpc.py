"""gRPC adapter for reports."""

from __future__ import annotations

from crm.analytics.v1 import analytics_service_pb2 as pb
from crm.analytics.v1 import analytics_service_pb2_grpc
from crm_analytics.leadcounts import rules, service
from crm_analytics.leadcounts.mapping import row_to_proto
from crm_platform.auth import require_principal
from crm_platform.grpc_server import GrpcBinding, GrpcContext
from crm_platform.runtime import Runtime


class AnalyticsServicer(analytics_service_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def GetLeadCounts(
        self, request: pb.GetLeadCountsRequest, context: GrpcContext
    ) -> pb.GetLeadCountsResponse:
        start, end = rules.parse_range(request.start_day, request.end_day)
        async with self.rt.db.read() as conn:
            rows = await service.lead_counts(
                conn=conn, principal=require_principal(), start=start, end=end
            )
        return pb.GetLeadCountsResponse(
            rows=[row_to_proto(r) for r in rows], total=sum(r.lead_count for r in rows)
        )


def bindings(rt: Runtime) -> list[GrpcBinding]:
    return [
        GrpcBinding(
            servicer=AnalyticsServicer(rt),
            add=analytics_service_pb2_grpc.add_AnalyticsServiceServicer_to_server,
            full_name="crm.analytics.v1.AnalyticsService",
        )
    ]
