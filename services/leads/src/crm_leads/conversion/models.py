from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from crm_leads.lead.models import metadata
from crm_platform.db import id_column, timestamp_columns

# One row per conversion saga run. The partial unique index is the "one conversion per lead"
# rule: at most one conversion of a lead that has not failed (running or completed), so a
# second request finds it instead of starting another.
lead_conversions = sa.Table(
    "lead_conversions",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("lead_id", UUID(as_uuid=True), nullable=False),
    # crm.leads.v1.ConversionState
    sa.Column("state", sa.SmallInteger, nullable=False),
    # The lead's status before it became CONVERTING; restored when the conversion fails.
    sa.Column("prev_status", sa.SmallInteger, nullable=False),
    # The lead's owner when the conversion started: owner of what the conversion creates.
    sa.Column("owner_org_id", UUID(as_uuid=True), nullable=False),
    sa.Column("owner_org_path", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("actor_org_path", sa.Text, nullable=False),
    # The resolved options (ConversionCustomer/Contact/Opportunity, per intent) and the
    # opportunity specs sent to sales, as proto JSON.
    sa.Column("options", JSONB, nullable=False),
    sa.Column("customer_id", UUID(as_uuid=True), nullable=True),
    sa.Column("contact_id", UUID(as_uuid=True), nullable=True),
    sa.Column("customer_created", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("contact_created", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("opportunity_ids", ARRAY(UUID(as_uuid=True)), nullable=False, server_default="{}"),
    sa.Column("failure_step", sa.Text, nullable=False, server_default=""),
    sa.Column("failure_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("failure_message", sa.Text, nullable=False, server_default=""),
    # Compensation replies received (both needed to end a compensation).
    sa.Column("customers_undone", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("sales_undone", sa.Boolean, nullable=False, server_default=sa.false()),
    # A step not answered by then is given up and compensated.
    sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
    *timestamp_columns(),
    sa.Index(
        "uq_lead_conversions_live",
        "lead_id",
        unique=True,
        postgresql_where=sa.text("state <> 5"),
    ),
    sa.Index(
        "ix_lead_conversions_deadline", "deadline", postgresql_where=sa.text("state IN (1, 2)")
    ),
    # ListLeads(customer_id): the leads converted into one customer (customer 360).
    sa.Index("ix_lead_conversions_customer", "tenant_id", "customer_id"),
)
