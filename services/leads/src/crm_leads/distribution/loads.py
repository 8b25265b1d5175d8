"""Refreshing the open-lead load the least-loaded strategy balances on.

Distribution adds each lead it gives to a unit to ``distribution_load.open_load``; leads
leave a unit's subtree in many ways (closed, converted, rejected, reclaimed, passed up), so
rather than decrementing on every one of those paths, this job recounts: per tenant, the open
leads owned anywhere in each target unit's subtree. Between refreshes the figure is the last
count plus what distribution gave since: least-loaded is a balancing heuristic; the daily and
weekly capacities, which are exact, count deliveries and are not touched here."""

from __future__ import annotations

import uuid
from collections import Counter

import sqlalchemy as sa

from crm_leads.distribution.models import distribution_load
from crm_leads.lead.models import OPEN_STATUSES, leads
from crm_leads.orgtree.models import org_units
from crm_platform.db import Database

# Lock order shared with distribution runs (org_unit_id within the tenant): the recount runs
# after a run in progress commits, and sees its leads.
_LOCK_LOADS = (
    sa.select(distribution_load.c.org_unit_id, org_units.c.path, distribution_load.c.open_load)
    .join(org_units, org_units.c.id == distribution_load.c.org_unit_id)
    .where(distribution_load.c.tenant_id == sa.bindparam("tenant_id"))
    .order_by(distribution_load.c.org_unit_id)
    .with_for_update(of=distribution_load)
)


def subtree_counts(per_path: dict[str, int]) -> Counter[str]:
    """Open leads per materialised path ('/t/r03/d03117/') rolled up to every ancestor path."""
    totals: Counter[str] = Counter()
    for path, n in per_path.items():
        end = path.find("/", 1)
        while end != -1:
            totals[path[: end + 1]] += n
            end = path.find("/", end + 1)
    return totals


async def refresh_tenant(db: Database, tenant_id: uuid.UUID) -> int:
    """Recount one tenant's open loads; returns how many units' figures changed. Replicas
    racing on one tenant take turns (the first holds the advisory lock, the others skip)."""
    async with db.unit_of_work() as conn:
        key = sa.func.hashtextextended(f"distribution-load-refresh:{tenant_id}", 0)
        if not await conn.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(key))):
            return 0
        units = (await conn.execute(_LOCK_LOADS, {"tenant_id": tenant_id})).all()
        if not units:
            return 0
        per_path = {
            row.owner_org_path: row.n
            for row in await conn.execute(
                sa.select(leads.c.owner_org_path, sa.func.count().label("n"))
                .where(leads.c.tenant_id == tenant_id, leads.c.status.in_(OPEN_STATUSES))
                .group_by(leads.c.owner_org_path)
            )
        }
        totals = subtree_counts(per_path)
        changed = [(u.org_unit_id, totals[u.path]) for u in units if u.open_load != totals[u.path]]
        if changed:
            await conn.execute(
                distribution_load.update()
                .where(
                    distribution_load.c.tenant_id == tenant_id,
                    distribution_load.c.org_unit_id == sa.bindparam("unit"),
                )
                .values(open_load=sa.bindparam("n")),
                [{"unit": unit, "n": n} for unit, n in changed],
            )
        return len(changed)


async def refresh(db: Database) -> int:
    """Every tenant with distribution targets, one transaction each."""
    async with db.read() as conn:
        tenants = list(
            (await conn.execute(sa.select(distribution_load.c.tenant_id).distinct())).scalars()
        )
    return sum([await refresh_tenant(db, t) for t in tenants])
