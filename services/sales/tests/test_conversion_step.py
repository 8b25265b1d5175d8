"""The sales step of the lead conversion saga: commands published on NATS as the leads
service would, replies read back from the sales stream, rows checked in the sales database
(real PostgreSQL and NATS)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
import httpx
import nats
import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from conftest import Tenant, http_client
from crm.common.v1 import event_pb2, money_pb2
from crm.sales.v1 import (
    commands_pb2,
    events_pb2,
    opportunity_pb2,
    sales_service_pb2,
    sales_service_pb2_grpc,
)
from crm_platform.events import CONTENT_TYPE, HEADER_EVENT_TYPE, Namespace, build_event, parse_event
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event
from crm_sales.conversion.models import conversion_records
from crm_sales.opportunity.models import opportunities

CREATE = "crm.cmd.sales.create_conversion_opportunities.v1"
UNDO = "crm.cmd.sales.undo_conversion.v1"
COMPLETED = "crm.sales.conversion.completed.v1"
FAILED = "crm.sales.conversion.failed.v1"
UNDONE = "crm.sales.conversion.undone.v1"
CREATED = "crm.sales.opportunity.created.v1"
DELETED = "crm.sales.opportunity.deleted.v1"

P = TypeVar("P", bound=Message)


@pytest.fixture
async def client(sales: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(sales) as c:
        yield c


def spec(
    title: str = "SUV for the family", **fields: Any
) -> commands_pb2.ConversionOpportunitySpec:
    values: dict[str, Any] = {
        "title": title,
        "amount": money_pb2.Money(currency_code="CNY", units=250_000),
        **fields,
    }
    return commands_pb2.ConversionOpportunitySpec(**values)


def create_command(
    tenant: Tenant, *specs: commands_pb2.ConversionOpportunitySpec, conversion_id: str = ""
) -> commands_pb2.CreateConversionOpportunities:
    return commands_pb2.CreateConversionOpportunities(
        conversion_id=conversion_id or str(uuid.uuid4()),
        lead_id=str(uuid.uuid4()),
        customer_id=str(uuid.uuid4()),
        contact_id=str(uuid.uuid4()),
        owner_org_id=tenant.units["d1"]["id"],
        owner_org_path=tenant.units["d1"]["path"],
        opportunities=list(specs),
    )


async def send(
    sales: Runtime, tenant: Tenant, event_type: str, command: Message
) -> event_pb2.Event:
    """Publish a command the way the leads service's outbox relay does (a new event each
    call, so a re-sent command is not an exact redelivery)."""
    envelope = build_event(
        event_type=event_type,
        payload=command,
        tenant_id=tenant.id,
        org_path=tenant.units["d1"]["path"],
        producer="leads",
        correlation_id=str(uuid.uuid4()),
    )
    headers = {HEADER_EVENT_TYPE: event_type, "Content-Type": CONTENT_TYPE}
    await sales.bus.publish(event_type, envelope.SerializeToString(), headers, envelope.id)
    return envelope


async def reply_to(
    sales: Runtime,
    command: event_pb2.Event,
    event_type: str,
    payload_type: type[P],
    *,
    within: float = 20.0,
) -> tuple[event_pb2.Event, P]:
    """The ``event_type`` event caused by the ``command`` event."""
    (found,) = await collect(
        sales, event_type, payload_type, lambda env, _: env.causation_id == command.id, 1, within
    )
    return found


async def collect(
    sales: Runtime,
    event_type: str,
    payload_type: type[P],
    match: Callable[[event_pb2.Event, P], bool],
    count: int,
    within: float = 20.0,
) -> list[tuple[event_pb2.Event, P]]:
    """The first ``count`` ``event_type`` events of the run matching on envelope and
    payload (crm_platform.testing.events.wait_for_event matches on the payload only)."""
    ns = Namespace(sales.settings.nats_namespace)
    nc = await nats.connect(sales.settings.nats_url)
    found: list[tuple[event_pb2.Event, P]] = []
    try:
        sub = await nc.jetstream().pull_subscribe(
            ns.subject(event_type),
            stream=ns.stream_for(event_type),
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30,
            ),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline and len(found) < count:
            try:
                msgs = await sub.fetch(100, timeout=1)
            except NatsTimeoutError:
                continue
            for msg in msgs:
                event = parse_event(msg.data)
                assert isinstance(event.payload, payload_type)
                if match(event.envelope, event.payload):
                    found.append((event.envelope, event.payload))
    finally:
        await nc.close()
    assert len(found) >= count, f"{len(found)} of {count} {event_type} events within {within}s"
    return found[:count]


async def rows_of(sales: Runtime, conversion_id: str) -> list[Any]:
    async with sales.db.read() as conn:
        result = await conn.execute(
            sa.select(opportunities)
            .where(opportunities.c.conversion_id == uuid.UUID(conversion_id))
            .order_by(opportunities.c.id)
        )
        return list(result.all())


async def test_two_specs_open_two_opportunities(
    sales: Runtime, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    intent_a, intent_b = str(uuid.uuid4()), str(uuid.uuid4())
    command = create_command(
        tenant,
        spec("SUV", product="Model X", campaign="expo-2030", lead_intent_id=intent_a),
        spec(
            "  Ｓｅｄａｎ ",
            product="Model S",
            campaign="web",
            lead_intent_id=intent_b,
            close_date="2030-06-30",
        ),
    )
    sent = await send(sales, tenant, CREATE, command)
    envelope, done = await reply_to(sales, sent, COMPLETED, events_pb2.ConversionCompleted)
    assert done.conversion_id == command.conversion_id
    assert done.lead_id == command.lead_id
    assert len(done.opportunity_ids) == 2
    assert envelope.producer == "sales"
    assert envelope.tenant_id == tenant.id
    assert envelope.correlation_id == sent.correlation_id
    assert envelope.org_path == tenant.units["d1"]["path"]

    rows = {str(r.id): r for r in await rows_of(sales, command.conversion_id)}
    assert set(rows) == set(done.opportunity_ids)
    first, second = (rows[i] for i in done.opportunity_ids)  # in spec order
    assert (first.title, first.product, first.campaign) == ("SUV", "Model X", "expo-2030")
    assert (second.title, second.product, second.campaign) == ("Sedan", "Model S", "web")
    assert str(first.lead_intent_id) == intent_a
    assert str(second.lead_intent_id) == intent_b
    assert first.owner_org_path == tenant.units["d1"]["path"]
    assert str(first.customer_id) == command.customer_id
    assert str(first.lead_id) == command.lead_id

    r = await client.get(
        f"/v1/opportunities/{done.opportunity_ids[1]}", headers=tenant.auth("d1-rep")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["product"] == "Model S"
    assert body["campaign"] == "web"
    assert body["lead_intent_id"] == intent_b
    assert body["conversion_id"] == command.conversion_id
    assert body["contact_id"] == command.contact_id
    assert body["stage"] == "OPPORTUNITY_STAGE_QUALIFICATION"
    assert body["close_date"] == "2030-06-30"

    created = await collect(
        sales,
        CREATED,
        events_pb2.OpportunityCreated,
        lambda _, p: p.opportunity.conversion_id == command.conversion_id,
        2,
    )
    assert {p.opportunity.id for _, p in created} == set(done.opportunity_ids)
    for env, p in created:
        assert env.causation_id == sent.id
        assert env.correlation_id == sent.correlation_id
        assert p.opportunity.product in ("Model X", "Model S")


async def test_resent_command_answers_the_same_ids(sales: Runtime, tenant: Tenant) -> None:
    command = create_command(tenant, spec("A"), spec("B"))
    first = await send(sales, tenant, CREATE, command)
    _, done = await reply_to(sales, first, COMPLETED, events_pb2.ConversionCompleted)
    again = await send(sales, tenant, CREATE, command)  # same conversion id, new event
    _, repeated = await reply_to(sales, again, COMPLETED, events_pb2.ConversionCompleted)
    assert list(repeated.opportunity_ids) == list(done.opportunity_ids)
    assert len(await rows_of(sales, command.conversion_id)) == 2


async def test_invalid_spec_fails_the_whole_step(sales: Runtime, tenant: Tenant) -> None:
    command = create_command(tenant, spec("Fine"), spec("Bad date", close_date="2030-02-30"))
    sent = await send(sales, tenant, CREATE, command)
    envelope, failed = await reply_to(sales, sent, FAILED, events_pb2.ConversionFailed)
    assert failed.conversion_id == command.conversion_id
    assert failed.reason == "OPPORTUNITY_INVALID"
    assert "opportunities.1.close_date" in failed.message
    assert "opportunities.0" not in failed.message
    assert envelope.causation_id == sent.id
    assert await rows_of(sales, command.conversion_id) == []
    # Answered the same way when re-sent; still nothing stored.
    again = await send(sales, tenant, CREATE, command)
    _, repeated = await reply_to(sales, again, FAILED, events_pb2.ConversionFailed)
    assert (repeated.reason, repeated.message) == (failed.reason, failed.message)
    assert await rows_of(sales, command.conversion_id) == []


async def test_bad_references_are_named_once(sales: Runtime, tenant: Tenant) -> None:
    command = create_command(
        tenant, spec(""), spec("x", amount=money_pb2.Money(currency_code="cny", units=1))
    )
    command.customer_id = "not-a-uuid"
    sent = await send(sales, tenant, CREATE, command)
    _, failed = await reply_to(sales, sent, FAILED, events_pb2.ConversionFailed)
    assert failed.reason == "OPPORTUNITY_INVALID"
    assert failed.message.count("customer_id") == 1
    assert "opportunities.0.title" in failed.message
    assert "opportunities.1.amount.currency_code" in failed.message


async def test_database_constraint_rejects_the_step(sales: Runtime, tenant: Tenant) -> None:
    async with sales.db.unit_of_work() as conn:
        await conn.execute(
            sa.text(
                "ALTER TABLE opportunities ADD CONSTRAINT test_no_doomed "
                "CHECK (title <> 'doomed') NOT VALID"
            )
        )
    try:
        command = create_command(tenant, spec("Fine"), spec("doomed"))
        sent = await send(sales, tenant, CREATE, command)
        _, failed = await reply_to(sales, sent, FAILED, events_pb2.ConversionFailed)
        assert failed.reason == "OPPORTUNITY_REJECTED"
        assert "test_no_doomed" in failed.message
        assert await rows_of(sales, command.conversion_id) == []
        # The record was claimed completed with the rows' ids; the refusal rewrote it.
        async with sales.db.read() as conn:
            record = (
                await conn.execute(
                    sa.select(conversion_records).where(
                        conversion_records.c.conversion_id == uuid.UUID(command.conversion_id)
                    )
                )
            ).one()
        assert (record.state, record.opportunity_ids) == ("failed", [])
        again = await send(sales, tenant, CREATE, command)
        _, repeated = await reply_to(sales, again, FAILED, events_pb2.ConversionFailed)
        assert repeated.reason == "OPPORTUNITY_REJECTED"
    finally:
        async with sales.db.unit_of_work() as conn:
            await conn.execute(
                sa.text("ALTER TABLE opportunities DROP CONSTRAINT IF EXISTS test_no_doomed")
            )


async def test_undo_removes_only_the_conversions_opportunities(
    sales: Runtime, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    r = await client.post(
        "/v1/opportunities",
        json={"title": "Unrelated", "amount": {"currency_code": "CNY", "amount": "10"}},
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 201, r.text
    unrelated = r.json()["id"]
    other = create_command(tenant, spec("Other conversion"))
    _, other_done = await reply_to(
        sales,
        await send(sales, tenant, CREATE, other),
        COMPLETED,
        events_pb2.ConversionCompleted,
    )
    command = create_command(tenant, spec("One"), spec("Two"))
    _, done = await reply_to(
        sales,
        await send(sales, tenant, CREATE, command),
        COMPLETED,
        events_pb2.ConversionCompleted,
    )

    undo = commands_pb2.UndoConversion(
        conversion_id=command.conversion_id, lead_id=command.lead_id, reason="customer failed"
    )
    sent = await send(sales, tenant, UNDO, undo)
    envelope, undone = await reply_to(sales, sent, UNDONE, events_pb2.ConversionUndone)
    assert undone.conversion_id == command.conversion_id
    assert undone.lead_id == command.lead_id
    assert undone.opportunities_removed == 2
    assert envelope.correlation_id == sent.correlation_id
    assert await rows_of(sales, command.conversion_id) == []
    deleted = await collect(
        sales,
        DELETED,
        events_pb2.OpportunityDeleted,
        lambda env, _: env.causation_id == sent.id,
        2,
    )
    assert [p.opportunity_id for _, p in deleted] == list(done.opportunity_ids)
    assert {p.reason for _, p in deleted} == {"customer failed"}
    for opp_id in done.opportunity_ids:
        r = await client.get(f"/v1/opportunities/{opp_id}", headers=tenant.auth("admin"))
        assert r.status_code == 404
    r = await client.get(f"/v1/opportunities/{unrelated}", headers=tenant.auth("admin"))
    assert r.status_code == 200
    assert len(await rows_of(sales, other.conversion_id)) == 1
    assert [str(r.id) for r in await rows_of(sales, other.conversion_id)] == list(
        other_done.opportunity_ids
    )

    # A repeated undo answers the same; a create re-sent after it is refused.
    again = await send(sales, tenant, UNDO, undo)
    _, repeated = await reply_to(sales, again, UNDONE, events_pb2.ConversionUndone)
    assert repeated.opportunities_removed == 2
    late = await send(sales, tenant, CREATE, command)
    _, refused = await reply_to(sales, late, FAILED, events_pb2.ConversionFailed)
    assert refused.reason == "CONVERSION_UNDONE"
    assert await rows_of(sales, command.conversion_id) == []


async def test_undo_before_create_leaves_a_tombstone(sales: Runtime, tenant: Tenant) -> None:
    command = create_command(tenant, spec("Too late"))
    undo = commands_pb2.UndoConversion(
        conversion_id=command.conversion_id, lead_id=command.lead_id, reason="timeout"
    )
    sent = await send(sales, tenant, UNDO, undo)
    _, undone = await reply_to(sales, sent, UNDONE, events_pb2.ConversionUndone)
    assert undone.opportunities_removed == 0
    late = await send(sales, tenant, CREATE, command)
    _, refused = await reply_to(sales, late, FAILED, events_pb2.ConversionFailed)
    assert refused.reason == "CONVERSION_UNDONE"
    assert refused.conversion_id == command.conversion_id
    assert await rows_of(sales, command.conversion_id) == []


async def test_rest_create_with_product_and_campaign(
    sales: Runtime, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    body = {
        "title": "Upgrade",
        "amount": {"currency_code": "CNY", "amount": "99.00"},
        "product": "  Ｍｏｄｅｌ   Y ",
        "campaign": "spring-sale",
    }
    r = await client.post("/v1/opportunities", json=body, headers=tenant.auth("d1-rep"))
    assert r.status_code == 201, r.text
    opp = r.json()
    assert (opp["product"], opp["campaign"]) == ("Model Y", "spring-sale")
    assert (opp["lead_intent_id"], opp["conversion_id"]) == ("", "")
    r = await client.get(f"/v1/opportunities/{opp['id']}", headers=tenant.auth("d1-rep"))
    assert r.json() == opp
    _, event = await wait_for_event(
        sales.settings.nats_url,
        sales.settings.nats_namespace,
        CREATED,
        events_pb2.OpportunityCreated,
        lambda p: p.opportunity.id == opp["id"],
    )
    assert event.opportunity.product == "Model Y"

    for field in ("product", "campaign"):
        r = await client.post(
            "/v1/opportunities",
            json={**body, field: "p" * 201},
            headers=tenant.auth("d1-rep"),
        )
        assert r.status_code == 422, r.text
        assert field in {v["field"] for v in r.json()["violations"]}


async def test_grpc_create_with_product_and_campaign(sales: Runtime, tenant: Tenant) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sales.grpc_port}") as channel:
        stub = sales_service_pb2_grpc.OpportunityServiceStub(channel)
        md = (("authorization", f"Bearer {tenant.tokens['d1-rep']}"),)
        amount = money_pb2.Money(currency_code="CNY", units=5)
        ok = await stub.CreateOpportunity(
            sales_service_pb2.CreateOpportunityRequest(
                opportunity=opportunity_pb2.Opportunity(
                    title="G", amount=amount, product=" Model 3 ", campaign="tv"
                )
            ),
            metadata=md,
        )
        assert (ok.product, ok.campaign, ok.conversion_id) == ("Model 3", "tv", "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateOpportunity(
                sales_service_pb2.CreateOpportunityRequest(
                    opportunity=opportunity_pb2.Opportunity(
                        title="G", amount=amount, campaign="c" * 201
                    )
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "campaign" in (err.value.details() or "")
