"""Tenants' scoring rules: storing a new version, reading the current one, and the
per-process cache that capture reads them through. Keyword-only functions taking the
connection; they never commit."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.scoring.models import scoring_rules
from crm_leads.scoring.rules import DEFAULT_RULES, ScoringRules, rules_json
from crm_platform.auth import ROLE_ADMIN, Principal
from crm_platform.errors import EtagMismatch

DEFAULT_VERSION = 0  # the built-in rules, for a tenant that has stored none
# How long a process scores captures with the rules it last read before looking again.
CACHE_SECONDS = 5.0
CACHE_MAX_TENANTS = 10_000
PUT_ATTEMPTS = 5

_LATEST = (
    sa.select(scoring_rules.c.version, scoring_rules.c.rules)
    .where(scoring_rules.c.tenant_id == sa.bindparam("tenant_id"))
    .order_by(scoring_rules.c.version.desc())
    .limit(1)
)


@dataclass(frozen=True)
class CurrentRules:
    version: int
    rules: ScoringRules


DEFAULT = CurrentRules(DEFAULT_VERSION, DEFAULT_RULES)


class RulesCache:
    """The current rules per tenant, re-read at most every ``ttl_seconds``.

    Capture is the hot path, and rules change rarely (an administrator's edit): a TTL keeps
    a capture at zero extra round trips, where checking the latest version every time would
    add one query to each. The price is that other replicas pick up a change within
    ``ttl_seconds``; the replica that stored it uses it at once (``remember``). A re-read
    that finds the same version keeps the parsed rules (versions never change)."""

    def __init__(
        self,
        ttl_seconds: float = CACHE_SECONDS,
        *,
        max_tenants: int = CACHE_MAX_TENANTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_tenants
        self._clock = clock
        self._entries: dict[uuid.UUID, tuple[float, CurrentRules]] = {}

    async def current(self, conn: AsyncConnection, tenant_id: uuid.UUID) -> CurrentRules:
        entry = self._entries.get(tenant_id)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        row = (await conn.execute(_LATEST, {"tenant_id": tenant_id})).first()
        if row is None:
            rules = DEFAULT
        elif entry is not None and entry[1].version == row.version:
            rules = entry[1]
        else:
            rules = _stored(row.version, row.rules)
        self.remember(tenant_id, rules)
        return rules

    def remember(self, tenant_id: uuid.UUID, rules: CurrentRules) -> None:
        self._entries.pop(tenant_id, None)
        if len(self._entries) >= self._max:
            self._entries.pop(next(iter(self._entries)))  # the least recently refreshed
        self._entries[tenant_id] = (self._clock() + self._ttl, rules)


# One per process: capture, whichever adapter calls it, reads the rules through it.
CACHE = RulesCache()


def _stored(version: int, document: dict[str, Any]) -> CurrentRules:
    # Stored documents were validated when they were put.
    return CurrentRules(version, ScoringRules.model_validate(document))


async def latest(*, conn: AsyncConnection, tenant_id: uuid.UUID) -> CurrentRules:
    """The tenant's current rules read from the database (the built-in default, version 0,
    if it has none); refreshes this process's cache."""
    row = (await conn.execute(_LATEST, {"tenant_id": tenant_id})).first()
    current = DEFAULT if row is None else _stored(row.version, row.rules)
    CACHE.remember(tenant_id, current)
    return current


async def put(*, conn: AsyncConnection, principal: Principal, rules: ScoringRules) -> CurrentRules:
    """Store ``rules`` as the tenant's next version (tenant administrators only). Call
    ``CACHE.remember`` after the commit so this process uses them at once."""
    principal.require_any([ROLE_ADMIN])
    document = rules_json(rules)
    next_version = sa.select(
        sa.literal(principal.tenant_id, scoring_rules.c.tenant_id.type),
        sa.func.coalesce(sa.func.max(scoring_rules.c.version), DEFAULT_VERSION) + 1,
        sa.literal(document, JSONB),
        sa.literal(principal.subject),
    ).where(scoring_rules.c.tenant_id == principal.tenant_id)
    stmt = (
        pg_insert(scoring_rules)
        .from_select(["tenant_id", "version", "rules", "created_by"], next_version)
        .on_conflict_do_nothing()
        .returning(scoring_rules.c.version)
    )
    # Two concurrent puts compute the same next version; the second waits on the primary
    # key, skips, and its next attempt (a new snapshot) sees the first and takes the one
    # after it.
    for _ in range(PUT_ATTEMPTS):
        version = (await conn.execute(stmt)).scalar_one_or_none()
        if version is not None:
            return CurrentRules(version, rules)
    raise EtagMismatch(
        "the scoring rules are being changed concurrently; retry",
        reason="SCORING_RULES_CONFLICT",
    )
