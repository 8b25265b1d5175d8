"""Campaign persistence and queries (SQLAlchemy Core).
Keyword-only functions taking the connection; they never commit."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from crm.marketing.v1 import events_pb2
from crm_marketing.campaign.mapping import campaign_to_proto
from crm_marketing.campaign.models import campaigns
from crm_marketing.campaign.rules import NewCampaign
from crm_platform import records
from crm_platform.auth import WRITE_ROLES, Principal
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
    row, created = await records.insert_once(
        conn,
        campaigns,
        {
            "id": new_id(),
            **records.owned_by(principal),
            "name": campaign.name,
            "channel": campaign.channel,
            "budget": campaign.budget,
            "currency": campaign.currency,
            "start_date": campaign.start_date,
            "end_date": campaign.end_date,
        },
        request_id=request_id,
    )
    if created:
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
    return await records.get_visible(conn, campaigns, principal, campaign_id, kind="campaign")


async def list_visible(
    *, conn: AsyncConnection, principal: Principal, page: PageRequest
) -> list[Any]:
    """Newest first (UUIDv7 ids are time-ordered), keyset-paged."""
    return await records.visible_page(conn, campaigns, principal, page)
