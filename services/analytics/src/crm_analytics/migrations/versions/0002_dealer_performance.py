"""dealer performance: daily counters per receiving org unit, per-lead receipt for time to
first contact

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = (
    "received",
    "accepted",
    "rejected",
    "expired",
    "reclaimed",
    "assigned",
    "sla_breaches",
    "first_contacts",
)


def upgrade() -> None:
    op.create_table(
        "dealer_performance_daily",
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("owner_org_id", postgresql.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("owner_org_path", sa.Text(), nullable=False),
        *(
            sa.Column(name, sa.BigInteger(), server_default="0", nullable=False)
            for name in COUNTERS
        ),
        sa.Column("first_contact_seconds", sa.Float(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "owner_org_id", "day", name=op.f("pk_dealer_performance_daily")
        ),
    )
    op.create_index(
        "ix_dealer_performance_daily_visibility",
        "dealer_performance_daily",
        ["tenant_id", "owner_org_path"],
        unique=False,
        postgresql_ops={"owner_org_path": "text_pattern_ops"},
    )
    op.create_table(
        "lead_received",
        sa.Column("lead_id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("owner_org_id", postgresql.UUID(), nullable=False),
        sa.Column("owner_org_path", sa.Text(), nullable=False),
        sa.Column("received_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_contact_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_lead_received")),
    )


def downgrade() -> None:
    op.drop_table("lead_received")
    op.drop_index(
        "ix_dealer_performance_daily_visibility",
        table_name="dealer_performance_daily",
        postgresql_ops={"owner_org_path": "text_pattern_ops"},
    )
    op.drop_table("dealer_performance_daily")
