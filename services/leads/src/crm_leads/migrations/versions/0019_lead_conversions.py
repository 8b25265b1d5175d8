"""Lead conversions (the conversion saga) and leads.conversion_id

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-24 09:30:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("leads", sa.Column("conversion_id", postgresql.UUID(as_uuid=True), nullable=True))
    uuid = postgresql.UUID(as_uuid=True)
    now = sa.text("now()")
    op.create_table(
        "lead_conversions",
        sa.Column("id", uuid, primary_key=True),
        sa.Column("tenant_id", uuid, nullable=False),
        sa.Column("lead_id", uuid, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("prev_status", sa.SmallInteger, nullable=False),
        sa.Column("owner_org_id", uuid, nullable=False),
        sa.Column("owner_org_path", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("actor_org_path", sa.Text, nullable=False),
        sa.Column("options", postgresql.JSONB, nullable=False),
        sa.Column("customer_id", uuid, nullable=True),
        sa.Column("contact_id", uuid, nullable=True),
        sa.Column("customer_created", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("contact_created", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column(
            "opportunity_ids", postgresql.ARRAY(uuid), nullable=False, server_default="{}"
        ),
        sa.Column("failure_step", sa.Text, nullable=False, server_default=""),
        sa.Column("failure_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("failure_message", sa.Text, nullable=False, server_default=""),
        sa.Column("customers_undone", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("sales_undone", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=now),
    )
    op.create_index(
        "uq_lead_conversions_live",
        "lead_conversions",
        ["lead_id"],
        unique=True,
        postgresql_where=sa.text("state <> 5"),
    )
    op.create_index(
        "ix_lead_conversions_deadline",
        "lead_conversions",
        ["deadline"],
        postgresql_where=sa.text("state IN (1, 2)"),
    )


def downgrade() -> None:
    op.drop_table("lead_conversions")
    op.drop_column("leads", "conversion_id")
