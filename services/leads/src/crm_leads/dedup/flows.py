"""De-duplication rules use cases shared by the adapters."""

from __future__ import annotations

from crm_leads.dedup import service
from crm_leads.dedup.rules import DedupRules
from crm_platform.auth import Principal
from crm_platform.db import Database


async def store_rules(
    db: Database, principal: Principal, rules: DedupRules
) -> service.CurrentRules:
    """Store the tenant's next rules version; this process de-duplicates with it from now on
    (other replicas within ``service.CACHE_SECONDS``)."""
    async with db.unit_of_work() as conn:
        current = await service.put(conn=conn, principal=principal, rules=rules)
    # After the commit: a rolled-back put must never reach the cache.
    service.CACHE.remember(principal.tenant_id, current)
    return current
