from __future__ import annotations

from typing import Any

from crm.sales.v1 import opportunity_pb2
from crm_platform.money import decimal_to_money
from crm_platform.protos import etag, timestamp


def opportunity_to_proto(row: Any) -> opportunity_pb2.Opportunity:
    return opportunity_pb2.Opportunity(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        owner_org_id=str(row.owner_org_id),
        owner_org_path=row.owner_org_path,
        title=row.title,
        customer_id=str(row.customer_id or ""),
        contact_id=str(row.contact_id or ""),
        lead_id=str(row.lead_id or ""),
        amount=decimal_to_money(row.amount, row.currency),
        stage=row.stage,
        close_date=row.close_date.isoformat() if row.close_date else "",
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=etag(row.id, row.version),
        product=row.product,
        campaign=row.campaign,
        lead_intent_id=str(row.lead_intent_id or ""),
        conversion_id=str(row.conversion_id or ""),
    )
