"""Acceptance's tables: the offer a lead is waiting on and the units that turned it down. Same
MetaData as the lead tables, so one set of migrations covers the service."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm_leads.lead.models import metadata

# The pending offer of a distributed lead to the unit that now owns it: one per lead (a lead
# is offered to one unit at a time). Accepting deletes the row; rejecting or letting
# ``due_time`` pass (the acceptance_deadline timer) returns the lead to ``from_org_id``.
lead_acceptances = sa.Table(
    "lead_acceptances",
    metadata,
    sa.Column("lead_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("org_unit_id", UUID(as_uuid=True), nullable=False),
    sa.Column("org_unit_path", sa.Text, nullable=False),
    sa.Column("offer_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("due_time", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_lead_acceptances_unit", "tenant_id", "org_unit_id", "lead_id"),
)

# Units a lead must never be offered again: they rejected it, let it expire or had it
# reclaimed. Distribution reads the set into LeadFacts.excluded at every level of a cascade.
lead_rejections = sa.Table(
    "lead_rejections",
    metadata,
    sa.Column("lead_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("org_unit_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("org_unit_path", sa.Text, nullable=False),
    # 'rejected', 'expired', 'reclaimed' or 'passed_up' (crm_leads.distribution.passup)
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("reason_code", sa.Text, nullable=False, server_default=""),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column(
        "occur_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)
