"""dedup rules and lead history: dedup_rules, lead_history, the city index for profile rules

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 22:10:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dedup_rules",
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("author", sa.Text(), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("tenant_id", "version", name=op.f("pk_dedup_rules")),
    )
    op.create_table(
        "lead_history",
        sa.Column("id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("lead_id", postgresql.UUID(), nullable=False),
        sa.Column("field", sa.Text(), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=False),
        sa.Column("new_value", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("intent_id", postgresql.UUID(), nullable=True),
        sa.Column("request_id", postgresql.UUID(), nullable=True),
        sa.Column("author", sa.Text(), nullable=False),
        sa.Column(
            "change_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_history")),
    )
    op.create_index("ix_lead_history_lead", "lead_history", ["lead_id", "id"])
    op.create_index(
        "ix_leads_dedup_city",
        "leads",
        ["tenant_id", "city", "id"],
        postgresql_where=sa.text("status IN (1, 2)"),
    )


def downgrade() -> None:
    op.drop_index("ix_leads_dedup_city", table_name="leads")
    op.drop_index("ix_lead_history_lead", table_name="lead_history")
    op.drop_table("lead_history")
    op.drop_table("dedup_rules")
