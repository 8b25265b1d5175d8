"""Event handlers of the analytics service."""

from __future__ import annotations

from crm_analytics.dealerperf import service as dealerperf
from crm_analytics.dealerperf.models import dealer_performance_daily, lead_received
from crm_analytics.leadcounts import service as leadcounts
from crm_analytics.leadcounts.models import lead_counts_daily
from crm_platform.consumers import ConsumerSpec
from crm_platform.org_moves import path_consumer
from crm_platform.runtime import Runtime

# Dealer performance: one durable consumer per subject (event type, consumer name, handler).
DEALER_PERFORMANCE = (
    ("crm.leads.lead.distributed.v1", "analytics-lead-distributed", dealerperf.on_lead_distributed),
    (
        "crm.leads.lead_batch.distributed.v1",
        "analytics-lead-batch-distributed",
        dealerperf.on_lead_batch_distributed,
    ),
    ("crm.leads.lead.accepted.v1", "analytics-lead-accepted", dealerperf.on_lead_accepted),
    ("crm.leads.lead.rejected.v1", "analytics-lead-rejected", dealerperf.on_lead_rejected),
    ("crm.leads.lead.followed_up.v1", "analytics-lead-followed-up", dealerperf.on_lead_followed_up),
    (
        "crm.leads.lead.sla_warning.v1",
        "analytics-lead-sla-warning",
        dealerperf.on_lead_sla_warning,
    ),
    (
        "crm.leads.lead.sla_breached.v1",
        "analytics-lead-sla-breached",
        dealerperf.on_lead_sla_breached,
    ),
    ("crm.leads.lead.reclaimed.v1", "analytics-lead-reclaimed", dealerperf.on_lead_reclaimed),
    ("crm.leads.lead.assigned.v1", "analytics-lead-assigned", dealerperf.on_lead_assigned),
    (
        "crm.leads.lead_batch.assigned.v1",
        "analytics-lead-batch-assigned",
        dealerperf.on_lead_batch_assigned,
    ),
)


def consumers(rt: Runtime) -> list[ConsumerSpec]:
    return [
        # Reports follow the tree as it is now: a moved dealer's history moves with it.
        path_consumer(
            "analytics",
            lead_counts_daily.c.owner_org_path,
            dealer_performance_daily.c.owner_org_path,
            lead_received.c.owner_org_path,
        ),
        ConsumerSpec.batched(
            name="analytics-lead-created",
            event_type="crm.leads.lead.created.v1",
            handler=leadcounts.on_leads_created,
        ),
        ConsumerSpec(
            name="analytics-lead-batch-created",
            event_type="crm.leads.lead_batch.created.v1",
            handler=leadcounts.on_lead_batch_created,
        ),
        *(
            ConsumerSpec(name=name, event_type=event_type, handler=handler)
            for event_type, name, handler in DEALER_PERFORMANCE
        ),
    ]
