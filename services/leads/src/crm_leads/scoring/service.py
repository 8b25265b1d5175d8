"""Tenants' scoring rules: storing a new version, reading the current one, and the
per-process cache that capture reads them through. Keyword-only functions taking the
connection; they never commit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.scoring.models import scoring_rules
from crm_leads.scoring.rules import DEFAULT_RULES, ScoringRules, rules_json
from crm_platform.auth import ROLE_ADMIN, Principal
from crm_platform.tenant_cache import TenantCache
from crm_platform.versioned import append_version

DEFAULT_VERSION = 0  # the built-in rules, for a tenant that has stored none
# How long a process scores captures with the rules it last read before looking again.
CACHE_SECONDS = 5.0

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


def _stored(row: Any) -> CurrentRules:
    # Stored documents were validated when they were put.
    return CurrentRules(row.version, ScoringRules.model_validate(row.rules))


async def _read_latest(conn: AsyncConnection, tenant_id: uuid.UUID) -> Any:
    return (await conn.execute(_LATEST, {"tenant_id": tenant_id})).first()


# One per process: capture, whichever adapter calls it, reads the rules through it (zero
# extra round trips; other replicas see a change within CACHE_SECONDS).
CACHE = TenantCache(read=_read_latest, parse=_stored, default=DEFAULT, ttl_seconds=CACHE_SECONDS)


async def latest(*, conn: AsyncConnection, tenant_id: uuid.UUID) -> CurrentRules:
    """The tenant's current rules read from the database (the built-in default, version 0,
    if it has none); refreshes this process's cache."""
    return await CACHE.latest(conn, tenant_id)


async def put(*, conn: AsyncConnection, principal: Principal, rules: ScoringRules) -> CurrentRules:
    """Store ``rules`` as the tenant's next version (tenant administrators only). Call
    ``CACHE.remember`` after the commit so this process uses them at once."""
    principal.require_any([ROLE_ADMIN])
    row = await append_version(
        conn,
        scoring_rules,
        key={"tenant_id": principal.tenant_id},
        values={"rules": rules_json(rules), "created_by": principal.subject},
        conflict="the scoring rules are being changed concurrently; retry",
        reason="SCORING_RULES_CONFLICT",
    )
    return CurrentRules(row.version, rules)
