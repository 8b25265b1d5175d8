"""Delivery guarantees of the shared event machinery against real NATS and PostgreSQL:
poison messages are dead-lettered, and several relay replicas publish each event once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence

import nats
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

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


async def _stage_lead_created(conn: AsyncConnection, name: str) -> None:
    await add_event(
        conn,
        event_type="crm.leads.lead.created.v1",
        payload=events_pb2.LeadCreated(lead=lead_pb2.Lead(full_name=name)),
        tenant_id=uuid.uuid4(),
        org_path="/t/",
        producer="test",
    )


async def test_two_relay_replicas_publish_each_event_once(starter: ServiceStarter) -> None:
    db_url = starter.db_url("relaytest")
    await ensure_database(db_url)
    db = Database(db_url, pool_size=4)
    async with db.engine.begin() as conn:
        await conn.run_sync(platform_metadata.create_all)
    n = 600
    async with db.unit_of_work() as conn:
        for i in range(n):
            await _stage_lead_created(conn, f"r{i}")
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


async def test_relay_under_load_gathers_events_into_bigger_batches(
    starter: ServiceStarter,
) -> None:
    """An event after a quiet spell goes out at once, alone; events committed while the
    relay lingers after a batch go out together, not one batch each."""
    db_url = starter.db_url("relaylinger")
    await ensure_database(db_url)
    db = Database(db_url, pool_size=4)
    async with db.engine.begin() as conn:
        await conn.run_sync(platform_metadata.create_all)
    published: list[str] = []

    class Recorder:
        async def publish(
            self, event_type: str, data: bytes, headers: dict[str, str], msg_id: str
        ) -> None:
            published.append(msg_id)

    relay = OutboxRelay(db, Recorder(), batch_size=500, poll_seconds=5, linger_seconds=1.0)
    sizes: list[int] = []
    real_batch = relay.publish_batch

    async def recording_batch() -> int:
        size = await real_batch()
        if size:
            sizes.append(size)
        return size

    relay.publish_batch = recording_batch  # type: ignore[method-assign]

    async def commit_event(i: int) -> None:
        async with db.unit_of_work() as conn:
            await _stage_lead_created(conn, f"l{i}")

    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.1)  # the relay's first, empty look
        await commit_event(0)
        # Waits on the batch sizes, recorded once a batch has committed (after publishing).
        for _ in range(100):
            if sizes:
                break
            await asyncio.sleep(0.01)
        assert sizes == [1]  # not held back: published well before the poll interval
        for i in range(1, 11):
            await commit_event(i)
            await asyncio.sleep(0.01)
        for _ in range(300):
            if sum(sizes) == 11:
                break
            await asyncio.sleep(0.01)
        assert len(published) == 11
        assert sizes == [1, 10]
    finally:
        relay.stop()
        await task
        await db.dispose()


async def test_batch_consumer_handles_each_event_once_and_isolates_a_failing_one(
    starter: ServiceStarter,
) -> None:
    """A batched consumer (ConsumerSpec.batched) against real NATS: every event's effect
    lands exactly once although some are delivered twice, a poison message and an event
    whose handling fails are dead-lettered alone, and the rest are handled in batches."""
    from crm_platform.consumers import ConsumerRunner, ConsumerSpec
    from crm_platform.events import ReceivedEvent

    db_url = starter.db_url("batchtest")
    await ensure_database(db_url)
    db = Database(db_url, pool_size=4)
    seen = sa.Table("seen_events", sa.MetaData(), sa.Column("name", sa.Text, primary_key=True))
    async with db.engine.begin() as conn:
        await conn.run_sync(platform_metadata.create_all)
        await conn.run_sync(seen.metadata.create_all)
    n = 300
    async with db.unit_of_work() as conn:
        for i in range(n):
            await add_event(
                conn,
                event_type="crm.leads.lead.created.v1",
                payload=events_pb2.LeadCreated(
                    lead=lead_pb2.Lead(full_name="fail" if i == 150 else f"b{i}")
                ),
                tenant_id=uuid.uuid4(),
                org_path="/b/",
                producer="test",
            )
    ns = Namespace(starter.namespace + "batch")
    bus = EventBus(starter.nats_url, ns, name="batch-test")
    await bus.connect()
    await bus.ensure_streams()
    relay = OutboxRelay(db, bus, batch_size=100, poll_seconds=0.05)
    batches: list[int] = []

    async def handler(conn: AsyncConnection, events: Sequence[ReceivedEvent]) -> None:
        batches.append(len(events))
        for event in events:
            assert isinstance(event.payload, events_pb2.LeadCreated)
            if event.payload.lead.full_name == "fail":
                raise RuntimeError("this event cannot be handled")
        # A primary key: an event handled twice would fail the batch, not pass silently.
        names = [e.payload.lead.full_name for e in events]  # type: ignore[attr-defined]
        await conn.execute(seen.insert(), [{"name": name} for name in names])

    runner = ConsumerRunner(
        ConsumerSpec.batched(
            name="batch-test", event_type="crm.leads.lead.created.v1", handler=handler
        ),
        db=db,
        bus=bus,
        batch_size=50,
        max_deliver=2,
        ack_wait=5,
        service="test",
    )
    await runner.subscribe()
    dlq = await bus.js.subscribe(
        ns.dlq_subject("crm.leads.lead.created.v1"), stream=ns.stream("CRM_DLQ")
    )
    task = asyncio.create_task(runner.run())
    try:
        relay_task = asyncio.create_task(relay.run())
        # Ten events delivered a second time (a new message id, as after a relay crash
        # between publish and marking the row), and one message that is not an event.
        async with db.read() as conn:
            again = (await conn.execute(sa.select(outbox).limit(10))).all()
        for row in again:
            await bus.publish(
                "crm.leads.lead.created.v1", row.data, dict(row.headers), msg_id=f"again-{row.id}"
            )
        await bus.js.publish(ns.subject("crm.leads.lead.created.v1"), b"\xff not an event")
        reasons = []
        for _ in range(2):
            msg = await dlq.next_msg(timeout=30)
            reasons.append((msg.headers or {})[HEADER_DLQ_REASON])
        assert any(r.startswith("poison") for r in reasons), reasons
        assert any("cannot be handled" in r for r in reasons), reasons
        for _ in range(100):
            async with db.read() as conn:
                count = (await conn.execute(sa.select(sa.func.count()).select_from(seen))).scalar()
            if count == n - 1:
                break
            await asyncio.sleep(0.1)
        assert count == n - 1
        assert max(batches) > 1  # handled in batches, not one by one
        relay.stop()
        await relay_task
    finally:
        runner.stop()
        await task
        await bus.close()
        await db.dispose()


async def test_record_new_returns_only_events_not_seen_before(starter: ServiceStarter) -> None:
    from crm.common.v1 import event_pb2
    from crm_platform.consumers import record_new
    from crm_platform.events import ReceivedEvent

    db_url = starter.db_url("inboxtest")
    await ensure_database(db_url)
    db = Database(db_url, pool_size=2)
    async with db.engine.begin() as conn:
        await conn.run_sync(platform_metadata.create_all)

    def event(n: int) -> ReceivedEvent:
        return ReceivedEvent(event_pb2.Event(id=str(uuid.UUID(int=n))), events_pb2.LeadCreated())

    try:
        async with db.unit_of_work() as conn:
            first = await record_new(conn, "c", [event(1), event(2), event(1)])
        async with db.unit_of_work() as conn:
            second = await record_new(conn, "c", [event(3), event(2), event(4), event(3)])
            other = await record_new(conn, "d", [event(1)])  # inboxes are per consumer
        assert [e.id.int for e in first] == [1, 2]
        assert [e.id.int for e in second] == [3, 4]
        assert [e.id.int for e in other] == [1]
    finally:
        await db.dispose()
