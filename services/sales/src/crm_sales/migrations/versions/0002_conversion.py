"""lead conversion: opportunity product, campaign, intent and conversion; conversion records

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-20 10:00:00

Additive only: new opportunity columns ('' or NULL for existing rows) and a new table.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('opportunities', sa.Column('product', sa.Text(), server_default='', nullable=False))
    op.add_column('opportunities', sa.Column('campaign', sa.Text(), server_default='', nullable=False))
    op.add_column('opportunities', sa.Column('lead_intent_id', sa.UUID(), nullable=True))
    op.add_column('opportunities', sa.Column('conversion_id', sa.UUID(), nullable=True))
    op.create_index('ix_opportunities_conversion_id', 'opportunities', ['conversion_id'], unique=False, postgresql_where=sa.text('conversion_id IS NOT NULL'))
    op.create_table('conversion_records',
    sa.Column('conversion_id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('lead_id', sa.UUID(), nullable=True),
    sa.Column('state', sa.Text(), nullable=False),
    sa.Column('opportunity_ids', postgresql.ARRAY(sa.UUID()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('reason', sa.Text(), server_default='', nullable=False),
    sa.Column('message', sa.Text(), server_default='', nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('update_time', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("state IN ('pending', 'completed', 'failed', 'undone')", name=op.f('ck_conversion_records_state_known')),
    sa.PrimaryKeyConstraint('conversion_id', name=op.f('pk_conversion_records'))
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('conversion_records')
    op.drop_index('ix_opportunities_conversion_id', table_name='opportunities', postgresql_where=sa.text('conversion_id IS NOT NULL'))
    op.drop_column('opportunities', 'conversion_id')
    op.drop_column('opportunities', 'lead_intent_id')
    op.drop_column('opportunities', 'campaign')
    op.drop_column('opportunities', 'product')
