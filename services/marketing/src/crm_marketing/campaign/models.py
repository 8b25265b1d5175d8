from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm.marketing.v1 import campaign_pb2
from crm_platform.db import (
    id_column,
    new_metadata,
    owner_columns,
    owner_path_index,
    timestamp_columns,
)

metadata = new_metadata()

campaigns = sa.Table(
    "campaigns",
    metadata,
    id_column(),
    *owner_columns(),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("channel", sa.SmallInteger, nullable=False),
    sa.Column(
        "status",
        sa.SmallInteger,
        nullable=False,
        server_default=str(campaign_pb2.CAMPAIGN_STATUS_DRAFT),
    ),
    # Exact decimal, never float: budgets are summed and compared.
    sa.Column("budget", sa.Numeric(18, 2), nullable=False),
    sa.Column("currency", sa.CHAR(3), nullable=False),
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("end_date", sa.Date, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    # Idempotency key of the create request (AIP-155), unique per tenant.
    sa.Column("request_id", UUID(as_uuid=True), nullable=True),
    *timestamp_columns(),
    sa.UniqueConstraint("tenant_id", "request_id"),
    # Backstops for the rules in rules.py, should a future writer bypass them.
    sa.CheckConstraint("budget >= 0", name="budget_non_negative"),
    sa.CheckConstraint("end_date >= start_date", name="period_ordered"),
    owner_path_index("campaigns"),
)
