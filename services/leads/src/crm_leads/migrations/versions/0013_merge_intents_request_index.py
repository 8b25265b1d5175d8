"""merge the org-units and lead-settings branches; lead_intents' idempotency key is unique
only where it is set

Revision ID: 0013
Revises: 0011, 0012
Create Date: 2026-11-23 22:40:00.000000

Imports and most captures carry no request id: a partial index keeps them out of it (one
index entry fewer per intent, and a million fewer per million-row import).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = ("0011", "0012")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "uq_lead_intents_request",
        "lead_intents",
        ["tenant_id", "request_id"],
        unique=True,
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )
    op.drop_constraint("uq_lead_intents_tenant_id_request_id", "lead_intents", type_="unique")


def downgrade() -> None:
    op.create_unique_constraint(
        "uq_lead_intents_tenant_id_request_id", "lead_intents", ["tenant_id", "request_id"]
    )
    op.drop_index("uq_lead_intents_request", table_name="lead_intents")
