"""Event and command handlers of the sales service."""

from __future__ import annotations

from crm_platform.consumers import ORDER_FREE_CONCURRENCY, ConsumerSpec
from crm_platform.org_moves import path_consumer
from crm_platform.runtime import Runtime
from crm_sales.conversion import handlers as conversion
from crm_sales.opportunity.models import opportunities


def consumers(rt: Runtime) -> list[ConsumerSpec]:
    return [
        path_consumer("sales", opportunities.c.owner_org_path),
        # The lead conversion saga's step (orchestrated by the leads service).
        ConsumerSpec(
            name="sales-create-conversion-opportunities",
            event_type="crm.cmd.sales.create_conversion_opportunities.v1",
            handler=conversion.on_create_conversion_opportunities,
            concurrency=ORDER_FREE_CONCURRENCY,
        ),
        ConsumerSpec(
            name="sales-undo-conversion",
            event_type="crm.cmd.sales.undo_conversion.v1",
            handler=conversion.on_undo_conversion,
            concurrency=ORDER_FREE_CONCURRENCY,
        ),
    ]
