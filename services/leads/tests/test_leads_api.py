"""Leads over REST and gRPC against real PostgreSQL and NATS."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from grpc_status import rpc_status

from conftest import Tenant, http_client
from crm.leads.v1 import lead_pb2, lead_service_pb2, lead_service_pb2_grpc
from crm_platform.runtime import Runtime
from crm_platform.testing.rest import listed_count


@pytest.fixture
async def client(leads: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(leads) as c:
        yield c


async def test_dealer_creates_lead_with_normalised_fields(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    r = await client.post(
        "/v1/leads",
        json={
            "full_name": "  Ｚｈａｎｇ   San ",
            "phone": "138 0013 8000",
            "email": "ZS@Example.com",
        },
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 201, r.text
    lead = r.json()
    assert lead["full_name"] == "Zhang San"
    assert lead["phone"] == "+8613800138000"
    assert lead["email"] == "zs@example.com"
    assert lead["owner_org_path"] == f"/{tenant.slug}/east/d1/"
    assert lead["status"] == "LEAD_STATUS_NEW"


async def test_idempotency_key_returns_first_lead(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    key = str(uuid.uuid4())
    headers = {**tenant.auth("d1-rep"), "Idempotency-Key": key}
    first = await client.post(
        "/v1/leads", json={"full_name": "Li", "phone": "13900139000"}, headers=headers
    )
    second = await client.post(
        "/v1/leads", json={"full_name": "Li", "phone": "13900139000"}, headers=headers
    )
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]


async def test_list_pages_through_visible_leads(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for i in range(3):
        r = await client.post(
            "/v1/leads",
            json={"full_name": f"Page {i}", "email": f"p{i}@example.com"},
            headers=tenant.auth("d2-rep"),
        )
        assert r.status_code == 201
    seen: list[str] = []
    token = ""
    while True:
        r = await client.get(
            "/v1/leads", params={"page_size": 2, "page_token": token}, headers=tenant.auth("d2-rep")
        )
        assert r.status_code == 200
        body = r.json()
        seen += [x["id"] for x in body["leads"]]
        assert all(x["owner_org_path"].endswith("/d2/") for x in body["leads"])
        token = body["next_page_token"]
        if not token:
            break
    assert len(seen) == len(set(seen)) >= 3


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"full_name": "X", "phone": "12345"}, "phone", 422),
        ({"full_name": "X", "email": "not-an-email"}, "email", 422),
        ({"full_name": "", "phone": "13800138000"}, "full_name", 422),
        ({"full_name": "X"}, "phone", 422),
        ({"full_name": "X", "phone": "13800138000", "colour": "red"}, "colour", 422),
        ({"full_name": ["not", "a", "string"], "phone": "13800138000"}, "full_name", 422),
        ({"full_name": "X", "phone": "13800138000", "source": "Bad Source!"}, "source", 422),
    ],
)
async def test_bad_lead_gets_field_violation(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, object], field: str, status: int
) -> None:
    before = await listed_count(client, "/v1/leads", tenant.auth("admin"))
    r = await client.post("/v1/leads", json=body, headers=tenant.auth("d1-rep"))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert field in {v["field"] for v in problem["violations"]}, problem
    assert (
        await listed_count(client, "/v1/leads", tenant.auth("admin")) == before
    )  # nothing written


async def test_malformed_json_is_400(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.post(
        "/v1/leads",
        content=b'{"full_name": "X",',
        headers={**tenant.auth("d1-rep"), "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["reason"] == "MALFORMED_JSON"


async def test_oversize_body_is_413(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.post(
        "/v1/leads",
        content=b'{"full_name": "' + b"x" * 2_000_000 + b'"}',
        headers={**tenant.auth("d1-rep"), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["reason"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "CREDENTIALS_MISSING"),
        ("Basic abc", "CREDENTIALS_MALFORMED"),
        ("Bearer not.a.jwt", "TOKEN_INVALID"),
        ("ApiKey crm_unknown", "API_KEY_INVALID"),
    ],
)
async def test_bad_credentials_are_401(
    client: httpx.AsyncClient, authorization: str | None, reason: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = await client.get("/v1/leads", headers=headers)
    assert r.status_code == 401
    assert r.json()["reason"] == reason


async def test_tampered_token_is_401(client: httpx.AsyncClient, tenant: Tenant) -> None:
    head, payload, sig = tenant.tokens["d1-rep"].split(".")
    forged = f"{head}.{payload}.{sig[:-4]}AAAA"
    r = await client.get("/v1/leads", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401


async def test_other_tenant_cannot_read_lead(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    r = await client.post(
        "/v1/leads",
        json={"full_name": "Mine", "phone": "13700137000"},
        headers=tenant.auth("admin"),
    )
    lead_id = r.json()["id"]
    r = await client.get(f"/v1/leads/{lead_id}", headers=other_tenant.auth("admin"))
    assert r.status_code == 404
    assert r.json()["reason"] == "LEAD_NOT_FOUND"


async def test_malformed_id_is_field_violation(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.get("/v1/leads/not-a-uuid", headers=tenant.auth("admin"))
    assert r.status_code == 422
    assert r.json()["violations"][0]["field"] == "lead_id"


async def test_api_key_can_create_lead(
    client: httpx.AsyncClient, dir_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    r = await dir_client.post(
        "/v1/api-keys",
        json={"org_unit_id": tenant.units["d1"]["id"], "display_name": "web form"},
        headers=tenant.auth("admin"),
    )
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    r = await client.post(
        "/v1/leads",
        json={"full_name": "From Form", "phone": "13600136000", "source": "web"},
        headers={"Authorization": f"ApiKey {secret}"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["owner_org_path"] == f"/{tenant.slug}/east/d1/"


async def test_grpc_create_reports_field_violations(leads: Runtime, tenant: Tenant) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{leads.grpc_port}") as channel:
        stub = lead_service_pb2_grpc.LeadServiceStub(channel)
        md = (("authorization", f"Bearer {tenant.tokens['d1-rep']}"),)
        ok = await stub.CreateLead(
            lead_service_pb2.CreateLeadRequest(
                lead=lead_pb2.Lead(
                    full_name="G",
                    phone="13500135000",
                    territory="t-9",
                    custom_fields={"segment": "fleet"},
                )
            ),
            metadata=md,
        )
        assert ok.owner_org_path.endswith("/d1/")
        assert (ok.territory, dict(ok.custom_fields)) == ("t-9", {"segment": "fleet"})
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateLead(
                lead_service_pb2.CreateLeadRequest(lead=lead_pb2.Lead(full_name="G", phone="1")),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err.value)
        assert status is not None
        from google.rpc import error_details_pb2

        bad = error_details_pb2.BadRequest()
        assert any(d.Unpack(bad) for d in status.details)
        assert bad.field_violations[0].field == "phone"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetLead(lead_service_pb2.GetLeadRequest(id=ok.id))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_requests_are_counted_per_route(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await client.get("/v1/leads", headers=tenant.auth("d1-rep"))
    text = (await client.get("/metrics")).text
    assert 'http_server_requests_total{method="GET",route="/v1/leads",status="200"}' in text
