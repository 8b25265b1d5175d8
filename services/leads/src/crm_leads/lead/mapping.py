from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from crm.leads.v1 import lead_pb2
from crm_leads.lead.rules import NewIntent
from crm_platform.protos import etag, timestamp


def intent_to_proto(
    intent_id: uuid.UUID, intent: NewIntent, occur_time: datetime
) -> lead_pb2.LeadIntent:
    return lead_pb2.LeadIntent(
        id=str(intent_id),
        source=intent.source,
        campaign=intent.campaign,
        product_interest=intent.product_interest,
        occur_time=timestamp(occur_time),
    )


def intent_row_to_proto(row: Any) -> lead_pb2.LeadIntent:
    return lead_pb2.LeadIntent(
        id=str(row.id),
        source=row.source,
        campaign=row.campaign,
        product_interest=row.product_interest,
        occur_time=timestamp(row.occur_time),
    )


def lead_to_proto(row: Any, intents: Sequence[Any] = ()) -> lead_pb2.Lead:
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
        open_id=row.open_id,
        union_id=row.union_id,
        intent_count=row.intent_count,
        score=row.score,
        grade=row.grade,
        verification=row.verification,
        closed_reason=row.closed_reason,
        assignee_id=str(row.assignee_id) if row.assignee_id is not None else "",
        assign_time=timestamp(row.assigned_time) if row.assigned_time is not None else None,
        intents=[intent_row_to_proto(i) for i in intents],
        conversion_id=str(conversion_id)
        if (conversion_id := getattr(row, "conversion_id", None))
        else "",
        territory=row.territory,
        custom_fields=row.custom_fields,
    )


def lead_with_intents(
    row: Any, intents: Sequence[Any], built: lead_pb2.Lead | None = None
) -> lead_pb2.Lead:
    """``lead_to_proto(row, intents)``, reusing ``built`` (the same row's message without
    intents, e.g. the one its lead.created event carries) when there is one."""
    if built is None:
        return lead_to_proto(row, intents)
    out = lead_pb2.Lead()
    out.CopyFrom(built)
    out.intents.extend(intent_row_to_proto(i) for i in intents)
    return out
