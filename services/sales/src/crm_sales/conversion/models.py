from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from crm_platform.db import timestamp_columns
from crm_sales.opportunity.models import metadata

# States a record is in. A create command's record is inserted in its outcome; "pending"
# (written by earlier versions inside their create transaction only) is never committed.
PENDING = "pending"
COMPLETED = "completed"
FAILED = "failed"
UNDONE = "undone"

# One row per lead conversion this service has heard of, keyed by the saga's conversion id:
# the idempotency record (a repeated command answers as the first did) and the lock that
# serialises a conversion's create and undo, whatever order they arrive in.
conversion_records = sa.Table(
    "conversion_records",
    metadata,
    sa.Column("conversion_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("lead_id", UUID(as_uuid=True), nullable=True),
    sa.Column("state", sa.Text, nullable=False),
    # In the order of the command's specs; kept after an undo (the ids removed).
    sa.Column(
        "opportunity_ids",
        ARRAY(UUID(as_uuid=True)),
        nullable=False,
        server_default=sa.text("'{}'"),
    ),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    *timestamp_columns(),
    sa.CheckConstraint("state IN ('pending', 'completed', 'failed', 'undone')", name="state_known"),
)
