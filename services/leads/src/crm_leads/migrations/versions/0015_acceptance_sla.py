"""acceptance and SLAs: pending offers, rejections, SLA policies, lead_sla, durable timers

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-25 10:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "lead_acceptances",
        sa.Column("lead_id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("org_unit_id", postgresql.UUID(), nullable=False),
        sa.Column("org_unit_path", sa.Text(), nullable=False),
        _time("offer_time"),
        _time("due_time"),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_lead_acceptances")),
    )
    op.create_index(
        "ix_lead_acceptances_unit", "lead_acceptances", ["tenant_id", "org_unit_id", "lead_id"]
    )
    op.create_table(
        "lead_rejections",
        sa.Column("lead_id", postgresql.UUID(), nullable=False),
        sa.Column("org_unit_id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("org_unit_path", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("reason_code", sa.Text(), server_default="", nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column(
            "occur_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("lead_id", "org_unit_id", name=op.f("pk_lead_rejections")),
    )
    op.create_table(
        "sla_policies",
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", postgresql.JSONB(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("tenant_id", "version", name=op.f("pk_sla_policies")),
    )
    op.create_table(
        "lead_sla",
        sa.Column("lead_id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("org_unit_id", postgresql.UUID(), nullable=False),
        sa.Column("grade", sa.Text(), nullable=False),
        _time("start_time"),
        _time("first_contact_due"),
        _time("first_contact_time", nullable=True),
        _time("follow_up_due", nullable=True),
        _time("last_follow_up_time", nullable=True),
        _time("protect_until", nullable=True),
        _time("protect_max", nullable=True),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_lead_sla")),
    )
    op.create_table(
        "lead_timers",
        sa.Column("id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("lead_id", postgresql.UUID(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        _time("due_time"),
        _time("fired_time", nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_timers")),
    )
    op.create_index(
        "ix_lead_timers_due",
        "lead_timers",
        ["due_time"],
        postgresql_where=sa.text("fired_time IS NULL"),
    )
    op.create_index(
        "ix_lead_timers_lead",
        "lead_timers",
        ["lead_id"],
        postgresql_where=sa.text("fired_time IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_lead_timers_lead", table_name="lead_timers")
    op.drop_index("ix_lead_timers_due", table_name="lead_timers")
    op.drop_table("lead_timers")
    op.drop_table("lead_sla")
    op.drop_table("sla_policies")
    op.drop_table("lead_rejections")
    op.drop_index("ix_lead_acceptances_unit", table_name="lead_acceptances")
    op.drop_table("lead_acceptances")
