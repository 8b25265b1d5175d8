"""Finding the lead a capture duplicates under the tenant's rules (the I/O around the pure
functions of crm_leads.dedup.rules). Runs inside the capture's transaction.

Race-freedom:

- identity keys (phone, email, open_id) are claimed in ``lead_keys`` before this runs; its
  primary key makes a concurrent capture of the same key wait and then see the first lead;
- profile rules (company, name, city) have no unique key to claim: a similar name is not an
  equal one. Each capture evaluating them first takes a transaction-scoped advisory lock on
  (tenant, city), held until it commits, and only then reads the candidates. A concurrent
  capture in the same city waits for the lock; under READ COMMITTED its candidate query, a
  new statement, then sees the lead the first one created. The lock is per city rather than
  per (tenant, rule, city): every capture tries the rules in the same order, so a per-rule
  lock would add no concurrency, and it would let two replicas briefly holding different
  rules versions miss each other."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.dedup.rules import (
    DedupRule,
    DedupRules,
    Duplicate,
    Existing,
    Probe,
    identity_duplicate,
    profile_duplicate,
    window_start,
)
from crm_leads.lead.models import lead_intents, leads

# The newest open leads of a city a profile rule compares a capture with.
MAX_CANDIDATES = 200
_OPEN = (1, 2)  # LEAD_STATUS_NEW, LEAD_STATUS_QUALIFIED

# now() is the transaction's start: the clock windows are measured with (update_time is
# written by the database too).
_LOCK_AND_NOW = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0)), now() AS now")


def _facts(campaign: str) -> tuple[sa.ColumnElement[Any], ...]:
    """The lead columns the rules read, with whether it had an enquiry of ``campaign``."""
    same_campaign = (
        sa.exists()
        .where(lead_intents.c.lead_id == leads.c.id, lead_intents.c.campaign == campaign)
        .label("same_campaign")
        if campaign
        else sa.false().label("same_campaign")
    )
    return (
        leads.c.id,
        leads.c.full_name,
        leads.c.company,
        leads.c.province,
        leads.c.city,
        leads.c.source,
        leads.c.update_time,
        same_campaign,
    )


def _existing(row: sa.Row[Any]) -> Existing:
    return Existing(**row._mapping)


async def find_duplicate(
    *,
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    rules: DedupRules,
    probe: Probe,
    held: Mapping[str, uuid.UUID],
) -> Duplicate | None:
    """The lead the capture duplicates, and the rule that says so. ``held``: key kind -> the
    lead that already holds the capture's key of that kind (from the key claim)."""
    identity = rules.identity_rules()
    covered = [r for r in identity if set(r.keys) & held.keys()]
    if covered:
        if all(r.window_days is None and r.scope == "any" for r in covered):
            # Today's default: no lead facts needed, so no extra round trip.
            rule = covered[0]
            lead_id, kind = min((i, k) for k, i in held.items() if k in rule.keys)
            return Duplicate(rule, lead_id, kind, kind)
        found = await _identity(conn, covered, probe, held)
        if found is not None:
            return found
    for rule in rules.profile_rules():
        if probe.has(rule):
            found = await _profile(conn, tenant_id, rule, probe)
            if found is not None:
                return found
    return None


async def _identity(
    conn: AsyncConnection,
    rules: list[DedupRule],
    probe: Probe,
    held: Mapping[str, uuid.UUID],
) -> Duplicate | None:
    rows = await conn.execute(
        sa.select(*_facts(probe.campaign), sa.func.now().label("now")).where(
            leads.c.id.in_(set(held.values()))
        )
    )
    by_id: dict[uuid.UUID, Existing] = {}
    now: datetime | None = None
    for row in rows:
        fields = dict(row._mapping)
        now = fields.pop("now")
        by_id[fields["id"]] = Existing(**fields)
    if now is None:
        return None
    facts = {kind: by_id[lead_id] for kind, lead_id in held.items() if lead_id in by_id}
    return identity_duplicate(rules, facts, probe, now)


async def _profile(
    conn: AsyncConnection, tenant_id: uuid.UUID, rule: DedupRule, probe: Probe
) -> Duplicate | None:
    locked = await conn.execute(_LOCK_AND_NOW, {"key": f"dedup/{tenant_id}/{probe.city}"})
    now: datetime = locked.one().now
    query = (
        sa.select(*_facts(probe.campaign))
        .where(
            leads.c.tenant_id == tenant_id,
            leads.c.city == probe.city,
            leads.c.status.in_(_OPEN),
        )
        .order_by(leads.c.id.desc())
        .limit(MAX_CANDIDATES)
    )
    start = window_start(rule, now)
    if start is not None:
        query = query.where(leads.c.update_time >= start)
    if rule.scope == "channel":
        query = query.where(leads.c.source == probe.source)
    candidates = [_existing(row) for row in await conn.execute(query)]
    return profile_duplicate(rule, probe, candidates, now)
