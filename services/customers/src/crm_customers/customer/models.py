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

customers = sa.Table(
    "customers",
    metadata,
    id_column(),
    *owner_columns(),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("tax_id", sa.Text, nullable=False, server_default=""),
    sa.Column("phone", sa.Text, nullable=False, server_default=""),
    sa.Column("email", sa.Text, nullable=False, server_default=""),
    sa.Column("province", sa.Text, nullable=False, server_default=""),
    sa.Column("city", sa.Text, nullable=False, server_default=""),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    # Idempotency key of the create request (AIP-155), unique per tenant.
    sa.Column("request_id", UUID(as_uuid=True), nullable=True),
    *timestamp_columns(),
    sa.UniqueConstraint("tenant_id", "request_id"),
    owner_path_index("customers"),
)

# Contacts carry no owner columns: they are visible exactly when their customer is, so
# reads join on customers and a customer's reassignment moves its contacts with it.
contacts = sa.Table(
    "contacts",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column(
        "customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False, index=True
    ),
    sa.Column("full_name", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False, server_default=""),
    sa.Column("phone", sa.Text, nullable=False, server_default=""),
    sa.Column("email", sa.Text, nullable=False, server_default=""),
    # Idempotency key of CreateContact; contacts made with their customer have none.
    sa.Column("request_id", UUID(as_uuid=True), nullable=True),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.UniqueConstraint("tenant_id", "request_id"),
)
