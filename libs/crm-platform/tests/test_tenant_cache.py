"""TenantCache: TTL, same-version reuse, remember, eviction (pure: the reader is a stub)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from crm_platform.tenant_cache import TenantCache


@dataclass(frozen=True)
class Doc:
    version: int
    body: str


@dataclass(frozen=True)
class Row:
    version: int
    body: str


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(rows: dict[uuid.UUID, Row], clock: Clock, **kw: Any) -> tuple[TenantCache[Doc], list[int]]:
    reads: list[int] = []
    parsed: list[int] = []

    async def read(conn: AsyncConnection, tenant: uuid.UUID) -> Row | None:
        reads.append(1)
        return rows.get(tenant)

    def parse(row: Row) -> Doc:
        parsed.append(row.version)
        return Doc(row.version, row.body)

    cache = TenantCache(read=read, parse=parse, default=Doc(0, "default"), clock=clock, **kw)
    return cache, reads


CONN = cast(AsyncConnection, None)


async def test_ttl_and_same_version_reuse() -> None:
    tenant = uuid.uuid4()
    rows = {tenant: Row(1, "a")}
    clock = Clock()
    cache, reads = make(rows, clock, ttl_seconds=5)
    first = await cache.current(CONN, tenant)
    assert first == Doc(1, "a")
    assert await cache.current(CONN, tenant) is first and len(reads) == 1  # within the TTL
    clock.now = 6
    assert await cache.current(CONN, tenant) is first and len(reads) == 2  # same version kept
    rows[tenant] = Row(2, "b")
    clock.now = 12
    assert await cache.current(CONN, tenant) == Doc(2, "b")


async def test_default_remember_latest_and_eviction() -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    rows: dict[uuid.UUID, Row] = {}
    clock = Clock()
    cache, reads = make(rows, clock, max_tenants=2)
    assert await cache.current(CONN, a) == Doc(0, "default")
    cache.remember(a, Doc(3, "put here"))
    assert await cache.current(CONN, a) == Doc(3, "put here")
    rows[a] = Row(4, "db")
    assert await cache.latest(CONN, a) == Doc(4, "db")  # never the cache
    await cache.current(CONN, b)
    await cache.current(CONN, c)  # evicts a, the least recently refreshed
    before = len(reads)
    await cache.current(CONN, a)
    assert len(reads) == before + 1
