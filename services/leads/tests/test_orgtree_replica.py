"""The leads service's org-tree replica, fed by the directory's events through real
PostgreSQL and NATS: units created and a subtree moved through the directory's REST API end
up in the leads database, the moved subtree's paths rewritten."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from conftest import Tenant, make_tenant
from crm_leads.orgtree import service as orgtree
from crm_platform.runtime import Runtime
from crm_platform.testing.harness import eventually


async def add_unit(
    c: httpx.AsyncClient, t: Tenant, code: str, parent: str, kind: str
) -> dict[str, Any]:
    r = await c.post(
        "/v1/org-units",
        json={
            "parent_id": t.units[parent]["id"],
            "kind": kind,
            "code": code,
            "display_name": code.upper(),
        },
        headers=t.auth("admin"),
    )
    assert r.status_code == 201, r.text
    t.units[code] = r.json()
    return t.units[code]


def uid(t: Tenant, name: str) -> uuid.UUID:
    return uuid.UUID(t.units[name]["id"])


async def replica_paths(leads: Runtime, t: Tenant) -> dict[str, str]:
    async with leads.db.read() as conn:
        rows = await orgtree.subtree(conn=conn, unit_id=uid(t, "hq"))
    return {row.code: row.path for row in rows}


async def test_created_units_are_replicated_with_parent_kind_and_path(
    leads: Runtime, directory: Runtime, dir_client: httpx.AsyncClient
) -> None:
    t = await make_tenant(directory)
    await add_unit(dir_client, t, "s1", "d1", "STORE")
    root = f"/{t.slug}/"

    async def replicated() -> None:
        assert await replica_paths(leads, t) == {
            t.slug: root,
            "east": f"{root}east/",
            "d1": f"{root}east/d1/",
            "d2": f"{root}east/d2/",
            "s1": f"{root}east/d1/s1/",
        }

    await eventually(replicated)
    async with leads.db.read() as conn:
        store = await orgtree.get(conn=conn, unit_id=uid(t, "s1"))
        children = await orgtree.children_of(conn=conn, unit_id=uid(t, "east"))
    assert store is not None
    assert (store.parent_id, store.name, store.tenant_id) == (uid(t, "d1"), "S1", uuid.UUID(t.id))
    assert store.kind == 4  # ORG_UNIT_KIND_STORE
    assert [c.code for c in children] == ["d1", "d2"]


async def test_moving_a_dealer_rewrites_its_subtree_paths_in_the_replica(
    leads: Runtime, directory: Runtime, dir_client: httpx.AsyncClient
) -> None:
    t = await make_tenant(directory)
    await add_unit(dir_client, t, "west", "hq", "REGION")
    await add_unit(dir_client, t, "s1", "d1", "STORE")
    await add_unit(dir_client, t, "s2", "d1", "STORE")
    root = f"/{t.slug}/"
    await eventually(lambda: _has(leads, t, "s2", f"{root}east/d1/s2/"))

    r = await dir_client.post(
        f"/v1/org-units/{t.units['d1']['id']}:move",
        json={"new_parent_id": t.units["west"]["id"]},
        headers=t.auth("admin"),
    )
    assert r.status_code == 200, r.text

    async def moved() -> None:
        paths = await replica_paths(leads, t)
        assert paths["d1"] == f"{root}west/d1/"
        assert paths["s1"] == f"{root}west/d1/s1/"
        assert paths["s2"] == f"{root}west/d1/s2/"
        assert paths["d2"] == f"{root}east/d2/"  # the sibling stays

    await eventually(moved)
    async with leads.db.read() as conn:
        east = await orgtree.children_of(conn=conn, unit_id=uid(t, "east"))
        west = await orgtree.subtree(conn=conn, unit_id=uid(t, "west"))
        dealer = await orgtree.get(conn=conn, unit_id=uid(t, "d1"))
    assert [c.code for c in east] == ["d2"]
    assert [u.code for u in west] == ["west", "d1", "s1", "s2"]
    assert dealer is not None and dealer.parent_id == uid(t, "west")


async def _has(leads: Runtime, t: Tenant, code: str, path: str) -> None:
    assert (await replica_paths(leads, t)).get(code) == path
