"""Pool rules' record: when each user last released or lost each lead (for the reclaim
cool-down). Same MetaData as the lead tables."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm_leads.lead.models import metadata

# One row per (lead, user), overwritten by the latest release: the cool-down only needs the
# last one. reason: 'released' (by the holder), 'taken_back' (by a manager), 'reassigned',
# 'reclaimed' (its protection period ended).
lead_releases = sa.Table(
    "lead_releases",
    metadata,
    sa.Column("lead_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column(
        "release_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)
