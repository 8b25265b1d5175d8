"""SLA tables: the tenants' policy documents, each lead's follow-up state, the durable timers
the timer job fires and the alerts they raise. Same MetaData as the lead tables."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from crm_leads.lead.models import metadata
from crm_platform.db import id_column, owner_columns, owner_path_index

# Append-only like scoring_rules: a change adds the tenant's next version, the highest is
# current (crm_leads.sla.rules.SlaPolicy; version 0: the defaults).
sla_policies = sa.Table(
    "sla_policies",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("document", JSONB, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# A lead's follow-up clock at the unit that accepted it (one row per lead; a move to another
# unit replaces it). Timers are checked against these columns when they fire, so a timer that
# a follow-up superseded does nothing even if it was not deleted.
lead_sla = sa.Table(
    "lead_sla",
    metadata,
    sa.Column("lead_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("org_unit_id", UUID(as_uuid=True), nullable=False),
    sa.Column("grade", sa.Text, nullable=False),
    sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("first_contact_due", sa.DateTime(timezone=True), nullable=False),
    sa.Column("first_contact_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("follow_up_due", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_follow_up_time", sa.DateTime(timezone=True), nullable=True),
    # Reclaim (公海回收) at protect_until; follow-ups extend it, never past protect_max.
    sa.Column("protect_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("protect_max", sa.DateTime(timezone=True), nullable=True),
)

# Durable timers (acceptance_deadline, first_contact_due, follow_up_due, reminder, reclaim).
# The timer job claims due rows with FOR UPDATE SKIP LOCKED and sets fired_time in the same
# transaction as the effect and its event: with any number of replicas each fires once.
lead_timers = sa.Table(
    "lead_timers",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("lead_id", UUID(as_uuid=True), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("due_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("fired_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    # The unit the timer is for (and, for reminders, the target it warns of).
    sa.Column("payload", JSONB, nullable=False),
    # The job's scan and a lead's re-arming read only unfired timers.
    sa.Index("ix_lead_timers_due", "due_time", postgresql_where=sa.text("fired_time IS NULL")),
    sa.Index("ix_lead_timers_lead", "lead_id", postgresql_where=sa.text("fired_time IS NULL")),
)

# The SLA inbox: a reminder (kind "warning") or an escalation ("breach"), written by the timer
# job in the transaction of its event, resolved by the next follow-up logged on the lead
# (crm_leads.sla.alerts). Owner columns: the lead's owner unit when it fired, so managers
# read their subtree's alerts with the usual path-prefix filter.
sla_alerts = sa.Table(
    "sla_alerts",
    metadata,
    id_column(),
    *owner_columns(),
    sa.Column("lead_id", UUID(as_uuid=True), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    # The clock target it is about: first_contact_due or follow_up_due.
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("due_time", sa.DateTime(timezone=True), nullable=False),
    # The user it is addressed to; NULL: the managers of owner_org_id.
    sa.Column("recipient_id", UUID(as_uuid=True), nullable=True),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("resolve_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("resolved_by_activity_id", UUID(as_uuid=True), nullable=True),
    # One alert per fired target: a timer that fires again (a retry, a re-armed duplicate)
    # adds nothing. Also the lead's alerts, for resolving them.
    sa.Index("uq_sla_alerts_fired", "lead_id", "kind", "target", "due_time", unique=True),
    owner_path_index("sla_alerts"),
    # A rep's reminders, newest first.
    sa.Index(
        "ix_sla_alerts_recipient",
        "recipient_id",
        "id",
        postgresql_where=sa.text("recipient_id IS NOT NULL"),
    ),
)
