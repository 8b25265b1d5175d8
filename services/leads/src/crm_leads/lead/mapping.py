from __future__ import annotations

from typing import Any

from crm.leads.v1 import lead_pb2
from crm_platform.protos import etag, timestamp


def lead_to_proto(row: Any) -> lead_pb2.Lead:
    return lead_pb2.Lead(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        owner_org_id=str(row.owner_org_id),
        owner_org_path=row.owner_org_path,
        full_name=row.full_name,
        phone=row.phone,
        email=row.email,
        company=row.company,
        province=row.province,
        city=row.city,
        source=row.source,
        status=row.status,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=etag(row.id, row.version),
    )
