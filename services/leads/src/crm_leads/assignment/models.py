"""Assignment's tables: the units' assignment policies (validated documents,
crm_leads.assignment.rules) and each unit's round-robin position. Same MetaData as the lead
tables."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from crm_leads.lead.models import metadata

# Append-only like distribution_rules: a change adds the unit's next version, the highest is
# current; the primary key doubles as the "latest version of a unit" index.
assignment_policies = sa.Table(
    "assignment_policies",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("org_unit_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("document", JSONB, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# A round robin's next position per unit; locked by a run, so concurrent runs take turns.
assignment_cursors = sa.Table(
    "assignment_cursors",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("org_unit_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("cursor", sa.Integer, nullable=False, server_default="0"),
)
