from __future__ import annotations

from typing import Any

from crm.servicedesk.v1 import ticket_pb2
from crm_platform.protos import etag, timestamp


def ticket_to_proto(row: Any) -> ticket_pb2.Ticket:
    return ticket_pb2.Ticket(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        owner_org_id=str(row.owner_org_id),
        owner_org_path=row.owner_org_path,
        subject=row.subject,
        description=row.description,
        customer_id=str(row.customer_id or ""),
        priority=row.priority,
        status=row.status,
        channel=row.channel,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=etag(row.id, row.version),
    )
