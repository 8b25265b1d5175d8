from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from crm.leads.v1 import lead_pb2
from crm_platform.db import (
    id_column,
    new_metadata,
    owner_columns,
    owner_path_index,
    timestamp_columns,
)

metadata = new_metadata()

# The statuses of a lead still being worked: pools, distribution, assignment, SLA clocks and
# open loads consider only these.
OPEN_STATUSES = (lead_pb2.LEAD_STATUS_NEW, lead_pb2.LEAD_STATUS_QUALIFIED)

leads = sa.Table(
    "leads",
    metadata,
    id_column(),
    *owner_columns(),
    sa.Column("full_name", sa.Text, nullable=False),
    sa.Column("phone", sa.Text, nullable=False, server_default=""),
    sa.Column("email", sa.Text, nullable=False, server_default=""),
    sa.Column("company", sa.Text, nullable=False, server_default=""),
    sa.Column("province", sa.Text, nullable=False, server_default=""),
    sa.Column("city", sa.Text, nullable=False, server_default=""),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("open_id", sa.Text, nullable=False, server_default=""),
    sa.Column("union_id", sa.Text, nullable=False, server_default=""),
    # Sales territory and custom attributes: facts distribution rules match on.
    sa.Column("territory", sa.Text, nullable=False, server_default=""),
    sa.Column("custom_fields", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("intent_count", sa.Integer, nullable=False, server_default="1"),
    # Set by the tenant's scoring rules on every capture (crm_leads.scoring).
    sa.Column("score", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("grade", sa.Text, nullable=False, server_default="D"),
    # LeadVerification: set by crm_leads.lead.cleansing on capture, then by a reviewer.
    sa.Column("verification", sa.SmallInteger, nullable=False, server_default="1"),
    sa.Column("verification_note", sa.Text, nullable=False, server_default=""),
    sa.Column("closed_reason", sa.Text, nullable=False, server_default=""),
    # The user (principal.subject) holding the lead privately; NULL: in its owner unit's pool.
    sa.Column("assignee_id", UUID(as_uuid=True), nullable=True),
    sa.Column("assigned_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    *timestamp_columns(),
    # The latest conversion (crm_leads.conversion): running, completed, or why it failed.
    sa.Column("conversion_id", UUID(as_uuid=True), nullable=True),
    owner_path_index("leads"),
    # The review queue (oldest first) and the stale-lead job read only these small slices.
    sa.Index(
        "ix_leads_review",
        "tenant_id",
        "id",
        postgresql_where=sa.text("verification = 1 AND status <> 4"),
    ),
    sa.Index(
        "ix_leads_open_update_time", "update_time", postgresql_where=sa.text("status IN (1, 2)")
    ),
    # Pool listings: open unassigned leads of a subtree (prefix match on the path); with
    # the id last, one unit's pool (exact path) is also read in id order, batch by batch,
    # without sorting it (distribution and assignment runs).
    sa.Index(
        "ix_leads_pool",
        "tenant_id",
        "owner_org_path",
        "id",
        postgresql_ops={"owner_org_path": "text_pattern_ops"},
        postgresql_where=sa.text("assignee_id IS NULL AND status IN (1, 2)"),
    ),
    # Profile de-duplication rules (crm_leads.dedup): the newest open leads of one city.
    sa.Index(
        "ix_leads_dedup_city",
        "tenant_id",
        "city",
        "id",
        postgresql_where=sa.text("status IN (1, 2)"),
    ),
    sa.Index(
        "ix_leads_assignee",
        "assignee_id",
        "id",
        postgresql_where=sa.text("assignee_id IS NOT NULL"),
    ),
)

# De-duplication keys: one row per normalised phone / email / open_id per tenant. The unique
# index makes concurrent captures of the same person serialise on the key (no
# check-then-insert race): the second transaction waits, then sees the first lead.
lead_keys = sa.Table(
    "lead_keys",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, primary_key=True),
    sa.Column("lead_id", UUID(as_uuid=True), nullable=False, index=True),
)

# Every enquiry; a repeat enquiry becomes a new intent of the existing lead. request_id is
# the capture's idempotency key (a retried capture finds its intent and changes nothing).
lead_intents = sa.Table(
    "lead_intents",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("lead_id", UUID(as_uuid=True), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("campaign", sa.Text, nullable=False, server_default=""),
    sa.Column("product_interest", sa.Text, nullable=False, server_default=""),
    sa.Column("request_id", UUID(as_uuid=True), nullable=True),
    # The enquiry that created the lead, so a retried create answers "created" again.
    sa.Column("created_lead", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column(
        "occur_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    # Unique only where set: most intents (imports, captures without an Idempotency-Key)
    # have none and stay out of the index.
    sa.Index(
        "uq_lead_intents_request",
        "tenant_id",
        "request_id",
        unique=True,
        postgresql_where=sa.text("request_id IS NOT NULL"),
    ),
    sa.Index("ix_lead_intents_lead", "lead_id", "id"),
)
