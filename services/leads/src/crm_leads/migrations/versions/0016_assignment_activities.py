"""assignment policies and cursors, users replica, lead releases (cool-down), activities,
pool-rule settings

Revision ID: 0016
Revises: 0014
Create Date: 2026-11-25 09:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("org_unit_id", postgresql.UUID(), nullable=False),
        sa.Column("roles", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_index("ix_users_org_unit", "users", ["org_unit_id"])
    op.create_table(
        "assignment_policies",
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("org_unit_id", postgresql.UUID(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", postgresql.JSONB(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "org_unit_id", "version", name=op.f("pk_assignment_policies")
        ),
    )
    op.create_table(
        "assignment_cursors",
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("org_unit_id", postgresql.UUID(), nullable=False),
        sa.Column("cursor", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "org_unit_id", name=op.f("pk_assignment_cursors")),
    )
    op.create_table(
        "lead_releases",
        sa.Column("lead_id", postgresql.UUID(), nullable=False),
        sa.Column("user_id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "release_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("lead_id", "user_id", name=op.f("pk_lead_releases")),
    )
    op.create_table(
        "lead_activities",
        sa.Column("id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("lead_id", postgresql.UUID(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("occur_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_activities")),
    )
    op.create_index("ix_lead_activities_lead", "lead_activities", ["lead_id", "id"])
    op.add_column("lead_settings", sa.Column("private_pool_cap", sa.Integer(), nullable=True))
    op.add_column(
        "lead_settings", sa.Column("reclaim_cooldown_hours", sa.Integer(), nullable=True)
    )
    op.create_check_constraint(
        op.f("ck_lead_settings_private_pool_cap_range"),
        "lead_settings",
        "private_pool_cap BETWEEN 1 AND 100000",
    )
    op.create_check_constraint(
        op.f("ck_lead_settings_reclaim_cooldown_hours_range"),
        "lead_settings",
        "reclaim_cooldown_hours BETWEEN 0 AND 8760",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("ck_lead_settings_reclaim_cooldown_hours_range"), "lead_settings", type_="check"
    )
    op.drop_constraint(
        op.f("ck_lead_settings_private_pool_cap_range"), "lead_settings", type_="check"
    )
    op.drop_column("lead_settings", "reclaim_cooldown_hours")
    op.drop_column("lead_settings", "private_pool_cap")
    op.drop_index("ix_lead_activities_lead", table_name="lead_activities")
    op.drop_table("lead_activities")
    op.drop_table("lead_releases")
    op.drop_table("assignment_cursors")
    op.drop_table("assignment_policies")
    op.drop_index("ix_users_org_unit", table_name="users")
    op.drop_table("users")
