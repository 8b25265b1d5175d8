"""dealer performance: SLA warnings (reminders before a target) per unit and day

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 09:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: PostgreSQL 11+ adds the column without rewriting the table, and
    # existing rows read 0 (no warning was counted before this consumer existed).
    op.add_column(
        "dealer_performance_daily",
        sa.Column("sla_warnings", sa.BigInteger(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("dealer_performance_daily", "sla_warnings")
