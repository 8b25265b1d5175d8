"""stage system tags for customers that left PROSPECT before the service kept them

Revision ID: 0007
Revises: 0006
Create Date: 2027-02-03 10:00:00

Data only: every customer past PROSPECT gets the system tag of its current stage
(``stage-customer``, ``stage-repeat``, ``stage-at-risk``, ``stage-lost``), the tag created
per tenant when missing. A tenant that already has a manual tag of that name keeps it, and
its customers get no stage tag. No tagged events: no customer changed, only the record
keeping caught up. Set-based (one INSERT ... SELECT for the links), so it is one pass over
customers however many.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from crm_platform.ids import new_id

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTOR = "system:lifecycle"
# The naming of crm_customers.customer.tagging.stage_tag, frozen here: AT_RISK -> stage-at-risk.
STAGE_TAG_SQL = "'stage-' || replace(lower(c.lifecycle_stage), '_', '-')"

_tags = sa.table(
    "tags",
    sa.column("id", sa.UUID()),
    sa.column("tenant_id", sa.UUID()),
    sa.column("name", sa.Text()),
    sa.column("kind", sa.Text()),
    sa.column("created_by", sa.Text()),
)


def upgrade() -> None:
    bind = op.get_bind()
    stages = bind.execute(
        sa.text(
            "SELECT DISTINCT tenant_id, lifecycle_stage FROM customers"
            " WHERE lifecycle_stage <> 'PROSPECT' ORDER BY 1, 2"
        )
    ).all()
    if not stages:
        return
    # Tag ids in Python: UUIDv7 like every tag, so the tag list keeps creation order.
    bind.execute(
        postgresql.insert(_tags)
        .values(
            [
                {
                    "id": new_id(),
                    "tenant_id": tenant_id,
                    "name": "stage-" + stage.lower().replace("_", "-"),
                    "kind": "system",
                    "created_by": ACTOR,
                }
                for tenant_id, stage in stages
            ]
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "name"])
    )
    op.execute(
        "INSERT INTO customer_tags (customer_id, tag_id, source, tagged_by)"
        f" SELECT c.id, t.id, 'system', '{ACTOR}' FROM customers c"
        f" JOIN tags t ON t.tenant_id = c.tenant_id AND t.name = {STAGE_TAG_SQL}"
        " AND t.kind = 'system'"
        " WHERE c.lifecycle_stage <> 'PROSPECT'"
        " ON CONFLICT DO NOTHING"
    )


def downgrade() -> None:
    # Nothing to undo in the schema; the tags stay as ordinary system tags.
    pass
