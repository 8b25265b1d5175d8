"""Re-scoring a stored lead from everything scoring looks at: its profile, its intents and
its logged visits. ``on_follow_up`` is the follow-up hook (wired in ``crm_leads.__main__``)
that re-scores a lead in the transaction that logs a visit on it. Functions taking the
connection never commit."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.activities.hooks import FollowUp
from crm_leads.lead.models import lead_intents, leads
from crm_leads.lead.service import store_score, visit_count
from crm_leads.scoring import service as scoring
from crm_leads.scoring.rules import PROFILE_FIELDS, LeadFacts, score

# The activity kinds scoring counts (LeadFacts.visits); logging any other kind cannot change
# a score, so it costs scoring nothing.
SCORED_KINDS = frozenset({"visit"})


def _count(table: sa.Table, *where: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
    return (
        sa.select(sa.func.count())
        .select_from(table)
        .where(table.c.lead_id == leads.c.id, *where)
        .scalar_subquery()
    )


# The lead, locked, with its counts: one statement (the hook runs on every logged visit).
_LOCKED_WITH_COUNTS = (
    sa.select(
        leads,
        _count(lead_intents, lead_intents.c.campaign != "").label("campaign_responses"),
        _count(lead_intents, lead_intents.c.product_interest != "").label("product_interests"),
        visit_count(leads.c.id).label("visits"),
    )
    .where(leads.c.id == sa.bindparam("lead_id"))
    .with_for_update(of=leads)
)


def facts_of(row: Any) -> LeadFacts:
    """The scoring facts of a row read by ``_LOCKED_WITH_COUNTS``."""
    return LeadFacts(
        **{name: getattr(row, name) for name in PROFILE_FIELDS},
        intent_count=row.intent_count,
        campaign_responses=row.campaign_responses,
        product_interests=row.product_interests,
        visits=row.visits,
    )


async def rescore_stored(conn: AsyncConnection, lead_id: uuid.UUID) -> Any | None:
    """Score the lead again from its stored facts with the tenant's rules (through the
    per-process cache, as captures read them); if its score or grade changed, update it
    (a new version) and publish ``crm.leads.lead.scored.v1``. Returns the updated row, or
    None when nothing changed (or there is no such lead). One statement when nothing
    changed, three when it did."""
    current = (await conn.execute(_LOCKED_WITH_COUNTS, {"lead_id": lead_id})).first()
    if current is None:
        return None
    rules = await scoring.CACHE.current(conn, current.tenant_id)
    return await store_score(conn, current, score(facts_of(current), rules.rules), rules.version)


async def on_follow_up(conn: AsyncConnection, activity: FollowUp) -> Any | None:
    """A follow-up hook: a logged visit is a behaviour scoring counts, so the lead is
    re-scored in the activity's transaction. Other kinds: nothing."""
    if activity.kind not in SCORED_KINDS:
        return None
    return await rescore_stored(conn, activity.lead_id)
