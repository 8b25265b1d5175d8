"""Tenants' de-duplication rules: storing a new version, reading the current one or an older
one, and the per-process cache capture reads them through. Keyword-only functions taking the
connection; they never commit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.dedup.models import dedup_rules
from crm_leads.dedup.rules import DEFAULT_RULES, DedupRules, rules_json
from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, Principal
from crm_platform.errors import NotFound
from crm_platform.tenant_cache import TenantCache
from crm_platform.versioned import append_version

DEFAULT_VERSION = 0  # the built-in rules, for a tenant that has stored none
# Tenant-wide rules: administrators, and managers (who run the dealers' lead intake).
EDITOR_ROLES = frozenset({ROLE_ADMIN, ROLE_MANAGER})
# How long a process de-duplicates captures with the rules it last read before looking again.
CACHE_SECONDS = 5.0

_COLUMNS = (
    dedup_rules.c.version,
    dedup_rules.c.document,
    dedup_rules.c.author,
    dedup_rules.c.create_time,
)
_LATEST = (
    sa.select(*_COLUMNS)
    .where(dedup_rules.c.tenant_id == sa.bindparam("tenant_id"))
    .order_by(dedup_rules.c.version.desc())
    .limit(1)
)


@dataclass(frozen=True)
class CurrentRules:
    version: int
    rules: DedupRules
    author: str = ""  # empty for the built-in default
    create_time: datetime | None = None


DEFAULT = CurrentRules(DEFAULT_VERSION, DEFAULT_RULES)


def _stored(row: Any) -> CurrentRules:
    # Stored documents were validated when they were put.
    return CurrentRules(
        row.version, DedupRules.model_validate(row.document), row.author, row.create_time
    )


async def _read_latest(conn: AsyncConnection, tenant_id: uuid.UUID) -> Any:
    return (await conn.execute(_LATEST, {"tenant_id": tenant_id})).first()


# One per process: capture, whichever adapter calls it, reads the rules through it (zero
# extra round trips; other replicas see a change within CACHE_SECONDS).
CACHE = TenantCache(read=_read_latest, parse=_stored, default=DEFAULT, ttl_seconds=CACHE_SECONDS)


async def latest(*, conn: AsyncConnection, tenant_id: uuid.UUID) -> CurrentRules:
    """The tenant's current rules from the database (the built-in default, version 0, if it
    has none); refreshes this process's cache."""
    return await CACHE.latest(conn, tenant_id)


async def version(*, conn: AsyncConnection, tenant_id: uuid.UUID, number: int) -> CurrentRules:
    """One stored version (0: the built-in default); NotFound if the tenant has no such
    version."""
    if number == DEFAULT_VERSION:
        return DEFAULT
    row = (
        await conn.execute(
            sa.select(*_COLUMNS).where(
                dedup_rules.c.tenant_id == tenant_id, dedup_rules.c.version == number
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"dedup rules version {number} not found", reason="DEDUP_RULES_NOT_FOUND")
    return _stored(row)


async def put(*, conn: AsyncConnection, principal: Principal, rules: DedupRules) -> CurrentRules:
    """Store ``rules`` as the tenant's next version. Call ``CACHE.remember`` after the commit
    so this process uses them at once."""
    principal.require_any(EDITOR_ROLES)
    row = await append_version(
        conn,
        dedup_rules,
        key={"tenant_id": principal.tenant_id},
        values={"document": rules_json(rules), "author": principal.subject},
        conflict="the de-duplication rules are being changed concurrently; retry",
        reason="DEDUP_RULES_CONFLICT",
    )
    return CurrentRules(row.version, rules, principal.subject, row.create_time)
