"""Follow-up activities logged against leads. Same MetaData as the lead tables."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm_leads.lead.models import metadata
from crm_platform.db import id_column

lead_activities = sa.Table(
    "lead_activities",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("lead_id", UUID(as_uuid=True), nullable=False),
    # crm.leads.v1.LeadActivityKind.
    sa.Column("kind", sa.SmallInteger, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("occur_time", sa.DateTime(timezone=True), nullable=False),
    # The user who logged it (principal subject).
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    # A lead's activities, newest first (ids are time-ordered UUIDv7).
    sa.Index("ix_lead_activities_lead", "lead_id", "id"),
)
