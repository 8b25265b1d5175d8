"""Read model: leads captured per owning org unit and UTC day, fed by lead events."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm_platform.db import new_metadata, owner_path_index

metadata = new_metadata()

lead_counts_daily = sa.Table(
    "lead_counts_daily",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("owner_org_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    # Named like every owned record so the shared visibility filter applies unchanged.
    sa.Column("owner_org_path", sa.Text, nullable=False),
    sa.Column("lead_count", sa.BigInteger, nullable=False),
    owner_path_index("lead_counts_daily"),
)
