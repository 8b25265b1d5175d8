"""Event and command handlers of the sales service."""

from __future__ import annotations

from crm_platform.consumers import ORDER_FREE_CONCURRENCY, ConsumerSpec
from crm_platform.runtime import Runtime
from crm_sales.conversion import handlers as conversion


def consumers(rt: Runtime) -> list[ConsumerSpec]:
    return [
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
