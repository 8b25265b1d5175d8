"""webhook sources and deliveries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('webhook_sources',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('owner_org_id', sa.UUID(), nullable=False),
    sa.Column('owner_org_path', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('platform', sa.Text(), nullable=False),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_sources'))
    )
    op.create_index('ix_webhook_sources_visibility', 'webhook_sources', ['tenant_id', 'owner_org_path'], unique=False, postgresql_ops={'owner_org_path': 'text_pattern_ops'})
    op.create_table('webhook_deliveries',
    sa.Column('source_id', sa.UUID(), nullable=False),
    sa.Column('signature', sa.Text(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('source_id', 'signature', name=op.f('pk_webhook_deliveries'))
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('webhook_deliveries')
    op.drop_index('ix_webhook_sources_visibility', table_name='webhook_sources', postgresql_ops={'owner_org_path': 'text_pattern_ops'})
    op.drop_table('webhook_sources')
