"""Tenants' scoring rules documents. Same MetaData as the lead tables, so one set of
migrations covers the service."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from crm_leads.lead.models import metadata

# Append-only: a change adds the next version and the highest version is current, so every
# rules change stays on record with who made it. The primary key doubles as the index for
# "latest version of a tenant" (a backward scan of one entry).
scoring_rules = sa.Table(
    "scoring_rules",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("rules", JSONB, nullable=False),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("created_by", sa.Text, nullable=False),
)
