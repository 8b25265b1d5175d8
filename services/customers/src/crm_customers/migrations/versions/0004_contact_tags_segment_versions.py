"""tags on contacts, every version of a segment's rule

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-14 10:00:00

Additive only: two new tables; segment_versions is backfilled with the current name and rule of
every existing segment (version 1 unless it was already replaced: then its current number).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "contact_tags",
        sa.Column("contact_id", sa.UUID(), nullable=False),
        sa.Column("tag_id", sa.UUID(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("tagged_by", sa.Text(), nullable=False),
        _time("tag_time"),
        sa.CheckConstraint("source IN ('system', 'manual')", name=op.f("ck_contact_tags_source")),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_contact_tags_contact_id_contacts")
        ),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name=op.f("fk_contact_tags_tag_id_tags")),
        sa.PrimaryKeyConstraint("contact_id", "tag_id", name=op.f("pk_contact_tags")),
    )
    op.create_index("ix_contact_tags_tag_id", "contact_tags", ["tag_id", "contact_id"])
    op.create_table(
        "segment_versions",
        sa.Column("segment_id", sa.UUID(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("rule", postgresql.JSONB(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        _time("create_time"),
        sa.ForeignKeyConstraint(
            ["segment_id"], ["segments.id"], name=op.f("fk_segment_versions_segment_id_segments")
        ),
        sa.PrimaryKeyConstraint("segment_id", "version", name=op.f("pk_segment_versions")),
    )
    # Earlier versions were not kept: the current one is recorded under the segment's own
    # version number (1 unless it was replaced before), so etags stay valid and the next
    # replace appends version + 1 in both tables.
    op.execute(
        "INSERT INTO segment_versions"
        " (segment_id, version, tenant_id, display_name, rule, created_by, create_time)"
        " SELECT id, version, tenant_id, display_name, rule, created_by, update_time"
        " FROM segments"
    )


def downgrade() -> None:
    op.drop_table("segment_versions")
    op.drop_index("ix_contact_tags_tag_id", table_name="contact_tags")
    op.drop_table("contact_tags")

