"""Tables of the conversion step."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from crm_customers.customer.models import metadata

# One row per conversion id: the serialisation point of its prepare and undo, whatever
# order they arrive in, and the reply a repeated command gets. "pending" exists only inside
# the preparing transaction (it always ends prepared or failed).
STATES = ("pending", "prepared", "failed", "undone")

conversion_records = sa.Table(
    "conversion_records",
    metadata,
    sa.Column("conversion_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("lead_id", sa.Text, nullable=False, server_default=""),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("customer_id", UUID(as_uuid=True), nullable=True, index=True),
    sa.Column("contact_id", UUID(as_uuid=True), nullable=True, index=True),
    sa.Column("customer_created", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("contact_created", sa.Boolean, nullable=False, server_default=sa.false()),
    # What the undo removed, so a repeated undo answers the same.
    sa.Column("customer_removed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("contact_removed", sa.Boolean, nullable=False, server_default=sa.false()),
    # Org path the replies carry (the customer's owner, else the command's).
    sa.Column("org_path", sa.Text, nullable=False, server_default=""),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint("state IN ('pending', 'prepared', 'failed', 'undone')", name="state"),
)

# The tenant's matching keys, in the order they are tried; no row: rules.DEFAULT_KEYS.
customer_match_rules = sa.Table(
    "customer_match_rules",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("keys", ARRAY(sa.Text), nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column(
        "update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)
