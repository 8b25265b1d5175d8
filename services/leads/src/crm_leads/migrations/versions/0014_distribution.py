"""distribution: rules, profiles, load counters, cursors, unmatched leads, owner history

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-24 09:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "distribution_rules",
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("org_unit_id", postgresql.UUID(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", postgresql.JSONB(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "org_unit_id", "version", name=op.f("pk_distribution_rules")
        ),
    )
    op.create_table(
        "distribution_profiles",
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("org_unit_id", postgresql.UUID(), nullable=False),
        sa.Column("document", postgresql.JSONB(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("tenant_id", "org_unit_id", name=op.f("pk_distribution_profiles")),
    )
    op.create_table(
        "distribution_load",
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("org_unit_id", postgresql.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("today", sa.Integer(), server_default="0", nullable=False),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("week", sa.Integer(), server_default="0", nullable=False),
        sa.Column("open_load", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "org_unit_id", name=op.f("pk_distribution_load")),
    )
    op.create_table(
        "distribution_cursors",
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("deciding_unit_id", postgresql.UUID(), nullable=False),
        sa.Column("rule_name", sa.Text(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "deciding_unit_id", "rule_name", name=op.f("pk_distribution_cursors")
        ),
    )
    op.create_table(
        "distribution_unmatched",
        sa.Column("lead_id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("org_unit_id", postgresql.UUID(), nullable=False),
        sa.Column("rule_name", sa.Text(), server_default="", nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "decide_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_distribution_unmatched")),
    )
    op.create_index(
        "ix_distribution_unmatched_unit", "distribution_unmatched", ["org_unit_id", "lead_id"]
    )
    op.create_table(
        "lead_owner_history",
        sa.Column("id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("lead_id", postgresql.UUID(), nullable=False),
        sa.Column("from_org_id", postgresql.UUID(), nullable=False),
        sa.Column("from_org_path", sa.Text(), nullable=False),
        sa.Column("to_org_id", postgresql.UUID(), nullable=False),
        sa.Column("to_org_path", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("rule_name", sa.Text(), server_default="", nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column(
            "occur_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_owner_history")),
    )
    op.create_index("ix_lead_owner_history_lead", "lead_owner_history", ["lead_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_lead_owner_history_lead", table_name="lead_owner_history")
    op.drop_table("lead_owner_history")
    op.drop_index("ix_distribution_unmatched_unit", table_name="distribution_unmatched")
    op.drop_table("distribution_unmatched")
    op.drop_table("distribution_cursors")
    op.drop_table("distribution_load")
    op.drop_table("distribution_profiles")
    op.drop_table("distribution_rules")
