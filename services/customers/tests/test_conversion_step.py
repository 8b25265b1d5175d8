"""The customers step of the lead conversion saga over real NATS JetStream and PostgreSQL:
commands published to the stream, replies read back from it; matching rules over REST;
the pure company-name normaliser."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest
import sqlalchemy as sa
from google.protobuf.message import Message

from conftest import Tenant, http_client
from crm.customers.v1 import commands_pb2, customer_pb2
from crm.customers.v1 import events_pb2 as ev
from crm_customers.conversion import service
from crm_customers.conversion.models import conversion_records
from crm_customers.conversion.rules import match_name
from crm_customers.customer.models import contacts
from crm_customers.customer.models import customers as customers_table
from crm_platform.events import build_event, parse_event
from crm_platform.outbox import outbox
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event

P = TypeVar("P", bound=Message)
PREPARE = "crm.cmd.customers.prepare_conversion.v1"
UNDO = "crm.cmd.customers.undo_conversion.v1"
TAX_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"


@pytest.fixture
async def client(customers: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(customers) as c:
        yield c


def _tax_id() -> str:
    return "".join(random.choice(TAX_CHARS) for _ in range(18))


def _phone() -> str:
    return f"+86138{random.randrange(10**8):08d}"


def _path(tenant: Tenant, unit: str) -> str:
    return {
        "hq": f"/{tenant.slug}/",
        "east": f"/{tenant.slug}/east/",
        "d1": f"/{tenant.slug}/east/d1/",
        "d2": f"/{tenant.slug}/east/d2/",
    }[unit]


def _command(tenant: Tenant, unit: str = "d1", **fields: Any) -> commands_pb2.PrepareConversion:
    values: dict[str, Any] = {
        "conversion_id": str(uuid.uuid4()),
        "lead_id": str(uuid.uuid4()),
        "actor": "user-1",
        "actor_org_path": _path(tenant, unit),
        "owner_org_id": tenant.units[unit]["id"],
        "owner_org_path": _path(tenant, unit),
        "kind": customer_pb2.CUSTOMER_KIND_ORGANIZATION,
        "display_name": f"Acme {uuid.uuid4().hex[:8]}",
        "city": "杭州",
        "province": "浙江",
        "contact_full_name": "Li Lei",
        "contact_title": "CTO",
        "contact_phone": _phone(),
        "contact_email": "li@example.com",
    }
    values.update(fields)
    return commands_pb2.PrepareConversion(**values)


async def _publish(rt: Runtime, tenant: Tenant, event_type: str, payload: Message) -> None:
    envelope = build_event(
        event_type=event_type,
        payload=payload,
        tenant_id=tenant.id,
        org_path=f"/{tenant.slug}/",
        producer="leads",
    )
    await rt.bus.publish(event_type, envelope.SerializeToString(), {}, envelope.id)


async def _nth(
    rt: Runtime, event_type: str, payload_type: type[P], conversion_id: str, n: int = 1
) -> P:
    """The ``n``-th reply about ``conversion_id`` (the stream is read from its start)."""
    seen = 0

    def match(p: Any) -> bool:
        nonlocal seen
        if p.conversion_id == conversion_id:
            seen += 1
        return seen >= n

    _, payload = await wait_for_event(
        rt.settings.nats_url, rt.settings.nats_namespace, event_type, payload_type, match
    )
    return payload


async def _prepare(
    rt: Runtime, tenant: Tenant, cmd: commands_pb2.PrepareConversion, n: int = 1
) -> ev.ConversionPrepared:
    await _publish(rt, tenant, PREPARE, cmd)
    return await _nth(
        rt, "crm.customers.conversion.prepared.v1", ev.ConversionPrepared, cmd.conversion_id, n
    )


async def _fail(
    rt: Runtime, tenant: Tenant, cmd: commands_pb2.PrepareConversion
) -> ev.ConversionFailed:
    await _publish(rt, tenant, PREPARE, cmd)
    return await _nth(
        rt, "crm.customers.conversion.failed.v1", ev.ConversionFailed, cmd.conversion_id
    )


async def _undo(rt: Runtime, tenant: Tenant, conversion_id: str, n: int = 1) -> ev.ConversionUndone:
    cmd = commands_pb2.UndoConversion(conversion_id=conversion_id, lead_id="l", reason="test")
    await _publish(rt, tenant, UNDO, cmd)
    return await _nth(
        rt, "crm.customers.conversion.undone.v1", ev.ConversionUndone, conversion_id, n
    )


async def _count(rt: Runtime, stmt: sa.Select[Any]) -> int:
    async with rt.db.read() as conn:
        return int(
            (
                await conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))
            ).scalar_one()
        )


def _customers_named(tenant: Tenant, name: str) -> sa.Select[Any]:
    return sa.select(customers_table.c.id).where(
        customers_table.c.tenant_id == uuid.UUID(tenant.id),
        customers_table.c.match_name == match_name(name),
    )


async def _existing(
    client: httpx.AsyncClient, tenant: Tenant, who: str = "d1-rep", **fields: Any
) -> dict[str, Any]:
    body = {"kind": "ORGANIZATION", "display_name": f"Old {uuid.uuid4().hex[:8]}", **fields}
    r = await client.post("/v1/customers", json=body, headers=tenant.auth(who))
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


# -- the name normaliser (pure) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("杭州Acme有限公司", "杭州 ＡＣＭＥ"),
        ("Acme Co., Ltd.", "ACME"),
        ("Acme Company Limited", "acme"),
        ("Acme, Inc.", "acme"),
        ("ACME GmbH", "Acme"),
        ("阿里巴巴（中国）有限公司", "阿里巴巴中国"),
        ("华为技术股份有限公司", "华为技术"),
        ("腾讯集团", "腾讯"),
        ("万科有限责任公司", "万科"),
        ("Foo-Bar  LLC", "foobar"),
        ("「新」东方・教育", "新东方教育"),
    ],
)
def test_match_name_equates_variants(a: str, b: str) -> None:
    assert match_name(a) == match_name(b)


def test_match_name_keeps_words_and_bare_forms() -> None:
    assert match_name("Zinc") == "zinc"  # no "inc" cut from inside a word
    assert match_name("Acmeco") == "acmeco"
    assert match_name("有限公司") == "有限公司"  # nothing but a legal form: kept
    assert match_name("Ltd") == "ltd"
    assert match_name("Acme Ltd") != match_name("Acme Trading Ltd")
    assert match_name("") == ""


# -- prepare ------------------------------------------------------------------------------


async def test_prepare_creates_and_repeats_the_same(customers: Runtime, tenant: Tenant) -> None:
    cmd = _command(tenant, tax_id=_tax_id())
    first = await _prepare(customers, tenant, cmd)
    assert first.customer_created and first.contact_created
    assert first.lead_id == cmd.lead_id
    async with customers.db.read() as conn:
        row = (
            await conn.execute(
                sa.select(customers_table).where(
                    customers_table.c.id == uuid.UUID(first.customer_id)
                )
            )
        ).one()
        contact = (
            await conn.execute(
                sa.select(contacts).where(contacts.c.id == uuid.UUID(first.contact_id))
            )
        ).one()
    assert row.owner_org_path == _path(tenant, "d1") and row.match_name == match_name(
        cmd.display_name
    )
    assert (contact.full_name, contact.phone) == ("Li Lei", cmd.contact_phone)
    # Created with its contact: written once, and announced with the contact in it.
    assert row.version == 1
    async with customers.db.read() as conn:
        announced = [
            parse_event(r.data).payload
            for r in await conn.execute(
                sa.select(outbox.c.data).where(
                    outbox.c.event_type == "crm.customers.customer.created.v1"
                )
            )
        ]
    (created,) = [e for e in announced if e.customer.id == first.customer_id]
    assert [c.id for c in created.customer.contacts] == [first.contact_id]
    # The same conversion in a new event (a re-sent command): the same answer, nothing new.
    again = await _prepare(customers, tenant, cmd, n=2)
    assert again == first
    assert await _count(customers, _customers_named(tenant, cmd.display_name)) == 1
    assert (
        await _count(customers, sa.select(contacts.c.id).where(contacts.c.customer_id == row.id))
        == 1
    )


async def test_concurrent_conversions_make_one_customer(customers: Runtime, tenant: Tenant) -> None:
    name = f"并发 {uuid.uuid4().hex[:6]} 有限公司"

    def cmd() -> commands_pb2.PrepareConversion:
        return _command(tenant, display_name=name, contact_email=f"{uuid.uuid4().hex}@example.com")

    replies = await asyncio.gather(*(_prepare(customers, tenant, cmd()) for _ in range(10)))
    assert len({r.customer_id for r in replies}) == 1
    assert sum(r.customer_created for r in replies) == 1
    assert all(r.contact_created for r in replies)  # ten different people
    assert await _count(customers, _customers_named(tenant, name)) == 1

    # The consumer takes one message at a time; several replicas do not: ten transactions
    # at once on the service itself, each in its own connection, still make one customer.
    other = f"Parallel {uuid.uuid4().hex[:6]} Co., Ltd."
    ctx = service.Context(uuid.UUID(tenant.id), "c", "c", f"/{tenant.slug}/")

    async def one() -> None:
        async with customers.db.unit_of_work() as conn:
            await service.prepare(
                conn=conn,
                ctx=ctx,
                cmd=_command(tenant, display_name=other),
                phone_region="CN",
                now=datetime.now(UTC),
            )

    await asyncio.gather(*(one() for _ in range(10)))
    assert await _count(customers, _customers_named(tenant, other)) == 1


async def test_matching_by_tax_id_name_city_and_phone(
    customers: Runtime, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    tax = _tax_id()
    by_tax = await _existing(client, tenant, tax_id=tax.lower())
    r = await _prepare(customers, tenant, _command(tenant, tax_id=f" {tax.lower()} "))
    assert (r.customer_id, r.customer_created) == (by_tax["id"], False)

    word = uuid.uuid4().hex[:6]
    by_name = await _existing(client, tenant, display_name=f"杭州{word}有限公司", city="杭州")
    r = await _prepare(customers, tenant, _command(tenant, display_name=f"杭州 {word.upper()}"))
    assert (r.customer_id, r.customer_created) == (by_name["id"], False)
    # Same name, another city: a different company.
    r = await _prepare(customers, tenant, _command(tenant, display_name=f"杭州{word}", city="宁波"))
    assert r.customer_created

    phone = _phone()
    by_phone = await _existing(client, tenant, phone=phone)
    r = await _prepare(customers, tenant, _command(tenant, phone=phone))
    assert (r.customer_id, r.customer_created) == (by_phone["id"], False)

    # A matched customer's contact with the same phone is reused, not duplicated.
    existing = await _existing(
        client, tenant, phone=_phone(), contacts=[{"full_name": "Han", "phone": phone}]
    )
    r = await _prepare(
        customers, tenant, _command(tenant, phone=existing["phone"], contact_phone=phone)
    )
    assert (r.customer_id, r.contact_created) == (existing["id"], False)
    assert r.contact_id == existing["contacts"][0]["id"]


async def test_sibling_dealers_never_match(
    customers: Runtime, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    tax = _tax_id()
    theirs = await _existing(client, tenant, who="d2-rep", tax_id=tax)
    r = await _prepare(customers, tenant, _command(tenant, "d1", tax_id=tax))
    assert r.customer_created and r.customer_id != theirs["id"]
    # From the region above both dealers the d2 customer is visible and matches.
    r = await _prepare(
        customers, tenant, _command(tenant, "d2", tax_id=tax, actor_org_path=_path(tenant, "east"))
    )
    assert not r.customer_created and r.customer_id in {theirs["id"]}
    failed = await _fail(customers, tenant, _command(tenant, "d1", customer_id=theirs["id"]))
    assert failed.reason == "CUSTOMER_NOT_FOUND"
    failed = await _fail(customers, tenant, _command(tenant, "d1", customer_id=str(uuid.uuid4())))
    assert failed.reason == "CUSTOMER_NOT_FOUND"
    mine = await _existing(client, tenant)
    ok = await _prepare(customers, tenant, _command(tenant, "d1", customer_id=mine["id"]))
    assert (ok.customer_id, ok.customer_created, ok.contact_created) == (mine["id"], False, True)


async def test_invalid_customer_fails_and_stores_nothing(
    customers: Runtime, tenant: Tenant
) -> None:
    cmd = _command(tenant, tax_id="123", phone="not a phone")
    failed = await _fail(customers, tenant, cmd)
    assert failed.reason == "CUSTOMER_INVALID"
    assert "tax_id" in failed.message and "phone" in failed.message
    assert await _count(customers, _customers_named(tenant, cmd.display_name)) == 0
    bad_contact = _command(tenant, contact_email="nope")
    failed = await _fail(customers, tenant, bad_contact)
    assert failed.reason == "CONTACT_INVALID" and "email" in failed.message
    assert await _count(customers, _customers_named(tenant, bad_contact.display_name)) == 0
    # The customer created before the contact failed went with the savepoint, and so did
    # its event: nothing announces a customer that never was (a good one is announced).
    good = _command(tenant)
    assert (await _prepare(customers, tenant, good)).customer_created
    async with customers.db.read() as conn:
        created = (
            await conn.execute(
                sa.select(outbox.c.data).where(
                    outbox.c.event_type == "crm.customers.customer.created.v1"
                )
            )
        ).all()
    announced = {parse_event(row.data).payload.customer.display_name for row in created}
    assert good.display_name in announced
    assert bad_contact.display_name not in announced
    async with customers.db.read() as conn:
        state = (
            await conn.execute(
                sa.select(conversion_records.c.state).where(
                    conversion_records.c.conversion_id == uuid.UUID(cmd.conversion_id)
                )
            )
        ).scalar_one()
    assert state == "failed"


# -- undo ---------------------------------------------------------------------------------


async def test_undo_removes_what_it_created_only(
    customers: Runtime, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    cmd = _command(tenant)
    prepared = await _prepare(customers, tenant, cmd)
    undone = await _undo(customers, tenant, cmd.conversion_id)
    assert (undone.customer_removed, undone.contact_removed) == (True, True)
    assert await _count(customers, _customers_named(tenant, cmd.display_name)) == 0
    _, deleted = await wait_for_event(
        customers.settings.nats_url,
        customers.settings.nats_namespace,
        "crm.customers.customer.deleted.v1",
        ev.CustomerDeleted,
        lambda p: p.customer_id == prepared.customer_id,
    )
    assert deleted.reason == "test"
    await wait_for_event(
        customers.settings.nats_url,
        customers.settings.nats_namespace,
        "crm.customers.contact.deleted.v1",
        ev.ContactDeleted,
        lambda p: p.contact_id == prepared.contact_id,
    )
    # Repeated undo: the same answer.
    again = await _undo(customers, tenant, cmd.conversion_id, n=2)
    assert again == undone
    # A re-sent command after the undo is refused.
    failed = await _fail(customers, tenant, cmd)
    assert failed.reason == "CONVERSION_UNDONE"

    # A matched (pre-existing) customer stays; only the contact the conversion added goes.
    old = await _existing(client, tenant, tax_id=_tax_id())
    cmd = _command(tenant, tax_id=old["tax_id"])
    prepared = await _prepare(customers, tenant, cmd)
    assert (prepared.customer_id, prepared.customer_created) == (old["id"], False)
    undone = await _undo(customers, tenant, cmd.conversion_id)
    assert (undone.customer_removed, undone.contact_removed) == (False, True)
    r = await client.get(f"/v1/customers/{old['id']}", headers=tenant.auth("d1-rep"))
    assert r.status_code == 200 and r.json()["contacts"] == []


async def test_undo_keeps_what_another_conversion_uses(customers: Runtime, tenant: Tenant) -> None:
    first = _command(tenant, tax_id=_tax_id())
    a = await _prepare(customers, tenant, first)
    second = _command(tenant, tax_id=first.tax_id, contact_phone=first.contact_phone)
    b = await _prepare(customers, tenant, second)
    assert (b.customer_id, b.contact_id, b.customer_created, b.contact_created) == (
        a.customer_id,
        a.contact_id,
        False,
        False,
    )
    undone = await _undo(customers, tenant, first.conversion_id)
    assert (undone.customer_removed, undone.contact_removed) == (False, False)
    # The last user undone removes what the first created and kept for it: compensated
    # conversions of one company leave no orphan.
    undone = await _undo(customers, tenant, second.conversion_id)
    assert (undone.customer_removed, undone.contact_removed) == (True, True)
    assert await _count(customers, _customers_named(tenant, first.display_name)) == 0


async def test_undo_before_prepare_refuses_it(customers: Runtime, tenant: Tenant) -> None:
    cmd = _command(tenant)
    undone = await _undo(customers, tenant, cmd.conversion_id)
    assert (undone.customer_removed, undone.contact_removed) == (False, False)
    failed = await _fail(customers, tenant, cmd)
    assert failed.reason == "CONVERSION_UNDONE"
    assert await _count(customers, _customers_named(tenant, cmd.display_name)) == 0


# -- matching rules -----------------------------------------------------------------------


async def test_match_rules_rest_and_effect(
    customers: Runtime, other_tenant: Tenant, client: httpx.AsyncClient
) -> None:
    tenant = other_tenant
    admin = tenant.auth("admin")
    r = await client.get("/v1/customer-match-rules", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["keys"] == ["tax_id", "name_city", "phone"]
    assert r.json()["from_default"] is True

    for body, fields in (
        ({"keys": []}, {"keys"}),
        ({"keys": ["tax_id", "email"]}, {"keys.1"}),
        ({"keys": ["phone", "phone"]}, {"keys.1"}),
        ({}, {"keys"}),
    ):
        r = await client.put("/v1/customer-match-rules", json=body, headers=admin)
        assert r.status_code == 422, r.text
        assert {v["field"] for v in r.json()["violations"]} == fields, r.text
    r = await client.put(
        "/v1/customer-match-rules", json={"keys": ["phone"]}, headers=tenant.auth("d1-rep")
    )
    assert r.status_code == 403, r.text

    # Two customers: one with the tax id, one with the phone; the rules pick which wins.
    tax, phone = _tax_id(), _phone()
    by_tax = await _existing(client, tenant, tax_id=tax)
    by_phone = await _existing(client, tenant, phone=phone)
    r1 = await _prepare(customers, tenant, _command(tenant, tax_id=tax, phone=phone))
    assert r1.customer_id == by_tax["id"]

    r = await client.put(
        "/v1/customer-match-rules", json={"keys": ["phone", "tax_id"]}, headers=admin
    )
    assert r.status_code == 200, r.text
    assert (r.json()["keys"], r.json()["version"]) == (["phone", "tax_id"], 1)
    r = await client.get("/v1/customer-match-rules", headers=tenant.auth("d1-rep"))
    assert (r.json()["keys"], r.json()["from_default"]) == (["phone", "tax_id"], False)
    r2 = await _prepare(customers, tenant, _command(tenant, tax_id=tax, phone=phone))
    assert r2.customer_id == by_phone["id"]

    # Without name_city, a same-named company in the same city is not matched.
    named = await _existing(client, tenant, city="杭州")
    await client.put("/v1/customer-match-rules", json={"keys": ["tax_id"]}, headers=admin)
    r3 = await _prepare(customers, tenant, _command(tenant, display_name=named["display_name"]))
    assert r3.customer_created and r3.customer_id != named["id"]
