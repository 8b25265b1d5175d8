"""lead_conversions by customer: the customer 360 lists the leads converted into a customer

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-24 02:30:00.000000

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_lead_conversions_customer", "lead_conversions", ["tenant_id", "customer_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_lead_conversions_customer", table_name="lead_conversions")
