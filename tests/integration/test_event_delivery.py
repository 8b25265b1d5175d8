"""Delivery guarantees of the shared event machinery against real NATS and PostgreSQL:
poison messages are dead-lettered, and several relay replicas publish each event once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import nats
import pytest
import sqlalchemy as sa

from conftest import Tenant
from crm.leads.v1 import events_pb2, lead_pb2
from crm_platform.bus import EventBus
from crm_platform.db import Database, platform_metadata
from crm_platform.events import HEADER_DLQ_REASON, Namespace
from crm_platform.migrations import ensure_database
from crm_platform.outbox import OutboxRelay, add_event, outbox
from crm_platform.runtime import Runtime
from crm_platform.testing.harness import ServiceStarter

pytestmark = pytest.mark.integration


async def test_poison_message_goes_to_dead_letter_subject(
    analytics: Runtime, nats_url: str, tenant: Tenant
) -> None:
    ns = Namespace(analytics.settings.nats_namespace)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        dlq = await js.subscribe(
            ns.dlq_subject("crm.leads.lead.created.v1"), stream=ns.stream("CRM_DLQ")
        )
        marker = uuid.uuid4().bytes
        await js.publish(ns.subject("crm.leads.lead.created.v1"), b"\xff not protobuf " + marker)
        while True:
            msg = await dlq.next_msg(timeout=15)
            if marker in msg.data:
                break
        assert "poison" in (msg.headers or {})[HEADER_DLQ_REASON]
    finally:
        await nc.close()


async def test_two_relay_replicas_publish_each_event_once(starter: ServiceStarter) -> None:
    db_url = starter.db_url("relaytest")
    await ensure_database(db_url)
    db = Database(db_url, pool_size=4)
    async with db.engine.begin() as conn:
        await conn.run_sync(platform_metadata.create_all)
    n = 600
    async with db.unit_of_work() as conn:
        for i in range(n):
            await add_event(
                conn,
                event_type="crm.leads.lead.created.v1",
                payload=events_pb2.LeadCreated(lead=lead_pb2.Lead(full_name=f"r{i}")),
                tenant_id=uuid.uuid4(),
                org_path="/r/",
                producer="test",
            )
    bus = EventBus(starter.nats_url, Namespace(starter.namespace + "relay"), name="relay-test")
    await bus.connect()
    await bus.ensure_streams()
    published: Counter[str] = Counter()
    real_publish = bus.publish

    async def spy(event_type: str, data: bytes, headers: dict[str, str], msg_id: str) -> None:
        published[msg_id] += 1
        await real_publish(event_type, data, headers, msg_id)

    bus.publish = spy  # type: ignore[method-assign]
    relays = [OutboxRelay(db, bus, batch_size=50, poll_seconds=0.05) for _ in range(2)]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        for _ in range(200):
            async with db.read() as conn:
                left = (
                    await conn.execute(
                        sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
                    )
                ).scalar_one()
            if left == 0:
                break
            await asyncio.sleep(0.05)
        assert left == 0
        assert len(published) == n
        assert set(published.values()) == {1}  # SKIP LOCKED: no row went to both replicas
        info = await bus.js.stream_info(Namespace(starter.namespace + "relay").stream("CRM_LEADS"))
        assert info.state.messages == n
    finally:
        for r in relays:
            r.stop()
        await asyncio.gather(*tasks)
        await bus.close()
        await db.dispose()
