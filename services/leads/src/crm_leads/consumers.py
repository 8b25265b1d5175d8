"""Event handlers of the leads service."""

from __future__ import annotations

from crm_leads.acceptance.models import lead_acceptances, lead_rejections
from crm_leads.conversion import service as conversion
from crm_leads.conversion.models import lead_conversions
from crm_leads.distribution import flows as distribution
from crm_leads.imports.models import lead_imports
from crm_leads.lead.models import leads
from crm_leads.orgtree import service as orgtree
from crm_leads.sla.models import sla_alerts
from crm_leads.users import service as users
from crm_leads.webhook.models import webhook_sources
from crm_platform.consumers import (
    ORDER_FREE_CONCURRENCY,
    BatchHandler,
    ConsumerSpec,
    EventHandler,
)
from crm_platform.org_moves import path_consumer
from crm_platform.runtime import Runtime

# The conversion saga's forward replies, a fetch at a time: (durable name, event type, step).
CONVERSION_FORWARD: tuple[tuple[str, str, BatchHandler], ...] = (
    (
        "leads-conversion-customer-prepared",
        "crm.customers.conversion.prepared.v1",
        conversion.on_customer_prepared,
    ),
    (
        "leads-conversion-sales-completed",
        "crm.sales.conversion.completed.v1",
        conversion.on_sales_completed,
    ),
)
# Failures and compensation replies, one at a time (rare; each locks its conversion).
CONVERSION_STEPS: tuple[tuple[str, str, EventHandler], ...] = (
    (
        "leads-conversion-customer-failed",
        "crm.customers.conversion.failed.v1",
        conversion.on_customer_failed,
    ),
    (
        "leads-conversion-customer-undone",
        "crm.customers.conversion.undone.v1",
        conversion.on_customers_undone,
    ),
    ("leads-conversion-sales-failed", "crm.sales.conversion.failed.v1", conversion.on_sales_failed),
    ("leads-conversion-sales-undone", "crm.sales.conversion.undone.v1", conversion.on_sales_undone),
)


def consumers(rt: Runtime) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(
            name="leads-org-unit-created",
            event_type="crm.directory.org_unit.created.v1",
            handler=orgtree.on_org_unit_created,
        ),
        ConsumerSpec(
            name="leads-org-unit-moved",
            event_type="crm.directory.org_unit.moved.v1",
            handler=orgtree.on_org_unit_moved,
        ),
        # What a moved unit owns moves with it (visibility is a prefix match on these);
        # the owner history keeps the paths as they were.
        path_consumer(
            "leads",
            leads.c.owner_org_path,
            lead_imports.c.owner_org_path,
            webhook_sources.c.owner_org_path,
            lead_conversions.c.owner_org_path,
            lead_conversions.c.actor_org_path,
            lead_acceptances.c.org_unit_path,
            lead_rejections.c.org_unit_path,
            sla_alerts.c.owner_org_path,
        ),
        # The users replica (assignment's eligible reps); a deactivated rep's leads go back
        # to their units' pools.
        ConsumerSpec(
            name="leads-user-created",
            event_type="crm.directory.user.created.v1",
            handler=users.on_user_created,
        ),
        ConsumerSpec(
            name="leads-user-deactivated",
            event_type="crm.directory.user.deactivated.v1",
            handler=users.on_user_deactivated,
        ),
        # Automatic distribution of new leads at units with rules (crm_leads.distribution).
        ConsumerSpec.batched(
            name="leads-distribute-created",
            event_type="crm.leads.lead.created.v1",
            handler=distribution.on_leads_created,
        ),
        ConsumerSpec(
            name="leads-distribute-batch-created",
            event_type="crm.leads.lead_batch.created.v1",
            handler=distribution.on_lead_batch_created,
        ),
        *(
            ConsumerSpec.batched(name=name, event_type=event_type, handler=step)
            for name, event_type, step in CONVERSION_FORWARD
        ),
        *(
            ConsumerSpec(
                name=name,
                event_type=event_type,
                handler=step,
                concurrency=ORDER_FREE_CONCURRENCY,
            )
            for name, event_type, step in CONVERSION_STEPS
        ),
    ]
