"""Distribution's tables: the units' rules and their children's profiles (validated documents,
crm_leads.distribution.rules), the engine's persisted state (counters and round-robin cursors),
the leads left unplaced, and the history of who owned each lead. Same MetaData as the lead
tables, so one set of migrations covers the service."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from crm_leads.lead.models import metadata
from crm_platform.db import id_column

# Append-only like scoring_rules: a change adds the unit's next version, the highest is
# current, so every change stays on record with its author. The primary key doubles as the
# index for "latest version of a unit". A current document without rules: no automatic
# distribution at that unit.
distribution_rules = sa.Table(
    "distribution_rules",
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

# A child unit's profile, kept by its parent; one row per unit, replaced in place (``version``
# counts the changes). A child without a profile is never a target of its parent's rules.
distribution_profiles = sa.Table(
    "distribution_profiles",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("org_unit_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("document", JSONB, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_by", sa.Text, nullable=False),
    sa.Column(
        "update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# engine.Load per target unit. ``today`` counts for ``day`` and ``week`` for the week starting
# ``week_start`` (tenant-local dates); a stale period reads as 0. A run locks the rows of the
# units it may give leads to, so concurrent runs never both spend the last unit of capacity.
distribution_load = sa.Table(
    "distribution_load",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("org_unit_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("today", sa.Integer, nullable=False, server_default="0"),
    sa.Column("week_start", sa.Date, nullable=False),
    sa.Column("week", sa.Integer, nullable=False, server_default="0"),
    sa.Column("open_load", sa.Integer, nullable=False, server_default="0"),
)

# engine.DistributionState.cursors: a weighted round robin's position per deciding unit and rule.
distribution_cursors = sa.Table(
    "distribution_cursors",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("deciding_unit_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("rule_name", sa.Text, primary_key=True),
    sa.Column("cursor", sa.Integer, nullable=False),
)

# Leads an automatic run left in the deciding unit's pool (no rule matched, or every target
# full, closed or excluded): the unit's "unplaced" list for manual distribution. A row goes
# when the lead moves.
distribution_unmatched = sa.Table(
    "distribution_unmatched",
    metadata,
    sa.Column("lead_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("org_unit_id", UUID(as_uuid=True), nullable=False),
    sa.Column("rule_name", sa.Text, nullable=False, server_default=""),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column(
        "decide_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Index("ix_distribution_unmatched_unit", "org_unit_id", "lead_id"),
)

# Every change of a lead's owner unit: one row per hop (a cascade HQ → region → dealer writes
# two, each with the rule that decided it).
lead_owner_history = sa.Table(
    "lead_owner_history",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("lead_id", UUID(as_uuid=True), nullable=False),
    sa.Column("from_org_id", UUID(as_uuid=True), nullable=False),
    sa.Column("from_org_path", sa.Text, nullable=False),
    sa.Column("to_org_id", UUID(as_uuid=True), nullable=False),
    sa.Column("to_org_path", sa.Text, nullable=False),
    # 'distributed' (automatic rules) or 'manual'.
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("rule_name", sa.Text, nullable=False, server_default=""),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column(
        "occur_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Index("ix_lead_owner_history_lead", "lead_id", "id"),
)
