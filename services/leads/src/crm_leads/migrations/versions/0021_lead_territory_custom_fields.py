"""leads: territory and custom attributes, facts distribution rules match on

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-24 15:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults: PostgreSQL adds the columns without rewriting the table.
    op.add_column("leads", sa.Column("territory", sa.Text, nullable=False, server_default=""))
    op.add_column(
        "leads",
        sa.Column(
            "custom_fields", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
    )


def downgrade() -> None:
    op.drop_column("leads", "custom_fields")
    op.drop_column("leads", "territory")
