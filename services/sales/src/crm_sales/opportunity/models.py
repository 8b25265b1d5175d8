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

opportunities = sa.Table(
    "opportunities",
    metadata,
    id_column(),
    *owner_columns(),
    sa.Column("title", sa.Text, nullable=False),
    # References into the customers and leads services: ids only, no cross-database FKs.
    sa.Column("customer_id", UUID(as_uuid=True), nullable=True),
    sa.Column("contact_id", UUID(as_uuid=True), nullable=True),
    sa.Column("lead_id", UUID(as_uuid=True), nullable=True),
    # Exact decimal, never float: money is summed in reports.
    sa.Column("amount", sa.Numeric(18, 2), nullable=False),
    sa.Column("currency", sa.CHAR(3), nullable=False),
    sa.Column("stage", sa.SmallInteger, nullable=False),
    sa.Column("close_date", sa.Date, nullable=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    # Idempotency key of the create request (AIP-155), unique per tenant.
    sa.Column("request_id", UUID(as_uuid=True), nullable=True),
    # Product of interest and campaign of the enquiry it came from ('' = none).
    sa.Column("product", sa.Text, nullable=False, server_default=""),
    sa.Column("campaign", sa.Text, nullable=False, server_default=""),
    # Set when a lead conversion opened it (crm_sales.conversion): the lead intent it came
    # from and the conversion, whose undo deletes exactly these rows.
    sa.Column("lead_intent_id", UUID(as_uuid=True), nullable=True),
    sa.Column("conversion_id", UUID(as_uuid=True), nullable=True),
    *timestamp_columns(),
    sa.UniqueConstraint("tenant_id", "request_id"),
    sa.CheckConstraint("amount >= 0", name="amount_not_negative"),
    owner_path_index("opportunities"),
    sa.Index(
        "ix_opportunities_conversion_id",
        "conversion_id",
        postgresql_where=sa.text("conversion_id IS NOT NULL"),
    ),
)
