"""Shared by the conversion saga's fault tests (test_conversion_faults: services crash;
test_conversion_nats_outage: NATS goes away): the load they run (leads, concurrent clients
converting them, every ``DOOMED_EVERY``-th one's sales step refused so compensation runs)
and the end state every fault must leave."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import sqlalchemy as sa

from conftest import Tenant, http_client
from crm.leads.v1 import lead_pb2
from crm_leads.conversion import rules
from crm_platform.runtime import Runtime
from crm_platform.testing.harness import eventually

N = 1000
COMPANIES = 200  # five leads per company: matching runs concurrently with the faults
DOOMED_EVERY = 10  # every 10th conversion's sales step is refused -> compensation
CLIENTS = 16
# Redelivery of what a consumer had fetched but not acked (crash, lost ack) within seconds.
FAST: dict[str, Any] = {"consumer_ack_wait_seconds": 2.0, "conversion_deadline_poll_seconds": 1.0}


async def rows(rt: Runtime, sql: str, **params: Any) -> list[Any]:
    async with rt.db.read() as conn:
        return list((await conn.execute(sa.text(sql), params)).all())


async def count_in_state(leads: Runtime, state: int) -> int:
    (row,) = await rows(leads, "SELECT count(*) FROM lead_conversions WHERE state = :s", s=state)
    return int(row[0])


async def refuse_doomed_opportunities(sales: Runtime) -> None:
    """The sales step of a conversion whose opportunity title starts with "doomed" fails
    (OPPORTUNITY_REJECTED), so the saga compensates the customers step."""
    async with sales.db.unit_of_work() as conn:
        await conn.execute(
            sa.text(
                "ALTER TABLE opportunities ADD CONSTRAINT test_doomed "
                "CHECK (title NOT LIKE 'doomed%') NOT VALID"
            )
        )


async def create_leads(leads: Runtime, tenant: Tenant, tag: str) -> list[str]:
    """``N`` new leads of ``COMPANIES`` companies, in one batch."""
    run = uuid.uuid4().hex[:6]
    body = [
        {
            "full_name": f"Buyer {i}",
            "phone": f"+86139{(uuid.uuid4().int % 10**8):08d}",
            "company": f"{tag} {run} {i % COMPANIES} 有限公司",
            "city": "Ningbo",
        }
        for i in range(N)
    ]
    async with http_client(leads) as c:
        c.timeout = 60
        r = await c.post(
            "/v1/leads:batchCreate", json={"leads": body}, headers=tenant.auth("d1-rep")
        )
    assert r.status_code == 200, r.text
    lead_ids: list[str] = []
    for result in r.json()["results"]:
        assert result["outcome"] == "CREATED", result
        lead_ids.append(result["lead"]["id"])
    return lead_ids


class Conversions:
    """Converts every lead once from ``CLIENTS`` concurrent clients; every request must be
    accepted (200/202). ``reached(k)`` returns once ``k`` conversions have been started, the
    moment it happens for the ``milestones`` given here (registered before any starts)."""

    def __init__(
        self, leads: Runtime, tenant: Tenant, lead_ids: list[str], *, milestones: tuple[int, ...]
    ) -> None:
        self._leads = leads
        self._tenant = tenant
        self._lead_ids = lead_ids
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(lead_ids)):
            self._queue.put_nowait(i)
        self._milestones = {k: asyncio.Event() for k in milestones}
        self._clients: asyncio.Future[list[None]] | None = None
        self.started = 0

    def run(self) -> asyncio.Future[list[None]]:
        self._clients = asyncio.gather(*(self._client() for _ in range(CLIENTS)))
        return self._clients

    async def reached(self, k: int) -> None:
        """Once ``k`` conversions have started; raises what stopped the clients before."""
        assert self._clients is not None, "run() first"
        event = self._milestones.setdefault(k, asyncio.Event())
        if self.started >= k:
            event.set()
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({waiter, self._clients}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not event.is_set():
            await self._clients  # raises a client's failure
            raise AssertionError(f"the clients ended after {self.started} conversions, not {k}")

    async def _client(self) -> None:
        async with http_client(self._leads) as c:
            c.timeout = 30
            while not self._queue.empty():
                i = self._queue.get_nowait()
                title = f"doomed {i}" if i % DOOMED_EVERY == 0 else f"Deal {i}"
                r = await c.post(
                    f"/v1/leads/{self._lead_ids[i]}:convert",
                    json={"opportunity": {"title": title}},
                    headers=self._tenant.auth("d1-rep"),
                )
                assert r.status_code in (200, 202), r.text
                assert r.headers["Crm-Conversion-Started"] == "true", r.text
                self.started += 1
                if self.started in self._milestones:
                    self._milestones[self.started].set()


async def wait_until_all_ended(leads: Runtime, *, within: float = 120) -> float:
    """Wait (bounded) until no conversion is running; returns the seconds it took."""
    began = time.monotonic()

    async def all_ended() -> None:
        (running,) = await rows(
            leads,
            "SELECT count(*) FROM lead_conversions WHERE state NOT IN (:completed, :failed)",
            completed=rules.COMPLETED,
            failed=rules.FAILED,
        )
        assert running[0] == 0, f"{running[0]} conversions still running"

    await eventually(all_ended, within=within, interval=0.5)
    return time.monotonic() - began


async def check_end_state(leads: Runtime, customers: Runtime, sales: Runtime) -> None:
    """Each of the ``N`` leads converted exactly once: the doomed ones failed at the sales
    step and were fully compensated, the others completed; no duplicate or orphaned
    customer, contact or opportunity."""
    conversions = await rows(
        leads,
        "SELECT id, lead_id, state, prev_status, customer_id, contact_id, opportunity_ids, "
        "failure_step, failure_reason, customers_undone FROM lead_conversions",
    )
    # Exactly one conversion per lead, each ended once, as expected.
    assert len(conversions) == N
    assert len({c.lead_id for c in conversions}) == N
    assert {c.state for c in conversions} <= set(rules.ENDED)
    completed = [c for c in conversions if c.state == rules.COMPLETED]
    failed = [c for c in conversions if c.state == rules.FAILED]
    assert len(failed) == N // DOOMED_EVERY
    assert {(c.failure_step, c.failure_reason) for c in failed} == {
        (rules.STEP_OPPORTUNITY, "OPPORTUNITY_REJECTED")
    }
    assert all(c.customers_undone for c in failed)

    # Converted leads are CONVERTED and point at their conversion; failed ones are back in
    # their previous status.
    lead_rows = {r.id: r for r in await rows(leads, "SELECT id, status, conversion_id FROM leads")}
    assert len(lead_rows) == N
    for c in completed:
        lead = lead_rows[c.lead_id]
        assert (lead.status, lead.conversion_id) == (lead_pb2.LEAD_STATUS_CONVERTED, c.id)
    for c in failed:
        assert lead_rows[c.lead_id].status == c.prev_status != lead_pb2.LEAD_STATUS_CONVERTING
    assert Counter(r.status for r in lead_rows.values()) == {
        lead_pb2.LEAD_STATUS_CONVERTED: len(completed),
        lead_pb2.LEAD_STATUS_NEW: len(failed),
    }

    # Customers: one per company, exactly those completed conversions reference; no
    # orphan left by a compensated conversion, no duplicate made by a redelivery.
    customer_rows = await rows(customers, "SELECT id, match_name, city FROM customers")
    assert {r.id for r in customer_rows} == {c.customer_id for c in completed}
    assert len(customer_rows) == len({(r.match_name, r.city) for r in customer_rows})
    contact_rows = await rows(customers, "SELECT id, customer_id FROM contacts")
    contacts = {r.id: r.customer_id for r in contact_rows}
    assert len(contacts) == len(completed)
    assert contacts == {c.contact_id: c.customer_id for c in completed}
    # Every step record on the customers side ended; the compensated ones are undone.
    records = dict(await rows(customers, "SELECT conversion_id, state FROM conversion_records"))
    assert records == {
        **{c.id: "prepared" for c in completed},
        **{c.id: "undone" for c in failed},
    }

    # Opportunities: one per completed conversion, for its customer and contact, none for
    # a failed one.
    opportunities = await rows(
        sales, "SELECT id, conversion_id, customer_id, contact_id FROM opportunities"
    )
    assert len(opportunities) == len(completed)
    by_conversion = {c.id: c for c in completed}
    assert {o.conversion_id for o in opportunities} == set(by_conversion)
    for o in opportunities:
        c = by_conversion[o.conversion_id]
        assert (o.id, o.customer_id, o.contact_id) == (
            c.opportunity_ids[0],
            c.customer_id,
            c.contact_id,
        )
    (pending,) = await rows(
        sales, "SELECT count(*) FROM conversion_records WHERE state = 'pending'"
    )
    assert pending[0] == 0
