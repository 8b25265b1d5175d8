"""Suite-wide fixtures: a running directory and a tenant with a small org tree.

Every service's tests and tests/integration use these; servers are real (see
crm_platform.testing)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crm_platform.config import BaseServiceSettings
from crm_platform.runtime import Runtime
from crm_platform.telemetry import init_tracing
from crm_platform.testing.harness import ServiceStarter

BOOTSTRAP = "test-bootstrap-token"


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """Every span of the run, for trace assertions; installed before any service starts so
    the gRPC, FastAPI and SQLAlchemy instrumentation report to it."""
    exporter = InMemorySpanExporter()
    settings = BaseServiceSettings(service_name="tests", db_url="postgresql+asyncpg://unused/x")
    init_tracing(settings, extra_processors=(SimpleSpanProcessor(exporter),))
    return exporter


@pytest.fixture(scope="session")
async def directory(starter: ServiceStarter, span_exporter: InMemorySpanExporter) -> Runtime:
    from crm_directory.__main__ import DEFINITION

    return await starter.start(DEFINITION, bootstrap_token=BOOTSTRAP)


async def _start(starter: ServiceStarter, directory: Runtime, service: str) -> Runtime:
    module = __import__(f"crm_{service.replace('-', '_')}.__main__", fromlist=["DEFINITION"])
    return await starter.start(module.DEFINITION, directory=directory)


# One in-process instance of each service per test run, shared by service tests and
# tests/integration (each has its own database; all share the run's NATS namespace).
@pytest.fixture(scope="session")
async def leads(starter: ServiceStarter, directory: Runtime) -> Runtime:
    return await _start(starter, directory, "leads")


@pytest.fixture(scope="session")
async def customers(starter: ServiceStarter, directory: Runtime) -> Runtime:
    return await _start(starter, directory, "customers")


@pytest.fixture(scope="session")
async def sales(starter: ServiceStarter, directory: Runtime) -> Runtime:
    return await _start(starter, directory, "sales")


@pytest.fixture(scope="session")
async def service_desk(starter: ServiceStarter, directory: Runtime) -> Runtime:
    return await _start(starter, directory, "service-desk")


@pytest.fixture(scope="session")
async def marketing(starter: ServiceStarter, directory: Runtime) -> Runtime:
    return await _start(starter, directory, "marketing")


@pytest.fixture(scope="session")
async def analytics(starter: ServiceStarter, directory: Runtime) -> Runtime:
    return await _start(starter, directory, "analytics")


def http_client(rt: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{rt.http_port}", timeout=10)


@dataclass
class Tenant:
    """A tenant with HQ -> east region -> dealers d1, d2 and tokens for users in each."""

    slug: str
    id: str
    units: dict[str, dict[str, str]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    directory_url: str = ""

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def add_user(self, name: str, unit: str, roles: list[str], *, username: str = "") -> str:
        """A user of ``unit`` created through the directory API, logged in: its token is
        ``tokens[name]``. Returns the user id."""
        username = username or name
        password = f"{username}-pw-123"
        async with httpx.AsyncClient(base_url=self.directory_url, timeout=10) as c:
            r = await c.post(
                "/v1/users",
                json={
                    "org_unit_id": self.units[unit]["id"],
                    "username": username,
                    "password": password,
                    "roles": roles,
                },
                headers=self.auth("admin"),
            )
            assert r.status_code == 201, r.text
            user_id = str(r.json()["id"])
            r = await c.post(
                "/v1/auth/token",
                json={"tenant": self.slug, "username": username, "password": password},
            )
            assert r.status_code == 200, r.text
            self.tokens[name] = str(r.json()["access_token"])
        return user_id


async def make_tenant(directory: Runtime) -> Tenant:
    base = f"http://127.0.0.1:{directory.http_port}"
    slug = "t" + uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        r = await c.post(
            "/v1/tenants",
            json={
                "slug": slug,
                "display_name": "Test Co",
                "admin_username": "admin",
                "admin_password": "admin-pass-1",
            },
            headers={"Authorization": f"Bootstrap {BOOTSTRAP}"},
        )
        r.raise_for_status()
        created = r.json()
        tenant = Tenant(slug=slug, id=created["tenant"]["id"], directory_url=base)
        tenant.units["hq"] = created["root"]

        async def login(user: str, password: str) -> str:
            resp = await c.post(
                "/v1/auth/token", json={"tenant": slug, "username": user, "password": password}
            )
            resp.raise_for_status()
            return str(resp.json()["access_token"])

        tenant.tokens["admin"] = await login("admin", "admin-pass-1")
        admin = tenant.auth("admin")

        async def unit(name: str, parent: str, kind: str) -> None:
            resp = await c.post(
                "/v1/org-units",
                json={
                    "parent_id": tenant.units[parent]["id"],
                    "kind": kind,
                    "code": name,
                    "display_name": name.upper(),
                },
                headers=admin,
            )
            resp.raise_for_status()
            tenant.units[name] = resp.json()

        await unit("east", "hq", "REGION")
        await unit("d1", "east", "DEALER")
        await unit("d2", "east", "DEALER")
        for user, where, roles in (
            ("hq-manager", "hq", ["manager"]),
            ("d1-rep", "d1", ["rep"]),
            ("d2-rep", "d2", ["rep"]),
        ):
            resp = await c.post(
                "/v1/users",
                json={
                    "org_unit_id": tenant.units[where]["id"],
                    "username": user,
                    "password": f"{user}-pw-123",
                    "roles": roles,
                },
                headers=admin,
            )
            resp.raise_for_status()
            tenant.tokens[user] = await login(user, f"{user}-pw-123")
    return tenant


@pytest.fixture(scope="session")
async def tenant(directory: Runtime) -> Tenant:
    return await make_tenant(directory)


@pytest.fixture
async def other_tenant(directory: Runtime) -> Tenant:
    return await make_tenant(directory)


@pytest.fixture
async def dir_client(directory: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{directory.http_port}", timeout=10
    ) as c:
        yield c
