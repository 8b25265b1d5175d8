"""Fault test of the conversion saga: 1,000 conversions while the customers service and then
the sales service crash (no drain: in-flight transactions roll back, acks are lost) and
come back. Every conversion must end exactly once, with no duplicate or orphaned customer,
contact or opportunity, and the ones whose sales step fails must be fully compensated
(the load and the end-state checks are in conversion_checks, shared with the NATS-outage
variant)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import Tenant
from crm_leads.conversion import rules
from crm_platform.runtime import Runtime
from crm_platform.testing.harness import ServiceStarter
from tests.integration.conversion_checks import (
    FAST,
    Conversions,
    N,
    check_end_state,
    count_in_state,
    create_leads,
    refuse_doomed_opportunities,
    wait_until_all_ended,
)

pytestmark = pytest.mark.integration


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
        await refuse_doomed_opportunities(sales)
        lead_ids = await create_leads(leads, tenant, "Fault")
        conversions = Conversions(leads, tenant, lead_ids, milestones=(N * 3 // 10, N * 6 // 10))

        in_flight: list[int] = []

        async def crash(rt: Runtime, definition: Any, at: int, waiting_state: int) -> Runtime:
            await conversions.reached(at)
            in_flight.append(await count_in_state(leads, waiting_state))
            starter.running.remove(rt)
            await rt.kill()
            await asyncio.sleep(1.0)
            return await starter.start(definition, directory=directory, **FAST)

        clients = conversions.run()
        customers = await crash(customers, CUSTOMERS, N * 3 // 10, rules.CUSTOMER_PENDING)
        sales = await crash(sales, SALES, N * 6 // 10, rules.OPPORTUNITY_PENDING)
        await clients
        assert conversions.started == N
        # The crashes hit conversions waiting on the crashed service's step.
        assert sum(in_flight) > 0, in_flight

        await wait_until_all_ended(leads)
        await check_end_state(leads, customers, sales)
    finally:
        await starter.stop_all()
