"""tags on customers, dynamic segments

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 10:00:00

Additive only: three new, empty tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "tags",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        _time("create_time"),
        sa.CheckConstraint("kind IN ('system', 'manual')", name=op.f("ck_tags_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_tags_tenant_id_name")),
    )
    op.create_table(
        "customer_tags",
        sa.Column("customer_id", sa.UUID(), nullable=False),
        sa.Column("tag_id", sa.UUID(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("tagged_by", sa.Text(), nullable=False),
        _time("tag_time"),
        sa.CheckConstraint(
            "source IN ('system', 'manual')", name=op.f("ck_customer_tags_source")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_customer_tags_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["tag_id"], ["tags.id"], name=op.f("fk_customer_tags_tag_id_tags")
        ),
        sa.PrimaryKeyConstraint("customer_id", "tag_id", name=op.f("pk_customer_tags")),
    )
    op.create_index("ix_customer_tags_tag_id", "customer_tags", ["tag_id", "customer_id"])
    op.create_table(
        "segments",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("rule", postgresql.JSONB(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        _time("create_time"),
        _time("update_time"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
    )
    op.create_index("ix_segments_tenant_id", "segments", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_segments_tenant_id", table_name="segments")
    op.drop_table("segments")
    op.drop_index("ix_customer_tags_tag_id", table_name="customer_tags")
    op.drop_table("customer_tags")
    op.drop_table("tags")
