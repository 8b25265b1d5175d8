"""Read model: dealer performance per receiving org unit and UTC day, fed by lead events."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from crm_platform.db import new_metadata, owner_path_index

metadata = new_metadata()

# The counters of one (tenant, unit, day) row, in report order.
COUNTERS = (
    "received",
    "accepted",
    "rejected",
    "expired",
    "reclaimed",
    "assigned",
    "sla_warnings",
    "sla_breaches",
    "first_contacts",
)

dealer_performance_daily = sa.Table(
    "dealer_performance_daily",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("owner_org_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    # Named like every owned record so the shared visibility filter applies unchanged.
    sa.Column("owner_org_path", sa.Text, nullable=False),
    *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in COUNTERS),
    # Sum over first_contacts, so an average over any set of rows is sum / count.
    sa.Column("first_contact_seconds", sa.Float, nullable=False, server_default="0"),
    owner_path_index("dealer_performance_daily"),
)

# Per-lead state, only what time to first contact needs: the unit now holding the lead's
# offer, when it got there, and the earliest follow-up logged while that unit owned it.
lead_received = sa.Table(
    "lead_received",
    metadata,
    sa.Column("lead_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("owner_org_id", UUID(as_uuid=True), nullable=False),
    sa.Column("owner_org_path", sa.Text, nullable=False),
    sa.Column("received_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("first_contact_time", sa.DateTime(timezone=True), nullable=True),
)
