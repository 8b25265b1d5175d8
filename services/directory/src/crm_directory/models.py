"""Directory tables. Org units keep a materialised path (/<tenant>/<code>/.../) so subtree
reads are one indexed prefix range and every other service can filter by the same path."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from crm_platform.db import id_column, new_metadata

metadata = new_metadata()


def _created() -> sa.Column[Any]:
    return sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


tenants = sa.Table(
    "tenants",
    metadata,
    id_column(),
    sa.Column("slug", sa.Text, nullable=False, unique=True),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("default_region", sa.String(2), nullable=False),
    _created(),
)

org_units = sa.Table(
    "org_units",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("parent_id", UUID(as_uuid=True), sa.ForeignKey("org_units.id"), nullable=True),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    sa.Column("code", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    _created(),
    sa.UniqueConstraint("tenant_id", "path"),
    sa.Index("ix_org_units_path", "tenant_id", "path", postgresql_ops={"path": "text_pattern_ops"}),
)

users = sa.Table(
    "users",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("org_unit_id", UUID(as_uuid=True), sa.ForeignKey("org_units.id"), nullable=False),
    sa.Column("username", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False, server_default=""),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("roles", ARRAY(sa.Text), nullable=False),
    # False once deactivated (the user left): logins are refused; the row stays for history.
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    _created(),
    sa.UniqueConstraint("tenant_id", "username"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    id_column(),
    sa.Column("tenant_id", UUID(as_uuid=True), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("org_unit_id", UUID(as_uuid=True), sa.ForeignKey("org_units.id"), nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("roles", ARRAY(sa.Text), nullable=False),
    sa.Column("prefix", sa.Text, nullable=False),
    # SHA-256 of a 256-bit random secret: a slow hash adds nothing for such keys.
    sa.Column("secret_sha256", sa.LargeBinary, nullable=False, unique=True),
    sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    _created(),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.Text, primary_key=True),
    sa.Column("private_pem", sa.LargeBinary, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    _created(),
)
