"""Tenants' lead settings. Same MetaData as the lead tables, so one set of migrations covers
the service."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm_leads.lead.models import metadata

# One row per tenant that has changed a setting, updated in place (``version`` counts the
# changes); a NULL column means "the service default", so changing the default changes it
# for every tenant that never chose its own value.
lead_settings = sa.Table(
    "lead_settings",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("stale_lead_days", sa.Integer, nullable=True),
    sa.Column("phone_region", sa.Text, nullable=True),
    # Pool rules (crm_leads.poolrules): leads one rep may hold; hours before a rep may claim
    # again a lead they released or lost.
    sa.Column("private_pool_cap", sa.Integer, nullable=True),
    sa.Column("reclaim_cooldown_hours", sa.Integer, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_by", sa.Text, nullable=False),
    sa.Column(
        "update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    # The stale-lead job computes with the column in SQL: a bad value must not get that far.
    sa.CheckConstraint("stale_lead_days BETWEEN 1 AND 3650", name="stale_lead_days_range"),
    sa.CheckConstraint("private_pool_cap BETWEEN 1 AND 100000", name="private_pool_cap_range"),
    sa.CheckConstraint(
        "reclaim_cooldown_hours BETWEEN 0 AND 8760", name="reclaim_cooldown_hours_range"
    ),
)
