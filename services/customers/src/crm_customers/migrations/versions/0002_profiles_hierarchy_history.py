"""customer profiles, account hierarchy, custom fields, field history, contact roles

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00

Additive only: new columns have defaults (existing customers become root accounts), new
tables are empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    text = sa.Text()
    op.add_column("customers", sa.Column("legal_name", text, server_default="", nullable=False))
    op.add_column("customers", sa.Column("industry", text, server_default="", nullable=False))
    op.add_column(
        "customers",
        sa.Column("organization_size", sa.SmallInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "customers", sa.Column("gender", sa.SmallInteger(), server_default="0", nullable=False)
    )
    op.add_column("customers", sa.Column("birthday", sa.Date(), nullable=True))
    op.add_column("customers", sa.Column("parent_id", sa.UUID(), nullable=True))
    op.add_column("customers", sa.Column("account_path", text, nullable=True))
    op.execute("UPDATE customers SET account_path = '/' || id::text || '/'")
    op.alter_column("customers", "account_path", nullable=False)
    op.add_column(
        "customers",
        sa.Column(
            "custom_fields",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.create_index("ix_customers_parent_id", "customers", ["parent_id"])
    op.create_index(
        "ix_customers_account_path",
        "customers",
        ["tenant_id", "account_path"],
        postgresql_ops={"account_path": "text_pattern_ops"},
    )

    op.add_column("contacts", sa.Column("reports_to_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        "fk_contacts_reports_to_id_contacts", "contacts", "contacts", ["reports_to_id"], ["id"]
    )
    for column in ("buying_roles", "allowed_channels"):
        op.add_column(
            "contacts",
            sa.Column(
                column, postgresql.ARRAY(sa.SmallInteger()), server_default="{}", nullable=False
            ),
        )
    op.add_column(
        "contacts",
        sa.Column("preferred_channel", sa.SmallInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "contacts",
        sa.Column(
            "consents", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
    )
    op.add_column(
        "contacts", sa.Column("version", sa.Integer(), server_default="1", nullable=False)
    )
    op.add_column(
        "contacts",
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )

    op.create_table(
        "customer_field_schemas",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("fields", postgresql.JSONB(), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_customer_field_schemas")),
    )
    op.create_table(
        "field_changes",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("customer_id", sa.UUID(), nullable=False),
        sa.Column("contact_id", sa.UUID(), nullable=True),
        sa.Column("field", text, nullable=False),
        sa.Column("old_value", postgresql.JSONB(), nullable=True),
        sa.Column("new_value", postgresql.JSONB(), nullable=True),
        sa.Column("actor", text, nullable=False),
        sa.Column(
            "change_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_field_changes")),
    )
    op.create_index(
        "ix_field_changes_customer", "field_changes", ["customer_id", "contact_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_field_changes_customer", table_name="field_changes")
    op.drop_table("field_changes")
    op.drop_table("customer_field_schemas")
    for column in (
        "update_time",
        "version",
        "consents",
        "preferred_channel",
        "allowed_channels",
        "buying_roles",
    ):
        op.drop_column("contacts", column)
    op.drop_constraint("fk_contacts_reports_to_id_contacts", "contacts", type_="foreignkey")
    op.drop_column("contacts", "reports_to_id")
    op.drop_index("ix_customers_account_path", table_name="customers")
    op.drop_index("ix_customers_parent_id", table_name="customers")
    for column in (
        "custom_fields",
        "account_path",
        "parent_id",
        "birthday",
        "gender",
        "organization_size",
        "industry",
        "legal_name",
    ):
        op.drop_column("customers", column)
