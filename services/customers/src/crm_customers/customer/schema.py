"""The tenant's custom field definitions: one validated document per tenant. Keyword-only
functions taking the connection; they never commit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_customers.customer import custom_fields
from crm_customers.customer.custom_fields import FieldDefinition
from crm_customers.customer.models import customer_field_schemas
from crm_platform.auth import ROLE_ADMIN, Principal
from crm_platform.errors import EtagMismatch
from crm_platform.protos import etag
from crm_platform.tenant_cache import TenantCache


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


@dataclass(frozen=True)
class _Definitions:
    version: int  # 0: never written
    definitions: tuple[FieldDefinition, ...]


async def _read_latest(conn: AsyncConnection, tenant_id: uuid.UUID) -> Any:
    return (
        await conn.execute(
            sa.select(customer_field_schemas).where(customer_field_schemas.c.tenant_id == tenant_id)
        )
    ).first()


def _parsed(row: Any) -> _Definitions:
    return _Definitions(row.version, custom_fields.from_document(row.fields))


# Creates and updates validate custom values against these: cached per tenant like the
# other per-tenant documents (crm_platform.tenant_cache: this replica sees a put at once,
# others within the TTL), which saves a read per customer a conversion creates.
CACHE = TenantCache(read=_read_latest, parse=_parsed, default=_Definitions(0, ()))


async def definitions(
    *, conn: AsyncConnection, tenant_id: uuid.UUID
) -> tuple[FieldDefinition, ...]:
    """The tenant's definitions, through the cache."""
    return (await CACHE.current(conn, tenant_id)).definitions


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
    CACHE.remember(principal.tenant_id, _Definitions(row.version, definitions))
    return Schema(definitions, etag(row.tenant_id, row.version), row.update_time)
