"""merge the acceptance/SLA and assignment/activities branches

Revision ID: 0017
Revises: 0015, 0016
Create Date: 2026-11-23 23:10:00.000000

"""

from collections.abc import Sequence

revision: str = "0017"
down_revision: str | Sequence[str] | None = ("0015", "0016")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
