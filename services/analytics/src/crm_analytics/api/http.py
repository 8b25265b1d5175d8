"""Public REST adapter for reports."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from crm_analytics.dealerperf import service as dealerperf
from crm_analytics.dealerperf.mapping import report_to_json
from crm_analytics.leadcounts import rules, service
from crm_analytics.leadcounts.mapping import row_to_proto
from crm_platform.http import CurrentPrincipal, proto_json
from crm_platform.runtime import Runtime


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1/reports", tags=["reports"])

    @r.get("/lead-counts")
    async def lead_counts(
        principal: CurrentPrincipal, start_day: str = "", end_day: str = ""
    ) -> dict[str, Any]:
        """Leads captured per org unit and UTC day, within the caller's subtree."""
        start, end = rules.parse_range(start_day, end_day)
        async with rt.db.read() as conn:
            rows = await service.lead_counts(conn=conn, principal=principal, start=start, end=end)
        return {
            "rows": [proto_json(row_to_proto(x)) for x in rows],
            "total": sum(x.lead_count for x in rows),
        }

    @r.get("/dealer-performance")
    async def dealer_performance(
        principal: CurrentPrincipal, start_day: str = "", end_day: str = ""
    ) -> dict[str, Any]:
        """Per receiving org unit and UTC day within the caller's subtree: leads received,
        accepted, rejected, expired, reclaimed, assigned, SLA warnings, SLA breaches, first
        contacts and their summed seconds; totals with acceptance rate, reclaim rate and
        average seconds to first contact (null when there is nothing to divide by)."""
        start, end = rules.parse_range(start_day, end_day)
        async with rt.db.read() as conn:
            rows = await dealerperf.report_rows(
                conn=conn, principal=principal, start=start, end=end
            )
        return report_to_json(rows)

    return r
