"""Event handlers of the analytics service."""

from __future__ import annotations

from crm_analytics.leadcounts import service as leadcounts
from crm_platform.consumers import ConsumerSpec
from crm_platform.runtime import Runtime


def consumers(rt: Runtime) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(
            name="analytics-lead-created",
            event_type="crm.leads.lead.created.v1",
            handler=leadcounts.on_lead_created,
        ),
        ConsumerSpec(
            name="analytics-lead-batch-created",
            event_type="crm.leads.lead_batch.created.v1",
            handler=leadcounts.on_lead_batch_created,
        ),
    ]
