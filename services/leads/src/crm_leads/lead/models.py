from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm_platform.db import (
    id_column,
    new_metadata,
    owner_columns,
    owner_path_index,
    timestamp_columns,
)

metadata = new_metadata()

leads = sa.Table(
    "leads",
    metadata,
    id_column(),
    *owner_columns(),
    sa.Column("full_name", sa.Text, nullable=False),
    sa.Column("phone", sa.Text, nullable=False, server_default=""),
    sa.Column("email", sa.Text, nullable=False, server_default=""),
    sa.Column("company", sa.Text, nullable=False, server_default=""),
    sa.Column("province", sa.Text, nullable=False, server_default=""),
    sa.Column("city", sa.Text, nullable=False, server_default=""),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    # Idempotency key of the create request (AIP-155), unique per tenant.
    sa.Column("request_id", UUID(as_uuid=True), nullable=True),
    *timestamp_columns(),
    sa.UniqueConstraint("tenant_id", "request_id"),
    owner_path_index("leads"),
)
