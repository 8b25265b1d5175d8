from __future__ import annotations

from typing import Any

from crm.marketing.v1 import campaign_pb2
from crm_platform.money import decimal_to_money
from crm_platform.protos import etag, timestamp


def campaign_to_proto(row: Any) -> campaign_pb2.Campaign:
    return campaign_pb2.Campaign(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        owner_org_id=str(row.owner_org_id),
        owner_org_path=row.owner_org_path,
        name=row.name,
        channel=row.channel,
        status=row.status,
        budget=decimal_to_money(row.budget, row.currency),
        start_date=row.start_date.isoformat(),
        end_date=row.end_date.isoformat(),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=etag(row.id, row.version),
    )
