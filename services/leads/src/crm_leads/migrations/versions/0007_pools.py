"""lead pools: assignee and assigned time, pool and assignee indexes

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 21:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable without a default: no table rewrite, and every existing lead starts in its
    # owner org unit's pool.
    op.add_column("leads", sa.Column("assignee_id", postgresql.UUID(), nullable=True))
    op.add_column("leads", sa.Column("assigned_time", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_leads_pool",
        "leads",
        ["tenant_id", "owner_org_path"],
        postgresql_ops={"owner_org_path": "text_pattern_ops"},
        postgresql_where=sa.text("assignee_id IS NULL AND status IN (1, 2)"),
    )
    op.create_index(
        "ix_leads_assignee",
        "leads",
        ["assignee_id", "id"],
        postgresql_where=sa.text("assignee_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_leads_assignee", table_name="leads")
    op.drop_index("ix_leads_pool", table_name="leads")
    op.drop_column("leads", "assigned_time")
    op.drop_column("leads", "assignee_id")
