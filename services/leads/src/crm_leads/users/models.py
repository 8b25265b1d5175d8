"""The leads service's replica of the directory's users (who may hold leads), kept from
directory events so assignment never calls the directory. Same MetaData as the lead tables,
so one set of migrations covers the service."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from crm_leads.lead.models import metadata

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("org_unit_id", UUID(as_uuid=True), nullable=False),
    sa.Column("roles", ARRAY(sa.Text), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    # The directory's time of the change this row reflects (the event's occurred_at).
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    # "The active reps of a unit": assignment's eligibility check.
    sa.Index("ix_users_org_unit", "org_unit_id"),
)
