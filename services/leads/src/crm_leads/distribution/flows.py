"""Distribution use cases that own a transaction, and the event handlers that distribute new
leads automatically.

Automatic distribution is event-driven: capture (single, batch, webhook, import) only
publishes ``lead.created`` / ``lead_batch.created``; these handlers then run the owner unit's
rules over the new leads. A unit without automatic rules keeps the leads it collected itself;
giving a unit rules is how it passes its leads down. Redelivery is harmless twice over: the
inbox skips a seen event, and a lead already moved is no longer in the unit's pool."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_leads.distribution import passup, service, store
from crm_leads.distribution.rules import DistributionRules, Profile
from crm_platform.auth import Principal
from crm_platform.db import Database
from crm_platform.events import ReceivedEvent


async def store_rules(
    db: Database, principal: Principal, unit_id: uuid.UUID, rules: DistributionRules
) -> store.StoredRules:
    async with db.unit_of_work() as conn:
        unit = await store.visible_unit(conn=conn, principal=principal, unit_id=unit_id)
        return await store.put_rules(conn=conn, principal=principal, unit=unit, rules=rules)


async def store_profile(
    db: Database, principal: Principal, unit_id: uuid.UUID, profile: Profile
) -> store.StoredProfile:
    async with db.unit_of_work() as conn:
        unit = await store.visible_unit(conn=conn, principal=principal, unit_id=unit_id)
        return await store.put_profile(conn=conn, principal=principal, unit=unit, profile=profile)


async def distribute_manually(
    db: Database, principal: Principal, lead_ids: list[uuid.UUID], target_id: uuid.UUID
) -> list[service.ManualResult]:
    async with db.unit_of_work() as conn:
        return await service.distribute_manually(
            conn=conn, principal=principal, lead_ids=lead_ids, target_id=target_id
        )


async def pass_up(
    db: Database, principal: Principal, lead_ids: list[uuid.UUID], note: str
) -> list[service.ManualResult]:
    async with db.unit_of_work() as conn:
        return await passup.pass_up(conn=conn, principal=principal, lead_ids=lead_ids, note=note)


async def on_leads_created(conn: AsyncConnection, events: Sequence[ReceivedEvent]) -> None:
    """A fetch of ``lead.created`` events in one transaction (a batch consumer): the new
    pooled leads, per capturing unit, go to ``distribute_new``; one probe finds which of
    those units distribute at all, so units without rules (most) cost nothing more."""
    pooled: dict[tuple[uuid.UUID, uuid.UUID], list[uuid.UUID]] = {}
    for event in events:
        assert isinstance(event.payload, events_pb2.LeadCreated)
        lead = event.payload.lead
        if lead.assignee_id or not lead.owner_org_id:
            continue  # held by its capturer: not in a pool
        unit = (event.tenant_id, uuid.UUID(lead.owner_org_id))
        pooled.setdefault(unit, []).append(uuid.UUID(lead.id))
    distributing = await store.units_with_rules(conn=conn, units=list(pooled))
    for (tenant_id, unit_id), lead_ids in pooled.items():
        if (tenant_id, unit_id) in distributing:
            await service.distribute_new(
                conn=conn, tenant_id=tenant_id, unit_id=unit_id, lead_ids=lead_ids
            )


async def on_lead_batch_created(conn: AsyncConnection, event: ReceivedEvent) -> None:
    assert isinstance(event.payload, events_pb2.LeadBatchCreated)
    batch = event.payload
    unit = (event.tenant_id, uuid.UUID(batch.owner_org_id))
    # Asked before a thousand ids are parsed: most importing units do not distribute.
    if unit not in await store.units_with_rules(conn=conn, units=[unit]):
        return
    await service.distribute_new(
        conn=conn,
        tenant_id=event.tenant_id,
        unit_id=unit[1],
        lead_ids=[uuid.UUID(x.id) for x in batch.leads],
    )
