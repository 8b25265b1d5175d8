from __future__ import annotations

import httpx

from conftest import Tenant


async def test_tenant_tree_and_login(tenant: Tenant, dir_client: httpx.AsyncClient) -> None:
    r = await dir_client.get("/v1/org-units", headers=tenant.auth("admin"))
    assert r.status_code == 200
    paths = {u["path"] for u in r.json()["org_units"]}
    assert {f"/{tenant.slug}/", f"/{tenant.slug}/east/d1/"} <= paths
    me = (await dir_client.get("/v1/me", headers=tenant.auth("d1-rep"))).json()
    assert me["org_path"] == f"/{tenant.slug}/east/d1/"
    assert me["roles"] == ["rep"]
