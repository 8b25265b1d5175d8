"""scoring rules, lead score and grade

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-23 20:10:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('scoring_rules',
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('rules', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_by', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'version', name=op.f('pk_scoring_rules'))
    )
    # Constant defaults: PostgreSQL 11+ adds these without rewriting the table. Existing
    # leads read score 0, grade D until a repeat enquiry or a rescore scores them.
    op.add_column('leads', sa.Column('score', sa.SmallInteger(), server_default='0', nullable=False))
    op.add_column('leads', sa.Column('grade', sa.Text(), server_default='D', nullable=False))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column('leads', 'grade')
    op.drop_column('leads', 'score')
    op.drop_table('scoring_rules')
