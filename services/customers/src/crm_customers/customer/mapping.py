from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crm.customers.v1 import customer_pb2
from crm_platform.protos import etag, timestamp


def contact_to_proto(row: Any) -> customer_pb2.Contact:
    return customer_pb2.Contact(
        id=str(row.id),
        customer_id=str(row.customer_id),
        full_name=row.full_name,
        title=row.title,
        phone=row.phone,
        email=row.email,
        create_time=timestamp(row.create_time),
    )


def customer_to_proto(row: Any, contacts: Iterable[Any] = ()) -> customer_pb2.Customer:
    return customer_pb2.Customer(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        owner_org_id=str(row.owner_org_id),
        owner_org_path=row.owner_org_path,
        kind=row.kind,
        display_name=row.display_name,
        tax_id=row.tax_id,
        phone=row.phone,
        email=row.email,
        province=row.province,
        city=row.city,
        contacts=[contact_to_proto(c) for c in contacts],
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=etag(row.id, row.version),
    )
