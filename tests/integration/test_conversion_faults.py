"""Fault test of the conversion saga: 1,000 conversions while the customers service and then
the sales service crash (no drain: in-flight transactions roll back, acks are lost) and
come back. Every conversion must end exactly once, with no duplicate or orphaned customer,
contact or opportunity, and the ones whose sales step fails must be fully compensated."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Tenant, http_client
from crm_platform.runtime import Runtime
from crm_platform.testing.harness import ServiceStarter, eventually

pytestmark = pytest.mark.integration

N = 1000
COMPANIES = 200  # five leads per company: matching runs concurrently with the crashes
DOOMED_EVERY = 10  # every 10th conversion's sales step is refused -> compensation
CLIENTS = 16
# Redelivery of what a crashed consumer had fetched but not acked.
FAST = {"consumer_ack_wait_seconds": 2.0, "conversion_deadline_poll_seconds": 1.0}


async def rows(rt: Runtime, sql: str, **params: Any) -> list[Any]:
    async with rt.db.read() as conn:
        return list((await conn.execute(sa.text(sql), params)).all())


async def test_conversions_end_exactly_once_through_crashes(
    pg_url: str, nats_url: str, run_namespace: str, directory: Runtime, tenant: Tenant
) -> None:
    from crm_customers.__main__ import DEFINITION as CUSTOMERS
    from crm_leads.__main__ import DEFINITION as LEADS
    from crm_sales.__main__ import DEFINITION as SALES

    # Own namespace: these services' durable consumers must not share work with the
    # session's services (the run's cleanup still drops its databases and streams).
    starter = ServiceStarter(pg_url=pg_url, nats_url=nats_url, namespace=run_namespace + "f")
    try:
        leads = await starter.start(LEADS, directory=directory, **FAST)
        customers = await starter.start(CUSTOMERS, directory=directory, **FAST)
        sales = await starter.start(SALES, directory=directory, **FAST)
        async with sales.db.unit_of_work() as conn:
            await conn.execute(
                sa.text(
                    "ALTER TABLE opportunities ADD CONSTRAINT test_doomed "
                    "CHECK (title NOT LIKE 'doomed%') NOT VALID"
                )
            )

        run = uuid.uuid4().hex[:6]
        lead_ids: list[str] = []
        async with http_client(leads) as c:
            c.timeout = 60
            body = [
                {
                    "full_name": f"Buyer {i}",
                    "phone": f"+86139{(uuid.uuid4().int % 10**8):08d}",
                    "company": f"Fault {run} {i % COMPANIES} 有限公司",
                    "city": "Ningbo",
                }
                for i in range(N)
            ]
            r = await c.post(
                "/v1/leads:batchCreate", json={"leads": body}, headers=tenant.auth("d1-rep")
            )
            assert r.status_code == 200, r.text
            for result in r.json()["results"]:
                assert result["outcome"] == "CREATED", result
                lead_ids.append(result["lead"]["id"])

        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(N):
            queue.put_nowait(i)
        started = 0
        crash_points = {N * 3 // 10: asyncio.Event(), N * 6 // 10: asyncio.Event()}

        async def client() -> None:
            nonlocal started
            async with http_client(leads) as c:
                c.timeout = 30
                while not queue.empty():
                    i = queue.get_nowait()
                    title = f"doomed {i}" if i % DOOMED_EVERY == 0 else f"Deal {i}"
                    r = await c.post(
                        f"/v1/leads/{lead_ids[i]}:convert",
                        json={"opportunity": {"title": title}},
                        headers=tenant.auth("d1-rep"),
                    )
                    assert r.status_code in (200, 202), r.text
                    started += 1
                    if started in crash_points:
                        crash_points[started].set()

        in_flight: list[int] = []

        async def crash(rt: Runtime, definition: Any, at: int, waiting_state: int) -> Runtime:
            await crash_points[at].wait()
            (pending,) = await rows(
                leads, "SELECT count(*) FROM lead_conversions WHERE state = :s", s=waiting_state
            )
            in_flight.append(pending[0])
            starter.running.remove(rt)
            await rt.kill()
            await asyncio.sleep(1.0)
            return await starter.start(definition, directory=directory, **FAST)

        clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        customers = await crash(customers, CUSTOMERS, N * 3 // 10, waiting_state=1)
        sales = await crash(sales, SALES, N * 6 // 10, waiting_state=2)
        await asyncio.gather(*clients)
        assert started == N
        # The crashes hit conversions waiting on the crashed service's step.
        assert sum(in_flight) > 0, in_flight

        async def all_ended() -> None:
            (running,) = await rows(
                leads, "SELECT count(*) FROM lead_conversions WHERE state NOT IN (3, 5)"
            )
            assert running[0] == 0, f"{running[0]} conversions still running"

        await eventually(all_ended, within=120, interval=0.5)

        conversions = await rows(
            leads,
            "SELECT id, lead_id, state, customer_id, contact_id, opportunity_ids, "
            "failure_reason FROM lead_conversions",
        )
        # Exactly one conversion per lead, each ended once, as expected.
        assert len(conversions) == N
        assert len({c.lead_id for c in conversions}) == N
        completed = [c for c in conversions if c.state == 3]
        failed = [c for c in conversions if c.state == 5]
        assert len(failed) == N // DOOMED_EVERY
        assert {c.failure_reason for c in failed} == {"OPPORTUNITY_REJECTED"}
        statuses = Counter(
            r.status for r in await rows(leads, "SELECT status FROM leads WHERE id IS NOT NULL")
        )
        assert statuses == {3: len(completed), 1: len(failed)}

        # Customers: one per company, exactly those completed conversions reference; no
        # orphan left by a compensated conversion, no duplicate made by a redelivery.
        customer_rows = await rows(customers, "SELECT id, match_name, city FROM customers")
        assert {r.id for r in customer_rows} == {c.customer_id for c in completed}
        assert len(customer_rows) == len({(r.match_name, r.city) for r in customer_rows})
        contact_ids = {r.id for r in await rows(customers, "SELECT id FROM contacts")}
        assert contact_ids == {c.contact_id for c in completed}
        assert len(contact_ids) == len(completed)

        # Opportunities: one per completed conversion, none for a failed one.
        opportunities = await rows(sales, "SELECT id, conversion_id FROM opportunities")
        assert len(opportunities) == len(completed)
        assert {o.conversion_id for o in opportunities} == {c.id for c in completed}
        assert {o.id for o in opportunities} == {c.opportunity_ids[0] for c in completed}
    finally:
        await starter.stop_all()
