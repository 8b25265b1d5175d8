"""lead cleansing: verification status and note, closed reason

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 20:35:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults: no table rewrite. Leads captured before the automatic checks were
    # never checked, so they start UNVERIFIED (in the review queue) and say why.
    op.add_column(
        "leads", sa.Column("verification", sa.SmallInteger(), server_default="1", nullable=False)
    )
    op.add_column(
        "leads", sa.Column("verification_note", sa.Text(), server_default="", nullable=False)
    )
    op.add_column("leads", sa.Column("closed_reason", sa.Text(), server_default="", nullable=False))
    op.execute("UPDATE leads SET verification_note = 'captured before the automatic checks'")
    op.create_index(
        "ix_leads_review",
        "leads",
        ["tenant_id", "id"],
        postgresql_where=sa.text("verification = 1 AND status <> 4"),
    )
    op.create_index(
        "ix_leads_open_update_time",
        "leads",
        ["update_time"],
        postgresql_where=sa.text("status IN (1, 2)"),
    )


def downgrade() -> None:
    op.drop_index("ix_leads_open_update_time", table_name="leads")
    op.drop_index("ix_leads_review", table_name="leads")
    op.drop_column("leads", "closed_reason")
    op.drop_column("leads", "verification_note")
    op.drop_column("leads", "verification")
