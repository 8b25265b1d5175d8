"""import jobs: lead_imports, their file chunks and rejected rows

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-23 22:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lead_imports",
        sa.Column("id", postgresql.UUID(), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(), nullable=False),
        sa.Column("owner_org_id", postgresql.UUID(), nullable=False),
        sa.Column("owner_org_path", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("format", sa.Text(), nullable=False),
        sa.Column("encoding", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("campaign", sa.Text(), server_default="", nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("rows_total", sa.BigInteger(), nullable=False),
        sa.Column("rows_done", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("rows_created", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("rows_merged", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("rows_invalid", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_lead_imports_runnable",
        "lead_imports",
        ["id"],
        postgresql_where=sa.text("state IN (1, 2)"),
    )
    op.create_index(
        "ix_lead_imports_owner", "lead_imports", ["tenant_id", "owner_org_path", "id"]
    )
    op.create_table(
        "lead_import_chunks",
        sa.Column("import_id", postgresql.UUID(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["import_id"], ["lead_imports.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("import_id", "seq"),
    )
    op.create_table(
        "lead_import_errors",
        sa.Column("import_id", postgresql.UUID(), nullable=False),
        sa.Column("row_no", sa.BigInteger(), nullable=False),
        sa.Column("fields", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("messages", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("raw", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(["import_id"], ["lead_imports.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("import_id", "row_no"),
    )


def downgrade() -> None:
    op.drop_table("lead_import_errors")
    op.drop_table("lead_import_chunks")
    op.drop_index("ix_lead_imports_owner", table_name="lead_imports")
    op.drop_index("ix_lead_imports_runnable", table_name="lead_imports")
    op.drop_table("lead_imports")
