"""sla_alerts: the SLA inbox (reminders to a lead's holder, escalations to its unit's managers)

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-24 15:30:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022"
# Provisional: 0021 may be taken by concurrent work; the chain is fixed when both land.
down_revision: str | Sequence[str] | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    uuid = postgresql.UUID()
    op.create_table(
        "sla_alerts",
        sa.Column("id", uuid, nullable=False),
        sa.Column("tenant_id", uuid, nullable=False),
        sa.Column("owner_org_id", uuid, nullable=False),
        sa.Column("owner_org_path", sa.Text(), nullable=False),
        sa.Column("lead_id", uuid, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("due_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recipient_id", uuid, nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolve_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by_activity_id", uuid, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_alerts")),
    )
    op.create_index(
        "uq_sla_alerts_fired",
        "sla_alerts",
        ["lead_id", "kind", "target", "due_time"],
        unique=True,
    )
    op.create_index(
        "ix_sla_alerts_visibility",
        "sla_alerts",
        ["tenant_id", "owner_org_path"],
        postgresql_ops={"owner_org_path": "text_pattern_ops"},
    )
    op.create_index(
        "ix_sla_alerts_recipient",
        "sla_alerts",
        ["recipient_id", "id"],
        postgresql_where=sa.text("recipient_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("sla_alerts")
