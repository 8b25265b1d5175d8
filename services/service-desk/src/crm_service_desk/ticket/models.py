from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm.servicedesk.v1 import ticket_pb2
from crm_platform.db import (
    id_column,
    new_metadata,
    owner_columns,
    owner_path_index,
    timestamp_columns,
)

metadata = new_metadata()

tickets = sa.Table(
    "tickets",
    metadata,
    id_column(),
    *owner_columns(),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    # Reference into the customers service: an id only, no cross-database FK.
    sa.Column("customer_id", UUID(as_uuid=True), nullable=True),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column(
        "status",
        sa.SmallInteger,
        nullable=False,
        server_default=str(ticket_pb2.TICKET_STATUS_NEW),
    ),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    # Idempotency key of the create request (AIP-155), unique per tenant.
    sa.Column("request_id", UUID(as_uuid=True), nullable=True),
    *timestamp_columns(),
    sa.UniqueConstraint("tenant_id", "request_id"),
    owner_path_index("tickets"),
)
