"""Tenants' de-duplication rules documents and the lead field history. Same MetaData as the
lead tables, so one set of migrations covers the service."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from crm_leads.lead.models import metadata
from crm_platform.db import id_column

# Append-only, like scoring_rules: a change adds the next version and the highest version is
# current. The primary key doubles as the "latest version of a tenant" index.
dedup_rules = sa.Table(
    "dedup_rules",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("document", JSONB, nullable=False),
    sa.Column("author", sa.Text, nullable=False),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# One row per field a duplicate capture changed (a merge filling a blank, an overwrite
# replacing a value), with the enquiry that brought it. Read per lead, newest first.
lead_history = sa.Table(
    "lead_history",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("lead_id", UUID(as_uuid=True), nullable=False),
    sa.Column("field", sa.Text, nullable=False),
    sa.Column("old_value", sa.Text, nullable=False),
    sa.Column("new_value", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),  # merge | overwrite
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("intent_id", UUID(as_uuid=True), nullable=True),
    sa.Column("request_id", UUID(as_uuid=True), nullable=True),
    sa.Column("author", sa.Text, nullable=False),
    sa.Column(
        "change_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Index("ix_lead_history_lead", "lead_id", "id"),
)
