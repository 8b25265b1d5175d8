"""lead settings: per-tenant stale_lead_days and phone_region

Revision ID: 0012
Revises: 0010
Create Date: 2026-11-24 10:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lead_settings",
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("stale_lead_days", sa.Integer(), nullable=True),
        sa.Column("phone_region", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "stale_lead_days BETWEEN 1 AND 3650",
            name=op.f("ck_lead_settings_stale_lead_days_range"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_lead_settings")),
    )


def downgrade() -> None:
    op.drop_table("lead_settings")
