"""The conversion saga's forward replies handled a consumer fetch at a time
(``ConsumerSpec.batched``): several conversions, a repeated reply and a reply naming no
conversion in one fetch move each conversion once, stage one command or event each, and a
late reply changes nothing. Against the real leads database; the whole test runs in one
transaction that is rolled back, so no command it stages is ever published."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from conftest import Tenant, http_client
from crm.customers.v1 import events_pb2 as customers_events
from crm.leads.v1 import lead_pb2
from crm.sales.v1 import events_pb2 as sales_events
from crm_leads.conversion import rules, service
from crm_leads.conversion.models import lead_conversions
from crm_leads.lead.models import leads as leads_table
from crm_platform.auth import Principal
from crm_platform.events import ReceivedEvent, build_event, parse_event
from crm_platform.outbox import outbox
from crm_platform.runtime import Runtime

PREPARED = "crm.customers.conversion.prepared.v1"
COMPLETED = "crm.sales.conversion.completed.v1"


def _reply(tenant: Tenant, event_type: str, payload: Message) -> ReceivedEvent:
    envelope = build_event(
        event_type=event_type,
        payload=payload,
        tenant_id=tenant.id,
        org_path=tenant.units["d1"]["path"],
        producer="test",
    )
    return parse_event(envelope.SerializeToString())


async def _capture(leads: Runtime, tenant: Tenant, n: int) -> list[uuid.UUID]:
    ids = []
    async with http_client(leads) as c:
        for i in range(n):
            r = await c.post(
                "/v1/leads",
                json={
                    "full_name": f"Reply Test {i}",
                    "phone": f"+86137{uuid.uuid4().int % 10**8:08d}",
                    "company": f"Replies {uuid.uuid4().hex[:6]} 有限公司",
                    "city": "Hangzhou",
                },
                headers=tenant.auth("d1-rep"),
            )
            assert r.status_code == 201, r.text
            ids.append(uuid.UUID(r.json()["id"]))
    return ids


async def _staged(conn: AsyncConnection, event_type: str, cids: list[uuid.UUID]) -> Counter[str]:
    """Events of ``event_type`` about these conversions staged (in this transaction, which
    the relay cannot see), counted by conversion."""
    rows = await conn.execute(
        sa.select(outbox.c.data).where(
            outbox.c.event_type == event_type, outbox.c.published_at.is_(None)
        )
    )
    mine = {str(cid) for cid in cids}
    correlations = (parse_event(data).envelope.correlation_id for (data,) in rows)
    return Counter(c for c in correlations if c in mine)


async def _conversion(conn: AsyncConnection, cid: uuid.UUID) -> Any:
    return (
        await conn.execute(sa.select(lead_conversions).where(lead_conversions.c.id == cid))
    ).one()


async def test_a_fetch_of_replies_moves_each_conversion_once(
    leads: Runtime, tenant: Tenant
) -> None:
    lead_ids = await _capture(leads, tenant, 2)
    d1 = tenant.units["d1"]
    rep = Principal(
        tenant_id=uuid.UUID(tenant.id),
        subject="d1-rep",
        org_unit_id=uuid.UUID(d1["id"]),
        org_path=d1["path"],
        roles=frozenset({"rep"}),
    )
    async with leads.db.engine.connect() as conn:
        tx = await conn.begin()
        try:
            started = [
                (
                    await service.start(
                        conn=conn,
                        principal=rep,
                        lead_id=lead_id,
                        options=rules.Options(),
                        step_timeout=timedelta(minutes=5),
                    )
                )[0]
                for lead_id in lead_ids
            ]
            cids = [row.id for row in started]
            customer_ids = [uuid.uuid4(), uuid.uuid4()]

            def prepared(i: int) -> ReceivedEvent:
                return _reply(
                    tenant,
                    PREPARED,
                    customers_events.ConversionPrepared(
                        conversion_id=str(cids[i]),
                        lead_id=str(lead_ids[i]),
                        customer_id=str(customer_ids[i]),
                        contact_id=str(uuid.uuid4()) if i == 0 else "",
                        customer_created=i == 0,
                        contact_created=i == 0,
                    ),
                )

            nowhere = _reply(
                tenant,
                PREPARED,
                customers_events.ConversionPrepared(conversion_id="not-a-uuid"),
            )
            # A repeated reply (another event id) and one naming no conversion in the fetch.
            await service.on_customer_prepared(
                conn, [prepared(0), prepared(0), nowhere, prepared(1)]
            )
            for i, cid in enumerate(cids):
                row = await _conversion(conn, cid)
                assert row.state == rules.OPPORTUNITY_PENDING
                assert row.customer_id == customer_ids[i]
                assert (row.contact_id is not None) == (i == 0)
                assert row.customer_created == (i == 0)
            commands = await _staged(conn, service.CREATE_OPPORTUNITIES, cids)
            assert commands == Counter({str(cid): 1 for cid in cids})

            # A late reply changes nothing and stages nothing.
            await service.on_customer_prepared(conn, [prepared(1)])
            assert await _staged(conn, service.CREATE_OPPORTUNITIES, cids) == commands

            opportunity_ids = [[str(uuid.uuid4()), str(uuid.uuid4())], [str(uuid.uuid4())]]

            def completed(i: int) -> ReceivedEvent:
                return _reply(
                    tenant,
                    COMPLETED,
                    sales_events.ConversionCompleted(
                        conversion_id=str(cids[i]),
                        lead_id=str(lead_ids[i]),
                        opportunity_ids=opportunity_ids[i],
                    ),
                )

            versions = {
                lead_id: version
                for lead_id, version in await conn.execute(
                    sa.select(leads_table.c.id, leads_table.c.version).where(
                        leads_table.c.id.in_(lead_ids)
                    )
                )
            }
            await service.on_sales_completed(conn, [completed(1), completed(0), completed(1)])
            for i, cid in enumerate(cids):
                row = await _conversion(conn, cid)
                assert row.state == rules.COMPLETED
                assert [str(o) for o in row.opportunity_ids] == opportunity_ids[i]
            after = (
                await conn.execute(
                    sa.select(leads_table.c.id, leads_table.c.status, leads_table.c.version).where(
                        leads_table.c.id.in_(lead_ids)
                    )
                )
            ).all()
            for lead_id, status, version in after:
                assert status == lead_pb2.LEAD_STATUS_CONVERTED
                assert version == versions[lead_id] + 1
            converted = await _staged(conn, "crm.leads.lead.converted.v1", cids)
            assert converted == Counter({str(cid): 1 for cid in cids})

            await service.on_sales_completed(conn, [completed(0)])
            assert await _staged(conn, "crm.leads.lead.converted.v1", cids) == converted
        finally:
            await tx.rollback()
