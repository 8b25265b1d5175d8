"""A per-process, per-tenant cache of a versioned document (rules, settings) read on hot
paths: a TTL keeps a capture at zero extra round trips, where checking the latest version
every time would add a query to each. The price is that other replicas pick up a change
within ``ttl_seconds``; the replica that stored it uses it at once (``remember``). A re-read
that finds the same version keeps the parsed document (stored versions never change)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

DEFAULT_TTL_SECONDS = 5.0
DEFAULT_MAX_TENANTS = 10_000


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


T = TypeVar("T", bound=Versioned)


class TenantCache(Generic[T]):
    """``read`` returns the tenant's latest stored row (with a ``version`` column) or None;
    ``parse`` turns a row into the document; ``default`` stands in when there is none."""

    def __init__(
        self,
        *,
        read: Callable[[AsyncConnection, uuid.UUID], Awaitable[Any]],
        parse: Callable[[Any], T],
        default: T,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_tenants: int = DEFAULT_MAX_TENANTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._parse = parse
        self.default = default
        self._ttl = ttl_seconds
        self._max = max_tenants
        self._clock = clock
        self._entries: dict[uuid.UUID, tuple[float, T]] = {}

    def fresh(self, tenant_id: uuid.UUID) -> T | None:
        """The cached value if it has not expired, without a connection (a caller can skip
        checking one out on the hot path)."""
        entry = self._entries.get(tenant_id)
        return entry[1] if entry is not None and entry[0] > self._clock() else None

    async def current(self, conn: AsyncConnection, tenant_id: uuid.UUID) -> T:
        entry = self._entries.get(tenant_id)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        row = await self._read(conn, tenant_id)
        if row is None:
            value = self.default
        elif entry is not None and entry[1].version == row.version:
            value = entry[1]
        else:
            value = self._parse(row)
        self.remember(tenant_id, value)
        return value

    async def latest(self, conn: AsyncConnection, tenant_id: uuid.UUID) -> T:
        """From the database, never the cache (whoever just changed it expects it); the
        cache is refreshed on the way."""
        row = await self._read(conn, tenant_id)
        value = self.default if row is None else self._parse(row)
        self.remember(tenant_id, value)
        return value

    def remember(self, tenant_id: uuid.UUID, value: T) -> None:
        self._entries.pop(tenant_id, None)
        if len(self._entries) >= self._max:
            self._entries.pop(next(iter(self._entries)))  # the least recently refreshed
        self._entries[tenant_id] = (self._clock() + self._ttl, value)
