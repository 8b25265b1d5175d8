"""Fault test of the conversion saga: NATS is killed (SIGKILL) in the middle of 1,000
conversions and comes back (same port and JetStream store, as a restarted server would). The
API keeps accepting conversions meanwhile (their commands wait in the transactional outbox),
and once NATS is back every conversion ends exactly once, as after the service crashes of
test_conversion_faults (same load, same end-state checks: conversion_checks)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time

import pytest

from conftest import Tenant
from crm_leads.conversion import rules
from crm_platform.runtime import Runtime
from crm_platform.testing.harness import ServiceStarter
from crm_platform.testing.servers import NatsServer
from tests.integration.conversion_checks import (
    FAST,
    Conversions,
    N,
    check_end_state,
    count_in_state,
    create_leads,
    refuse_doomed_opportunities,
    rows,
    wait_until_all_ended,
)

pytestmark = pytest.mark.integration

OUTAGE_AT = N * 3 // 10  # conversions started when NATS stops
RESTART_BY = N * 7 // 10  # ... and returns at the latest when this many have started
OUTAGE_SECONDS = 4.0


async def test_conversions_end_exactly_once_through_nats_outage(
    pg_url: str, run_namespace: str, directory: Runtime, tenant: Tenant
) -> None:
    from crm_customers.__main__ import DEFINITION as CUSTOMERS
    from crm_leads.__main__ import DEFINITION as LEADS
    from crm_sales.__main__ import DEFINITION as SALES

    server = NatsServer().start()  # a server this test may stop and restart
    # Own namespace and databases (dropped by the run's cleanup); the streams live in this
    # server's store, removed below.
    starter = ServiceStarter(pg_url=pg_url, nats_url=server.url, namespace=run_namespace + "n")
    try:
        leads = await starter.start(LEADS, directory=directory, **FAST)
        customers = await starter.start(CUSTOMERS, directory=directory, **FAST)
        sales = await starter.start(SALES, directory=directory, **FAST)
        await refuse_doomed_opportunities(sales)
        lead_ids = await create_leads(leads, tenant, "Outage")
        conversions = Conversions(leads, tenant, lead_ids, milestones=(OUTAGE_AT, RESTART_BY))

        clients = conversions.run()
        await conversions.reached(OUTAGE_AT)
        in_flight = sum([await count_in_state(leads, s) for s in rules.RUNNING])
        # Killed, not stopped: no graceful shutdown. (Blocking process calls run in a
        # thread: the clients keep converting meanwhile.)
        await asyncio.to_thread(server.kill)
        stopped_at, outage_began = conversions.started, time.monotonic()
        # NATS stays away for OUTAGE_SECONDS, or less if the clients get near the end
        # sooner: conversions must also start after it is back.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conversions.reached(RESTART_BY), OUTAGE_SECONDS)
        # Accepted while NATS was away: their commands are still in the outbox.
        accepted_during = conversions.started - stopped_at
        (unpublished,) = await rows(
            leads, "SELECT count(*) FROM crm_outbox WHERE published_at IS NULL"
        )
        await asyncio.to_thread(server.start)
        restarted = time.monotonic()
        outage, restarted_at = restarted - outage_began, conversions.started

        await clients
        assert conversions.started == N
        # The outage hit running conversions, and the API went on accepting new ones.
        assert in_flight > 0
        assert accepted_during > 0
        assert unpublished[0] >= accepted_during
        # Some started after NATS returned (the outage was in the middle of the run).
        assert restarted_at < N

        await wait_until_all_ended(leads)
        drained = time.monotonic() - restarted
        await check_end_state(leads, customers, sales)
        print(
            f"\nNATS outage of {outage:.1f}s after {stopped_at} conversions started "
            f"({in_flight} running): {accepted_during} accepted meanwhile "
            f"({unpublished[0]} outbox rows waiting); {N - restarted_at} started after it; "
            f"all ended {drained:.1f}s after NATS returned"
        )
    finally:
        await starter.stop_all()
        server.stop()
        shutil.rmtree(server.store_dir, ignore_errors=True)
