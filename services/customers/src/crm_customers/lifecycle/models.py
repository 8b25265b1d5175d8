"""Tables of the customer lifecycle. The current stage lives on ``customers``
(lifecycle_stage, lifecycle_stage_time) so every customer read shows it; the facts it is
derived from and its history live here."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm_customers.customer.models import metadata
from crm_platform.db import id_column

# Behaviour facts per customer, fed by events; no row: no order and no activity yet. No
# foreign key (nor on the history): an undone conversion deletes the customer it created,
# whatever events about it arrived meanwhile; reads always join a live customer.
customer_lifecycle = sa.Table(
    "customer_lifecycle",
    metadata,
    sa.Column("customer_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("won_orders", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_order_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_activity_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column(
        "update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    # The inactivity job's scan: ordered customers by last activity.
    sa.Index(
        "ix_customer_lifecycle_activity",
        "last_activity_time",
        postgresql_where=sa.text("won_orders > 0"),
    ),
)

# Every stage change, newest last (UUIDv7 ids are time-ordered).
lifecycle_changes = sa.Table(
    "lifecycle_changes",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
    sa.Column("from_stage", sa.Text, nullable=False),
    sa.Column("to_stage", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column(
        "change_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Index("ix_lifecycle_changes_customer", "customer_id", "id"),
)
