"""Tenants' lead settings: reading, storing, and the per-process cache captures read them
through. Functions taking a connection never commit; ``store`` runs its own unit of work."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.tenantsettings.models import lead_settings
from crm_leads.tenantsettings.rules import NO_SETTINGS, LeadSettings
from crm_platform.auth import ROLE_ADMIN, Principal
from crm_platform.db import Database
from crm_platform.tenant_cache import TenantCache

DEFAULT_VERSION = 0  # a tenant that never stored settings
# How long a process captures with the settings it last read before looking again.
CACHE_SECONDS = 5.0

_READ = sa.select(lead_settings).where(lead_settings.c.tenant_id == sa.bindparam("tenant_id"))


@dataclass(frozen=True)
class CurrentSettings:
    version: int
    settings: LeadSettings
    updated_by: str = ""
    update_time: datetime | None = None


DEFAULT = CurrentSettings(DEFAULT_VERSION, NO_SETTINGS)


def _stored(row: Any) -> CurrentSettings:
    # Validated when they were put; not again, so a region phonenumbers might drop one day
    # cannot make every capture of the tenant fail here.
    settings = LeadSettings.model_construct(
        stale_lead_days=row.stale_lead_days,
        phone_region=row.phone_region,
        private_pool_cap=row.private_pool_cap,
        reclaim_cooldown_hours=row.reclaim_cooldown_hours,
    )
    return CurrentSettings(row.version, settings, row.updated_by, row.update_time)


async def _read(conn: AsyncConnection, tenant_id: uuid.UUID) -> Any:
    return (await conn.execute(_READ, {"tenant_id": tenant_id})).first()


# One per process, like crm_leads.scoring.service.CACHE: captures read the settings through
# it (zero extra round trips; other replicas see a change within CACHE_SECONDS).
CACHE = TenantCache(read=_read, parse=_stored, default=DEFAULT, ttl_seconds=CACHE_SECONDS)


async def latest(*, conn: AsyncConnection, tenant_id: uuid.UUID) -> CurrentSettings:
    """The tenant's settings read from the database; refreshes this process's cache."""
    return await CACHE.latest(conn, tenant_id)


async def cached(db: Database, tenant_id: uuid.UUID) -> CurrentSettings:
    """Through the cache; a connection is taken only when the tenant's entry has expired
    (adapters validate a capture before its unit of work opens one)."""
    hit = CACHE.fresh(tenant_id)
    if hit is not None:
        return hit
    async with db.read() as conn:
        return await CACHE.current(conn, tenant_id)


async def phone_region(db: Database, tenant_id: uuid.UUID, default: str) -> str:
    """The region capture validates the tenant's phones with."""
    return (await cached(db, tenant_id)).settings.phone_region or default


async def put(
    *, conn: AsyncConnection, principal: Principal, settings: LeadSettings
) -> CurrentSettings:
    """Replace the tenant's settings (tenant administrators only). Use ``store`` unless the
    caller commits and refreshes the cache itself."""
    principal.require_any([ROLE_ADMIN])
    values = {
        "stale_lead_days": settings.stale_lead_days,
        "phone_region": settings.phone_region,
        "private_pool_cap": settings.private_pool_cap,
        "reclaim_cooldown_hours": settings.reclaim_cooldown_hours,
        "updated_by": principal.subject,
    }
    insert = pg_insert(lead_settings).values(
        tenant_id=principal.tenant_id, version=DEFAULT_VERSION + 1, **values
    )
    # An upsert: two concurrent puts serialise on the row, and each gets its own version.
    stmt = insert.on_conflict_do_update(
        index_elements=[lead_settings.c.tenant_id],
        set_={**values, "version": lead_settings.c.version + 1, "update_time": sa.func.now()},
    ).returning(*lead_settings.c)
    return _stored((await conn.execute(stmt)).one())


async def store(db: Database, principal: Principal, settings: LeadSettings) -> CurrentSettings:
    """``put`` in its own unit of work; this process uses the settings at once (other
    replicas within ``CACHE_SECONDS``)."""
    async with db.unit_of_work() as conn:
        current = await put(conn=conn, principal=principal, settings=settings)
    # After the commit: a rolled-back put must never reach the cache.
    CACHE.remember(principal.tenant_id, current)
    return current
