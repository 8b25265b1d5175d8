"""Webhook sources (one per external platform account feeding leads into an org unit) and
the deliveries seen, for replay protection. Same MetaData as the lead tables, so one set of
migrations covers the service."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm_leads.lead.models import metadata
from crm_platform.db import id_column, owner_columns, owner_path_index

# Owner columns (tenant_id, owner_org_id, owner_org_path) rather than bespoke names: the
# source's org unit owns the leads it captures, and listing sources reuses the one
# visibility filter (crm_platform.auth.visible_to) and keyset page.
webhook_sources = sa.Table(
    "webhook_sources",
    metadata,
    id_column(),
    *owner_columns(),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("platform", sa.Text, nullable=False),  # a key of mappers.MAPPERS
    # The shared HMAC key, as given to the platform; encryption at rest is out of scope.
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    owner_path_index("webhook_sources"),
)

# One row per accepted delivery. A replay carries the same (timestamp, body) and therefore
# the same signature, so the primary key rejects it. Rows older than twice the timestamp
# tolerance can never match again (a stale timestamp is refused first), so a purge may
# delete them; none runs yet.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("source_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("signature", sa.Text, primary_key=True),
    sa.Column(
        "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)
