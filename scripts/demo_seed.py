"""The demo tenant of the local stack, created over the public REST APIs (as a client would).

Idempotent: every unit, user and the demo lead is created only when missing, so a rerun
after a partial failure completes the tenant instead of skipping it. Run by
``scripts/devstack.py up``; standalone: ``python scripts/demo_seed.py DIRECTORY_URL
BOOTSTRAP_TOKEN [LEADS_URL]``."""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass, replace
from typing import Any

import httpx

TENANT = "demo"
TENANT_DISPLAY = "Demo Motors"
TENANT_REGION = "CN"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "demo-admin-pw"
USER_PASSWORD = "demo-pass-123"
REGIONS = ("east", "north", "south")
DEALERS_PER_REGION = 4
STORES_PER_DEALER = 2
LEAD_OWNER = "east-d01-rep"
# A fixed Idempotency-Key: the leads service returns the first lead on every rerun.
LEAD_KEY = str(uuid.uuid5(uuid.NAMESPACE_URL, "crm-devstack/demo-lead"))
LEAD = {
    "full_name": "张伟",
    "phone": "138 0013 8000",
    "email": "zhang.wei@example.com",
    "province": "上海",
    "city": "上海",
    "source": "demo",
}
# Argon2 hashing makes user creation CPU-bound on the directory; a few in flight is enough.
CONCURRENCY = 4

Json = dict[str, Any]


@dataclass(frozen=True)
class UnitSpec:
    code: str
    kind: str
    parent: str  # code of the parent unit; "" for a child of the HQ root
    display_name: str


@dataclass(frozen=True)
class UserSpec:
    username: str
    unit: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class SeedReport:
    created_tenant: bool
    units: int
    users: int
    leads: int = 0


def org_levels() -> list[list[UnitSpec]]:
    """Regions, dealers, stores: each level's parents exist before it is created."""
    regions, dealers, stores = [], [], []
    for region in REGIONS:
        regions.append(UnitSpec(region, "REGION", "", f"{region.title()} Region"))
        for d in range(1, DEALERS_PER_REGION + 1):
            dealer = f"{region}-d{d:02d}"
            dealers.append(UnitSpec(dealer, "DEALER", region, f"{region.title()} Dealer {d:02d}"))
            for s in range(1, STORES_PER_DEALER + 1):
                name = f"{region.title()} Dealer {d:02d} Store {s}"
                stores.append(UnitSpec(f"{dealer}-s{s}", "STORE", dealer, name))
    return [regions, dealers, stores]


def demo_users() -> list[UserSpec]:
    """A manager per region and dealer, a rep per dealer. Kept small on purpose: the
    directory hashes each password with Argon2 (~0.3 s of CPU apiece)."""
    users: list[UserSpec] = []
    for level in org_levels():
        for unit in level:
            if unit.kind in ("REGION", "DEALER"):
                users.append(UserSpec(f"{unit.code}-mgr", unit.code, ("manager",)))
            if unit.kind == "DEALER":
                users.append(UserSpec(f"{unit.code}-rep", unit.code, ("rep",)))
    return users


def _check(resp: httpx.Response) -> Json:
    if resp.is_error:
        raise RuntimeError(
            f"{resp.request.method} {resp.request.url} -> {resp.status_code}: {resp.text}"
        )
    body: Json = resp.json()
    return body


async def _token(c: httpx.AsyncClient, username: str, password: str) -> str | None:
    resp = await c.post(
        "/v1/auth/token", json={"tenant": TENANT, "username": username, "password": password}
    )
    if resp.status_code in (401, 404):
        return None
    return str(_check(resp)["access_token"])


async def _list_all(
    c: httpx.AsyncClient, path: str, key: str, headers: dict[str, str]
) -> list[Json]:
    items: list[Json] = []
    token = ""
    while True:
        page = _check(
            await c.get(path, params={"page_size": 1000, "page_token": token}, headers=headers)
        )
        items.extend(page[key])
        token = page.get("next_page_token", "")
        if not token:
            return items


async def _ensure_tenant(c: httpx.AsyncClient, bootstrap_token: str) -> tuple[str, bool]:
    token = await _token(c, ADMIN_USER, ADMIN_PASSWORD)
    if token is not None:
        return token, False
    _check(
        await c.post(
            "/v1/tenants",
            json={
                "slug": TENANT,
                "display_name": TENANT_DISPLAY,
                "default_region": TENANT_REGION,
                "admin_username": ADMIN_USER,
                "admin_password": ADMIN_PASSWORD,
            },
            headers={"Authorization": f"Bootstrap {bootstrap_token}"},
        )
    )
    token = await _token(c, ADMIN_USER, ADMIN_PASSWORD)
    if token is None:
        raise RuntimeError("tenant 'demo' was created but its admin cannot log in")
    return token, True


async def _ensure_units(c: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, str]:
    """Returns unit id by code (the HQ root under "")."""
    units = await _list_all(c, "/v1/org-units", "org_units", admin)
    ids = {("" if not u["parent_id"] else u["code"]): u["id"] for u in units}
    gate = asyncio.Semaphore(CONCURRENCY * 2)

    async def create(spec: UnitSpec) -> None:
        body = {
            "parent_id": ids[spec.parent],
            "kind": spec.kind,
            "code": spec.code,
            "display_name": spec.display_name,
        }
        async with gate:
            ids[spec.code] = _check(await c.post("/v1/org-units", json=body, headers=admin))["id"]

    for level in org_levels():
        await asyncio.gather(*(create(s) for s in level if s.code not in ids))
    return ids


async def _ensure_users(c: httpx.AsyncClient, admin: dict[str, str], ids: dict[str, str]) -> int:
    existing = {u["username"] for u in await _list_all(c, "/v1/users", "users", admin)}
    gate = asyncio.Semaphore(CONCURRENCY)

    async def create(spec: UserSpec) -> None:
        body = {
            "org_unit_id": ids[spec.unit],
            "username": spec.username,
            "password": USER_PASSWORD,
            "roles": list(spec.roles),
        }
        async with gate:
            _check(await c.post("/v1/users", json=body, headers=admin))

    wanted = demo_users()
    await asyncio.gather(*(create(u) for u in wanted if u.username not in existing))
    return len(existing | {u.username for u in wanted})


async def _ensure_lead(c: httpx.AsyncClient, leads_url: str) -> int:
    token = await _token(c, LEAD_OWNER, USER_PASSWORD)
    if token is None:
        raise RuntimeError(f"demo user {LEAD_OWNER} cannot log in")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=leads_url, timeout=30) as leads:
        _check(
            await leads.post(
                "/v1/leads", json=LEAD, headers={**headers, "Idempotency-Key": LEAD_KEY}
            )
        )
        return len(await _list_all(leads, "/v1/leads", "leads", headers))


async def seed_directory(directory_url: str, bootstrap_token: str) -> SeedReport:
    """Tenant, org tree and users: needs only the directory."""
    async with httpx.AsyncClient(base_url=directory_url, timeout=60) as c:
        token, created = await _ensure_tenant(c, bootstrap_token)
        admin = {"Authorization": f"Bearer {token}"}
        ids = await _ensure_units(c, admin)
        users = await _ensure_users(c, admin, ids)
    return SeedReport(created_tenant=created, units=len(ids), users=users)


async def seed_leads(directory_url: str, leads_url: str) -> int:
    """The demo lead; returns how many leads its owner sees."""
    async with httpx.AsyncClient(base_url=directory_url, timeout=60) as c:
        return await _ensure_lead(c, leads_url)


async def seed(directory_url: str, bootstrap_token: str, leads_url: str | None) -> SeedReport:
    report = await seed_directory(directory_url, bootstrap_token)
    if leads_url:
        report = replace(report, leads=await seed_leads(directory_url, leads_url))
    return report


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    print(asyncio.run(seed(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else None)))
