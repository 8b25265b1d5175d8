"""Import jobs: the uploaded file (in chunks, so any replica can run or resume the job), its
progress and its rejected rows. Same MetaData as the lead tables."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from crm_leads.lead.models import metadata
from crm_platform.db import id_column, owner_columns, timestamp_columns

lead_imports = sa.Table(
    "lead_imports",
    metadata,
    id_column(),
    # The org unit the imported leads will belong to (the importer's).
    *owner_columns(),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("file_name", sa.Text, nullable=False),
    sa.Column("format", sa.Text, nullable=False),  # "csv" | "xlsx"
    sa.Column("encoding", sa.Text, nullable=False),  # "utf-8" | "gb18030" ("" for xlsx)
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("campaign", sa.Text, nullable=False, server_default=""),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    # ImportState (crm_leads.imports.rules).
    sa.Column("state", sa.SmallInteger, nullable=False),
    # Data rows in the file; an estimate (line count) until the job finishes.
    sa.Column("rows_total", sa.BigInteger, nullable=False),
    # Rows consumed so far; the resume point after a crash (committed with their effects).
    sa.Column("rows_done", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_created", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_merged", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_invalid", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    # Which replica runs the job, until when: a crashed runner's lease runs out and another
    # replica resumes from rows_done.
    sa.Column("lease_owner", sa.Text, nullable=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
    *timestamp_columns(),
    sa.Index("ix_lead_imports_runnable", "id", postgresql_where=sa.text("state IN (1, 2)")),
    sa.Index("ix_lead_imports_owner", "tenant_id", "owner_org_path", "id"),
)

lead_import_chunks = sa.Table(
    "lead_import_chunks",
    metadata,
    sa.Column(
        "import_id",
        UUID(as_uuid=True),
        sa.ForeignKey("lead_imports.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

# One row per rejected file row: the downloadable error report.
lead_import_errors = sa.Table(
    "lead_import_errors",
    metadata,
    sa.Column(
        "import_id",
        UUID(as_uuid=True),
        sa.ForeignKey("lead_imports.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # 1-based line of the data row in the file (the header is line 1).
    sa.Column("row_no", sa.BigInteger, primary_key=True),
    sa.Column("fields", ARRAY(sa.Text), nullable=False),
    sa.Column("messages", ARRAY(sa.Text), nullable=False),
    sa.Column("raw", ARRAY(sa.Text), nullable=False),
)
