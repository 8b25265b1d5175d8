"""customer lifecycle: current stage on customers, behaviour facts, stage history

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-20 10:00:00

Additive only: customers.lifecycle_stage (existing customers are backfilled as PROSPECT
since their creation: no order has been reported for them yet) and lifecycle_stage_time,
the customer_lifecycle facts table and the lifecycle_changes history.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    text = sa.Text()
    op.add_column(
        "customers",
        sa.Column("lifecycle_stage", text, server_default="PROSPECT", nullable=False),
    )
    op.add_column("customers", _time("lifecycle_stage_time"))
    op.execute("UPDATE customers SET lifecycle_stage_time = create_time")
    op.create_table(
        "customer_lifecycle",
        sa.Column("customer_id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("won_orders", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_order_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_activity_time", sa.DateTime(timezone=True), nullable=True),
        _time("update_time"),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_lifecycle")),
    )
    op.create_index(
        "ix_customer_lifecycle_activity",
        "customer_lifecycle",
        ["last_activity_time"],
        postgresql_where=sa.text("won_orders > 0"),
    )
    op.create_table(
        "lifecycle_changes",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("customer_id", sa.UUID(), nullable=False),
        sa.Column("from_stage", text, nullable=False),
        sa.Column("to_stage", text, nullable=False),
        sa.Column("reason", text, nullable=False),
        _time("change_time"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_changes")),
    )
    op.create_index(
        "ix_lifecycle_changes_customer", "lifecycle_changes", ["customer_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_lifecycle_changes_customer", table_name="lifecycle_changes")
    op.drop_table("lifecycle_changes")
    op.drop_index("ix_customer_lifecycle_activity", table_name="customer_lifecycle")
    op.drop_table("customer_lifecycle")
    op.drop_column("customers", "lifecycle_stage_time")
    op.drop_column("customers", "lifecycle_stage")
