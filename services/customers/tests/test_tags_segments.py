"""Tags on customers (manual and system) and dynamic segments evaluated in the database,
over REST and gRPC on real servers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa

from conftest import Tenant, http_client
from crm.customers.v1 import customer_service_pb2, customer_service_pb2_grpc
from crm.customers.v1 import events_pb2 as customers_events
from crm.sales.v1 import events_pb2 as sales_events
from crm.sales.v1 import opportunity_pb2
from crm_customers.customer import segments
from crm_customers.customer.models import customers as customers_table
from crm_platform.events import build_event, parse_event
from crm_platform.outbox import outbox
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event

ORG = {"kind": "ORGANIZATION", "display_name": "Acme"}


@pytest.fixture
async def client(customers: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(customers) as c:
        yield c


async def _create(
    client: httpx.AsyncClient, tenant: Tenant, who: str = "d1-rep", **fields: Any
) -> str:
    r = await client.post("/v1/customers", json={**ORG, **fields}, headers=tenant.auth(who))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _tag(
    client: httpx.AsyncClient, tenant: Tenant, customer_id: str, *names: str, who: str = "d1-rep"
) -> httpx.Response:
    return await client.post(
        f"/v1/customers/{customer_id}/tags", json={"names": list(names)}, headers=tenant.auth(who)
    )


async def _age(rt: Runtime, days: int, *ids: str) -> None:
    """Last activity ``days`` ago: the segment's behaviour proxy is update_time."""
    async with rt.db.unit_of_work() as conn:
        await conn.execute(
            customers_table.update()
            .where(customers_table.c.id.in_([uuid.UUID(i) for i in ids]))
            .values(update_time=sa.func.now() - sa.text(f"interval '{days} days'"))
        )


async def test_manual_tags(client: httpx.AsyncClient, tenant: Tenant) -> None:
    cid = await _create(client, tenant)
    r = await _tag(client, tenant, cid, "VIP", "重点客户", "key_account-2", "ｖｉｐ")
    assert r.status_code == 200, r.text
    tags = r.json()["tags"]
    assert sorted(t["name"] for t in tags) == sorted(["vip", "重点客户", "key_account-2"])
    assert {(t["kind"], t["source"], t["tagged_by"]) for t in tags} == {
        ("TAG_KIND_MANUAL", "TAG_KIND_MANUAL", tags[0]["tagged_by"])
    }
    # Adding again is a no-op.
    r = await _tag(client, tenant, cid, "vip")
    assert len(r.json()["tags"]) == 3
    r = await client.get(f"/v1/customers/{cid}/tags", headers=tenant.auth("d1-rep"))
    assert len(r.json()["tags"]) == 3

    listed: list[str] = []
    token = ""
    while True:
        r = await client.get(
            "/v1/tags", params={"page_size": 1, "page_token": token}, headers=tenant.auth("admin")
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["tags"]) <= 1
        listed += [t["name"] for t in r.json()["tags"]]
        token = r.json()["next_page_token"]
        if not token:
            break
    assert {"vip", "重点客户", "key_account-2"} <= set(listed)
    assert len(listed) == len(set(listed))

    r = await client.delete(f"/v1/customers/{cid}/tags/VIP", headers=tenant.auth("d1-rep"))
    assert r.status_code == 200, r.text
    assert "vip" not in [t["name"] for t in r.json()["tags"]]
    r = await client.delete(f"/v1/customers/{cid}/tags/vip", headers=tenant.auth("d1-rep"))
    assert (r.status_code, r.json()["reason"]) == (404, "CUSTOMER_TAG_NOT_FOUND")


async def test_tag_validation_and_visibility(client: httpx.AsyncClient, tenant: Tenant) -> None:
    cid = await _create(client, tenant)
    r = await _tag(client, tenant, cid, "ok", "bad tag!", "", "x" * 33)
    assert r.status_code == 422, r.text
    assert {v["field"] for v in r.json()["violations"]} == {"names.1", "names.2", "names.3"}
    assert (await client.get(f"/v1/customers/{cid}/tags", headers=tenant.auth("d1-rep"))).json()[
        "tags"
    ] == []
    # A sibling dealer cannot see the customer, so neither its tags.
    r = await _tag(client, tenant, cid, "vip", who="d2-rep")
    assert (r.status_code, r.json()["reason"]) == (404, "CUSTOMER_NOT_FOUND")
    r = await client.get(f"/v1/customers/{cid}/tags", headers=tenant.auth("d2-rep"))
    assert r.status_code == 404
    r = await client.delete(f"/v1/customers/{cid}/tags/vip", headers=tenant.auth("d2-rep"))
    assert r.status_code == 404
    # The parent org unit can.
    assert (await _tag(client, tenant, cid, "hq-pick", who="hq-manager")).status_code == 200


async def test_system_tags_are_protected(
    client: httpx.AsyncClient, customers: Runtime, tenant: Tenant
) -> None:
    cid = await _create(client, tenant)
    async with customers.db.unit_of_work() as conn:
        await segments.apply_system_tags(
            conn=conn,
            tenant_id=uuid.UUID(tenant.id),
            customer_id=uuid.UUID(cid),
            names=["High-Value"],
            actor="system:lifecycle",
        )
    r = await client.get(f"/v1/customers/{cid}/tags", headers=tenant.auth("d1-rep"))
    assert r.json()["tags"][0]["name"] == "high-value"
    assert r.json()["tags"][0]["source"] == "TAG_KIND_SYSTEM"
    r = await client.delete(f"/v1/customers/{cid}/tags/high-value", headers=tenant.auth("admin"))
    assert (r.status_code, r.json()["reason"]) == (403, "SYSTEM_TAG_PROTECTED")
    other = await _create(client, tenant)
    r = await _tag(client, tenant, other, "fine", "HIGH-VALUE")
    assert (r.status_code, r.json()["reason"]) == (403, "SYSTEM_TAG_PROTECTED")
    assert "system tag" in r.json()["detail"]
    # Nothing of the refused request was attached.
    r = await client.get(f"/v1/customers/{other}/tags", headers=tenant.auth("d1-rep"))
    assert r.json()["tags"] == []


async def test_stage_tag_names_are_reserved_before_the_system_uses_them(
    client: httpx.AsyncClient, other_tenant: Tenant
) -> None:
    # A fresh tenant: no customer changed stage, so no stage tag exists yet.
    t = other_tenant
    cid, pid = await _contact(client, t)
    for url in (f"/v1/customers/{cid}/tags", f"/v1/customers/{cid}/contacts/{pid}/tags"):
        r = await client.post(url, json={"names": ["ok", "STAGE-AT-RISK"]}, headers=t.auth("admin"))
        assert (r.status_code, r.json()["reason"]) == (403, "SYSTEM_TAG_PROTECTED")
        assert (await client.get(url, headers=t.auth("admin"))).json()["tags"] == []
    # Not even created as a manual tag, which would keep the system from using the name.
    r = await client.get("/v1/tags", headers=t.auth("admin"))
    assert r.json()["tags"] == []


async def _members(client: httpx.AsyncClient, tenant: Tenant, sid: str, who: str) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        r = await client.get(
            f"/v1/segments/{sid}/members",
            params={"page_size": 1, "page_token": token},
            headers=tenant.auth(who),
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["customers"]) <= 1
        ids += [c["id"] for c in r.json()["customers"]]
        token = r.json()["next_page_token"]
        if not token:
            return ids


VIP_ZJ_DORMANT = {
    "all": [
        {"field": "province", "op": "eq", "value": "浙江"},
        {"tag": "VIP"},
        {"last_activity_older_than_days": 90},
    ]
}


async def test_segment_rule_in_database(
    client: httpx.AsyncClient, customers: Runtime, other_tenant: Tenant
) -> None:
    t = other_tenant
    match = await _create(client, t, province="浙江", city="杭州")
    recent = await _create(client, t, province="浙江")
    untagged = await _create(client, t, province="浙江")
    elsewhere = await _create(client, t, province="江苏")
    d2_match = await _create(client, t, who="d2-rep", province="浙江")
    for cid in (match, recent, elsewhere):
        assert (await _tag(client, t, cid, "vip")).status_code == 200
    assert (await _tag(client, t, d2_match, "VIP", who="d2-rep")).status_code == 200
    await _age(customers, 100, match, untagged, elsewhere, d2_match)
    await _age(customers, 30, recent)

    r = await client.post(
        "/v1/segments",
        json={"display_name": "Dormant Zhejiang VIPs", "rule": VIP_ZJ_DORMANT},
        headers=t.auth("hq-manager"),
    )
    assert r.status_code == 201, r.text
    seg = r.json()
    assert seg["member_count"] == 2
    assert seg["rule"]["all"][1] == {"tag": "vip"}
    assert seg["rule"]["all"][2] == {"last_activity_older_than_days": 90}
    sid = seg["id"]
    assert await _members(client, t, sid, "hq-manager") == sorted([match, d2_match])
    # Members and counts are limited to what the caller can see.
    for who, expected in (("d1-rep", [match]), ("d2-rep", [d2_match])):
        r = await client.get(f"/v1/segments/{sid}", headers=t.auth(who))
        assert r.json()["member_count"] == len(expected)
        assert await _members(client, t, sid, who) == expected

    # Replace the rule: Zhejiang or Jiangsu, dormant, without the tag, or any 江苏 customer.
    rule = {
        "any": [
            {
                "all": [
                    {"field": "province", "op": "in", "value": ["浙江", "江苏"]},
                    {"not": {"tag": "vip"}},
                    {"last_activity_older_than_days": 90},
                ]
            },
            {"field": "province", "op": "contains", "value": "江苏"},
        ]
    }
    r = await client.put(
        f"/v1/segments/{sid}",
        json={"display_name": "Other", "rule": rule},
        headers={**t.auth("hq-manager"), "If-Match": seg["etag"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["member_count"] == 2
    assert await _members(client, t, sid, "hq-manager") == sorted([untagged, elsewhere])
    r = await client.put(
        f"/v1/segments/{sid}",
        json={"display_name": "Stale", "rule": rule},
        headers={**t.auth("hq-manager"), "If-Match": seg["etag"]},
    )
    assert (r.status_code, r.json()["reason"]) == (409, "SEGMENT_ETAG_MISMATCH")


async def test_segment_on_kind_and_custom_fields(
    client: httpx.AsyncClient, other_tenant: Tenant
) -> None:
    t = other_tenant
    r = await client.put(
        "/v1/customer-fields",
        json={"fields": [{"name": "tier", "type": "NUMBER"}]},
        headers=t.auth("admin"),
    )
    assert r.status_code == 200, r.text
    gold = await _create(client, t, custom_fields={"tier": 3})
    await _create(client, t, custom_fields={"tier": 1})
    await _create(client, t, kind="PERSON", display_name="Li", custom_fields={"tier": 3})
    rule = {
        "all": [
            {"field": "kind", "op": "eq", "value": "organization"},
            {"field": "custom_fields.tier", "op": "in", "value": [3, 4]},
        ]
    }
    r = await client.post(
        "/v1/segments", json={"display_name": "Gold", "rule": rule}, headers=t.auth("d1-rep")
    )
    assert r.status_code == 201, r.text
    assert r.json()["member_count"] == 1
    assert r.json()["rule"]["all"][0]["value"] == "ORGANIZATION"
    assert await _members(client, t, r.json()["id"], "d1-rep") == [gold]


async def test_bad_segment_documents(client: httpx.AsyncClient, tenant: Tenant) -> None:
    bad = {
        "all": [
            {"field": "province", "op": "like", "value": "x"},
            {"tag": "bad tag!"},
            {"last_activity_older_than_days": "90"},
            {"field": "custom_fields.nope", "op": "eq", "value": 1},
            {"any": []},
            {"not": {"field": "city", "op": "in", "value": "杭州"}},
            {"tag": "vip", "extra": 1},
            {"weird": 1},
        ]
    }
    r = await client.post(
        "/v1/segments", json={"display_name": "Bad", "rule": bad}, headers=tenant.auth("d1-rep")
    )
    assert r.status_code == 422, r.text
    assert r.json()["reason"] == "SEGMENT_RULE_INVALID"
    assert {v["field"] for v in r.json()["violations"]} == {
        "rule.all.0.op",
        "rule.all.1.tag",
        "rule.all.2.last_activity_older_than_days",
        "rule.all.3.field",
        "rule.all.4.any",
        "rule.all.5.not.value",
        "rule.all.6.extra",
        "rule.all.7",
    }
    # Python's json reads NaN; jsonb cannot hold it: the field's error, not a 500.
    r = await client.post(
        "/v1/segments",
        content='{"display_name": "NaN", "rule": {"field": "city", "op": "eq", "value": NaN}}',
        headers={**tenant.auth("d1-rep"), "content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["violations"] == [
        {"field": "rule", "description": "at value: must be a finite number"}
    ]
    r = await client.get(f"/v1/segments/{uuid.uuid4()}", headers=tenant.auth("d1-rep"))
    assert (r.status_code, r.json()["reason"]) == (404, "SEGMENT_NOT_FOUND")


async def test_grpc_segment(
    client: httpx.AsyncClient, customers: Runtime, other_tenant: Tenant
) -> None:
    t = other_tenant
    ids = [await _create(client, t, city="宁波") for _ in range(3)]
    await _create(client, t, city="温州")
    r = await client.post(
        "/v1/segments",
        json={"display_name": "Ningbo", "rule": {"field": "city", "op": "eq", "value": "宁波"}},
        headers=t.auth("d1-rep"),
    )
    sid = r.json()["id"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{customers.grpc_port}") as channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        md = (("authorization", f"Bearer {t.tokens['hq-manager']}"),)
        seg = await stub.GetSegment(customer_service_pb2.GetSegmentRequest(id=sid), metadata=md)
        assert (seg.display_name, seg.member_count) == ("Ningbo", 3)
        assert seg.rule["field"] == "city"
        seen: list[str] = []
        token = ""
        while True:
            page = await stub.ListSegmentMembers(
                customer_service_pb2.ListSegmentMembersRequest(
                    segment_id=sid, page_size=2, page_token=token
                ),
                metadata=md,
            )
            assert len(page.customers) <= 2
            seen += [c.id for c in page.customers]
            token = page.next_page_token
            if not token:
                break
        assert seen == sorted(ids)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSegment(
                customer_service_pb2.GetSegmentRequest(id=str(uuid.uuid4())), metadata=md
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_tag_events(client: httpx.AsyncClient, customers: Runtime, tenant: Tenant) -> None:
    r = await client.post(
        "/v1/customers", json={**ORG, "display_name": "Evented"}, headers=tenant.auth("d1-rep")
    )
    cid, owner_path = r.json()["id"], r.json()["owner_org_path"]
    assert (await _tag(client, tenant, cid, "Gold", "east")).status_code == 200
    # Re-adding publishes only what is new; re-adding everything publishes nothing.
    assert (await _tag(client, tenant, cid, "gold", "north")).status_code == 200
    assert (await _tag(client, tenant, cid, "gold", "north")).status_code == 200
    r = await client.delete(f"/v1/customers/{cid}/tags/east", headers=tenant.auth("d1-rep"))
    assert r.status_code == 200, r.text

    def ns() -> tuple[str, str]:
        return customers.settings.nats_url, customers.settings.nats_namespace

    envelope, tagged = await wait_for_event(
        *ns(),
        "crm.customers.customer.tagged.v1",
        customers_events.CustomerTagged,
        lambda p: p.customer_id == cid and "east" in p.tag_names,
    )
    assert list(tagged.tag_names) == ["gold", "east"]
    assert tagged.tagged_by and tagged.source == 2  # TAG_KIND_MANUAL
    assert (envelope.org_path, envelope.producer) == (owner_path, "customers")
    _, second = await wait_for_event(
        *ns(),
        "crm.customers.customer.tagged.v1",
        customers_events.CustomerTagged,
        lambda p: p.customer_id == cid and "north" in p.tag_names,
    )
    assert list(second.tag_names) == ["north"]
    envelope, untagged = await wait_for_event(
        *ns(),
        "crm.customers.customer.untagged.v1",
        customers_events.CustomerUntagged,
        lambda p: p.customer_id == cid,
    )
    assert list(untagged.tag_names) == ["east"]
    assert envelope.org_path == owner_path
    # Exactly two tagged events for the customer: the no-op request staged none.
    async with customers.db.read() as conn:
        data = (
            await conn.execute(
                sa.select(outbox.c.data).where(
                    outbox.c.event_type == "crm.customers.customer.tagged.v1"
                )
            )
        ).scalars()
        payloads = [parse_event(d).payload for d in data]
    staged = [
        p
        for p in payloads
        if isinstance(p, customers_events.CustomerTagged) and p.customer_id == cid
    ]
    assert len(staged) == 2


async def _contact(client: httpx.AsyncClient, tenant: Tenant) -> tuple[str, str]:
    r = await client.post(
        "/v1/customers",
        json={**ORG, "contacts": [{"full_name": "Wang Wei", "phone": "13800138000"}]},
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"]), str(r.json()["contacts"][0]["id"])


async def test_contact_tags(client: httpx.AsyncClient, customers: Runtime, tenant: Tenant) -> None:
    cid, pid = await _contact(client, tenant)
    url = f"/v1/customers/{cid}/contacts/{pid}/tags"
    rep = tenant.auth("d1-rep")
    r = await client.post(url, json={"names": ["Decision-Maker", "技术"]}, headers=rep)
    assert r.status_code == 200, r.text
    assert [t["name"] for t in r.json()["tags"]] == ["decision-maker", "技术"]
    assert r.json()["tags"][0]["source"] == "TAG_KIND_MANUAL"
    assert len((await client.post(url, json={"names": ["技术"]}, headers=rep)).json()["tags"]) == 2
    r = await client.get(url, headers=rep)
    assert [t["name"] for t in r.json()["tags"]] == ["decision-maker", "技术"]
    # Contact tags are not the customer's.
    r = await client.get(f"/v1/customers/{cid}/tags", headers=rep)
    assert r.json()["tags"] == []

    # The same validation as customer tags.
    r = await client.post(url, json={"names": ["ok", "bad tag!", "x" * 33]}, headers=rep)
    assert r.status_code == 422, r.text
    assert r.json()["reason"] == "TAG_NAME_INVALID"
    assert {v["field"] for v in r.json()["violations"]} == {"names.1", "names.2"}

    # Not found: an unknown contact, another customer's contact, a customer out of sight.
    other, other_pid = await _contact(client, tenant)
    for path in (
        f"/v1/customers/{cid}/contacts/{uuid.uuid4()}",
        f"/v1/customers/{cid}/contacts/{other_pid}",
    ):
        r = await client.post(f"{path}/tags", json={"names": ["x"]}, headers=rep)
        assert (r.status_code, r.json()["reason"]) == (404, "CONTACT_NOT_FOUND")
        assert (await client.get(f"{path}/tags", headers=rep)).status_code == 404
    for req in (
        client.post(url, json={"names": ["x"]}, headers=tenant.auth("d2-rep")),
        client.get(url, headers=tenant.auth("d2-rep")),
        client.delete(f"{url}/技术", headers=tenant.auth("d2-rep")),
    ):
        r = await req
        assert (r.status_code, r.json()["reason"]) == (404, "CUSTOMER_NOT_FOUND")
    r = await client.delete(f"{url}/absent", headers=rep)
    assert (r.status_code, r.json()["reason"]) == (404, "CONTACT_TAG_NOT_FOUND")

    r = await client.delete(f"{url}/DECISION-MAKER", headers=rep)
    assert r.status_code == 200, r.text
    assert [t["name"] for t in r.json()["tags"]] == ["技术"]

    # System tags cannot be attached to contacts by users.
    async with customers.db.unit_of_work() as conn:
        await segments.apply_system_tags(
            conn=conn,
            tenant_id=uuid.UUID(tenant.id),
            customer_id=uuid.UUID(other),
            names=["churn-risk"],
            actor="system:lifecycle",
        )
    r = await client.post(url, json={"names": ["fine", "Churn-Risk"]}, headers=rep)
    assert (r.status_code, r.json()["reason"]) == (403, "SYSTEM_TAG_PROTECTED")
    assert [t["name"] for t in (await client.get(url, headers=rep)).json()["tags"]] == ["技术"]

    def ns() -> tuple[str, str]:
        return customers.settings.nats_url, customers.settings.nats_namespace

    customer = (await client.get(f"/v1/customers/{cid}", headers=rep)).json()
    envelope, tagged = await wait_for_event(
        *ns(),
        "crm.customers.contact.tagged.v1",
        customers_events.ContactTagged,
        lambda p: p.contact_id == pid,
    )
    assert (tagged.customer_id, list(tagged.tag_names)) == (cid, ["decision-maker", "技术"])
    assert envelope.org_path == customer["owner_org_path"]
    _, untagged = await wait_for_event(
        *ns(),
        "crm.customers.contact.untagged.v1",
        customers_events.ContactUntagged,
        lambda p: p.contact_id == pid,
    )
    assert list(untagged.tag_names) == ["decision-maker"]
    _, system = await wait_for_event(
        *ns(),
        "crm.customers.customer.tagged.v1",
        customers_events.CustomerTagged,
        lambda p: p.customer_id == other,
    )
    assert (list(system.tag_names), system.tagged_by) == (["churn-risk"], "system:lifecycle")


async def test_segment_versions(client: httpx.AsyncClient, other_tenant: Tenant) -> None:
    t = other_tenant
    hq = t.auth("hq-manager")
    rules = [{"field": "city", "op": "eq", "value": f"city-{i}"} for i in range(3)]
    r = await client.post("/v1/segments", json={"display_name": "v1", "rule": rules[0]}, headers=hq)
    assert r.status_code == 201, r.text
    seg = r.json()
    for i in (1, 2):
        r = await client.put(
            f"/v1/segments/{seg['id']}",
            json={"display_name": f"v{i + 1}", "rule": rules[i]},
            headers={**hq, "If-Match": seg["etag"]},
        )
        assert r.status_code == 200, r.text
        seg = r.json()

    r = await client.get(f"/v1/segments/{seg['id']}/versions", headers=hq)
    assert r.status_code == 200, r.text
    versions = r.json()["versions"]
    assert [(v["version"], v["display_name"], v["rule"]) for v in versions] == [
        (3, "v3", rules[2]),
        (2, "v2", rules[1]),
        (1, "v1", rules[0]),
    ]
    assert all(v["segment_id"] == seg["id"] and v["created_by"] for v in versions)
    assert r.json()["next_page_token"] == ""

    paged: list[int] = []
    token = ""
    while True:
        r = await client.get(
            f"/v1/segments/{seg['id']}/versions",
            params={"page_size": 2, "page_token": token},
            headers=t.auth("d1-rep"),
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["versions"]) <= 2
        paged += [v["version"] for v in r.json()["versions"]]
        token = r.json()["next_page_token"]
        if not token:
            break
    assert paged == [3, 2, 1]

    r = await client.get(f"/v1/segments/{uuid.uuid4()}/versions", headers=hq)
    assert (r.status_code, r.json()["reason"]) == (404, "SEGMENT_NOT_FOUND")


# -- behaviour from the lifecycle facts -------------------------------------------------------

OPPORTUNITY_CREATED = "crm.sales.opportunity.created.v1"


async def _activity(
    rt: Runtime, tenant: Tenant, customer_id: str, days_ago: int, *, won: bool = True
) -> None:
    """An opportunity (a won order unless ``won`` is False) ``days_ago`` days back, reported
    as sales does: the lifecycle consumers record it in the customer's facts."""
    stage = (
        opportunity_pb2.OPPORTUNITY_STAGE_WON if won else opportunity_pb2.OPPORTUNITY_STAGE_PROPOSAL
    )
    envelope = build_event(
        event_type=OPPORTUNITY_CREATED,
        payload=sales_events.OpportunityCreated(
            opportunity=opportunity_pb2.Opportunity(
                id=str(uuid.uuid4()), customer_id=customer_id, stage=stage
            )
        ),
        tenant_id=tenant.id,
        org_path="/",
        producer="tests",
        occurred_at=datetime.now(UTC) - timedelta(days=days_ago),
    )
    await rt.bus.publish(OPPORTUNITY_CREATED, envelope.SerializeToString(), {}, envelope.id)


async def _recorded(
    client: httpx.AsyncClient, tenant: Tenant, expected: dict[str, int], who: str = "hq-manager"
) -> None:
    """Wait until each customer's facts count the expected reported opportunities' orders."""
    deadline = asyncio.get_running_loop().time() + 20
    for cid, won in expected.items():
        while True:
            r = await client.get(f"/v1/customers/{cid}/lifecycle", headers=tenant.auth(who))
            assert r.status_code == 200, r.text
            if r.json()["last_activity_time"] and r.json()["won_orders"] == won:
                break
            assert asyncio.get_running_loop().time() < deadline, r.text
            await asyncio.sleep(0.1)


VIP_ZJ_LAPSED = {
    "all": [
        {"field": "province", "op": "eq", "value": "浙江"},
        {"tag": "VIP"},
        {"last_order_older_than_days": 90},
    ]
}


async def test_segment_on_last_order_age(
    client: httpx.AsyncClient, customers: Runtime, other_tenant: Tenant
) -> None:
    t = other_tenant
    zj = {"province": "浙江"}
    lapsed = await _create(client, t, **zj)
    reordered = await _create(client, t, **zj)  # an old order and a recent one
    never = await _create(client, t, **zj)  # long idle, but never ordered
    untagged = await _create(client, t, **zj)
    elsewhere = await _create(client, t, province="江苏")
    d2_lapsed = await _create(client, t, who="d2-rep", **zj)
    for cid in (lapsed, reordered, never, elsewhere):
        assert (await _tag(client, t, cid, "vip")).status_code == 200
    assert (await _tag(client, t, d2_lapsed, "VIP", who="d2-rep")).status_code == 200
    for cid in (lapsed, reordered, untagged, elsewhere, d2_lapsed):
        await _activity(customers, t, cid, 120)
    await _activity(customers, t, reordered, 10)
    await _activity(customers, t, never, 10, won=False)  # activity is not an order
    await _age(customers, 400, never)
    await _recorded(
        client, t, {lapsed: 1, reordered: 2, never: 0, untagged: 1, elsewhere: 1, d2_lapsed: 1}
    )

    r = await client.post(
        "/v1/segments",
        json={"display_name": "Lapsed Zhejiang VIPs", "rule": VIP_ZJ_LAPSED},
        headers=t.auth("hq-manager"),
    )
    assert r.status_code == 201, r.text
    seg = r.json()
    assert seg["rule"]["all"][2] == {"last_order_older_than_days": 90}
    assert seg["member_count"] == 2
    sid = seg["id"]
    assert await _members(client, t, sid, "hq-manager") == sorted([lapsed, d2_lapsed])
    r = await client.get(f"/v1/segments/{sid}", headers=t.auth("d1-rep"))
    assert r.json()["member_count"] == 1
    assert await _members(client, t, sid, "d1-rep") == [lapsed]
    # The gRPC the marketing service reads members through: the same count and members.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{customers.grpc_port}") as channel:
        stub = customer_service_pb2_grpc.CustomerServiceStub(channel)
        md = (("authorization", f"Bearer {t.tokens['hq-manager']}"),)
        got = await stub.GetSegment(customer_service_pb2.GetSegmentRequest(id=sid), metadata=md)
        assert got.member_count == 2
        page = await stub.ListSegmentMembers(
            customer_service_pb2.ListSegmentMembersRequest(segment_id=sid), metadata=md
        )
        assert [c.id for c in page.customers] == sorted([lapsed, d2_lapsed])

    # Under "not", a customer who never ordered matches: nothing of it is older than 90 days.
    rule = {"all": [{"tag": "vip"}, {"not": {"last_order_older_than_days": 90}}]}
    r = await client.put(
        f"/v1/segments/{sid}",
        json={"display_name": "Ordered lately or never", "rule": rule},
        headers={**t.auth("hq-manager"), "If-Match": seg["etag"]},
    )
    assert r.status_code == 200, r.text
    assert await _members(client, t, sid, "hq-manager") == sorted([reordered, never])


async def test_segment_on_last_activity_reads_the_reported_activity(
    client: httpx.AsyncClient, customers: Runtime, other_tenant: Tenant
) -> None:
    t = other_tenant
    idle = await _create(client, t)  # edited today, last activity 120 days ago
    busy = await _create(client, t)  # not edited for long, active 10 days ago
    silent = await _create(client, t)  # nothing reported: its last edit counts
    await _create(client, t)  # nothing reported, edited today: not a member
    await _activity(customers, t, idle, 120, won=False)
    await _activity(customers, t, busy, 10, won=False)
    await _recorded(client, t, {idle: 0, busy: 0})
    await _age(customers, 200, busy, silent)
    r = await client.post(
        "/v1/segments",
        json={"display_name": "Dormant", "rule": {"last_activity_older_than_days": 90}},
        headers=t.auth("hq-manager"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["member_count"] == 2
    assert await _members(client, t, r.json()["id"], "hq-manager") == sorted([idle, silent])


async def test_bad_last_order_conditions(client: httpx.AsyncClient, tenant: Tenant) -> None:
    bad = {
        "all": [
            {"last_order_older_than_days": 0},
            {"last_order_older_than_days": "90"},
            {"last_order_older_than_days": 36501},
            {"last_order_older_than_days": 90, "last_activity_older_than_days": 90},
        ]
    }
    r = await client.post(
        "/v1/segments", json={"display_name": "Bad", "rule": bad}, headers=tenant.auth("d1-rep")
    )
    assert (r.status_code, r.json()["reason"]) == (422, "SEGMENT_RULE_INVALID")
    assert {v["field"] for v in r.json()["violations"]} == {
        "rule.all.0.last_order_older_than_days",
        "rule.all.1.last_order_older_than_days",
        "rule.all.2.last_order_older_than_days",
        "rule.all.3",
    }
