"""The conversion deadline job (every replica; rows are claimed with SKIP LOCKED)."""

from __future__ import annotations

from crm_leads.conversion import rules, service
from crm_platform import metrics
from crm_platform.db import Database


async def expire_due(db: Database) -> int:
    async with db.unit_of_work() as conn:
        expired = await service.expire_due(conn)
    async with db.read() as conn:
        running = await service.count_running(conn)
    for state in rules.RUNNING:
        metrics.SAGA_INSTANCES.labels(service.SAGA, rules.STATE_NAMES[state]).set(
            running.get(state, 0)
        )
    return expired
