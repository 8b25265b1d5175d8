"""The leads service's replica of the directory's org tree, kept from directory events so
distribution never calls the directory on the hot path. Same MetaData as the lead tables, so
one set of migrations covers the service."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm_leads.lead.models import metadata

org_units = sa.Table(
    "org_units",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    # NULL for the tenant's root (HQ). No foreign key: events may arrive child first.
    sa.Column("parent_id", UUID(as_uuid=True), nullable=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("code", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    # crm.directory.v1.OrgUnitKind (HQ, REGION, DEALER, STORE).
    sa.Column("kind", sa.SmallInteger, nullable=False),
    # When the directory made the change this row reflects (the event's occurred_at): an
    # older event never overwrites a newer one.
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_org_units_parent", "parent_id"),
    # Subtree reads and the set-based path rewrite of a move: prefix scans.
    sa.Index("ix_org_units_path", "tenant_id", "path", postgresql_ops={"path": "text_pattern_ops"}),
)
