"""org tree replica: org_units kept from directory events

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 23:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "org_units",
        sa.Column("id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("parent_id", postgresql.UUID(), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_units")),
    )
    op.create_index("ix_org_units_parent", "org_units", ["parent_id"])
    op.create_index(
        "ix_org_units_path",
        "org_units",
        ["tenant_id", "path"],
        postgresql_ops={"path": "text_pattern_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_org_units_path", table_name="org_units")
    op.drop_index("ix_org_units_parent", table_name="org_units")
    op.drop_table("org_units")
