"""ix_leads_pool ends with the id: one unit's pool is read in id order without a sort

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-23 23:25:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _pool_index(*columns: str) -> None:
    op.create_index(
        "ix_leads_pool",
        "leads",
        list(columns),
        postgresql_ops={"owner_org_path": "text_pattern_ops"},
        postgresql_where=sa.text("assignee_id IS NULL AND status IN (1, 2)"),
    )


def upgrade() -> None:
    op.drop_index("ix_leads_pool", table_name="leads")
    _pool_index("tenant_id", "owner_org_path", "id")


def downgrade() -> None:
    op.drop_index("ix_leads_pool", table_name="leads")
    _pool_index("tenant_id", "owner_org_path")
