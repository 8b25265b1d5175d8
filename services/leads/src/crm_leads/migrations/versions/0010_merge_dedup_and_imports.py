"""merge the dedup-rules and import-jobs branches

Revision ID: 0010
Revises: 0008, 0009
Create Date: 2026-11-23 22:15:00.000000

"""

from collections.abc import Sequence

revision: str = "0010"
down_revision: str | Sequence[str] | None = ("0008", "0009")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
