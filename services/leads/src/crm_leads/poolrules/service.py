"""Pool rules against the database: the tenant's limits, per-holder locks and counts, and
the release record the cool-down reads. Keyword-only functions taking the connection; they
never commit."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.lead.models import OPEN_STATUSES, leads
from crm_leads.poolrules.models import lead_releases
from crm_leads.poolrules.rules import PoolLimits, cooldown_active, cooldown_end, limits_of
from crm_leads.tenantsettings import service as tenantsettings

# Transaction-scoped advisory locks, one per holder, taken in id order (no deadlock between
# two runs): a claim, an assignment and a run giving leads to the same rep serialise, so
# "count, then add" never overshoots the cap. The key space is namespaced by the prefix.
_LOCK_HOLDERS = sa.text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended('crm-leads-holder:' || u::text, 0))) "
    "FROM (SELECT u FROM unnest(CAST(:ids AS uuid[])) AS u ORDER BY u) AS s"
)


async def limits(*, conn: AsyncConnection, tenant_id: uuid.UUID) -> PoolLimits:
    """The tenant's limits, through the settings cache (no round trip while it is fresh)."""
    return limits_of((await tenantsettings.CACHE.current(conn, tenant_id)).settings)


async def lock_holders(*, conn: AsyncConnection, user_ids: Iterable[uuid.UUID]) -> None:
    ids = sorted(set(user_ids))
    if ids:
        await conn.execute(_LOCK_HOLDERS, {"ids": ids})


async def held_counts(
    *, conn: AsyncConnection, tenant_id: uuid.UUID, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """Open leads each user holds (0 for none); call after ``lock_holders``."""
    ids = list(set(user_ids))
    counts = dict.fromkeys(ids, 0)
    if not ids:
        return counts
    rows = await conn.execute(
        sa.select(leads.c.assignee_id, sa.func.count())
        .where(
            leads.c.tenant_id == tenant_id,
            leads.c.assignee_id.in_(ids),
            leads.c.status.in_(OPEN_STATUSES),
        )
        .group_by(leads.c.assignee_id)
    )
    counts.update({row[0]: int(row[1]) for row in rows})
    return counts


async def check_cooldown(
    *, conn: AsyncConnection, lead_id: uuid.UUID, user_id: uuid.UUID, limits: PoolLimits
) -> None:
    """COOLDOWN_ACTIVE (409, with the time it ends) if the user released or lost the lead
    less than the tenant's cool-down ago."""
    if limits.cooldown_hours == 0:
        return
    released: datetime | None = (
        await conn.execute(
            sa.select(lead_releases.c.release_time).where(
                lead_releases.c.lead_id == lead_id, lead_releases.c.user_id == user_id
            )
        )
    ).scalar_one_or_none()
    if released is None:
        return
    now: datetime = (await conn.execute(sa.select(sa.func.now()))).scalar_one()
    until = cooldown_end(released, limits)
    if until > now:
        raise cooldown_active(lead_id, until)


async def record_releases(
    *,
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    pairs: Sequence[tuple[uuid.UUID, uuid.UUID]],
    reason: str,
) -> None:
    """Remember that each (lead, user) pair's user released or lost the lead now."""
    if not pairs:
        return
    rows = sa.select(
        sa.func.unnest(sa.cast([p[0] for p in pairs], ARRAY(UUID(as_uuid=True)))).label("l"),
        sa.func.unnest(sa.cast([p[1] for p in pairs], ARRAY(UUID(as_uuid=True)))).label("u"),
    ).subquery()
    stmt = pg_insert(lead_releases).from_select(
        ["lead_id", "user_id", "tenant_id", "reason"],
        sa.select(
            rows.c.l, rows.c.u, sa.literal(tenant_id, UUID(as_uuid=True)), sa.literal(reason)
        ),
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[lead_releases.c.lead_id, lead_releases.c.user_id],
            set_={"reason": stmt.excluded.reason, "release_time": sa.func.now()},
        )
    )
