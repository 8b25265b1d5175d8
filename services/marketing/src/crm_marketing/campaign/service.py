"""Campaign persistence and queries (SQLAlchemy Core).
Keyword-only functions taking the connection; they never commit."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.marketing.v1 import events_pb2
from crm_marketing.campaign.mapping import campaign_to_proto
from crm_marketing.campaign.models import campaigns
from crm_marketing.campaign.rules import NewCampaign
from crm_platform.auth import WRITE_ROLES, Principal, visible_to
from crm_platform.errors import NotFound
from crm_platform.ids import new_id
from crm_platform.outbox import add_event
from crm_platform.pagination import PageRequest

PRODUCER = "marketing"


async def create(
    *,
    conn: AsyncConnection,
    principal: Principal,
    campaign: NewCampaign,
    request_id: uuid.UUID | None,
) -> Any:
    """Insert a draft campaign owned by the caller's org unit, with its created event. A
    repeated request_id returns the first campaign and publishes nothing (race-free: unique
    index)."""
    principal.require_any(WRITE_ROLES)
    row = (
        await conn.execute(
            insert(campaigns)
            .values(
                id=new_id(),
                tenant_id=principal.tenant_id,
                owner_org_id=principal.org_unit_id,
                owner_org_path=principal.org_path,
                name=campaign.name,
                channel=campaign.channel,
                budget=campaign.budget,
                currency=campaign.currency,
                start_date=campaign.start_date,
                end_date=campaign.end_date,
                request_id=request_id,
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "request_id"])
            .returning(*campaigns.c)
        )
    ).first()
    if row is None:
        return (
            await conn.execute(
                sa.select(campaigns).where(
                    campaigns.c.tenant_id == principal.tenant_id,
                    campaigns.c.request_id == request_id,
                )
            )
        ).one()
    await add_event(
        conn,
        event_type="crm.marketing.campaign.created.v1",
        payload=events_pb2.CampaignCreated(campaign=campaign_to_proto(row)),
        tenant_id=row.tenant_id,
        org_path=row.owner_org_path,
        producer=PRODUCER,
    )
    return row


async def get(*, conn: AsyncConnection, principal: Principal, campaign_id: uuid.UUID) -> Any:
    """A campaign outside the caller's subtree is reported as missing, so existence never
    leaks."""
    row = (
        await conn.execute(
            sa.select(campaigns).where(
                campaigns.c.id == campaign_id, visible_to(campaigns, principal)
            )
        )
    ).first()
    if row is None:
        raise NotFound(
            f"campaign {campaign_id} not found",
            reason="CAMPAIGN_NOT_FOUND",
            metadata={"campaign": str(campaign_id)},
        )
    return row


async def list_visible(
    *, conn: AsyncConnection, principal: Principal, page: PageRequest
) -> list[Any]:
    """Newest first (UUIDv7 ids are time-ordered), keyset-paged."""
    stmt = (
        sa.select(campaigns)
        .where(visible_to(campaigns, principal))
        .order_by(campaigns.c.id.desc())
        .limit(page.size + 1)
    )
    if page.after is not None:
        stmt = stmt.where(campaigns.c.id < page.after)
    return list((await conn.execute(stmt)).all())
