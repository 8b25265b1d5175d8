from __future__ import annotations

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conftest import Tenant, make_tenant
from crm.directory.v1 import directory_service_pb2, directory_service_pb2_grpc, events_pb2
from crm_platform.runtime import Runtime
from crm_platform.testing.events import wait_for_event
from crm_platform.testing.rest import all_pages


async def test_tenant_tree_and_login(tenant: Tenant, dir_client: httpx.AsyncClient) -> None:
    r = await dir_client.get("/v1/org-units", headers=tenant.auth("admin"))
    assert r.status_code == 200
    paths = {u["path"] for u in r.json()["org_units"]}
    assert {f"/{tenant.slug}/", f"/{tenant.slug}/east/d1/"} <= paths
    me = (await dir_client.get("/v1/me", headers=tenant.auth("d1-rep"))).json()
    assert me["org_path"] == f"/{tenant.slug}/east/d1/"
    assert me["roles"] == ["rep"]


async def test_move_subtree_rewrites_paths(tenant: Tenant, dir_client: httpx.AsyncClient) -> None:
    admin = tenant.auth("admin")
    r = await dir_client.post(
        "/v1/org-units",
        json={
            "parent_id": tenant.units["hq"]["id"],
            "kind": "REGION",
            "code": "west",
            "display_name": "West",
        },
        headers=admin,
    )
    west = r.json()
    r = await dir_client.post(
        "/v1/org-units",
        json={
            "parent_id": tenant.units["east"]["id"],
            "kind": "DEALER",
            "code": "mover",
            "display_name": "Mover",
        },
        headers=admin,
    )
    mover = r.json()
    r = await dir_client.post(
        "/v1/org-units",
        json={"parent_id": mover["id"], "kind": "STORE", "code": "s1", "display_name": "S1"},
        headers=admin,
    )
    store = r.json()
    r = await dir_client.post(
        f"/v1/org-units/{mover['id']}:move", json={"new_parent_id": west["id"]}, headers=admin
    )
    assert r.status_code == 200, r.text
    assert r.json()["path"] == f"/{tenant.slug}/west/mover/"
    moved_store = (await dir_client.get(f"/v1/org-units/{store['id']}", headers=admin)).json()
    assert moved_store["path"] == f"/{tenant.slug}/west/mover/s1/"


async def test_move_into_own_subtree_is_refused(
    tenant: Tenant, dir_client: httpx.AsyncClient
) -> None:
    r = await dir_client.post(
        f"/v1/org-units/{tenant.units['east']['id']}:move",
        json={"new_parent_id": tenant.units["d1"]["id"]},
        headers=tenant.auth("admin"),
    )
    assert r.status_code == 409
    assert r.json()["reason"] == "ORG_UNIT_CYCLE"


async def test_tenant_creation_needs_bootstrap_token(dir_client: httpx.AsyncClient) -> None:
    body = {
        "slug": "nope",
        "display_name": "Nope",
        "admin_username": "admin",
        "admin_password": "admin-pass-1",
    }
    r = await dir_client.post(
        "/v1/tenants", json=body, headers={"Authorization": "Bootstrap wrong"}
    )
    assert r.status_code == 401
    assert r.json()["reason"] == "BOOTSTRAP_REQUIRED"


async def test_wrong_password_and_unknown_user_look_the_same(
    tenant: Tenant, dir_client: httpx.AsyncClient
) -> None:
    for user, password in (("admin", "wrong-password"), ("ghost", "whatever-pw")):
        r = await dir_client.post(
            "/v1/auth/token", json={"tenant": tenant.slug, "username": user, "password": password}
        )
        assert r.status_code == 401
        assert r.json()["reason"] == "LOGIN_FAILED"


async def test_manager_cannot_grant_admin(tenant: Tenant, dir_client: httpx.AsyncClient) -> None:
    r = await dir_client.post(
        "/v1/users",
        json={
            "org_unit_id": tenant.units["d1"]["id"],
            "username": "sneaky",
            "password": "sneaky-pass-1",
            "roles": ["tenant_admin"],
        },
        headers=tenant.auth("hq-manager"),
    )
    assert r.status_code == 403
    assert r.json()["reason"] == "ROLE_ESCALATION"


async def test_rep_cannot_create_org_units(tenant: Tenant, dir_client: httpx.AsyncClient) -> None:
    r = await dir_client.post(
        "/v1/org-units",
        json={
            "parent_id": tenant.units["d1"]["id"],
            "kind": "STORE",
            "code": "x",
            "display_name": "X",
        },
        headers=tenant.auth("d1-rep"),
    )
    assert r.status_code == 403


async def test_dealer_sees_only_its_subtree(tenant: Tenant, dir_client: httpx.AsyncClient) -> None:
    r = await dir_client.get(
        f"/v1/org-units/{tenant.units['d2']['id']}", headers=tenant.auth("d1-rep")
    )
    assert r.status_code == 404
    users = (await dir_client.get("/v1/users", headers=tenant.auth("d1-rep"))).json()["users"]
    # Other tests may add users to d1 (the tenant is shared); none from outside d1 shows.
    assert "d1-rep" in {u["username"] for u in users}
    assert {u["org_unit_id"] for u in users} == {tenant.units["d1"]["id"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "DEALER", "code": "Bad Code", "display_name": "X"}, "code"),
        ({"kind": "PLANET", "code": "ok", "display_name": "X"}, "kind"),
        ({"kind": "DEALER", "code": "ok", "display_name": ""}, "display_name"),
        ({"kind": "DEALER", "code": "ok", "display_name": "X", "extra": 1}, "extra"),
    ],
)
async def test_bad_org_unit_gets_field_violation(
    tenant: Tenant, dir_client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    r = await dir_client.post(
        "/v1/org-units",
        json={"parent_id": tenant.units["hq"]["id"], **body},
        headers=tenant.auth("admin"),
    )
    assert r.status_code == 422, r.text
    assert field in {v["field"] for v in r.json()["violations"]}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"display_name": "x" * 10_000}, "display_name"),
        ({"email": "a@" + "b" * 300 + ".com"}, "email"),
        ({"roles": ["rep" * 100]}, "roles.0"),
        ({"org_unit_id": "0" * 5_000}, "org_unit_id"),
        ({"password": "p" * 5_000}, "password"),
    ],
)
async def test_oversized_user_fields_are_field_errors(
    tenant: Tenant, dir_client: httpx.AsyncClient, overrides: dict[str, object], field: str
) -> None:
    body = {
        "org_unit_id": tenant.units["d1"]["id"],
        "username": "oversized",
        "password": "long-enough-1",
        "roles": ["rep"],
        **overrides,
    }
    r = await dir_client.post("/v1/users", json=body, headers=tenant.auth("admin"))
    assert r.status_code == 422, r.text
    assert [v["field"] for v in r.json()["violations"]] == [field]
    users = await all_pages(dir_client, "/v1/users", tenant.auth("admin"), page_size=100)
    assert "oversized" not in {u["username"] for u in users}


async def test_duplicate_code_under_same_parent_is_409(
    tenant: Tenant, dir_client: httpx.AsyncClient
) -> None:
    r = await dir_client.post(
        "/v1/org-units",
        json={
            "parent_id": tenant.units["east"]["id"],
            "kind": "DEALER",
            "code": "d1",
            "display_name": "Dup",
        },
        headers=tenant.auth("admin"),
    )
    assert r.status_code == 409
    assert r.json()["reason"] == "ORG_UNIT_EXISTS"


async def test_jwks_is_public(dir_client: httpx.AsyncClient) -> None:
    keys = (await dir_client.get("/.well-known/jwks.json")).json()["keys"]
    assert keys and keys[0]["kty"] == "RSA" and "d" not in keys[0]


async def test_deactivate_user_refuses_logins_and_publishes(
    directory: Runtime, dir_client: httpx.AsyncClient
) -> None:
    t = await make_tenant(directory)
    me = (await dir_client.get("/v1/me", headers=t.auth("d2-rep"))).json()
    user_id = me["subject"]
    r = await dir_client.post(f"/v1/users/{user_id}:deactivate", headers=t.auth("hq-manager"))
    assert r.status_code == 403
    r = await dir_client.post(f"/v1/users/{user_id}:deactivate", headers=t.auth("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False
    r = await dir_client.post(f"/v1/users/{user_id}:deactivate", headers=t.auth("admin"))
    assert r.status_code == 409
    assert r.json()["reason"] == "USER_ALREADY_DEACTIVATED"
    r = await dir_client.post(
        "/v1/auth/token",
        json={"tenant": t.slug, "username": "d2-rep", "password": "d2-rep-pw-123"},
    )
    assert r.status_code == 401
    r = await dir_client.get(f"/v1/users/{user_id}", headers=t.auth("admin"))
    assert r.json()["active"] is False
    _, payload = await wait_for_event(
        directory.settings.nats_url,
        directory.settings.nats_namespace,
        "crm.directory.user.deactivated.v1",
        events_pb2.UserDeactivated,
        lambda p: p.user.id == user_id,
    )
    assert payload.by and not payload.user.active


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"display_name": "x" * 10_000}, "display_name"), ({"email": "a@b." + "c" * 300}, "email")],
)
async def test_grpc_create_user_has_the_rest_bounds(
    tenant: Tenant, directory: Runtime, overrides: dict[str, str], field: str
) -> None:
    """gRPC callers get no OpenAPI schema to refuse oversized fields; the domain does."""
    request = directory_service_pb2.CreateUserRequest(
        org_unit_id=tenant.units["d1"]["id"],
        username="grpc-oversized",
        password="long-enough-1",
        roles=["rep"],
        **overrides,
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{directory.grpc_port}") as channel:
        stub = directory_service_pb2_grpc.DirectoryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateUser(
                request, metadata=(("authorization", tenant.auth("admin")["Authorization"]),)
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert [v.field for v in bad.field_violations] == [field]
