"""lead conversion step: conversion records, matching rules, customers.match_name

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-10 10:00:00

Additive only: two new tables, a match_name column on customers (backfilled with an SQL
approximation of crm_customers.conversion.rules.match_name: the lower-cased display name
without whitespace; exact from the next write of each customer's name) and three indexes
for the conversion's lookups.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def _flag(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.Boolean(), server_default=sa.text("false"), nullable=False)


def upgrade() -> None:
    text = sa.Text()
    op.add_column("customers", sa.Column("match_name", text, server_default="", nullable=False))
    op.execute(
        "UPDATE customers SET match_name = lower(regexp_replace(display_name, '\\s+', '', 'g'))"
    )
    op.create_index("ix_customers_match_name", "customers", ["tenant_id", "match_name", "city"])
    op.create_index(
        "ix_customers_tax_id",
        "customers",
        ["tenant_id", "tax_id"],
        postgresql_where=sa.text("tax_id <> ''"),
    )
    op.create_index(
        "ix_customers_phone",
        "customers",
        ["tenant_id", "phone"],
        postgresql_where=sa.text("phone <> ''"),
    )
    op.create_table(
        "conversion_records",
        sa.Column("conversion_id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("lead_id", text, server_default="", nullable=False),
        sa.Column("state", text, nullable=False),
        sa.Column("customer_id", sa.UUID(), nullable=True),
        sa.Column("contact_id", sa.UUID(), nullable=True),
        _flag("customer_created"),
        _flag("contact_created"),
        _flag("customer_removed"),
        _flag("contact_removed"),
        sa.Column("org_path", text, server_default="", nullable=False),
        sa.Column("reason", text, server_default="", nullable=False),
        sa.Column("message", text, server_default="", nullable=False),
        _time("create_time"),
        _time("update_time"),
        sa.CheckConstraint(
            "state IN ('pending', 'prepared', 'failed', 'undone')",
            name=op.f("ck_conversion_records_state"),
        ),
        sa.PrimaryKeyConstraint("conversion_id", name=op.f("pk_conversion_records")),
    )
    op.create_index(
        "ix_conversion_records_customer_id", "conversion_records", ["customer_id"]
    )
    op.create_index("ix_conversion_records_contact_id", "conversion_records", ["contact_id"])
    op.create_table(
        "customer_match_rules",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("keys", postgresql.ARRAY(text), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        _time("update_time"),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_customer_match_rules")),
    )


def downgrade() -> None:
    op.drop_table("customer_match_rules")
    op.drop_index("ix_conversion_records_contact_id", table_name="conversion_records")
    op.drop_index("ix_conversion_records_customer_id", table_name="conversion_records")
    op.drop_table("conversion_records")
    op.drop_index("ix_customers_phone", table_name="customers")
    op.drop_index("ix_customers_tax_id", table_name="customers")
    op.drop_index("ix_customers_match_name", table_name="customers")
    op.drop_column("customers", "match_name")
