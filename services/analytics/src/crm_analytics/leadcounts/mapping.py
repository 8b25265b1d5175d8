from __future__ import annotations

from typing import Any

from crm.analytics.v1 import report_pb2


def row_to_proto(row: Any) -> report_pb2.LeadCountRow:
    return report_pb2.LeadCountRow(
        org_unit_id=str(row.owner_org_id),
        org_path=row.owner_org_path,
        day=row.day.isoformat(),
        lead_count=row.lead_count,
    )
