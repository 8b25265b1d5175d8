"""The tenant's custom field definitions: one validated document per tenant. Keyword-only
functions taking the connection; they never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_customers.customer import custom_fields
from crm_customers.customer.custom_fields import FieldDefinition
from crm_customers.customer.models import customer_field_schemas
from crm_platform.auth import ROLE_ADMIN, Principal
from crm_platform.errors import EtagMismatch
from crm_platform.protos import etag


@dataclass(frozen=True)
class Schema:
    definitions: tuple[FieldDefinition, ...]
    etag: str
    update_time: datetime | None


async def get(*, conn: AsyncConnection, principal: Principal, for_update: bool = False) -> Schema:
    """The caller's tenant's definitions; none (version 0) until first written."""
    stmt = sa.select(customer_field_schemas).where(
        customer_field_schemas.c.tenant_id == principal.tenant_id
    )
    row = (await conn.execute(stmt.with_for_update() if for_update else stmt)).first()
    if row is None:
        return Schema((), etag(principal.tenant_id, 0), None)
    return Schema(
        custom_fields.from_document(row.fields), etag(row.tenant_id, row.version), row.update_time
    )


async def put(
    *,
    conn: AsyncConnection,
    principal: Principal,
    definitions: tuple[FieldDefinition, ...],
    expected_etag: str,
) -> Schema:
    """Replace every definition (tenant admins only). Existing values are not rewritten: a
    customer's values are checked against the definitions when they are next changed."""
    principal.require_any([ROLE_ADMIN])
    current = await get(conn=conn, principal=principal, for_update=True)
    if expected_etag and expected_etag != current.etag:
        raise EtagMismatch(
            "the customer fields changed since they were read", reason="CUSTOMER_FIELDS_CHANGED"
        )
    table = customer_field_schemas
    stmt = insert(table).values(
        tenant_id=principal.tenant_id, fields=custom_fields.to_document(definitions)
    )
    # Two first writers race on the primary key; the loser becomes version 2.
    upsert = stmt.on_conflict_do_update(
        index_elements=[table.c.tenant_id],
        set_={
            "fields": stmt.excluded.fields,
            "version": table.c.version + 1,
            "update_time": sa.func.now(),
        },
    ).returning(table)
    row = (await conn.execute(upsert)).one()
    return Schema(definitions, etag(row.tenant_id, row.version), row.update_time)
