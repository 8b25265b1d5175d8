"""Webhook sources and the delivery log (SQLAlchemy Core). Keyword-only functions taking the
connection; they never commit."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.webhook.models import webhook_deliveries, webhook_sources
from crm_leads.webhook.rules import MANAGE_ROLES, NewSource
from crm_platform import records
from crm_platform.auth import Principal
from crm_platform.errors import AlreadyExists, NotFound
from crm_platform.ids import new_id
from crm_platform.pagination import PageRequest

SECRET_BYTES = 32

# Built once: SQLAlchemy does not cache PostgreSQL ON CONFLICT constructs.
_RECORD_DELIVERY = sa.text(
    "INSERT INTO webhook_deliveries (source_id, signature) VALUES (:source_id, :signature) "
    "ON CONFLICT DO NOTHING RETURNING source_id"
).bindparams(sa.bindparam("source_id", type_=webhook_deliveries.c.source_id.type))


async def create_source(*, conn: AsyncConnection, principal: Principal, source: NewSource) -> Any:
    """The new source, owned by the caller's org unit, with its generated shared secret."""
    principal.require_any(MANAGE_ROLES)
    return (
        await conn.execute(
            webhook_sources.insert()
            .values(
                id=new_id(),
                **records.owned_by(principal),
                name=source.name,
                platform=source.platform,
                secret=secrets.token_urlsafe(SECRET_BYTES),
            )
            .returning(*webhook_sources.c)
        )
    ).one()


async def list_visible(
    *, conn: AsyncConnection, principal: Principal, page: PageRequest
) -> list[Any]:
    principal.require_any(MANAGE_ROLES)
    return await records.visible_page(conn, webhook_sources, principal, page)


async def enabled_source(*, conn: AsyncConnection, source_id: uuid.UUID) -> Any:
    """No principal: the caller is a platform, authenticated afterwards by the source's
    secret. A disabled source answers like a missing one."""
    row = (
        await conn.execute(
            sa.select(webhook_sources).where(
                webhook_sources.c.id == source_id, webhook_sources.c.enabled
            )
        )
    ).first()
    if row is None:
        raise source_not_found(str(source_id))
    return row


def source_not_found(source_id: str) -> NotFound:
    return NotFound(
        "webhook source not found",
        reason="WEBHOOK_SOURCE_NOT_FOUND",
        metadata={"webhook_source": source_id},
    )


async def record_delivery(*, conn: AsyncConnection, source_id: uuid.UUID, signature: str) -> None:
    """Claims the delivery; a second delivery with the same signature (the same timestamp
    and body) is a replay. A concurrent duplicate waits on the primary key, then fails."""
    claimed = (
        await conn.execute(_RECORD_DELIVERY, {"source_id": source_id, "signature": signature})
    ).first()
    if claimed is None:
        raise AlreadyExists("this delivery was already received", reason="WEBHOOK_REPLAYED")
