"""A saturated service answers 503 / UNAVAILABLE: when no pooled connection frees up within
the pool timeout, the use case fails with Unavailable (reason DB_POOL_EXHAUSTED) instead of
an internal error, and REST adds Retry-After. Against real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi import APIRouter
from prometheus_client import REGISTRY

from crm_platform.auth import Authenticator
from crm_platform.db import Database
from crm_platform.errors import Unavailable
from crm_platform.http import create_app
from crm_platform.migrations import ensure_database
from crm_platform.testing.harness import ServiceStarter


@pytest.fixture(scope="module")
async def db(starter: ServiceStarter) -> AsyncIterator[Database]:
    db_url = starter.db_url("pooltest")
    await ensure_database(db_url)
    database = Database(db_url, pool_size=1, pool_timeout=0.2)
    yield database
    await database.dispose()


def _exhausted() -> float:
    return REGISTRY.get_sample_value("crm_db_pool_exhausted_total") or 0.0


async def test_no_free_connection_is_unavailable_not_an_error(db: Database) -> None:
    before = _exhausted()
    async with db.read() as held:
        await held.execute(sa.text("SELECT 1"))
        for use in (db.read, db.unit_of_work):
            with pytest.raises(Unavailable) as err:
                async with use() as conn:
                    await conn.execute(sa.text("SELECT 1"))
            assert err.value.reason == "DB_POOL_EXHAUSTED"
    assert _exhausted() == before + 2
    # Freed: the next use gets the connection.
    async with db.unit_of_work() as conn:
        assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1


async def test_rest_answers_503_with_retry_after(db: Database) -> None:
    router = APIRouter()

    @router.get("/v1/things")
    async def things() -> dict[str, int]:
        async with db.read() as conn:
            return {"n": int((await conn.execute(sa.text("SELECT 1"))).scalar_one())}

    async def ready() -> dict[str, bool]:
        return {"db": True}

    app = create_app(
        title="pool test",
        routers=[router],
        authenticator=Authenticator(jwks_url="http://127.0.0.1:9/jwks", issuer="x", audience="x"),
        readiness=ready,
        max_body_bytes=1024,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        async with db.read():
            r = await client.get("/v1/things")
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert r.json()["reason"] == "DB_POOL_EXHAUSTED"
        r = await client.get("/v1/things")
        assert r.status_code == 200
        assert r.json() == {"n": 1}
