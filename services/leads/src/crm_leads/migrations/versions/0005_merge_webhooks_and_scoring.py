"""merge the webhooks (0003) and scoring (0004) branches

Revision ID: 0005
Revises: 0003, 0004
Create Date: 2026-11-23

"""

from collections.abc import Sequence

revision: str = "0005"
down_revision: str | Sequence[str] | None = ("0003", "0004")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Both branches touch different tables; nothing to reconcile."""


def downgrade() -> None:
    """Splitting back into the two branches needs no schema change."""
