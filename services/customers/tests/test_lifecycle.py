"""Customer lifecycle stages: the pure rules, the event consumers over real NATS JetStream
and PostgreSQL (opportunities from sales, tickets from service-desk), the inactivity job,
the stage system tags, visibility of the lifecycle endpoint and segments on the stage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from conftest import Tenant, http_client
from crm.customers.v1 import customer_pb2
from crm.customers.v1 import events_pb2 as ev
from crm.leads.v1 import events_pb2 as leads_events
from crm.sales.v1 import events_pb2 as sales_events
from crm.sales.v1 import opportunity_pb2
from crm_customers.customer.models import customers as customers_table
from crm_customers.lifecycle import rules, service
from crm_customers.lifecycle.models import customer_lifecycle, lifecycle_changes
from crm_customers.settings import Settings
from crm_platform import migrations
from crm_platform.db import Database
from crm_platform.errors import InvalidArgument
from crm_platform.events import build_event, parse_event
from crm_platform.outbox import outbox
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event
from crm_platform.testing.harness import ServiceStarter

CHANGED = "crm.customers.customer.lifecycle_changed.v1"
NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
T = rules.Thresholds(at_risk_days=90, lost_days=365)


# -- pure rules -----------------------------------------------------------------------------


def _stage(won: int, idle_days: float | None) -> str:
    last = None if idle_days is None else NOW - timedelta(days=idle_days)
    return rules.stage(rules.Facts(won, last), now=NOW, thresholds=T)


def test_stage_follows_the_won_order_count() -> None:
    assert _stage(0, None) == rules.PROSPECT
    assert _stage(0, 0) == rules.PROSPECT
    assert _stage(1, 0) == rules.CUSTOMER
    assert _stage(2, 0) == rules.REPEAT
    assert _stage(7, 1) == rules.REPEAT


def test_inactivity_moves_ordered_customers_to_at_risk_then_lost() -> None:
    assert _stage(1, 89.9) == rules.CUSTOMER
    assert _stage(1, 90) == rules.AT_RISK
    assert _stage(2, 90) == rules.AT_RISK
    assert _stage(2, 364.9) == rules.AT_RISK
    assert _stage(1, 365) == rules.LOST
    assert _stage(3, 5000) == rules.LOST


def test_new_activity_brings_a_customer_back_to_its_won_count_stage() -> None:
    assert _stage(1, 400) == rules.LOST
    assert _stage(1, 0) == rules.CUSTOMER  # activity now
    assert _stage(2, 100) == rules.AT_RISK
    assert _stage(3, 0) == rules.REPEAT  # a new order now


def test_prospects_never_become_at_risk_or_lost() -> None:
    assert _stage(0, 100) == rules.PROSPECT
    assert _stage(0, 10_000) == rules.PROSPECT


def test_thresholds_and_settings_are_validated() -> None:
    assert rules.Thresholds() == rules.Thresholds(90, 365)
    rules.Thresholds(at_risk_days=30, lost_days=31)
    with pytest.raises(InvalidArgument):
        rules.Thresholds(at_risk_days=100, lost_days=100)
    with pytest.raises(InvalidArgument):
        rules.Thresholds(at_risk_days=0, lost_days=10)
    url = "postgresql+asyncpg://unused/x"
    settings = Settings(db_url=url)
    assert settings.lifecycle_thresholds == rules.Thresholds(90, 365)
    with pytest.raises(ValidationError):
        Settings(db_url=url, lifecycle_at_risk_days=200, lifecycle_lost_days=100)


def test_reasons() -> None:
    assert rules.reason(won_order=True) == rules.REASON_ORDER
    assert rules.reason(won_order=False) == rules.REASON_ACTIVITY


def _report(won: bool, days_ago: float) -> rules.Reported:
    return rules.Reported(won_order=won, occurred_at=NOW - timedelta(days=days_ago))


def test_fold_makes_each_change_one_report_at_a_time_would() -> None:
    reports = [_report(False, 3), _report(True, 2), _report(True, 1), _report(False, 0)]
    tally, moves = rules.fold(rules.PROSPECT, rules.Tally(), reports, now=NOW, thresholds=T)
    assert tally == rules.Tally(2, NOW - timedelta(days=1), NOW)
    assert moves == [
        rules.Move(rules.PROSPECT, rules.CUSTOMER, rules.REASON_ORDER, 1),
        rules.Move(rules.CUSTOMER, rules.REPEAT, rules.REASON_ORDER, 2),
    ]
    # The same reports one fold each, carrying the stage and facts along: the same result.
    stage_now, step_tally, steps = rules.PROSPECT, rules.Tally(), []
    for i, report in enumerate(reports):
        step_tally, made = rules.fold(stage_now, step_tally, [report], now=NOW, thresholds=T)
        steps += [rules.Move(m.from_stage, m.to_stage, m.reason, i) for m in made]
        stage_now = made[-1].to_stage if made else stage_now
    assert (step_tally, steps) == (tally, moves)


def test_fold_never_moves_times_back_and_old_activity_keeps_a_customer_at_risk() -> None:
    at_risk = rules.Tally(1, NOW - timedelta(days=120), NOW - timedelta(days=100))
    # A late event from before the last activity: nothing moves.
    tally, moves = rules.fold(rules.AT_RISK, at_risk, [_report(False, 200)], now=NOW, thresholds=T)
    assert tally == at_risk
    assert moves == []
    # Fresh activity brings the customer back.
    tally, moves = rules.fold(rules.AT_RISK, at_risk, [_report(False, 0)], now=NOW, thresholds=T)
    assert tally.last_activity_time == NOW
    assert moves == [rules.Move(rules.AT_RISK, rules.CUSTOMER, rules.REASON_ACTIVITY, 0)]


# -- over the running services ---------------------------------------------------------------


@pytest.fixture
async def client(customers: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(customers) as c:
        yield c


async def _customer(client: httpx.AsyncClient, tenant: Tenant, who: str = "d1-rep") -> Any:
    r = await client.post(
        "/v1/customers",
        json={"kind": "ORGANIZATION", "display_name": f"Life {uuid.uuid4().hex[:6]}"},
        headers=tenant.auth(who),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["lifecycle_stage"] == "LIFECYCLE_STAGE_PROSPECT"
    assert body["lifecycle_stage_time"]
    return body


async def _post(rt: Runtime, path: str, tenant: Tenant, body: dict[str, Any]) -> Any:
    async with http_client(rt) as c:
        r = await c.post(path, json=body, headers=tenant.auth("d1-rep"))
    assert r.status_code == 201, r.text
    return r.json()


async def _opportunity(sales: Runtime, tenant: Tenant, customer_id: str, stage: str) -> Any:
    return await _post(
        sales,
        "/v1/opportunities",
        tenant,
        {
            "title": f"Order {stage}",
            "customer_id": customer_id,
            "stage": stage,
            "amount": {"currency_code": "CNY", "amount": "100.00"},
        },
    )


async def _lifecycle(
    client: httpx.AsyncClient, tenant: Tenant, customer_id: str, who: str = "d1-rep"
) -> Any:
    r = await client.get(f"/v1/customers/{customer_id}/lifecycle", headers=tenant.auth(who))
    assert r.status_code == 200, r.text
    return r.json()


async def _until(
    client: httpx.AsyncClient,
    tenant: Tenant,
    customer_id: str,
    ok: Any,
    within: float = 20.0,
) -> Any:
    """The lifecycle body once ``ok(body)`` holds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        body = await _lifecycle(client, tenant, customer_id)
        if ok(body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"lifecycle never got there: {body}")
        await asyncio.sleep(0.1)


async def _changed(rt: Runtime, customer_id: str, to: int) -> ev.CustomerLifecycleChanged:
    _, payload = await wait_for_event(
        rt.settings.nats_url,
        rt.settings.nats_namespace,
        CHANGED,
        ev.CustomerLifecycleChanged,
        lambda p: p.customer_id == customer_id and p.to_stage == to,
    )
    return payload


def _transitions(body: Any) -> list[tuple[str, str, str]]:
    short = len("LIFECYCLE_STAGE_")
    return [(h["from_stage"][short:], h["to_stage"][short:], h["reason"]) for h in body["history"]]


async def test_orders_and_activity_move_the_stage_with_history_and_events(
    client: httpx.AsyncClient,
    customers: Runtime,
    sales: Runtime,
    service_desk: Runtime,
    tenant: Tenant,
) -> None:
    cust = await _customer(client, tenant)
    cid = cust["id"]
    body = await _lifecycle(client, tenant, cid)
    assert (body["stage"], body["won_orders"], body["history"]) == (
        "LIFECYCLE_STAGE_PROSPECT",
        0,
        [],
    )

    # An open opportunity is activity, not an order.
    await _opportunity(sales, tenant, cid, "QUALIFICATION")
    body = await _until(client, tenant, cid, lambda b: b["last_activity_time"] is not None)
    assert (body["stage"], body["won_orders"]) == ("LIFECYCLE_STAGE_PROSPECT", 0)

    await _opportunity(sales, tenant, cid, "WON")
    changed = await _changed(customers, cid, customer_pb2.LIFECYCLE_STAGE_CUSTOMER)
    assert changed.from_stage == customer_pb2.LIFECYCLE_STAGE_PROSPECT
    assert changed.reason == "order"
    body = await _until(client, tenant, cid, lambda b: b["won_orders"] == 1)
    assert body["stage"] == "LIFECYCLE_STAGE_CUSTOMER"
    assert body["last_order_time"]

    # A ticket is activity: the stage stays.
    before = datetime.fromisoformat(body["last_activity_time"])
    await _post(service_desk, "/v1/tickets", tenant, {"subject": "Help", "customer_id": cid})
    body = await _until(
        client,
        tenant,
        cid,
        lambda b: datetime.fromisoformat(b["last_activity_time"]) > before,
    )
    assert (body["stage"], body["won_orders"]) == ("LIFECYCLE_STAGE_CUSTOMER", 1)

    await _opportunity(sales, tenant, cid, "WON")
    changed = await _changed(customers, cid, customer_pb2.LIFECYCLE_STAGE_REPEAT)
    assert changed.from_stage == customer_pb2.LIFECYCLE_STAGE_CUSTOMER
    body = await _until(client, tenant, cid, lambda b: b["won_orders"] == 2)
    assert body["stage"] == "LIFECYCLE_STAGE_REPEAT"
    assert _transitions(body) == [  # newest first
        ("CUSTOMER", "REPEAT", "order"),
        ("PROSPECT", "CUSTOMER", "order"),
    ]
    r = await client.get(f"/v1/customers/{cid}", headers=tenant.auth("d1-rep"))
    assert r.json()["lifecycle_stage"] == "LIFECYCLE_STAGE_REPEAT"
    # Paged like every list.
    r = await client.get(
        f"/v1/customers/{cid}/lifecycle", params={"page_size": 1}, headers=tenant.auth("d1-rep")
    )
    assert len(r.json()["history"]) == 1
    assert r.json()["next_page_token"]


async def _backdate(rt: Runtime, customer_id: str, days: int) -> None:
    async with rt.db.unit_of_work() as conn:
        await conn.execute(
            customer_lifecycle.update()
            .where(customer_lifecycle.c.customer_id == uuid.UUID(customer_id))
            .values(last_activity_time=sa.func.now() - timedelta(days=days))
        )


async def _run_job(rt: Runtime) -> int:
    assert isinstance(rt.settings, Settings)
    return await service.run_inactivity_job(
        rt.db, thresholds=rt.settings.lifecycle_thresholds, batch_size=1000
    )


async def _history_count(rt: Runtime, customer_id: str) -> int:
    async with rt.db.read() as conn:
        return int(
            (
                await conn.execute(
                    sa.select(sa.func.count()).where(
                        lifecycle_changes.c.customer_id == uuid.UUID(customer_id)
                    )
                )
            ).scalar_one()
        )


async def test_inactivity_job_moves_to_at_risk_then_lost_and_an_order_brings_back(
    client: httpx.AsyncClient, customers: Runtime, sales: Runtime, tenant: Tenant
) -> None:
    cid = (await _customer(client, tenant))["id"]
    await _opportunity(sales, tenant, cid, "WON")
    await _opportunity(sales, tenant, cid, "WON")
    await _until(client, tenant, cid, lambda b: b["stage"] == "LIFECYCLE_STAGE_REPEAT")

    # Active: the job leaves it alone.
    await _run_job(customers)
    assert (await _lifecycle(client, tenant, cid))["stage"] == "LIFECYCLE_STAGE_REPEAT"

    await _backdate(customers, cid, 100)
    # Two replicas at once: one of them moves the customer, once.
    moved = await asyncio.gather(_run_job(customers), _run_job(customers))
    assert sum(moved) >= 1
    body = await _lifecycle(client, tenant, cid)
    assert body["stage"] == "LIFECYCLE_STAGE_AT_RISK"
    assert _transitions(body)[0] == ("REPEAT", "AT_RISK", "inactivity")
    changed = await _changed(customers, cid, customer_pb2.LIFECYCLE_STAGE_AT_RISK)
    assert (changed.from_stage, changed.reason) == (
        customer_pb2.LIFECYCLE_STAGE_REPEAT,
        "inactivity",
    )
    count = await _history_count(customers, cid)
    assert count == 3
    await _run_job(customers)  # idempotent
    assert await _history_count(customers, cid) == count

    await _backdate(customers, cid, 400)
    await _run_job(customers)
    body = await _lifecycle(client, tenant, cid)
    assert body["stage"] == "LIFECYCLE_STAGE_LOST"
    await _changed(customers, cid, customer_pb2.LIFECYCLE_STAGE_LOST)

    # A new order: back to its won-count stage.
    await _opportunity(sales, tenant, cid, "WON")
    body = await _until(client, tenant, cid, lambda b: b["won_orders"] == 3)
    assert body["stage"] == "LIFECYCLE_STAGE_REPEAT"
    assert _transitions(body) == [
        ("LOST", "REPEAT", "order"),
        ("AT_RISK", "LOST", "inactivity"),
        ("REPEAT", "AT_RISK", "inactivity"),
        ("CUSTOMER", "REPEAT", "order"),
        ("PROSPECT", "CUSTOMER", "order"),
    ]


async def _publish(rt: Runtime, tenant_id: str, event_type: str, payload: Any, **kw: Any) -> str:
    envelope = build_event(
        event_type=event_type,
        payload=payload,
        tenant_id=tenant_id,
        org_path="/",
        producer="tests",
        **kw,
    )
    await rt.bus.publish(event_type, envelope.SerializeToString(), {}, envelope.id)
    return envelope.id


async def test_redelivered_events_count_once_and_foreign_customers_are_ignored(
    client: httpx.AsyncClient, customers: Runtime, tenant: Tenant, other_tenant: Tenant
) -> None:
    cid = (await _customer(client, tenant))["id"]
    opp_type = "crm.sales.opportunity.created.v1"

    def won() -> sales_events.OpportunityCreated:
        return sales_events.OpportunityCreated(
            opportunity=opportunity_pb2.Opportunity(
                id=str(uuid.uuid4()), customer_id=cid, stage=opportunity_pb2.OPPORTUNITY_STAGE_WON
            )
        )

    # Another tenant's event naming this customer, and one naming nobody: ignored.
    await _publish(customers, other_tenant.id, opp_type, won())
    await _publish(customers, tenant.id, opp_type, sales_events.OpportunityCreated())
    # The same event twice (a redelivery the stream cannot deduplicate: new Nats-Msg-Id).
    first = won()
    event_id = uuid.uuid4()
    envelope = build_event(
        event_type=opp_type,
        payload=first,
        tenant_id=tenant.id,
        org_path="/",
        producer="tests",
        event_id=event_id,
    )
    data = envelope.SerializeToString()
    await customers.bus.publish(opp_type, data, {}, str(event_id))
    await customers.bus.publish(opp_type, data, {}, f"{event_id}-again")
    await _publish(customers, tenant.id, opp_type, won())
    body = await _until(client, tenant, cid, lambda b: b["won_orders"] >= 2)
    await asyncio.sleep(0.5)
    body = await _lifecycle(client, tenant, cid)
    assert (body["won_orders"], body["stage"]) == (2, "LIFECYCLE_STAGE_REPEAT")
    assert _transitions(body) == [
        ("CUSTOMER", "REPEAT", "order"),
        ("PROSPECT", "CUSTOMER", "order"),
    ]


async def test_lead_conversion_is_activity_and_prospects_stay_prospects(
    client: httpx.AsyncClient, customers: Runtime, tenant: Tenant
) -> None:
    cid = (await _customer(client, tenant))["id"]
    await _publish(
        customers,
        tenant.id,
        "crm.leads.lead.converted.v1",
        leads_events.LeadConverted(customer_id=cid, conversion_id=str(uuid.uuid4())),
    )
    body = await _until(client, tenant, cid, lambda b: b["last_activity_time"] is not None)
    assert (body["stage"], body["won_orders"], body["history"]) == (
        "LIFECYCLE_STAGE_PROSPECT",
        0,
        [],
    )
    await _backdate(customers, cid, 1000)
    await _run_job(customers)
    assert (await _lifecycle(client, tenant, cid))["stage"] == "LIFECYCLE_STAGE_PROSPECT"


async def test_lifecycle_has_the_customers_visibility(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    cid = (await _customer(client, tenant))["id"]
    r = await client.get(f"/v1/customers/{cid}/lifecycle", headers=tenant.auth("d2-rep"))
    assert r.status_code == 404
    assert r.json()["reason"] == "CUSTOMER_NOT_FOUND"
    assert (await _lifecycle(client, tenant, cid, "hq-manager"))["customer_id"] == cid
    r = await client.get(f"/v1/customers/{uuid.uuid4()}/lifecycle", headers=tenant.auth("d1-rep"))
    assert r.status_code == 404


async def test_segments_filter_on_the_lifecycle_stage(
    client: httpx.AsyncClient, customers: Runtime, other_tenant: Tenant
) -> None:
    t = other_tenant
    a = (await _customer(client, t))["id"]
    b = (await _customer(client, t))["id"]
    async with customers.db.unit_of_work() as conn:
        await conn.execute(
            customers_table.update()
            .where(customers_table.c.id == uuid.UUID(b))
            .values(lifecycle_stage=rules.AT_RISK)
        )
    r = await client.post(
        "/v1/segments",
        json={
            "display_name": "At risk",
            "rule": {"field": "lifecycle_stage", "op": "in", "value": ["at_risk", "LOST"]},
        },
        headers=t.auth("hq-manager"),
    )
    assert r.status_code == 201, r.text
    seg = r.json()
    assert seg["rule"]["value"] == ["AT_RISK", "LOST"]
    assert seg["member_count"] == 1
    r = await client.get(f"/v1/segments/{seg['id']}/members", headers=t.auth("hq-manager"))
    assert [c["id"] for c in r.json()["customers"]] == [b]
    assert a != b
    r = await client.post(
        "/v1/segments",
        json={
            "display_name": "Bad",
            "rule": {"field": "lifecycle_stage", "op": "eq", "value": "x"},
        },
        headers=t.auth("hq-manager"),
    )
    assert (r.status_code, r.json()["reason"]) == (422, "SEGMENT_RULE_INVALID")
    assert "rule.value" in r.text


# -- stage system tags -------------------------------------------------------------------------

OPPORTUNITY_CREATED = "crm.sales.opportunity.created.v1"
TAGGED = "crm.customers.customer.tagged.v1"
UNTAGGED = "crm.customers.customer.untagged.v1"


def _won(customer_id: str) -> sales_events.OpportunityCreated:
    return sales_events.OpportunityCreated(
        opportunity=opportunity_pb2.Opportunity(
            id=str(uuid.uuid4()),
            customer_id=customer_id,
            stage=opportunity_pb2.OPPORTUNITY_STAGE_WON,
        )
    )


async def _tags(client: httpx.AsyncClient, tenant: Tenant, customer_id: str) -> list[Any]:
    """(name, source, tagged_by) of the customer's tags, by name."""
    r = await client.get(f"/v1/customers/{customer_id}/tags", headers=tenant.auth("d1-rep"))
    assert r.status_code == 200, r.text
    short = len("TAG_KIND_")
    return [(t["name"], t["source"][short:], t["tagged_by"]) for t in r.json()["tags"]]


def _system(name: str) -> tuple[str, str, str]:
    return (name, "SYSTEM", service.ACTOR)


async def test_a_stage_change_swaps_the_stage_system_tag_which_users_cannot_remove(
    client: httpx.AsyncClient, customers: Runtime, tenant: Tenant
) -> None:
    cid = (await _customer(client, tenant))["id"]
    r = await client.post(
        f"/v1/customers/{cid}/tags", json={"names": ["vip"]}, headers=tenant.auth("d1-rep")
    )
    assert r.status_code == 200, r.text
    vip = r.json()["tags"][0]
    manual = ("vip", "MANUAL", vip["tagged_by"])
    # A prospect has none: every customer starts as one and never returns to it.
    assert await _tags(client, tenant, cid) == [manual]

    first = await _publish(customers, tenant.id, OPPORTUNITY_CREATED, _won(cid))
    await _until(client, tenant, cid, lambda b: b["stage"] == "LIFECYCLE_STAGE_CUSTOMER")
    assert await _tags(client, tenant, cid) == [_system("stage-customer"), manual]

    await _publish(customers, tenant.id, OPPORTUNITY_CREATED, _won(cid))
    await _until(client, tenant, cid, lambda b: b["stage"] == "LIFECYCLE_STAGE_REPEAT")
    assert await _tags(client, tenant, cid) == [_system("stage-repeat"), manual]

    # The inactivity job swaps it the same way.
    await _backdate(customers, cid, 100)
    await _run_job(customers)
    assert (await _lifecycle(client, tenant, cid))["stage"] == "LIFECYCLE_STAGE_AT_RISK"
    assert await _tags(client, tenant, cid) == [_system("stage-at-risk"), manual]

    # Users can neither remove a stage tag nor attach one (even before the system made it).
    r = await client.delete(f"/v1/customers/{cid}/tags/stage-at-risk", headers=tenant.auth("admin"))
    assert (r.status_code, r.json()["reason"]) == (403, "SYSTEM_TAG_PROTECTED")
    r = await client.post(
        f"/v1/customers/{cid}/tags", json={"names": ["Stage-Lost"]}, headers=tenant.auth("admin")
    )
    assert (r.status_code, r.json()["reason"]) == (403, "SYSTEM_TAG_PROTECTED")
    assert await _tags(client, tenant, cid) == [_system("stage-at-risk"), manual]

    def ns() -> tuple[str, str]:
        return customers.settings.nats_url, customers.settings.nats_namespace

    envelope, tagged = await wait_for_event(
        *ns(),
        TAGGED,
        ev.CustomerTagged,
        lambda p: p.customer_id == cid and list(p.tag_names) == ["stage-customer"],
    )
    assert (tagged.tagged_by, tagged.source) == (service.ACTOR, customer_pb2.TAG_KIND_SYSTEM)
    assert envelope.causation_id == first  # the order that moved the stage
    _, untagged = await wait_for_event(
        *ns(),
        UNTAGGED,
        ev.CustomerUntagged,
        lambda p: p.customer_id == cid and list(p.tag_names) == ["stage-repeat"],
    )
    assert untagged.untagged_by == service.ACTOR


async def _staged_tag_events(db: Database, customer_id: str) -> list[tuple[str, list[str]]]:
    """(event type, tag names) of the customer's tag events in the outbox, oldest first."""
    async with db.read() as conn:
        data = (
            await conn.execute(
                sa.select(outbox.c.data)
                .where(outbox.c.event_type.in_([TAGGED, UNTAGGED]))
                .order_by(outbox.c.id)
            )
        ).scalars()
        events = [parse_event(d) for d in data]
    return [
        (e.envelope.type, list(e.payload.tag_names))
        for e in events
        if isinstance(e.payload, ev.CustomerTagged | ev.CustomerUntagged)
        and e.payload.customer_id == customer_id
    ]


async def test_one_batch_tags_each_customer_with_its_final_stage_only(
    client: httpx.AsyncClient, customers: Runtime, tenant: Tenant
) -> None:
    a = (await _customer(client, tenant))["id"]
    b = (await _customer(client, tenant))["id"]
    now = datetime.now(UTC)
    cause = service.Cause(uuid.UUID(tenant.id), correlation_id="c", causation_id="e")
    reports = [service.Report(cause, cid, True, now) for cid in (a, b, a)]
    async with customers.db.unit_of_work() as conn:
        changes = await service.record_many(conn=conn, reports=reports, now=now, thresholds=T)
    assert len(changes) == 3  # a: PROSPECT -> CUSTOMER -> REPEAT, b: PROSPECT -> CUSTOMER
    assert await _tags(client, tenant, a) == [_system("stage-repeat")]
    assert await _tags(client, tenant, b) == [_system("stage-customer")]
    # a's passing stage was never attached: one tagged event, naming the final stage only.
    assert await _staged_tag_events(customers.db, a) == [(TAGGED, ["stage-repeat"])]
    assert await _staged_tag_events(customers.db, b) == [(TAGGED, ["stage-customer"])]


async def test_migration_tags_customers_already_past_prospect(
    starter: ServiceStarter, customers: Runtime
) -> None:
    db_url = starter.db_url("customers", "_stage_tags")
    await migrations.upgrade(customers.definition.migrations, db_url, "0006")
    tenant_a, tenant_b = uuid.uuid4(), uuid.uuid4()
    rows = {
        "repeat": (tenant_a, rules.REPEAT),
        "at_risk": (tenant_a, rules.AT_RISK),
        "prospect": (tenant_a, rules.PROSPECT),
        "lost": (tenant_b, rules.LOST),  # tenant b made a manual "stage-lost" first
    }
    ids = {key: uuid.uuid4() for key in rows}
    db = Database(db_url, pool_size=1)
    try:
        async with db.unit_of_work() as conn:
            for key, (tenant_id, stage) in rows.items():
                await conn.execute(
                    sa.text(
                        "INSERT INTO customers (id, tenant_id, owner_org_id, owner_org_path, kind,"
                        " display_name, account_path, lifecycle_stage)"
                        " VALUES (:id, :tenant, :tenant, '/', 1, 'x', '/', :stage)"
                    ),
                    {"id": ids[key], "tenant": tenant_id, "stage": stage},
                )
            await conn.execute(
                sa.text(
                    "INSERT INTO tags (id, tenant_id, name, kind, created_by)"
                    " VALUES (:id, :tenant, 'stage-lost', 'manual', 'someone')"
                ),
                {"id": uuid.uuid4(), "tenant": tenant_b},
            )
        await migrations.upgrade(customers.definition.migrations, db_url)
        async with db.read() as conn:
            tagged = (
                await conn.execute(
                    sa.text(
                        "SELECT ct.customer_id, t.name, t.kind, ct.source FROM customer_tags ct"
                        " JOIN tags t ON t.id = ct.tag_id"
                    )
                )
            ).all()
    finally:
        await db.dispose()
    assert sorted((tuple(r) for r in tagged), key=str) == sorted(
        [
            (ids["repeat"], "stage-repeat", "system", "system"),
            (ids["at_risk"], "stage-at-risk", "system", "system"),
        ],
        key=str,
    )
