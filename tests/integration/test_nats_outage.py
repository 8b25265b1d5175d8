"""Stopping NATS while leads are created loses nothing: the outbox holds the events, and
after NATS returns every one reaches analytics exactly once."""

from __future__ import annotations

import asyncio
import shutil

import pytest
import sqlalchemy as sa

from conftest import Tenant, http_client
from crm_platform.consumers import inbox
from crm_platform.outbox import outbox
from crm_platform.runtime import Runtime
from crm_platform.testing.harness import ServiceStarter, eventually
from crm_platform.testing.servers import NatsServer

pytestmark = pytest.mark.integration

BEFORE, DURING = 5, 40


async def test_nats_outage_loses_no_event(
    pg_url: str, run_namespace: str, directory: Runtime, tenant: Tenant
) -> None:
    server = NatsServer().start()  # a server this test may stop and restart
    starter = ServiceStarter(pg_url=pg_url, nats_url=server.url, namespace=run_namespace)
    try:
        from crm_analytics.__main__ import DEFINITION as ANALYTICS
        from crm_leads.__main__ import DEFINITION as LEADS

        leads = await starter.start(LEADS, directory=directory, db_suffix="_outage")
        analytics = await starter.start(ANALYTICS, directory=directory, db_suffix="_outage")

        async def create(n: int, tag: str) -> None:
            async with http_client(leads) as c:
                for i in range(n):
                    r = await c.post(
                        "/v1/leads",
                        json={"full_name": f"{tag} {i}", "email": f"{tag}{i}@example.com"},
                        headers=tenant.auth("d1-rep"),
                    )
                    assert r.status_code == 201, r.text

        async def analytics_total() -> int:
            async with http_client(analytics) as c:
                r = await c.get("/v1/reports/lead-counts", headers=tenant.auth("admin"))
                return int(r.json()["total"])

        async def reaches(expected: int) -> None:
            assert await analytics_total() == expected

        await create(BEFORE, "before")
        await eventually(lambda: reaches(BEFORE))

        server.stop()
        await create(DURING, "during")  # the API keeps accepting leads
        async with leads.db.read() as conn:
            pending = (
                await conn.execute(
                    sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
                )
            ).scalar_one()
        assert pending == DURING

        server.start()
        await eventually(lambda: reaches(BEFORE + DURING), within=60)
        await asyncio.sleep(2)  # late duplicates would land now
        assert await analytics_total() == BEFORE + DURING
        async with analytics.db.read() as conn:
            processed = (
                await conn.execute(
                    sa.select(sa.func.count()).where(inbox.c.consumer == "analytics-lead-created")
                )
            ).scalar_one()
        assert processed == BEFORE + DURING
        print(f"\noutage: {BEFORE} before, {DURING} during, {processed} delivered exactly once")
    finally:
        await starter.stop_all()
        server.stop()
        shutil.rmtree(server.store_dir, ignore_errors=True)
