from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from crm_platform.db import (
    id_column,
    json_column,
    new_metadata,
    owner_columns,
    owner_path_index,
    timestamp_columns,
)

metadata = new_metadata()

customers = sa.Table(
    "customers",
    metadata,
    id_column(),
    *owner_columns(),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("tax_id", sa.Text, nullable=False, server_default=""),
    sa.Column("phone", sa.Text, nullable=False, server_default=""),
    sa.Column("email", sa.Text, nullable=False, server_default=""),
    sa.Column("province", sa.Text, nullable=False, server_default=""),
    sa.Column("city", sa.Text, nullable=False, server_default=""),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    # Idempotency key of the create request (AIP-155), unique per tenant.
    sa.Column("request_id", UUID(as_uuid=True), nullable=True),
    *timestamp_columns(),
    sa.Column("legal_name", sa.Text, nullable=False, server_default=""),
    sa.Column("industry", sa.Text, nullable=False, server_default=""),
    sa.Column("organization_size", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("gender", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("birthday", sa.Date, nullable=True),
    # Account hierarchy: the parent account and the materialised path of ids from the root
    # ("/<root>/.../<id>/"), so a subtree is one prefix range and a move one UPDATE.
    sa.Column("parent_id", UUID(as_uuid=True), nullable=True, index=True),
    sa.Column("account_path", sa.Text, nullable=False),
    json_column("custom_fields"),
    # display_name normalised for matching (crm_customers.conversion.rules.match_name):
    # conversions find an existing company by it and the city.
    sa.Column("match_name", sa.Text, nullable=False, server_default=""),
    # Current lifecycle stage (crm_customers.lifecycle.rules.STAGES) and since when; kept by
    # the lifecycle consumers and job, not by customer writes (no version bump).
    sa.Column("lifecycle_stage", sa.Text, nullable=False, server_default="PROSPECT"),
    sa.Column(
        "lifecycle_stage_time",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.func.now(),
    ),
    sa.UniqueConstraint("tenant_id", "request_id"),
    owner_path_index("customers"),
    sa.Index("ix_customers_match_name", "tenant_id", "match_name", "city"),
    sa.Index(
        "ix_customers_tax_id", "tenant_id", "tax_id", postgresql_where=sa.text("tax_id <> ''")
    ),
    sa.Index("ix_customers_phone", "tenant_id", "phone", postgresql_where=sa.text("phone <> ''")),
    sa.Index(
        "ix_customers_account_path",
        "tenant_id",
        "account_path",
        postgresql_ops={"account_path": "text_pattern_ops"},
    ),
)

# Contacts carry no owner columns: they are visible exactly when their customer is, so
# reads join on customers and a customer's reassignment moves its contacts with it.
contacts = sa.Table(
    "contacts",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column(
        "customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False, index=True
    ),
    sa.Column("full_name", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False, server_default=""),
    sa.Column("phone", sa.Text, nullable=False, server_default=""),
    sa.Column("email", sa.Text, nullable=False, server_default=""),
    # Idempotency key of CreateContact; contacts made with their customer have none.
    sa.Column("request_id", UUID(as_uuid=True), nullable=True),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("reports_to_id", UUID(as_uuid=True), sa.ForeignKey("contacts.id"), nullable=True),
    # Enum numbers of BuyingRole / ContactChannel, sorted and distinct.
    sa.Column("buying_roles", ARRAY(sa.SmallInteger), nullable=False, server_default="{}"),
    sa.Column("allowed_channels", ARRAY(sa.SmallInteger), nullable=False, server_default="{}"),
    sa.Column("preferred_channel", sa.SmallInteger, nullable=False, server_default="0"),
    # {"MARKETING_EMAIL": {"granted": true, "time": "<ISO>", "source": "web_form"}, ...}
    json_column("consents"),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column(
        "update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.UniqueConstraint("tenant_id", "request_id"),
)

# One document of custom field definitions per tenant, validated as a whole on write.
customer_field_schemas = sa.Table(
    "customer_field_schemas",
    metadata,
    sa.Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("fields", JSONB, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column(
        "update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# Field history of customers and of their contacts (contact_id set): JSON values, so
# numbers, dates and custom fields keep their type.
field_changes = sa.Table(
    "field_changes",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
    sa.Column("contact_id", UUID(as_uuid=True), nullable=True),
    sa.Column("field", sa.Text, nullable=False),
    sa.Column("old_value", JSONB, nullable=True),
    sa.Column("new_value", JSONB, nullable=True),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column(
        "change_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Index("ix_field_changes_customer", "customer_id", "contact_id", "id"),
)

# Tags of the tenant: names normalised (NFKC, case-folded), unique per tenant. System tags
# are attached by the service itself (the lifecycle's stage tags), never by users.
tags = sa.Table(
    "tags",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.UniqueConstraint("tenant_id", "name"),
    sa.CheckConstraint("kind IN ('system', 'manual')", name="kind"),
)

customer_tags = sa.Table(
    "customer_tags",
    metadata,
    sa.Column("customer_id", UUID(as_uuid=True), sa.ForeignKey("customers.id"), primary_key=True),
    sa.Column("tag_id", UUID(as_uuid=True), sa.ForeignKey("tags.id"), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("tagged_by", sa.Text, nullable=False),
    sa.Column("tag_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("source IN ('system', 'manual')", name="source"),
    # Segments ask "which customers have tag T": the reverse of the primary key.
    sa.Index("ix_customer_tags_tag_id", "tag_id", "customer_id"),
)

# Tags on contacts: the same tenant tags, attached the same way as to customers.
contact_tags = sa.Table(
    "contact_tags",
    metadata,
    sa.Column("contact_id", UUID(as_uuid=True), sa.ForeignKey("contacts.id"), primary_key=True),
    sa.Column("tag_id", UUID(as_uuid=True), sa.ForeignKey("tags.id"), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("tagged_by", sa.Text, nullable=False),
    sa.Column("tag_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("source IN ('system', 'manual')", name="source"),
    sa.Index("ix_contact_tags_tag_id", "tag_id", "contact_id"),
)

# Dynamic segments: a validated rule document, evaluated in the database on every read.
# Tenant-wide definitions; their members are always limited to what the caller can see.
segments = sa.Table(
    "segments",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False, index=True),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("rule", JSONB, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    *timestamp_columns(),
)

# Every version of a segment's name and rule, appended on create and on each replace
# (crm_platform.versioned.append_version); ``segments`` holds the current one.
segment_versions = sa.Table(
    "segment_versions",
    metadata,
    sa.Column("segment_id", UUID(as_uuid=True), sa.ForeignKey("segments.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("tenant_id", UUID(as_uuid=True), nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("rule", JSONB, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)
